//! The one driver: a received message and a route in, every phase's outcome out.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::HeaderValue;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use qiao_connectors::amqp::AmqpPublish;
use qiao_connectors::http::{HttpReply, HttpRequest};
use qiao_connectors::{Message, MessageId};
use serde_json::Value;

use super::{Outgoing, amqp_message, delivery_failure, dispatch, http_request, map, parse, phase, validate, vars};
use crate::config::{Destination, Route, Via};
use crate::error::{ErrorKind, Failure};
use crate::runtime::Runtime;
use crate::telemetry::{metrics, trace};

/// A message as an ingress received it, with what only that ingress knows.
#[derive(Clone, Copy, Debug)]
pub struct Inbound<'a> {
    pub message: &'a Message,
    /// Path parameters of an HTTP route, percent-encoded as in the URL.
    pub params: &'a [(String, String)],
    /// Destinations (by index) that already took the message: a retry skips them.
    pub done: &'a [usize],
    /// The body is a journal record's (`qiao replay`): its PII values are the journal's
    /// tokens, which the schema's rules for those fields (a pattern, a format, a type) were
    /// met by the clear values when the message came in, and cannot be met by a token.
    pub pii_tokens: bool,
}

/// What is sent to one destination, rendered and ready.
#[derive(Clone, Debug)]
pub enum Outbound {
    Http(HttpRequest),
    Amqp {
        /// `None`: the system's exchange.
        exchange: Option<String>,
        routing_key: String,
        headers: Vec<(String, String)>,
        body: Bytes,
        message_id: MessageId,
    },
}

impl Outbound {
    pub fn body(&self) -> &Bytes {
        match self {
            Outbound::Http(r) => &r.body,
            Outbound::Amqp { body, .. } => body,
        }
    }

    fn add_header(&mut self, name: String, value: String) {
        match self {
            Outbound::Http(r) => {
                if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                    r.headers.insert(n, v);
                }
            }
            Outbound::Amqp { headers, .. } => headers.push((name, value)),
        }
    }
}

/// One destination's delivery: what was sent, and what came of it.
#[derive(Debug)]
pub struct Attempt {
    /// The destination's index in the route.
    pub index: usize,
    pub request: Outbound,
    /// From the start of the delivery to its answer (the client's own retries included).
    pub latency: std::time::Duration,
    /// `Err` when the destination did not take the message at all (no answer, broker down);
    /// an HTTP answer of any status is `Ok`, with [`Delivered::failure`] telling whether
    /// the receiver took the message.
    pub result: Result<Delivered, Failure>,
}

/// What one destination made of the message.
#[derive(Debug)]
pub struct Delivered {
    pub system: String,
    /// The receiver's answer (HTTP); `None` for a confirmed AMQP publish or a captured
    /// delivery.
    pub reply: Option<HttpReply>,
    /// Set when the answer's status or body says the delivery failed.
    pub failure: Option<Failure>,
}

/// Every phase's outcome for one message.
#[derive(Debug, Default)]
pub struct Run {
    /// The body as parsed, when it parsed.
    pub parsed: Option<Arc<Value>>,
    /// Which destinations the message goes to (their `when`), once selected.
    pub chosen: Vec<bool>,
    /// Each chosen destination's mapped body.
    pub outgoing: Vec<Option<Outgoing>>,
    /// Why the message went to no one: refused before any delivery (parse, validate,
    /// select, map, render).
    pub refused: Option<Failure>,
    /// One per destination that was sent the message, in the route's order.
    pub attempts: Vec<Attempt>,
}

impl Run {
    fn refuse(mut self, f: Failure) -> Run {
        self.refused = Some(f);
        self
    }

    /// The failure of each attempt that did not succeed, with the destination's index.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &Failure)> {
        self.attempts.iter().filter_map(|a| match &a.result {
            Ok(d) => d.failure.as_ref().map(|f| (a.index, f)),
            Err(f) => Some((a.index, f)),
        })
    }
}

