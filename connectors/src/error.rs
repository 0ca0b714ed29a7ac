//! Why a delivery failed, and whether trying again could help.

use std::time::Duration;

/// The transport-level classes of delivery failure. The gateway maps each to its `ErrorKind`
/// (status code, metric label, retry, dead letter); this crate only says what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryErrorKind {
    /// No connection could be made (refused, DNS, TLS handshake, connect timeout).
    Connect,
    /// The receiver did not answer within the request timeout.
    Timeout,
    /// The connection broke while the request or answer was in flight.
    Io,
    /// The request could not be built (bad URL, header value). Not retryable.
    Invalid,
    /// No connection to the AMQP broker right now (it is down or Qiao is reconnecting).
    BrokerUnavailable,
    /// The broker did not confirm the publish within the confirm timeout.
    ConfirmTimeout,
    /// The broker refused the message (`basic.nack`).
    Nacked,
    /// No queue is bound for the exchange and routing key: the broker returned the
    /// message (published with `mandatory`).
    Unroutable,
    /// The system's circuit breaker is open: recent deliveries failed, so this one was
    /// not tried.
    CircuitOpen,
}

#[derive(Debug, thiserror::Error)]
#[error("{system}: {detail}")]
pub struct DeliveryError {
    pub kind: DeliveryErrorKind,
    /// The system the delivery was for.
    pub system: String,
    pub detail: String,
    /// How many attempts were made before giving up.
    pub attempts: u32,
    /// When trying again makes sense at the earliest (an open circuit's next trial).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    pub fn new(kind: DeliveryErrorKind, system: &str, detail: impl Into<String>) -> Self {
        Self { kind, system: system.to_string(), detail: detail.into(), attempts: 1, retry_after: None }
    }

    pub fn timeout(system: &str, after: Duration) -> Self {
        Self::new(DeliveryErrorKind::Timeout, system, format!("no answer within {} ms", after.as_millis()))
    }

    /// Whether another attempt could succeed. An invalid request never will.
    pub fn retryable(&self) -> bool {
        !matches!(self.kind, DeliveryErrorKind::Invalid)
    }
}
