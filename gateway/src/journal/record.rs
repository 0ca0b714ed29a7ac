//! One line of the journal: a message's journey through one route, as NDJSON.
//!
//! The format is a contract with the readers outside Qiao (Filebeat, Vector, Fluent Bit,
//! `jq`) and with `qiao journal` and `qiao replay`, which read files written by older
//! versions: fields are only ever added (with `#[serde(default)]`), never renamed, and
//! [`VERSION`] changes when a reader must tell the difference. docs/journal.md documents
//! every field.
//!
//! Values are redacted before a record is made: secret header values and PII fields hold
//! stable tokens (`pii:` + a keyed HMAC), never the clear value.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The format's version, in every record's `v`.
pub const VERSION: u32 = 1;

/// One message's pass through one route. An AMQP message that is retried makes one record
/// per pass, all with the same `id`; `qiao journal show` puts them in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// The message id (`x-qiao-message-id`; kept across AMQP retries and re-drives).
    pub id: String,
    /// W3C trace id (32 hex digits) of the message's span; empty when tracing is off.
    #[serde(default)]
    pub trace_id: String,
    pub route: String,
    /// The hash of the configuration that handled the message (as `/readyz` shows it).
    pub config: String,
    /// When the message was received, RFC 3339 with milliseconds, UTC.
    pub received_at: String,
    /// How long the pass took, milliseconds.
    pub duration_ms: f64,
    pub source: Source,
    /// The authenticated client's name, when the route authenticates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The id of the message this one re-sends (`qiao replay --send`, `qiao dlq replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// Headers as received, names lowercased, in order; secret values as tokens.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The received body; absent when the route keeps no bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
    pub validation: Validation,
    /// Destinations (by index in the route) the message was selected for.
    #[serde(default)]
    pub chosen: Vec<usize>,
    /// The mapped body per chosen destination.
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// One per delivery made in this pass.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
}

/// Where the message came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Http {
        method: String,
        /// The path and query as received.
        path: String,
        /// Path parameters, percent-encoded as in the URL.
        #[serde(default)]
        params: Vec<(String, String)>,
    },
    Amqp {
        queue: String,
        /// The pass: 1 for the first delivery, more for retries.
        attempt: u32,
    },
}

/// A body as kept on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// JSON, PII fields replaced by tokens: what a reader of the line gets. A record made in
    /// the process holds a tree only where something was replaced; else [`Body::Raw`].
    Json(Arc<Value>),
    /// JSON written as the bytes it came or went as (see [`RawJson`]); read back as
    /// [`Body::Json`].
    #[serde(rename = "json", skip_deserializing)]
    Raw(RawJson),
    /// Not JSON but UTF-8 (a malformed request, a receiver's text answer).
    Text(String),
    /// Kept out, and why (`bodies: false`, not UTF-8, a route with PII whose body did not
    /// parse, so its PII cannot be found).
    Omitted(String),
}

/// A JSON document kept as its bytes: written into the line as they are, instead of
/// walking a tree and escaping every string again. Bodies are most of a record, and
/// serializing them was most of what the journal cost (docs/performance.md).
#[derive(Clone, Debug, PartialEq)]
pub struct RawJson(Bytes);

impl RawJson {
    /// `bytes`, which must be one valid JSON document (it parsed, or serde_json wrote it).
    /// In valid JSON a line break can only be whitespace between tokens: it becomes a
    /// space, so that the record stays one line.
    pub fn new(bytes: &Bytes) -> RawJson {
        if bytes.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            RawJson(bytes.iter().map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b }).collect())
        } else {
            RawJson(bytes.clone())
        }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// As a tree: what a reader of the line gets.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// `bytes` when they are one valid JSON document (a receiver's answer).
    pub fn checked(bytes: &Bytes) -> Option<RawJson> {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).ok().map(|_| RawJson::new(bytes))
    }
}

/// The token serde_json's serializer takes for "write this string as it is": what
/// [`serde_json::value::RawValue`] serializes as. `RawValue` itself cannot be made from
/// bytes without parsing them again; the test below fails if serde_json ever changes this.
const RAW_VALUE_TOKEN: &str = crate::json::RESERVED_KEY;

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let json = std::str::from_utf8(&self.0).map_err(S::Error::custom)?;
        let mut s = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        s.serialize_field(RAW_VALUE_TOKEN, json)?;
        s.end()
    }
}

