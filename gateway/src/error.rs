//! The one error classifier.
//!
//! Every failure a message can meet maps to exactly one [`ErrorKind`]. The kind decides the
//! HTTP status, the `type` of the problem+json answer (RFC 9457), the metric label, whether
//! another attempt could succeed, and whether an AMQP message is dead-lettered. Nothing
//! else in the gateway picks a status code or a label.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No route has this path.
    RouteNotFound,
    /// A route has this path, but not this method.
    MethodNotAllowed,
    /// The body is not JSON by its `Content-Type`.
    UnsupportedMediaType,
    /// The body is larger than the route's `max_body_bytes`.
    PayloadTooLarge,
    /// The body is not well-formed JSON.
    MalformedJson,
    /// The body breaks the route's JSON Schema.
    SchemaViolation,
    /// The message could not be mapped (a required source is missing, a value cannot be
    /// coerced, a lookup has no entry).
    MappingFailed,
    /// No connection could be made to the receiving system.
    ReceiverUnreachable,
    /// The receiving system did not answer in time.
    ReceiverTimeout,
    /// The receiving system refused the message (a 4xx other than 408 and 429): sending it
    /// again will not help.
    ReceiverRejected,
    /// The receiving system failed (5xx, 408, 429): it may succeed later.
    ReceiverFailed,
    /// The receiving system answered 2xx but its body reports a failure (Kingdee
    /// `IsSuccess: false`, Qimen `flag: failure`).
    ReceiverBusinessError,
    /// No destination's `when` condition holds for the message.
    NoDestination,
    /// The mapped message does not match the receiving system's schema: a bug in the map.
    OutputSchemaViolation,
    /// The system's circuit breaker is open after repeated failures: not tried.
    CircuitOpen,
    /// Too many requests for the route's rate limit.
    RateLimited,
    /// The AMQP broker is unreachable, refused the message, or did not confirm it in time.
    BrokerUnavailable,
    /// The broker has no queue bound for the message's exchange and routing key.
    Unroutable,
    /// The request could not be read (client went away, broken chunking).
    BadRequest,
    /// The client did not send its request header, or its body, in time.
    RequestTimeout,
    /// The request header has more fields, or more bytes, than the edge takes.
    HeadersTooLarge,
    /// The route is already serving as many requests as its `concurrency_limit`.
    ConcurrencyLimited,
    /// The destination system's outbound rate limit did not give the delivery a turn within
    /// `max_wait_ms`, or `queue` deliveries already wait.
    DestinationBusy,
    /// A cluster-wide rate limit could not reach its Redis and is set to refuse then.
    RateLimitUnavailable,
    /// The route needs credentials and the request has none, or none that hold (an unknown
    /// API key, a bad or expired token).
    Unauthenticated,
    /// The client is known, but the route is not among those it may call.
    Forbidden,
    /// A fault in Qiao itself.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 27] = [
        Self::RouteNotFound,
        Self::MethodNotAllowed,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::MalformedJson,
        Self::SchemaViolation,
        Self::MappingFailed,
        Self::ReceiverUnreachable,
        Self::ReceiverTimeout,
        Self::ReceiverRejected,
        Self::ReceiverFailed,
        Self::ReceiverBusinessError,
        Self::NoDestination,
        Self::OutputSchemaViolation,
        Self::CircuitOpen,
        Self::RateLimited,
        Self::BrokerUnavailable,
        Self::Unroutable,
        Self::BadRequest,
        Self::RequestTimeout,
        Self::HeadersTooLarge,
        Self::ConcurrencyLimited,
        Self::DestinationBusy,
        Self::RateLimitUnavailable,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::Internal,
    ];

    /// Stable identifier: the metric label, the end of the problem `type`, the dead-letter
    /// header value. Never changes once published.
    pub fn slug(self) -> &'static str {
        match self {
            Self::RouteNotFound => "route-not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::MalformedJson => "malformed-json",
            Self::SchemaViolation => "schema-violation",
            Self::MappingFailed => "mapping-failed",
            Self::ReceiverUnreachable => "receiver-unreachable",
            Self::ReceiverTimeout => "receiver-timeout",
            Self::ReceiverRejected => "receiver-rejected",
            Self::ReceiverFailed => "receiver-failed",
            Self::ReceiverBusinessError => "receiver-business-error",
            Self::NoDestination => "no-matching-destination",
            Self::OutputSchemaViolation => "output-schema-violation",
            Self::CircuitOpen => "circuit-open",
            Self::RateLimited => "rate-limited",
            Self::BrokerUnavailable => "broker-unavailable",
            Self::Unroutable => "unroutable",
            Self::BadRequest => "bad-request",
            Self::RequestTimeout => "request-timeout",
            Self::HeadersTooLarge => "headers-too-large",
            Self::ConcurrencyLimited => "concurrency-limited",
            Self::DestinationBusy => "destination-busy",
            Self::RateLimitUnavailable => "rate-limit-unavailable",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::Internal => "internal",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::RouteNotFound => "No route for this path",
            Self::MethodNotAllowed => "Method not allowed on this route",
            Self::UnsupportedMediaType => "The body must be JSON",
            Self::PayloadTooLarge => "The body is too large",
            Self::MalformedJson => "The body is not valid JSON",
            Self::SchemaViolation => "The body does not match the route's schema",
            Self::MappingFailed => "The message could not be mapped",
            Self::ReceiverUnreachable => "The receiving system is unreachable",
            Self::ReceiverTimeout => "The receiving system did not answer in time",
            Self::ReceiverRejected => "The receiving system rejected the message",
            Self::ReceiverFailed => "The receiving system failed",
            Self::ReceiverBusinessError => "The receiving system reported a failure",
            Self::NoDestination => "No destination takes this message",
            Self::OutputSchemaViolation => "The mapped message does not match the receiver's schema",
            Self::CircuitOpen => "The receiving system is failing; Qiao paused deliveries to it",
            Self::RateLimited => "Too many requests",
            Self::BrokerUnavailable => "The message broker did not take the message",
            Self::Unroutable => "No queue takes this message",
            Self::BadRequest => "The request could not be read",
            Self::RequestTimeout => "The request was not received in time",
            Self::HeadersTooLarge => "The request's header fields are too large",
            Self::ConcurrencyLimited => "The route is serving as many requests as it may",
            Self::DestinationBusy => "The receiving system takes no more messages right now",
            Self::RateLimitUnavailable => "The shared rate limit cannot be checked right now",
            Self::Unauthenticated => "Valid credentials are needed",
            Self::Forbidden => "The client may not call this route",
            Self::Internal => "Internal error",
        }
    }

    /// The HTTP status a synchronous caller gets.
    pub fn status(self) -> u16 {
        match self {
            Self::RouteNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedMediaType => 415,
            Self::PayloadTooLarge => 413,
            Self::MalformedJson => 400,
            Self::SchemaViolation => 422,
            Self::MappingFailed => 422,
            Self::ReceiverUnreachable => 502,
            Self::ReceiverTimeout => 504,
            Self::ReceiverRejected => 502,
            Self::ReceiverFailed => 502,
            Self::ReceiverBusinessError => 502,
            Self::NoDestination => 422,
            // The sender's message was fine; the route's map produced what the receiver
            // cannot take. A server-side bug, named as such.
            Self::OutputSchemaViolation => 500,
            Self::CircuitOpen => 503,
            Self::RateLimited => 429,
            Self::BrokerUnavailable => 503,
            Self::Unroutable => 502,
            Self::BadRequest => 400,
            Self::RequestTimeout => 408,
            Self::HeadersTooLarge => 431,
            Self::ConcurrencyLimited => 503,
            Self::DestinationBusy => 503,
            Self::RateLimitUnavailable => 503,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::Internal => 500,
        }
    }

    /// Whether the same message could succeed on another attempt. Problems with the
    /// message itself never can; problems on the way may.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::ReceiverUnreachable
                | Self::ReceiverTimeout
                | Self::ReceiverFailed
                | Self::BrokerUnavailable
                | Self::CircuitOpen
                | Self::RateLimited
                | Self::ConcurrencyLimited
                | Self::DestinationBusy
                | Self::RateLimitUnavailable
                // The client was too slow; sent again, it may well be in time.
                | Self::RequestTimeout
                // A missing binding is fixed by people; retrying gives them the time.
                | Self::Unroutable
        )
    }

    /// Whether a message from a queue that failed this way goes to the dead-letter queue
    /// (after its retries, if it is retryable). Everything that reaches a route is kept:
    /// only failures that happen before a route is known have no dead-letter queue.
    pub fn dead_letter(self) -> bool {
        !matches!(self, Self::RouteNotFound | Self::MethodNotAllowed)
    }

    /// The problem `type` URI (RFC 9457 §3.1.1). A URN: stable, and not pretending to
    /// resolve; docs/errors.md lists every one.
    pub fn type_uri(self) -> String {
        format!("urn:qiao:problem:{}", self.slug())
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}