/// The seam deliveries go through. The driver renders each request, starts its span and
/// injects its trace context, counts it and reads the answer; the seam only moves it.
pub trait Deliver: Sync {
    /// Sends `request` to `dest`. `Ok(Some)` is the receiver's answer, whatever its status;
    /// `Ok(None)` a delivery with no answer to read (a confirmed publish, a capture).
    fn send(
        &self,
        dest: &Destination,
        request: &Outbound,
    ) -> impl Future<Output = Result<Option<HttpReply>, Failure>> + Send;
}

/// Sends through the runtime's clients and brokers, each delivery in its turn under the
/// destination system's outbound rate limit.
#[derive(Clone, Copy, Debug)]
pub struct Live<'a> {
    pub runtime: &'a Runtime,
    /// How a delivery waits for its turn under the system's outbound limit.
    pub turn: Turn,
}

/// How a delivery waits when the receiving system's outbound limit has no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// In a bounded queue for a bounded time, then 503 `destination-busy`: a sender waits
    /// for the answer.
    Bounded,
    /// As long as it takes: the message came from a queue, and the messages behind it wait
    /// in the broker. Never refused for this.
    Patient,
}

impl Deliver for Live<'_> {
    async fn send(&self, dest: &Destination, request: &Outbound) -> Result<Option<HttpReply>, Failure> {
        let system = &dest.system;
        let links = self.runtime.links(system);
        if let Some(limit) = &links.limit {
            take_turn(limit, &system.name, self.turn).await?;
        }
        match request {
            Outbound::Http(r) => {
                let sink = links.http.as_ref().ok_or_else(|| no_transport(&system.name, "HTTP"))?;
                sink.send(r).await.map(Some).map_err(|e| delivery_failure(&e))
            }
            Outbound::Amqp { exchange, routing_key, headers, body, message_id } => {
                let sink = links.amqp.as_ref().ok_or_else(|| no_transport(&system.name, "AMQP"))?;
                let headers = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                sink.send(AmqpPublish {
                    routing_key,
                    exchange: exchange.as_deref(),
                    body,
                    message_id,
                    headers,
                    timeout: dest.timeout,
                })
                .await
                .map(|()| None)
                .map_err(|e| {
                    let mut f = delivery_failure(&e);
                    f.routing_key = Some(routing_key.clone());
                    f
                })
            }
        }
    }
}

/// Waits for the delivery's turn under `system`'s outbound limit.
async fn take_turn(limit: &crate::limits::OutboundLimiter, system: &str, turn: Turn) -> Result<(), Failure> {
    let m = metrics::get();
    match turn {
        Turn::Patient => {
            limit.wait().await;
            Ok(())
        }
        Turn::Bounded => match limit.admit().await {
            Ok(()) => Ok(()),
            Err(busy) => {
                m.destination_busy.with_label_values(&[system]).inc();
                let retry = crate::error::whole_seconds(busy.retry_after());
                let why = match busy {
                    crate::limits::Busy::QueueFull { .. } => {
                        format!("{} deliveries already wait for their turn", limit.settings.queue)
                    }
                    crate::limits::Busy::TooLong { .. } => {
                        format!(
                            "its turn would come after the {} ms a delivery may wait",
                            limit.settings.max_wait.as_millis()
                        )
                    }
                    crate::limits::Busy::Unavailable { .. } => {
                        "its shared rate limit cannot reach Redis and refuses then".to_string()
                    }
                };
                Err(Failure::new(
                    ErrorKind::DestinationBusy,
                    format!(
                        "{system} takes at most {} messages a second: {why}; retry in {retry} s",
                        limit.settings.rate.per_second
                    ),
                )
                .at_system(system)
                .with_retry_after(std::time::Duration::from_secs(retry)))
            }
        },
    }
}

fn no_transport(system: &str, transport: &str) -> Failure {
    Failure::new(ErrorKind::Internal, format!("system {system} has no {transport} transport")).at_system(system)
}

/// Sends nothing: every request stays in the [`Run`], every destination counts as having
/// taken the message. `qiao test`, `qiao map` and replay run on it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capture;

impl Deliver for Capture {
    async fn send(&self, _dest: &Destination, _request: &Outbound) -> Result<Option<HttpReply>, Failure> {
        Ok(None)
    }
}

