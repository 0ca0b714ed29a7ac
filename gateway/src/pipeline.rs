//! The phases of one message, as plain functions: parse → validate → map → deliver.
//!
//! Ingresses (the HTTP edge today, the AMQP consumer next) call these in order; each phase
//! returns a [`Failure`] classified by [`ErrorKind`], so every ingress answers, counts and
//! dead-letters the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use qiao_connectors::http::{HttpReply, HttpRequest};
use qiao_connectors::{DeliveryError, DeliveryErrorKind, Message};
use serde_json::{Map, Value, json};

use crate::config::{Destination, Route};
use crate::error::{ErrorKind, Failure};
use crate::mapping::Scope;

/// Is this `Content-Type` JSON? `application/json`, `application/*+json`, `text/json`,
/// with any parameters (`; charset=utf-8`).
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parse: the body as JSON.
pub fn parse(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        let detail = if body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty; send a JSON document".to_string()
        } else {
            format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())
        };
        Failure::new(ErrorKind::MalformedJson, detail).with("line", e.line()).with("column", e.column())
    })
}

/// Validate: against the route's schema, listing every violation.
pub fn validate(route: &Route, body: &Value) -> Result<(), Failure> {
    let Some(schema) = &route.schema else { return Ok(()) };
    schema.check(body).map_err(|violations| {
        let first = violations.first().map(|v| format!(": {} {}", v.pointer, v.message)).unwrap_or_default();
        let detail = if violations.len() == 1 {
            format!("1 violation{first}")
        } else {
            format!("{} violations, the first{first}", violations.len())
        };
        let mut f = Failure::new(ErrorKind::SchemaViolation, detail);
        f.violations = violations;
        f
    })
}

/// The `$params`, `$headers` and `$meta` a mapping or a template may read, built only
/// when the route reads them. `raw_params` keeps path parameters percent-encoded, as a
/// destination path needs them.
pub fn vars(route: &Route, message: &Message, params: &[(String, String)], raw_params: bool) -> Value {
    if !route.uses.any() {
        return Value::Null;
    }
    let mut vars = Map::new();
    if route.uses.params {
        let p: Map<String, Value> = params
            .iter()
            .map(|(k, v)| {
                let v = if raw_params {
                    v.clone()
                } else {
                    percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()
                };
                (k.clone(), Value::String(v))
            })
            .collect();
        vars.insert("params".into(), Value::Object(p));
    }
    if route.uses.headers {
        let h: Map<String, Value> =
            message.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        vars.insert("headers".into(), Value::Object(h));
    }
    if route.uses.meta {
        let received_ms = message.received_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        vars.insert(
            "meta".into(),
            json!({
                "message_id": message.id.as_str(),
                "route": &*message.route,
                "received_at": chrono::DateTime::from_timestamp_millis(received_ms as i64)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            }),
        );
    }
    Value::Object(vars)
}

/// Map: to the receiver's shape. A route without a map forwards the body unchanged.
pub fn map(route: &Route, body: Value, vars: &Value) -> Result<Value, Failure> {
    let Some(mapping) = &route.mapping else { return Ok(body) };
    mapping.apply(&body, vars).map_err(|e| {
        Failure::new(ErrorKind::MappingFailed, format!("route {}: {e}", route.name))
            .with("target", e.target.clone())
            .with("source", e.source.clone())
    })
}

/// Builds the request for one destination: method, rendered path and headers, the body.
pub fn outbound(dest: &Destination, message: &Message, body: Bytes, dest_vars: &Value) -> Result<HttpRequest, Failure> {
    let scope = Scope { current: &Value::Null, document: &Value::Null, vars: dest_vars };
    let render_fail = |what: &str, e: crate::mapping::template::RenderError| {
        Failure::new(ErrorKind::MappingFailed, format!("destination {what} needs `{}`: {}", e.path, e.reason))
            .with("system", dest.system.name.clone())
    };
    let path = match &dest.path {
        Some(t) => t.render(&scope).map_err(|e| render_fail("path", e))?,
        None => String::new(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, template) in &dest.headers {
        let value = template.render(&scope).map_err(|e| render_fail("header", e))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Failure::new(ErrorKind::MappingFailed, format!("header {name} would not be a valid header value"))
        })?;
        headers.insert(name.clone(), value);
    }
    Ok(HttpRequest {
        method: dest.method.clone().unwrap_or(Method::POST),
        path,
        headers,
        body,
        message_id: message.id.clone(),
        timeout: dest.timeout,
    })
}