/// One schema violation, as the 422 body lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// JSON Pointer (RFC 6901) to the offending field. For a missing required property it
    /// points to where the property should be.
    pub pointer: String,
    /// The JSON Schema keyword that failed (`required`, `type`, `format`, ...).
    pub keyword: String,
    pub message: String,
}

impl Violation {
    /// `1 violation: /a/b message` or `3 violations, the first: /a/b message`, for a
    /// problem's `detail`; the whole body (pointer `""`) reads as `(root)`.
    pub fn summary(violations: &[Violation]) -> String {
        let first = violations
            .first()
            .map(|v| format!(": {} {}", if v.pointer.is_empty() { "(root)" } else { &v.pointer }, v.message))
            .unwrap_or_default();
        match violations.len() {
            1 => format!("1 violation{first}"),
            n => format!("{n} violations, the first{first}"),
        }
    }
}

/// A failure of one message, ready to be answered or dead-lettered. Its fields
/// ([`FailureFields`], reached through `Deref`) are what the problem document, the
/// dead-letter headers, the metrics and the logs say about it. Boxed: results that may fail
/// stay small on the hot path, where failing is the exception.
#[derive(Clone, Debug)]
pub struct Failure(Box<FailureFields>);

#[derive(Clone, Debug)]
pub struct FailureFields {
    pub kind: ErrorKind,
    pub detail: String,
    /// Schema violations, for [`ErrorKind::SchemaViolation`] and
    /// [`ErrorKind::OutputSchemaViolation`].
    pub violations: Vec<Violation>,
    /// For [`ErrorKind::MethodNotAllowed`]: the methods the path accepts.
    pub allow: Vec<String>,
    /// How long to wait before trying again ([`ErrorKind::RateLimited`],
    /// [`ErrorKind::CircuitOpen`]): HTTP senders get it as `Retry-After` in whole seconds,
    /// rounded up; the AMQP consumer holds a circuit-open copy this long.
    pub retry_after: Option<Duration>,
    /// The system a delivery failed at (`-` in metrics when the message itself was at fault).
    pub system: Option<String>,
    /// Delivery attempts made, the last included.
    pub attempts: Option<u32>,
    /// The receiver's HTTP status.
    pub receiver_status: Option<u16>,
    /// Where malformed JSON broke: line and column, 1-based.
    pub position: Option<(usize, usize)>,
    /// A mapping failure's target field and the source it read, as written in the map.
    pub target: Option<String>,
    pub source_path: Option<String>,
    /// The routing key of a publish that failed.
    pub routing_key: Option<String>,
    /// The limit a body broke.
    pub max_body_bytes: Option<u64>,
    /// Each destination's outcome, when some of several failed.
    pub deliveries: Option<Vec<serde_json::Value>>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub www_authenticate: Option<String>,
    /// The error underneath, for logs; never sent to a client.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// A wait as `Retry-After` says it: whole seconds, rounded up, at least 1.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

impl std::ops::Deref for Failure {
    type Target = FailureFields;
    fn deref(&self) -> &FailureFields {
        &self.0
    }
}

impl std::ops::DerefMut for Failure {
    fn deref_mut(&mut self) -> &mut FailureFields {
        &mut self.0
    }
}

impl Failure {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self(Box::new(FailureFields {
            kind,
            detail: detail.into(),
            violations: Vec::new(),
            allow: Vec::new(),
            retry_after: None,
            system: None,
            attempts: None,
            receiver_status: None,
            position: None,
            target: None,
            source_path: None,
            routing_key: None,
            max_body_bytes: None,
            deliveries: None,
            www_authenticate: None,
            cause: None,
        }))
    }

