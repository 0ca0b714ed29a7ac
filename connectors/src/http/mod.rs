//! The HTTP transport: a pooled hyper client per system.

mod auth;
mod circuit;
mod inline;
mod sink;

pub use auth::HttpAuth;
pub use circuit::{Circuit, CircuitConfig, CircuitState};
pub use sink::{HttpReply, HttpRequest, HttpSink, HttpSinkConfig, MESSAGE_ID_HEADER};