/// What one destination made of the message.
#[derive(Debug)]
pub struct Delivered {
    pub system: String,
    pub reply: HttpReply,
    /// Set when the answer's status or body says the delivery failed.
    pub failure: Option<Failure>,
}

/// Deliver: send to one destination. `Err` when no answer came at all; an answer of any
/// status is `Ok`, with `failure` telling whether the receiver took the message.
pub async fn deliver(dest: &Destination, request: &HttpRequest) -> Result<Delivered, Failure> {
    let system = &dest.system;
    let sink = system
        .http
        .as_ref()
        .ok_or_else(|| Failure::new(ErrorKind::Internal, format!("system {} has no HTTP transport", system.name)))?;
    let reply = sink.send(request).await.map_err(|e| delivery_failure(&e))?;
    let status = reply.status.as_u16();
    let failure = match status {
        200..=299 => serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|body| system.kind.business_failure(&body))
            .map(|msg| Failure::new(ErrorKind::ReceiverBusinessError, format!("{}: {msg}", system.name))),
        408 | 429 | 500..=599 => {
            Some(Failure::new(ErrorKind::ReceiverFailed, format!("{} answered {status}", system.name)))
        }
        _ => Some(Failure::new(ErrorKind::ReceiverRejected, format!("{} answered {status}", system.name))),
    }
    .map(|f| f.with("system", system.name.clone()).with("receiver_status", status).with("attempts", reply.attempts));
    Ok(Delivered { system: system.name.clone(), reply, failure })
}

/// The one place a transport error becomes an [`ErrorKind`].
pub fn delivery_failure(e: &DeliveryError) -> Failure {
    let kind = match e.kind {
        DeliveryErrorKind::Connect => ErrorKind::ReceiverUnreachable,
        DeliveryErrorKind::Timeout => ErrorKind::ReceiverTimeout,
        DeliveryErrorKind::Io => ErrorKind::ReceiverFailed,
        DeliveryErrorKind::Invalid => ErrorKind::Internal,
    };
    Failure::new(
        kind,
        format!("{}: {} (after {} attempt{})", e.system, e.detail, e.attempts, if e.attempts == 1 { "" } else { "s" }),
    )
    .with("system", e.system.clone())
    .with("attempts", e.attempts)
}

/// Milliseconds since the epoch, for logs.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.kingdee+json",
            "text/json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/jsonx"] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let f = parse(b"{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert_eq!(f.kind, ErrorKind::MalformedJson);
        assert!(f.detail.contains("line 3 column 3"), "{}", f.detail);
        assert_eq!(parse(b"  ").unwrap_err().detail, "the body is empty; send a JSON document");
        assert_eq!(parse(br#"{"a":[1,2]}"#).unwrap(), json!({"a": [1, 2]}));
    }

    #[test]
    fn transport_errors_are_classified_once() {
        let cases = [
            (DeliveryErrorKind::Connect, ErrorKind::ReceiverUnreachable, 502),
            (DeliveryErrorKind::Timeout, ErrorKind::ReceiverTimeout, 504),
            (DeliveryErrorKind::Io, ErrorKind::ReceiverFailed, 502),
            (DeliveryErrorKind::Invalid, ErrorKind::Internal, 500),
        ];
        for (dk, kind, status) in cases {
            let f = delivery_failure(&DeliveryError::new(dk, "erp", "x"));
            assert_eq!((f.kind, f.kind.status()), (kind, status));
        }
    }
}