/// Runs `route`'s phases on a message: parse, validate, select the destinations, map and
/// render every one of them (all before anything is sent, so that a message that cannot be
/// mapped reaches no one), then deliver to every destination still owed the message, all
/// at once. Phases run in child spans of `cx`.
pub async fn drive<D: Deliver>(route: &Route, inbound: Inbound<'_>, seam: &D, cx: &opentelemetry::Context) -> Run {
    let mut run = Run::default();
    let message = inbound.message;
    let value = match phase("parse", route, cx, || parse(&message.body)) {
        Ok(v) => Arc::new(v),
        Err(f) => return run.refuse(f),
    };
    run.parsed = Some(value.clone());
    let validated =
        || if inbound.pii_tokens { super::validate_recorded(route, &value) } else { validate(route, &value) };
    if let Err(f) = phase("validate", route, cx, validated) {
        return run.refuse(f);
    }
    let vars = vars(route, message, inbound.params, false);
    run.chosen = match dispatch(route, &value, &vars, cx) {
        Ok(c) => c,
        Err(f) => return run.refuse(f),
    };
    run.outgoing = match phase("map", route, cx, || map(route, &run.chosen, &value, &message.body, &vars)) {
        Ok(o) => o,
        Err(f) => return run.refuse(f),
    };
    // Destination paths take path parameters as they came in the URL: still encoded.
    let dest_vars = if route.uses.params { super::vars(route, message, inbound.params, true) } else { vars };
    let mut requests = Vec::with_capacity(route.destinations.len());
    for (index, (dest, out)) in route.destinations.iter().zip(&run.outgoing).enumerate() {
        let Some(out) = out else { continue };
        if inbound.done.contains(&index) {
            continue;
        }
        match render(route, dest, message, out, &dest_vars) {
            Ok(r) => requests.push((index, r)),
            Err(f) => return run.refuse(f),
        }
    }
    let one = |(index, request): (usize, Outbound)| {
        let dest = &route.destinations[index];
        async move {
            let (request, result, latency) = deliver(route, dest, message, request, seam, cx).await;
            Attempt { index, request, latency, result }
        }
    };
    run.attempts = if requests.len() == 1 {
        // Most routes have one destination: awaited in place, not boxed by join_all.
        vec![one(requests.pop().expect("one request")).await]
    } else {
        join_all(requests.into_iter().map(one)).await
    };
    run
}

/// The request for one destination, rendered from its templates and the mapped body.
fn render(
    route: &Route,
    dest: &Destination,
    message: &Message,
    out: &Outgoing,
    dest_vars: &Value,
) -> Result<Outbound, Failure> {
    Ok(match &dest.via {
        Via::Http { method, path } => {
            Outbound::Http(http_request(dest, method.as_ref(), path.as_ref(), message, out, dest_vars)?)
        }
        Via::Amqp { exchange, routing_key } => {
            let (routing_key, headers) = amqp_message(route, dest, routing_key, out, dest_vars)?;
            Outbound::Amqp {
                exchange: exchange.clone(),
                routing_key,
                headers,
                body: out.bytes.clone(),
                message_id: message.id.clone(),
            }
        }
    })
}

