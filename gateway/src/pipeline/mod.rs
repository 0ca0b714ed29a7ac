//! The phases of one message, as plain functions: parse → validate → vars → select → map →
//! render → deliver, and [`drive`], the one driver that runs them in that order.
//!
//! Every way in calls the driver: the HTTP edge, the AMQP consumer, `qiao test` and
//! `qiao map`. Deliveries go through the [`Deliver`] seam: [`Live`] sends them through the
//! runtime's clients, [`Capture`] keeps them, with no other difference, so what an offline
//! tool shows is what `qiao run` does. Each phase returns a [`Failure`] classified by
//! [`ErrorKind`], so every ingress answers, counts and dead-letters the same way.

mod drive;
mod proxy;

pub use drive::{Attempt, Capture, Deliver, Delivered, Inbound, Live, Outbound, Run, Turn, drive};
pub use proxy::{ProxyTarget, proxy_target};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use qiao_connectors::http::HttpRequest;
use qiao_connectors::{DeliveryError, DeliveryErrorKind, Message};
use serde_json::{Map, Value, json};

use crate::config::{Destination, Route};
use crate::error::{ErrorKind, Failure, Violation};
use crate::mapping::{Mapping, Scope, Template};

/// Is this `Content-Type` JSON? `application/json`, `application/*+json`, `text/json`,
/// with any parameters (`; charset=utf-8`).
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parse: the body as JSON, without duplicate keys ([`crate::json`] says why).
pub fn parse(body: &[u8]) -> Result<Value, Failure> {
    crate::json::from_slice(body).map_err(|e| {
        let detail = if body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty; send a JSON document".to_string()
        } else {
            // serde_json's message ends with the same position: say it once.
            let message = e.to_string();
            let message =
                message.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&message);
            format!("invalid JSON at line {} column {}: {message}", e.line(), e.column())
        };
        let mut f = Failure::new(ErrorKind::MalformedJson, detail);
        f.position = Some((e.line(), e.column()));
        f.caused_by(e)
    })
}

/// Runs one phase in a child span of `parent`, with its latency recorded.
pub fn phase<T>(
    name: &'static str,
    route: &Route,
    parent: &opentelemetry::Context,
    f: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let p = crate::telemetry::trace::Phase::start(name, &route.name, parent);
    let r = f();
    p.finish(r.as_ref().err().map(|e| (e.kind.slug(), e.detail.as_str())));
    r
}

/// Validate: against the route's schema, listing every violation.
pub fn validate(route: &Route, body: &Value) -> Result<(), Failure> {
    let Some(schema) = &route.schema else { return Ok(()) };
    schema.check(body).map_err(|violations| {
        crate::telemetry::metrics::get().validation_failures.with_label_values(&[&*route.name]).inc();
        let mut f = Failure::new(ErrorKind::SchemaViolation, Violation::summary(&violations));
        f.violations = violations;
        route.redactor.apply(&mut f);
        f
    })
}

/// Validate a recorded body (`qiao replay`), whose PII fields hold the journal's tokens:
/// a violation at a field the route's PII rules cover whose value is a token is not the
/// message's fault but the recording's (the clear value met the rule when it came in), and
/// is let through; every other violation counts as in [`validate`].
pub fn validate_recorded(route: &Route, body: &Value) -> Result<(), Failure> {
    let Some(schema) = &route.schema else { return Ok(()) };
    let Err(violations) = schema.check(body) else { return Ok(()) };
    let left: Vec<Violation> = violations
        .into_iter()
        .filter(|v| {
            let token = body.pointer(&v.pointer).and_then(Value::as_str).is_some_and(crate::redact::is_token);
            !(token && route.redactor.covers(&v.pointer))
        })
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    let mut f = Failure::new(ErrorKind::SchemaViolation, Violation::summary(&left));
    f.violations = left;
    route.redactor.apply(&mut f);
    Err(f)
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
                "route": &*route.name,
                "received_at": chrono::DateTime::from_timestamp_millis(received_ms as i64)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            }),
        );
    }
    Value::Object(vars)
}

/// Map with one field map.
fn apply_map(route: &Route, mapping: &Mapping, input: &Value, vars: &Value) -> Result<Value, Failure> {
    mapping.apply(input, vars).map_err(|e| {
        let mut f = Failure::new(ErrorKind::MappingFailed, format!("route {}: {e}", route.name));
        f.target = Some(e.target.clone());
        f.source_path = Some(e.source.clone());
        route.redactor.apply(&mut f);
        f
    })
}

/// What one destination is sent: the mapped body, and its bytes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub value: Arc<Value>,
    pub bytes: Bytes,
}

