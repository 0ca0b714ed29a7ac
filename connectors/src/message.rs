//! The message every ingress produces and every phase works on.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// A message id. Receivers deduplicate on it, so it travels with every delivery
/// (`x-qiao-message-id` over HTTP, the `message_id` property over AMQP).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageId(Arc<str>);

impl MessageId {
    /// A fresh id: a UUIDv7, so ids sort by creation time in logs and journals.
    pub fn generate() -> Self {
        Self(Arc::from(uuid::Uuid::now_v7().to_string()))
    }

    /// Reuse an id chosen by the sender (an `Idempotency-Key`), so that a retried request
    /// keeps its identity end to end.
    pub fn from_sender(id: &str) -> Self {
        Self(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// W3C trace context carried with a message (`traceparent`, `tracestate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// One message on its way through Qiao, whatever transport it came from.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: MessageId,
    /// Transport headers of the inbound message, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub trace: TraceContext,
    pub received_at: SystemTime,
}

impl Message {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_sortable() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert!(a.as_str() <= b.as_str(), "UUIDv7 ids sort by creation time");
    }

    #[test]
    fn sender_ids_are_kept_verbatim() {
        assert_eq!(MessageId::from_sender("crm-801J000000k3Q").as_str(), "crm-801J000000k3Q");
    }
}