    pub fn at_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    pub fn with_max_body_bytes(mut self, limit: u64) -> Self {
        self.max_body_bytes = Some(limit);
        self
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// The problem+json document (RFC 9457) for this failure.
    pub fn problem(&self, route: Option<&str>, message_id: Option<&str>, instance: Option<&str>) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert("type".into(), self.kind.type_uri().into());
        doc.insert("title".into(), self.kind.title().into());
        doc.insert("status".into(), self.kind.status().into());
        doc.insert("detail".into(), self.detail.clone().into());
        if let Some(instance) = instance {
            doc.insert("instance".into(), instance.into());
        }
        if let Some(route) = route {
            doc.insert("route".into(), route.into());
        }
        if let Some(id) = message_id {
            doc.insert("message_id".into(), id.into());
        }
        doc.insert("error_kind".into(), self.kind.slug().into());
        if !self.violations.is_empty() {
            doc.insert("errors".into(), serde_json::to_value(&self.violations).unwrap_or_default());
        }
        if let Some((line, column)) = self.position {
            doc.insert("line".into(), line.into());
            doc.insert("column".into(), column.into());
        }
        if let Some(t) = &self.target {
            doc.insert("target".into(), t.as_str().into());
        }
        if let Some(s) = &self.source_path {
            doc.insert("source".into(), s.as_str().into());
        }
        if let Some(s) = &self.system {
            doc.insert("system".into(), s.as_str().into());
        }
        if let Some(s) = self.receiver_status {
            doc.insert("receiver_status".into(), s.into());
        }
        if let Some(n) = self.attempts {
            doc.insert("attempts".into(), n.into());
        }
        if let Some(k) = &self.routing_key {
            doc.insert("routing_key".into(), k.as_str().into());
        }
        if let Some(wait) = self.retry_after {
            doc.insert("retry_after_seconds".into(), whole_seconds(wait).into());
        }
        if let Some(n) = self.max_body_bytes {
            doc.insert("max_body_bytes".into(), n.into());
        }
        if let Some(d) = &self.deliveries {
            doc.insert("deliveries".into(), serde_json::Value::Array(d.clone()));
        }
        serde_json::Value::Object(doc)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(29_978)), 30);
    }

    #[test]
    fn violation_summaries_name_the_first_and_the_root() {
        let v = |pointer: &str| Violation { pointer: pointer.into(), keyword: "type".into(), message: "m".into() };
        assert_eq!(Violation::summary(&[v("/a/0")]), "1 violation: /a/0 m");
        assert_eq!(Violation::summary(&[v(""), v("/b")]), "2 violations, the first: (root) m");
    }

    #[test]
    fn statuses_match_the_contract() {
        let expected = [
            (ErrorKind::MalformedJson, 400),
            (ErrorKind::Unauthenticated, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::RouteNotFound, 404),
            (ErrorKind::MethodNotAllowed, 405),
            (ErrorKind::PayloadTooLarge, 413),
            (ErrorKind::UnsupportedMediaType, 415),
            (ErrorKind::SchemaViolation, 422),
            (ErrorKind::ReceiverUnreachable, 502),
            (ErrorKind::ReceiverTimeout, 504),
        ];
        for (kind, status) in expected {
            assert_eq!(kind.status(), status, "{kind}");
        }
    }

    #[test]
    fn slugs_are_unique_and_safe_as_metric_labels() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.slug()), "duplicate slug {}", kind.slug());
            assert!(kind.slug().chars().all(|c| c.is_ascii_lowercase() || c == '-'));
            assert!(kind.type_uri().starts_with("urn:qiao:problem:"));
        }
    }

    #[test]
    fn broker_failures_are_503_and_retryable() {
        assert_eq!(ErrorKind::BrokerUnavailable.status(), 503);
        assert!(ErrorKind::BrokerUnavailable.retryable());
        assert!(ErrorKind::Unroutable.retryable());
    }

    #[test]
    fn only_transport_failures_are_retryable() {
        for kind in ErrorKind::ALL {
            let expect = matches!(
                kind,
                ErrorKind::ReceiverUnreachable
                    | ErrorKind::ReceiverTimeout
                    | ErrorKind::ReceiverFailed
                    | ErrorKind::BrokerUnavailable
                    | ErrorKind::Unroutable
                    | ErrorKind::CircuitOpen
                    | ErrorKind::RateLimited
                    | ErrorKind::ConcurrencyLimited
                    | ErrorKind::DestinationBusy
                    | ErrorKind::RateLimitUnavailable
                    | ErrorKind::RequestTimeout
            );
            assert_eq!(kind.retryable(), expect, "{kind}");
        }
        assert!(ErrorKind::SchemaViolation.dead_letter());
        assert!(!ErrorKind::RouteNotFound.dead_letter());
    }

    #[test]
    fn problem_documents_carry_route_id_and_violations() {
        let mut f = Failure::new(ErrorKind::SchemaViolation, "1 violation");
        f.violations.push(Violation {
            pointer: "/records/0/Account/AccountNumber".into(),
            keyword: "required".into(),
            message: "\"AccountNumber\" is a required property".into(),
        });
        let doc = f.problem(Some("crm-order-to-erp"), Some("id-1"), Some("/crm/orders"));
        assert_eq!(doc["status"], 422);
        assert_eq!(doc["type"], "urn:qiao:problem:schema-violation");
        assert_eq!(doc["route"], "crm-order-to-erp");
        assert_eq!(doc["message_id"], "id-1");
        assert_eq!(doc["errors"][0]["pointer"], "/records/0/Account/AccountNumber");
        assert_eq!(doc["errors"][0]["keyword"], "required");
    }
}