/// Dispatch: which destinations take the message, by their `when` conditions (read on
/// the validated inbound message). A phase of its own (span and latency) only on routes
/// with conditions; elsewhere every destination does.
pub fn dispatch(route: &Route, input: &Value, vars: &Value, cx: &opentelemetry::Context) -> Result<Vec<bool>, Failure> {
    if route.destinations.iter().all(|d| d.when.is_none()) {
        return Ok(vec![true; route.destinations.len()]);
    }
    phase("dispatch", route, cx, || select(route, input, vars))
}

/// The destinations whose `when` holds. A message that no destination takes is an error,
/// never a silent drop.
pub fn select(route: &Route, input: &Value, vars: &Value) -> Result<Vec<bool>, Failure> {
    let scope = Scope { current: input, document: input, vars };
    let doc = crate::mapping::jq::JqDoc::new(input);
    let mut chosen = Vec::with_capacity(route.destinations.len());
    for dest in &route.destinations {
        chosen.push(match &dest.when {
            None => true,
            Some(c) => c.holds_with(&scope, &doc).map_err(|e| {
                Failure::new(
                    ErrorKind::MappingFailed,
                    format!("the `when` of destination {} failed: {e}", dest.system.name),
                )
                .at_system(dest.system.name.clone())
            })?,
        });
    }
    if !chosen.contains(&true) {
        return Err(Failure::new(
            ErrorKind::NoDestination,
            format!("no destination of route {} takes this message: every `when` condition is false", route.name),
        ));
    }
    Ok(chosen)
}

/// Map: the body for every chosen destination (`None` for the others), all before
/// anything is delivered, so that a message that cannot be mapped reaches no one. The
/// route's map serves every destination without a map of its own, and is run once. A
/// destination with a `schema` gets its body checked against it here.
///
/// Where no map applies, the destination gets `raw`, the inbound bytes `input` was parsed
/// from, unchanged: no copy of the tree, no second serialization, and the receiver sees
/// the very bytes that were validated ([`parse`] refuses duplicate keys, so both agree).
pub fn map(
    route: &Route,
    chosen: &[bool],
    input: &Arc<Value>,
    raw: &Bytes,
    vars: &Value,
) -> Result<Vec<Option<Outgoing>>, Failure> {
    let serialize = |v: Value| -> Result<Outgoing, Failure> {
        // Sized like the inbound body, which a mapped message rarely differs much from:
        // growing from serde_json's 128 bytes would copy a 1 KB body three times.
        let mut bytes = Vec::with_capacity(raw.len().clamp(128, 64 * 1024));
        serde_json::to_writer(&mut bytes, &v).map_err(|e| Failure::new(ErrorKind::Internal, e.to_string()))?;
        Ok(Outgoing { value: Arc::new(v), bytes: Bytes::from(bytes) })
    };
    let mut shared: Option<Outgoing> = None;
    let mut out = Vec::with_capacity(route.destinations.len());
    for (dest, chosen) in route.destinations.iter().zip(chosen) {
        if !chosen {
            out.push(None);
            continue;
        }
        let body = match &dest.mapping {
            Some(own) => serialize(apply_map(route, own, input, vars)?)?,
            None => {
                if shared.is_none() {
                    shared = Some(match &route.mapping {
                        Some(m) => serialize(apply_map(route, m, input, vars)?)?,
                        None => Outgoing { value: input.clone(), bytes: raw.clone() },
                    });
                }
                shared.clone().expect("set above")
            }
        };
        if let Some(schema) = &dest.schema
            && let Err(violations) = schema.check(&body.value)
        {
            let mut f = Failure::new(
                ErrorKind::OutputSchemaViolation,
                format!(
                    "route {}: the map produced a message that {}'s schema ({}) refuses, {}",
                    route.name,
                    dest.system.name,
                    schema.file.display(),
                    Violation::summary(&violations)
                ),
            )
            .at_system(dest.system.name.clone());
            f.violations = violations;
            return Err(f);
        }
        out.push(Some(body));
    }
    Ok(out)
}

fn render(t: &Template, scope: &Scope<'_>, what: &str, system: &str) -> Result<String, Failure> {
    let rendered = if what == "path" { t.render_uri(scope) } else { t.render(scope) };
    rendered.map_err(|e| {
        Failure::new(ErrorKind::MappingFailed, format!("destination {what} needs `{}`: {}", e.path, e.reason))
            .at_system(system)
    })
}

/// A rendered destination path (with its query), checked to be one a request can carry
/// exactly, and to stay where its template points. Its values come from the sender
/// (headers, body, path), so a path that fails is the message's fault, never a 500:
/// `mapping-failed`, nothing sent.
fn checked_path(path: String, template: &Template, system: &str) -> Result<String, Failure> {
    match crate::routing::path_problem(&path) {
        None => Ok(path),
        Some(problem) => {
            Err(Failure::new(ErrorKind::MappingFailed, problem.for_rendered(&template.text)).at_system(system))
        }
    }
}

