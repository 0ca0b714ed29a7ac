//! The HTTP transport: a pooled hyper client per system.

mod auth;
mod sink;

pub use auth::HttpAuth;
pub use sink::{HttpReply, HttpRequest, HttpSink, HttpSinkConfig, MESSAGE_ID_HEADER};
