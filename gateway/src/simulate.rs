//! Running a route in process without sending anything: the one driver that the edge and
//! the AMQP consumer run ([`pipeline::drive`]), on the [`Capture`] seam, so every delivery is
//! kept instead of sent. `qiao test` and `qiao map` are built on it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::FutureExt;
use indexmap::IndexMap;
use qiao_connectors::{Message, MessageId, TraceContext};
use serde_json::{Value, json};

use crate::config::{Route, RouteKind, Source};
use crate::error::{ErrorKind, Failure};
use crate::pipeline::{self, Capture, Inbound, Outbound};

/// The inbound message of a simulation.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub body: Bytes,
    /// HTTP method and path (with query) as sent; proxy routes need the path.
    pub method: Option<String>,
    pub path: Option<String>,
    /// Path parameters (HTTP routes), as they would appear in the URL.
    pub params: IndexMap<String, String>,
    pub headers: IndexMap<String, String>,
    pub message_id: Option<String>,
}

/// What one destination would have been sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Captured {
    /// The destination's index in the route's `to`.
    pub index: usize,
    pub system: String,
    pub transport: &'static str,
    /// HTTP: the method; AMQP: `PUBLISH`.
    pub method: String,
    /// HTTP: the path and query on the system; AMQP: the exchange.
    pub path: String,
    pub routing_key: Option<String>,
    pub headers: IndexMap<String, String>,
    pub body: Value,
    /// The body's bytes, exactly as they would be sent.
    pub bytes: Bytes,
}

impl Captured {
    pub fn to_json(&self) -> Value {
        let mut v = json!({"system": self.system, "transport": self.transport, "method": self.method});
        if self.transport == "http" {
            v["path"] = Value::String(self.path.clone());
        } else {
            v["exchange"] = Value::String(self.path.clone());
            v["routing_key"] = self.routing_key.clone().map(Value::String).unwrap_or_default();
        }
        v["headers"] = serde_json::to_value(&self.headers).unwrap_or_default();
        v["body"] = self.body.clone();
        v
    }
}

/// Where a proxy route would send the request: its body goes unread and unchanged.
fn proxy(
    route: &Route,
    input: &Input,
    message: &Message,
    params: &[(String, String)],
) -> Result<Vec<Captured>, Failure> {
    let inbound = input.path.as_deref().ok_or_else(|| {
        Failure::new(ErrorKind::BadRequest, format!("route {} is a proxy route: give the inbound `path`", route.name))
    })?;
    let (inbound_path, query) = inbound.split_once('?').map_or((inbound, None), |(p, q)| (p, Some(q)));
    let target = pipeline::proxy_target(route, message, params, inbound_path, query)?;
    let mut headers: IndexMap<String, String> = target
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    headers.insert(crate::headers::MESSAGE_ID.to_string(), message.id.to_string());
    let body = serde_json::from_slice(&input.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&input.body).into_owned()));
    Ok(vec![Captured {
        index: 0,
        system: route.destinations[0].system.name.clone(),
        transport: "http",
        method: target.method.map(|m| m.to_string()).or(input.method.clone()).unwrap_or_else(|| "POST".into()),
        path: target.path_and_query,
        routing_key: None,
        headers,
        body,
        bytes: input.body.clone(),
    }])
}

/// A fixed receipt time, so that `$meta.received_at` is the same in every run:
/// 2025-01-01T00:00:00Z.
pub fn fixed_received_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

/// Runs `route` on `input`. `Err` is what the sender would get (or what would be
/// dead-lettered); `Ok` lists what every chosen destination would receive.
pub fn run(route: &Route, input: &Input) -> Result<Vec<Captured>, Failure> {
    let message = Message {
        id: MessageId::from_sender(input.message_id.as_deref().unwrap_or("simulated-message-id")),
        headers: input.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
        // As the HTTP and AMQP ingresses do: a byte order mark is not part of the JSON.
        body: crate::json::strip_bom(input.body.clone()),
        trace: TraceContext::default(),
        received_at: fixed_received_at(),
    };
    let params: Vec<(String, String)> = match &route.source {
        Source::Http { .. } => input.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Source::Amqp(_) => Vec::new(),
    };
    if route.kind == RouteKind::Proxy {
        return proxy(route, input, &message, &params);
    }
    let inbound = Inbound { message: &message, params: &params, done: &[], pii_tokens: false };
    let run = pipeline::drive(route, inbound, &Capture, &opentelemetry::Context::new())
        .now_or_never()
        .expect("a captured run never waits");
    if let Some(f) = run.refused {
        return Err(f);
    }
    let mut out = Vec::with_capacity(run.attempts.len());
    for attempt in run.attempts {
        let dest = &route.destinations[attempt.index];
        let value = run.outgoing[attempt.index].as_ref().map(|o| (*o.value).clone()).unwrap_or_default();
        out.push(match attempt.request {
            Outbound::Http(req) => {
                let mut headers: IndexMap<String, String> = IndexMap::new();
                for (name, value) in &req.headers {
                    headers.insert(name.as_str().to_string(), value.to_str().unwrap_or_default().to_string());
                }
                // The HTTP transport adds it to every request.
                headers.insert(crate::headers::MESSAGE_ID.to_string(), message.id.to_string());
                Captured {
                    index: attempt.index,
                    system: dest.system.name.clone(),
                    transport: "http",
                    method: req.method.to_string(),
                    path: req.path,
                    routing_key: None,
                    headers,
                    body: value,
                    bytes: req.body,
                }
            }
            Outbound::Amqp { exchange, routing_key, headers, body, .. } => Captured {
                index: attempt.index,
                system: dest.system.name.clone(),
                transport: "amqp",
                method: "PUBLISH".into(),
                path: exchange.or_else(|| dest.system.amqp.as_ref().map(|a| a.exchange.clone())).unwrap_or_default(),
                routing_key: Some(routing_key),
                headers: headers.into_iter().collect(),
                body: value,
                bytes: body,
            },
        });
    }
    Ok(out)
}