/// A destination path: a literal one was checked when the config was loaded
/// ([`crate::routing::path_problem`]), so only one with placeholders is checked per message.
pub fn destination_path(
    template: &Template,
    render: impl FnOnce(&Template) -> Result<String, Failure>,
    system: &str,
) -> Result<String, Failure> {
    match template.literal() {
        Some(path) => Ok(path.to_string()),
        None => checked_path(render(template)?, template, system),
    }
}

/// Builds the HTTP request for one destination: method, rendered path and headers, the body.
pub fn http_request(
    dest: &Destination,
    method: Option<&Method>,
    path: Option<&Template>,
    message: &Message,
    out: &Outgoing,
    dest_vars: &Value,
) -> Result<HttpRequest, Failure> {
    let scope = Scope { current: &out.value, document: &out.value, vars: dest_vars };
    let path = match path {
        Some(t) => destination_path(t, |t| render(t, &scope, "path", &dest.system.name), &dest.system.name)?,
        None => String::new(),
    };
    // Room for the trace context added at delivery (`traceparent`, `tracestate`, `baggage`).
    let mut headers = HeaderMap::with_capacity(dest.headers.len() + 4);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, template) in &dest.headers {
        let value = render(template, &scope, "header", &dest.system.name)?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            Failure::new(ErrorKind::MappingFailed, format!("header {name} would not be a valid header value"))
                .at_system(dest.system.name.clone())
        })?;
        headers.insert(name.clone(), value);
    }
    Ok(HttpRequest {
        method: method.cloned().unwrap_or(Method::POST),
        path,
        headers,
        body: out.bytes.clone(),
        message_id: message.id.clone(),
        timeout: dest.timeout,
    })
}

/// The routing key and headers of an AMQP destination's message.
pub fn amqp_message(
    route: &Route,
    dest: &Destination,
    routing_key: &Template,
    out: &Outgoing,
    dest_vars: &Value,
) -> Result<(String, Vec<(String, String)>), Failure> {
    let scope = Scope { current: &out.value, document: &out.value, vars: dest_vars };
    let key = render(routing_key, &scope, "routing_key", &dest.system.name)?;
    let mut headers = vec![(crate::headers::ROUTE.to_string(), route.name.to_string())];
    for (name, template) in &dest.headers {
        headers.push((name.as_str().to_string(), render(template, &scope, "header", &dest.system.name)?));
    }
    Ok((key, headers))
}

/// The one place a transport error becomes an [`ErrorKind`].
pub fn delivery_failure(e: &DeliveryError) -> Failure {
    let kind = match e.kind {
        DeliveryErrorKind::Connect => ErrorKind::ReceiverUnreachable,
        DeliveryErrorKind::Timeout => ErrorKind::ReceiverTimeout,
        DeliveryErrorKind::Io => ErrorKind::ReceiverFailed,
        DeliveryErrorKind::Invalid => ErrorKind::Internal,
        DeliveryErrorKind::BrokerUnavailable | DeliveryErrorKind::ConfirmTimeout | DeliveryErrorKind::Nacked => {
            ErrorKind::BrokerUnavailable
        }
        DeliveryErrorKind::Unroutable => ErrorKind::Unroutable,
        DeliveryErrorKind::CircuitOpen => ErrorKind::CircuitOpen,
    };
    let detail = match e.attempts {
        // Refused before sending (an open circuit): no attempt to count.
        0 => format!("{}: {}", e.system, e.detail),
        1 => format!("{}: {} (after 1 attempt)", e.system, e.detail),
        n => format!("{}: {} (after {n} attempts)", e.system, e.detail),
    };
    // HTTP senders get `retry_after` as `Retry-After`; the AMQP consumer holds its copy
    // this long.
    let mut f = Failure::new(kind, detail).at_system(e.system.clone()).with_attempts(e.attempts);
    f.retry_after = e.retry_after;
    f
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
        assert_eq!(f.detail.matches("line 3").count(), 1, "the position is said once: {}", f.detail);
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
        let cases = cases.into_iter().chain([
            (DeliveryErrorKind::BrokerUnavailable, ErrorKind::BrokerUnavailable, 503),
            (DeliveryErrorKind::ConfirmTimeout, ErrorKind::BrokerUnavailable, 503),
            (DeliveryErrorKind::Nacked, ErrorKind::BrokerUnavailable, 503),
            (DeliveryErrorKind::Unroutable, ErrorKind::Unroutable, 502),
        ]);
        for (dk, kind, status) in cases {
            let f = delivery_failure(&DeliveryError::new(dk, "erp", "x"));
            assert_eq!((f.kind, f.kind.status()), (kind, status));
        }
    }
}