/// What validation made of the message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub ok: bool,
    /// The error kind's slug (`schema-violation`, `malformed-json`, ...) when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub pointer: String,
    pub keyword: String,
    pub message: String,
}

/// The mapped body for one destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub index: usize,
    pub system: String,
    pub body: Body,
}

/// One delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub index: usize,
    pub system: String,
    pub request: Request,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// Tries made by the HTTP client (its own retries included).
    #[serde(default = "one")]
    pub tries: u32,
    /// The failure's kind and detail, when the delivery failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The receiver's answer body, when answers are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Body>,
}

fn one() -> u32 {
    1
}

/// What was sent, without the body (that is in [`Output`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case")]
pub enum Request {
    Http {
        method: String,
        /// The full URL.
        url: String,
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    Amqp {
        exchange: String,
        routing_key: String,
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
}

/// How the pass ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub result: Verdict,
    /// The failure's kind and detail, unless delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The status answered to an HTTP sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What the AMQP consumer did with the message: `delivered`, `retried`,
    /// `dead_lettered`, `requeued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fate: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every chosen destination took it (or none was chosen).
    Delivered,
    /// Refused before any delivery: malformed, invalid, unmappable. The sender's fault.
    Rejected,
    /// No destination took it.
    Failed,
    /// Some destinations took it, others did not.
    Partial,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_older_lines_still_read() {
        let r = Record {
            v: VERSION,
            id: "0193a1b2-0000-7000-8000-000000000001".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            route: "crm-orders-to-erp".into(),
            config: "a1b2c3d4e5f60718".into(),
            received_at: "2026-12-07T08:00:00.123Z".into(),
            duration_ms: 12.5,
            source: Source::Http { method: "POST".into(), path: "/crm/orders/1".into(), params: vec![] },
            client: None,
            replay_of: None,
            headers: vec![("authorization".into(), "pii:0123456789abcdef".into())],
            body: Some(Body::Json(Arc::new(serde_json::json!({"Name": "苏州精密机械有限公司"})))),
            validation: Validation { ok: true, ..Validation::default() },
            chosen: vec![0],
            outputs: vec![Output { index: 0, system: "erp".into(), body: Body::Json(Arc::new(serde_json::json!({}))) }],
            attempts: vec![],
            outcome: Outcome { result: Verdict::Delivered, kind: None, detail: None, status: Some(200), fate: None },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        // A reader of a later version meets a line with only the required fields.
        let minimal = r#"{"v":1,"id":"x","route":"r","config":"c","received_at":"t","duration_ms":1,
            "source":{"kind":"amqp","queue":"q","attempt":1},"validation":{"ok":true},
            "outcome":{"result":"rejected"},"unknown_later_field":true}"#;
        let m: Record = serde_json::from_str(minimal).unwrap();
        assert_eq!(m.outcome.result, Verdict::Rejected);
    }

    #[test]
    fn a_raw_body_is_written_as_its_bytes_on_one_line_and_reads_back_as_json() {
        let pretty = Bytes::from_static(b"{\r\n  \"FBillNo\": \"XSDD000123\",\n  \"FQty\": [1, 2.50]\n}");
        let line = serde_json::to_string(&Body::Raw(RawJson::new(&pretty))).unwrap();
        assert_eq!(line, r#"{"json":{    "FBillNo": "XSDD000123",   "FQty": [1, 2.50] }}"#);
        let back: Body = serde_json::from_str(&line).unwrap();
        assert_eq!(back, Body::Json(Arc::new(serde_json::json!({"FBillNo": "XSDD000123", "FQty": [1, 2.50]}))));
        assert!(RawJson::checked(&Bytes::from_static(b"{\"a\":")).is_none());
        assert!(RawJson::checked(&Bytes::from_static(b"not json")).is_none());
        assert_eq!(RawJson::checked(&Bytes::from_static(b"[1]")), Some(RawJson(Bytes::from_static(b"[1]"))));
    }
}
