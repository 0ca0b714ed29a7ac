//! The AMQP 0.9.1 transport (RabbitMQ) with lapin.
//!
//! A [`Broker`] owns two connections per broker URL (consuming, publishing) and supervises
//! them: it connects, declares (or verifies) the topology, keeps publisher channels in
//! confirm mode (one per publish in flight, reused), and on any connection error starts
//! over with exponential backoff. Publishers fail fast while the connection is down;
//! consumers wait for it and resume.

mod broker;
mod headers;
mod session;
mod sink;
mod topology;

pub use broker::{Broker, BrokerConfig, ConsumeSpec, Live, Publish};
pub use headers::{FieldTableExt, header_str, string_headers};
pub use lapin::BasicProperties;
pub use lapin::message::Delivery;
pub use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
pub use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
pub use session::{QueueSession, Reader};
pub use sink::{AmqpPublish, AmqpSink};
pub use topology::{Binding, Exchange, Queue, Topology};

/// The URL with its password replaced, for logs and readiness.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "amqp://(unparsable URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
