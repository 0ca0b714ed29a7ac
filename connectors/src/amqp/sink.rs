//! Delivery to a system through the broker: publish to its exchange, persistent, confirmed.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::FieldTable;

use super::{Broker, FieldTableExt, Publish};
use crate::error::DeliveryError;
use crate::message::MessageId;

#[derive(Clone, Debug)]
pub struct AmqpSink {
    pub system: String,
    pub broker: Broker,
    /// The exchange messages for this system are published to.
    pub exchange: String,
    pub confirm_timeout: Duration,
    /// Whether Qiao declares this system's exchange and queues (`false`: only verifies).
    pub declare: bool,
}

/// One message for the system.
#[derive(Debug)]
pub struct AmqpPublish<'a> {
    pub routing_key: &'a str,
    /// Overrides the system's exchange.
    pub exchange: Option<&'a str>,
    pub body: &'a [u8],
    pub message_id: &'a MessageId,
    /// Extra headers (the route, trace context).
    pub headers: Vec<(&'a str, &'a str)>,
    /// Overrides the confirm timeout.
    pub timeout: Option<Duration>,
}

impl AmqpSink {
    /// Publishes persistently with `mandatory` set, and waits for the broker's confirm.
    pub async fn send(&self, p: AmqpPublish<'_>) -> Result<(), DeliveryError> {
        let mut headers = FieldTable::default();
        for (name, value) in &p.headers {
            headers.put_str(name, value);
        }
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(p.message_id.as_str().into())
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_app_id("qiao".into())
            .with_headers(headers);
        self.broker
            .publish(Publish {
                exchange: p.exchange.unwrap_or(&self.exchange),
                routing_key: p.routing_key,
                body: p.body,
                properties,
                mandatory: true,
                timeout: p.timeout.unwrap_or(self.confirm_timeout),
                system: &self.system,
            })
            .await
    }
}
