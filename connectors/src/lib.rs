//! Qiao's transports.
//!
//! This crate knows how to move a message — over HTTP and AMQP — and nothing
//! about routes, schemas or mappings: those belong to the gateway (`qiao`). The dependency
//! arrow runs one way, `qiao → qiao-connectors`.

pub mod amqp;
pub mod error;
pub mod http;
pub mod message;
pub mod retry;

pub use error::{DeliveryError, DeliveryErrorKind};
pub use message::{Message, MessageId, TraceContext};
pub use retry::RetryPolicy;