/// One delivery in a span of its own (CLIENT for HTTP, PRODUCER for AMQP) whose context
/// goes to the receiver in the request or message headers; counted, and its answer read
/// against the status and the system's success rule.
async fn deliver<D: Deliver>(
    route: &Route,
    dest: &Destination,
    message: &Message,
    mut request: Outbound,
    seam: &D,
    parent: &opentelemetry::Context,
) -> (Outbound, Result<Delivered, Failure>, std::time::Duration) {
    let started = Instant::now();
    let system = &dest.system;
    let cx = start_span(route, dest, message, &request, parent);
    for (k, v) in trace::inject(&cx) {
        request.add_header(k, v);
    }
    let result = match seam.send(dest, &request).await {
        Ok(reply) => {
            let failure = reply.as_ref().and_then(|r| judge(dest, r));
            if let Some(r) = &reply {
                cx.span().set_attribute(KeyValue::new("http.response.status_code", i64::from(r.status.as_u16())));
            }
            Ok(Delivered { system: system.name.clone(), reply, failure })
        }
        Err(f) => Err(f),
    };

    let m = metrics::get();
    let failure = match &result {
        Ok(d) => d.failure.as_ref(),
        Err(f) => Some(f),
    };
    let attempts = match &result {
        Ok(Delivered { reply: Some(r), .. }) => r.attempts,
        _ => failure.and_then(|f| f.attempts).unwrap_or(1),
    };
    m.deliveries.with_label_values(&[&*route.name, &system.name, failure.map_or("ok", |f| f.kind.slug())]).inc();
    if attempts > 1 {
        m.retries.with_label_values(&[&*route.name, &system.name]).inc_by(u64::from(attempts - 1));
        cx.span().set_attribute(KeyValue::new("http.request.resend_count", i64::from(attempts - 1)));
    }
    let phase = if matches!(dest.via, Via::Amqp { .. }) { "publish" } else { "deliver" };
    let latency = started.elapsed();
    m.phase_seconds.with_label_values(&[&*route.name, phase]).observe(latency.as_secs_f64());
    trace::end(&cx, failure.map(|f| (f.kind.slug(), f.detail.as_str())));
    (request, result, latency)
}

/// Whether the receiver took the message, by its answer: the status, then for a `2xx` the
/// system's success rule over the body.
fn judge(dest: &Destination, reply: &HttpReply) -> Option<Failure> {
    let system = &dest.system;
    let status = reply.status.as_u16();
    let failure = match status {
        200..=299 => {
            let msg = system.success.as_ref()?.failure_in(&reply.body)?;
            Failure::new(ErrorKind::ReceiverBusinessError, format!("{}: {msg}", system.name))
        }
        408 | 429 | 500..=599 => Failure::new(ErrorKind::ReceiverFailed, format!("{} answered {status}", system.name)),
        _ => Failure::new(ErrorKind::ReceiverRejected, format!("{} answered {status}", system.name)),
    };
    let mut f = failure.at_system(system.name.clone()).with_attempts(reply.attempts);
    f.receiver_status = Some(status);
    Some(f)
}

fn start_span(
    route: &Route,
    dest: &Destination,
    message: &Message,
    request: &Outbound,
    parent: &opentelemetry::Context,
) -> opentelemetry::Context {
    let system = &dest.system;
    let common = || {
        [
            KeyValue::new("qiao.route", route.name.clone()),
            KeyValue::new("qiao.system", system.name.clone()),
            KeyValue::new("messaging.message.id", message.id.to_string()),
        ]
    };
    match request {
        Outbound::Http(r) => trace::start(SpanKind::Client, parent, "http", || {
            let url = system.http.as_ref().map(|h| h.url_for(&r.path)).unwrap_or_else(|| r.path.clone());
            let mut attrs = vec![
                KeyValue::new("http.request.method", r.method.to_string()),
                KeyValue::new("url.full", url.clone()),
            ];
            if let Ok(u) = url::Url::parse(&url) {
                attrs.push(KeyValue::new("server.address", u.host_str().unwrap_or_default().to_string()));
                attrs.push(KeyValue::new("server.port", i64::from(u.port_or_known_default().unwrap_or(80))));
            }
            attrs.extend(common());
            (r.method.to_string().into(), attrs)
        }),
        Outbound::Amqp { exchange, routing_key, body, .. } => {
            trace::start(SpanKind::Producer, parent, "publish", || {
                let exchange =
                    exchange.clone().or_else(|| system.amqp.as_ref().map(|a| a.exchange.clone())).unwrap_or_default();
                let mut attrs = vec![
                    KeyValue::new("messaging.system", "rabbitmq"),
                    KeyValue::new("messaging.operation.type", "publish"),
                    KeyValue::new("messaging.operation.name", "publish"),
                    KeyValue::new("messaging.destination.name", exchange.clone()),
                    KeyValue::new("messaging.rabbitmq.destination.routing_key", routing_key.clone()),
                    KeyValue::new("messaging.message.body.size", body.len() as i64),
                ];
                attrs.extend(common());
                (format!("publish {exchange}").into(), attrs)
            })
        }
    }
}
