//! AMQP ingress: a delivery from a route's queue goes through the same phases as an HTTP
//! request, then is acknowledged, sent to a retry queue, or dead-lettered.
//!
//! Nothing is acknowledged before it is safe: the ack comes after every destination took
//! the message, or after the retry or dead-letter copy was confirmed by the broker. When
//! even that publish fails, the delivery is returned to the queue (nack with requeue).
//!
//! Headers Qiao reads and writes (docs/amqp.md lists them with the queue names):
//! - `x-qiao-attempts`: attempts made so far; travels with retry copies, so the count
//!   survives a restart of Qiao.
//! - `x-qiao-delivered`: the destinations of the route that already took the message,
//!   by key (the system's name; `name#2` for its second destination in the same route); a
//!   retry skips them, so a healthy destination gets one copy. Only honoured when
//!   `x-qiao-route` names the consuming route: a message moved to another route's queue
//!   is delivered there in full.

pub mod progress;
mod service;

pub use service::AmqpService;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tracing::Instrument;

use bytes::Bytes;
use qiao_connectors::amqp::{
    BasicAckOptions, BasicNackOptions, Delivery, FieldTable, FieldTableExt, Publish, header_str, string_headers,
};
use qiao_connectors::{Message, MessageId, TraceContext};

use crate::config::{AmqpSource, Route, Source};
use crate::error::{ErrorKind, Failure};
use crate::headers::{
    ATTEMPTS, DELIVERED, ERROR_DETAIL, ERROR_KIND, ERROR_POINTERS, FAILED_AT, LAST_ERROR, LAST_ERROR_KIND,
    ORIGINAL_QUEUE, ORIGINAL_ROUTING_KEY, ROUTE,
};
use crate::pipeline::{self, Inbound, Live, Turn};
use crate::runtime::Runtime;
use crate::telemetry::{access, metrics, trace};

/// How long the broker gets to confirm a retry or dead-letter copy.
const COPY_CONFIRM: Duration = Duration::from_secs(10);

/// How long an ack or a nack may take. Past it the delivery counts as handed back: the
/// broker delivers it again when the channel closes, as it must for an unacked delivery.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Retried,
    DeadLettered,
    /// Returned to the queue: the copy could not be published, or the ack failed.
    Requeued,
}

impl Fate {
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Delivered => "delivered",
            Fate::Retried => "retried",
            Fate::DeadLettered => "dead_lettered",
            Fate::Requeued => "requeued",
        }
    }
}

/// Handles one delivery of `route` to the end: process, then ack / retry / dead-letter.
/// The delivery runs in a CONSUMER span whose parent is the trace context the message
/// carries, so one trace runs from the sender through the broker to the receivers.
pub async fn handle(runtime: Arc<Runtime>, route: Arc<Route>, mut delivery: Delivery) -> Fate {
    let Source::Amqp(src) = &route.source else {
        return Fate::Requeued;
    };
    // A route's rate limit protects its receivers: messages wait in the queue.
    if let Some(limit) = runtime.route_limit(&route) {
        limit.wait().await;
    }
    // A delivery prefetched on a channel that has closed since (the connection was lost) is
    // already back in its queue: delivering it now would make a copy whose ack must fail.
    if !delivery.acker.usable() {
        metrics::get().amqp_messages.with_label_values(&[&*route.name, Fate::Requeued.as_str()]).inc();
        tracing::info!(route = %route.name, queue = %src.queue,
            "not started: its channel closed after it was prefetched; the broker delivers it again");
        return Fate::Requeued;
    }
    let started = Instant::now();
    let headers = delivery.properties.headers().as_ref();
    let attempt = attempt_of(header_str(headers, ATTEMPTS).as_deref());
    let delivered = already_delivered(&route, headers);
    // Retry and dead-letter copies carry the bytes as they came; the pipeline reads them
    // without a byte order mark (json::strip_bom says why).
    let original = Bytes::from(std::mem::take(&mut delivery.data));
    let body = crate::json::strip_bom(original.clone());
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| MessageId::from_sender(s.as_str()))
        .unwrap_or_else(MessageId::generate);
    let parent = trace::extract_amqp(headers);
    let message = Message {
        id,
        headers: if route.uses.headers { string_headers(headers) } else { Vec::new() },
        body,
        trace: TraceContext {
            traceparent: header_str(headers, "traceparent"),
            tracestate: header_str(headers, "tracestate"),
        },
        received_at: SystemTime::now(),
    };
    let cx = trace::start(SpanKind::Consumer, &parent, "process", || {
        let attrs = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", src.queue.clone()),
            KeyValue::new("messaging.rabbitmq.destination.routing_key", delivery.routing_key.to_string()),
            KeyValue::new("messaging.message.id", message.id.to_string()),
            KeyValue::new("messaging.message.body.size", message.body.len() as i64),
            KeyValue::new("qiao.route", route.name.clone()),
            KeyValue::new("qiao.attempt", i64::from(attempt)),
        ];
        (format!("process {}", src.queue).into(), attrs)
    });
    let (trace_id, span_id) = trace::ids(&cx);
    let log_span = tracing::info_span!(
        "message",
        trace_id = %trace_id,
        span_id = %span_id,
        route = &*route.name,
        message_id = message.id.as_str(),
    );
    let m = metrics::get();
    let in_flight = m.amqp_in_flight.with_label_values(&[&*route.name]);
    in_flight.inc();
    let incoming = Incoming { delivery: &delivery, original: &original, message: &message };
    let mut journal = None;
    let (fate, failure) = settle(&runtime, &route, src, &incoming, attempt, delivered, &mut journal, &cx)
        .instrument(log_span.clone())
        .await;
    in_flight.dec();

    let fate_name = fate.as_str();
    if let Some(f) = &failure {
        // The failing destination's system; `-` when the message itself was at fault.
        let system = f.system.as_deref().unwrap_or("-");
        if fate == Fate::DeadLettered {
            m.dead_letters.with_label_values(&[&*route.name, system, f.kind.slug()]).inc();
        }
        if fate == Fate::Retried {
            m.retries.with_label_values(&[&*route.name, system]).inc();
        }
    }
    let failure = failure.as_ref();
    access::finish(
        access::Finished {
            way: access::Way::Amqp { queue: &src.queue, fate: fate_name, attempt },
            route: &route.name,
            message_id: message.id.as_str(),
            failure: access::failure_of(failure),
            span_error: access::failure_of(failure.filter(|_| fate != Fate::Delivered)),
            elapsed: started.elapsed(),
        },
        &cx,
        &log_span,
    );
    if let Some((pending, disk)) = journal {
        let trace_id = trace::ids(&cx).0;
        let end = crate::journal::End {
            source: Some(crate::journal::record::Source::Amqp { queue: src.queue.clone(), attempt }),
            headers: string_headers(delivery.properties.headers().as_ref())
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            trace_id: if trace_id == opentelemetry::trace::TraceId::INVALID {
                String::new()
            } else {
                trace_id.to_string()
            },
            config: &runtime.config.hash,
            status: None,
            fate: Some(fate_name),
            failure: access::failure_of(failure),
            elapsed: started.elapsed(),
            client: None,
        };
        crate::journal::submit(pending, disk, end);
    }
    fate
}

/// One delivery as it came from the broker, and the message made of it.
struct Incoming<'a> {
    delivery: &'a Delivery,
    /// The body as it came, which retry and dead-letter copies carry.
    original: &'a Bytes,
    message: &'a Message,
}

/// A message's record for the journal, when it keeps one (`true`: to disk).
type Journaled = Option<(Box<crate::journal::Pending>, bool)>;

/// Processes the message, then acknowledges it, sends it to a retry queue, or
/// dead-letters it — or returns it to its queue when that cannot be done safely.
#[allow(clippy::too_many_arguments)]
async fn settle(
    runtime: &Runtime,
    route: &Route,
    src: &AmqpSource,
    incoming: &Incoming<'_>,
    attempt: u32,
    mut delivered: Vec<usize>,
    journal: &mut Journaled,
    cx: &opentelemetry::Context,
) -> (Fate, Option<Failure>) {
    let Incoming { delivery, message, .. } = *incoming;
    let result = process(runtime, route, message, &mut delivered, journal, cx).await;
    if result.is_err() && !delivery.acker.usable() {
        // The delivery's channel is gone (the connection dropped while it was processed):
        // the broker already gave the message back to the queue. A retry or dead-letter
        // copy now would make it two messages.
        tracing::warn!("the channel closed while the message was processed; the broker will deliver it again");
        return (Fate::Requeued, result.err());
    }
    let (fate, failure) = match result {
        Ok(()) => (Fate::Delivered, None),
        // No destination was tried: every one that failed had its circuit open. The
        // attempt is not counted, so an outage shorter than the circuit's pause does not
        // use up the message's attempts; the copy waits in the circuit queue for the
        // circuit's next trial (at least the first backoff), so a long outage costs one
        // round trip per message and pause, not one per backoff. Copies for one circuit
        // expire in the order they came (its next trial only moves later), so none waits
        // behind another; copies for the circuits of different receivers of the route can,
        // by at most the difference of their pauses. (A route without retries,
        // `max_attempts: 1`, has no circuit queue and dead-letters it like any failure.)
        Err(f) if f.kind == ErrorKind::CircuitOpen && src.circuit_queue.is_some() => {
            let queue = src.circuit_queue.as_deref().unwrap_or_default();
            let wait = f.retry_after.unwrap_or_default().max(src.policy.initial_backoff);
            match retry(runtime, route, src, incoming, attempt - 1, queue, wait, &delivered, &f).await {
                Ok(wait) => {
                    tracing::info!(
                        attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        "not delivered, the circuit is open; waiting without counting the attempt: {}",
                        f.detail
                    );
                    (Fate::Retried, Some(f))
                }
                Err(e) => return (requeue(route, delivery, message, &e).await, Some(f)),
            }
        }
        Err(f) if f.kind.retryable() && attempt < src.policy.max_attempts => {
            let (queue, wait) = retry_slot(src, attempt);
            match retry(runtime, route, src, incoming, attempt, queue, wait, &delivered, &f).await {
                Ok(wait) => {
                    tracing::warn!(
                        attempt, error_kind = %f.kind, retry_in_ms = wait.as_millis() as u64,
                        "delivery failed; retrying: {}", f.detail
                    );
                    (Fate::Retried, Some(f))
                }
                Err(e) => return (requeue(route, delivery, message, &e).await, Some(f)),
            }
        }
        Err(f) => match dead_letter(runtime, route, src, incoming, attempt, &delivered, &f).await {
            Ok(()) => {
                tracing::warn!(
                    attempt, error_kind = %f.kind, queue = %src.dead_letter_queue, "dead-lettered: {}", f.detail
                );
                (Fate::DeadLettered, Some(f))
            }
            Err(e) => return (requeue(route, delivery, message, &e).await, Some(f)),
        },
    };
    // lapin answers `Ok(false)` when the channel is gone (connection lost) and `Err` when
    // it broke during the ack: either way the broker will deliver the message again, and
    // receivers deduplicate on its id.
    // Bounded, like every wait on the broker: an ack caught in a reconnection may never be
    // answered, and would hold one of the route's concurrency slots for good.
    match tokio::time::timeout(SETTLE_TIMEOUT, delivery.acker.ack(BasicAckOptions::default())).await {
        Ok(Ok(true)) => (fate, failure),
        outcome => {
            let error = match outcome {
                Err(_) => format!("no answer within {} s", SETTLE_TIMEOUT.as_secs()),
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "the channel is closed".to_string(),
            };
            tracing::warn!(%error, "ack failed; the message will be redelivered");
            (Fate::Requeued, failure)
        }
    }
}

/// The phases, skipping the destinations that already took the message. A permanent
/// failure wins over a retryable one: retrying would not help the destination that failed
/// permanently.
async fn process(
    runtime: &Runtime,
    route: &Route,
    message: &Message,
    delivered: &mut Vec<usize>,
    journal: &mut Journaled,
    cx: &opentelemetry::Context,
) -> Result<(), Failure> {
    let inbound = Inbound { message, params: &[], done: delivered.as_slice(), pii_tokens: false };
    let run = pipeline::drive(route, inbound, &Live { runtime, turn: Turn::Patient }, cx).await;
    if let Some(disk) = crate::journal::wants(route)
        && let Some(mut scrub) = crate::journal::scrub()
    {
        *journal = Some((crate::journal::Pending::from_run(route, message, &run, &mut scrub), disk));
    }
    if let Some(f) = run.refused {
        return Err(f);
    }
    let mut worst: Option<&Failure> = None;
    for a in &run.attempts {
        let failure = match &a.result {
            Ok(d) => d.failure.as_ref(),
            Err(f) => Some(f),
        };
        match failure {
            None => delivered.push(a.index),
            Some(f) => {
                // Permanent beats retryable; a destination that was tried beats one whose
                // circuit was open (which `settle` does not count as an attempt).
                let replace = match worst {
                    None => true,
                    Some(w) => {
                        (w.kind.retryable() && !f.kind.retryable())
                            || (w.kind == ErrorKind::CircuitOpen && f.kind != ErrorKind::CircuitOpen)
                    }
                };
                if replace {
                    worst = Some(f);
                }
            }
        }
    }
    worst.cloned().map_or(Ok(()), Err)
}

/// The destinations (by index) that a message's `x-qiao-delivered` says took it already,
/// which this pass skips. Only when `x-qiao-route` names this route: a message moved to
/// another route's queue is delivered there in full. `qiao dlq replay --preview` reads a
/// dead letter's headers through this too, so that it shows what a re-drive would skip.
pub fn already_delivered(route: &Route, headers: Option<&FieldTable>) -> Vec<usize> {
    match header_str(headers, DELIVERED) {
        Some(keys) if header_str(headers, ROUTE).as_deref() == Some(&*route.name) => {
            let keys: Vec<&str> = keys.split(',').map(str::trim).collect();
            (0..route.destinations.len()).filter(|i| keys.contains(&destination_key(route, *i).as_str())).collect()
        }
        _ => Vec::new(),
    }
}

/// A destination's name in `x-qiao-delivered`: its system's name, with `#n` for the n-th
/// destination of the same system in the route. Stable when other destinations are
/// reordered, unlike an index.
pub fn destination_key(route: &Route, index: usize) -> String {
    let system = &route.destinations[index].system.name;
    let nth = route.destinations[..=index].iter().filter(|d| &d.system.name == system).count();
    if nth == 1 { system.clone() } else { format!("{system}#{nth}") }
}

fn delivered_headers(route: &Route, table: &mut FieldTable, delivered: &[usize]) {
    let mut idx: Vec<usize> = delivered.to_vec();
    idx.sort_unstable();
    idx.dedup();
    let keys = idx.iter().map(|i| destination_key(route, *i)).collect::<Vec<_>>().join(",");
    table.put_str(DELIVERED, &keys);
    table.put_str(ROUTE, &route.name);
}

/// The delivery's headers, for a retry or dead-letter copy: with the routing key the
/// message first came with, which `qiao dlq ls` shows (a copy that comes back from a retry
/// queue has the queue's name as its routing key).
fn original_headers(delivery: &Delivery) -> FieldTable {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    if !headers.contains_key(ORIGINAL_ROUTING_KEY) {
        headers.put_str(ORIGINAL_ROUTING_KEY, delivery.routing_key.as_str());
    }
    headers
}

/// The attempt a delivery is, from its `x-qiao-attempts` header (attempts made so far): 1
/// for a new message. A value that is not a count reads as none made.
fn attempt_of(header: Option<&str>) -> u32 {
    header.and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(0).saturating_add(1)
}

/// The retry queue after attempt `attempt`, and that attempt's backoff. Past the last
/// retry queue (a header that says more attempts than the route allows), the last one.
/// Only called when the route has retry queues.
fn retry_slot(src: &AmqpSource, attempt: u32) -> (&str, Duration) {
    let index = (attempt.max(1) as usize - 1).min(src.retry_queues.len().saturating_sub(1));
    (src.retry_queues[index].as_str(), src.policy.backoff(index as u32 + 1))
}

/// Sends a copy to `queue`, a retry or the circuit queue, that expires after `wait`: then the broker puts
/// it back on the route's queue. `counted` is the attempt count the copy carries.
#[allow(clippy::too_many_arguments)]
async fn retry(
    runtime: &Runtime,
    route: &Route,
    src: &AmqpSource,
    incoming: &Incoming<'_>,
    counted: u32,
    queue: &str,
    wait: Duration,
    delivered: &[usize],
    failure: &Failure,
) -> Result<Duration, String> {
    let Incoming { delivery, original, message } = *incoming;
    let mut headers = original_headers(delivery);
    headers.put_int(ATTEMPTS, i64::from(counted));
    delivered_headers(route, &mut headers, delivered);
    headers.put_str(LAST_ERROR_KIND, failure.kind.slug());
    headers.put_str(LAST_ERROR, &failure.detail);
    headers.put_str(ROUTE, &route.name);
    let properties = delivery
        .properties
        .clone()
        .with_message_id(message.id.as_str().into())
        .with_delivery_mode(2)
        .with_expiration(wait.as_millis().max(1).to_string().into())
        .with_headers(headers);
    broker_of(runtime, src)?
        .publish(Publish {
            exchange: "",
            routing_key: queue,
            body: original,
            properties,
            mandatory: true,
            timeout: COPY_CONFIRM,
            system: &src.system.name,
        })
        .await
        .map_err(|e| format!("publishing the retry copy to {queue}: {e}"))?;
    Ok(wait)
}

/// Sends the message to the route's dead-letter queue, with headers that say why.
async fn dead_letter(
    runtime: &Runtime,
    route: &Route,
    src: &AmqpSource,
    incoming: &Incoming<'_>,
    attempt: u32,
    delivered: &[usize],
    failure: &Failure,
) -> Result<(), String> {
    let Incoming { delivery, original, message } = *incoming;
    let mut headers = original_headers(delivery);
    headers.put_str(ERROR_KIND, failure.kind.slug());
    headers.put_str(ERROR_DETAIL, &failure.detail);
    headers.put_str(ROUTE, &route.name);
    headers.put_str(FAILED_AT, &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    headers.put_str(ORIGINAL_QUEUE, &src.queue);
    headers.put_int(ATTEMPTS, attempt as i64);
    delivered_headers(route, &mut headers, delivered);
    if !failure.violations.is_empty() {
        let pointers = failure.violations.iter().map(|v| v.pointer.as_str()).collect::<Vec<_>>().join(",");
        headers.put_str(ERROR_POINTERS, &pointers);
    }
    // The copy must not expire or be dead-lettered again by the broker.
    let mut properties = delivery.properties.clone().with_message_id(message.id.as_str().into()).with_delivery_mode(2);
    properties = properties.with_headers(headers);
    let properties = strip_expiration(properties);
    broker_of(runtime, src)?
        .publish(Publish {
            exchange: "",
            routing_key: &src.dead_letter_queue,
            body: original,
            properties,
            mandatory: true,
            timeout: COPY_CONFIRM,
            system: &src.system.name,
        })
        .await
        .map_err(|e| format!("publishing to the dead-letter queue {}: {e}", src.dead_letter_queue))
}

fn broker_of<'a>(runtime: &'a Runtime, src: &AmqpSource) -> Result<&'a qiao_connectors::amqp::Broker, String> {
    runtime.broker(&src.broker).ok_or_else(|| "the route's broker is not in the running configuration".to_string())
}

/// A copy of `p` without `expiration` (retry copies, re-driven dead letters). `user_id` is
/// not copied: the broker refuses a publish whose `user_id` is not the publishing user.
pub fn strip_expiration(p: qiao_connectors::amqp::BasicProperties) -> qiao_connectors::amqp::BasicProperties {
    // BasicProperties has no way to unset one field; rebuild without `expiration`.
    let mut out = qiao_connectors::amqp::BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

/// The copy could not be published: give the message back to the queue rather than lose
/// it, after a pause so that a broker in trouble is not hammered.
async fn requeue(route: &Route, delivery: &Delivery, message: &Message, why: &str) -> Fate {
    tracing::warn!(route = %route.name, message_id = %message.id, reason = why, "returning the message to its queue");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A nack that cannot be sent leaves the same outcome: the channel is gone, and the
    // broker returns the message to the queue itself.
    let nack = delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false });
    if !matches!(tokio::time::timeout(SETTLE_TIMEOUT, nack).await, Ok(Ok(true))) {
        tracing::debug!(message_id = %message.id, "nack not sent; the channel is closed");
    }
    Fate::Requeued
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_come_from_the_header_and_never_overflow() {
        assert_eq!(attempt_of(None), 1);
        assert_eq!(attempt_of(Some("2")), 3);
        assert_eq!(attempt_of(Some(" 4 ")), 5);
        assert_eq!(attempt_of(Some("-1")), 1);
        assert_eq!(attempt_of(Some("many")), 1);
        assert_eq!(attempt_of(Some("4294967295")), u32::MAX);
    }

    #[test]
    fn expiration_is_dropped_and_everything_else_kept() {
        let p = qiao_connectors::amqp::BasicProperties::default()
            .with_expiration("1000".into())
            .with_message_id("m-1".into())
            .with_correlation_id("c".into())
            .with_delivery_mode(2);
        let q = strip_expiration(p);
        assert!(q.expiration().is_none());
        assert_eq!(q.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(q.correlation_id().as_ref().map(|s| s.as_str()), Some("c"));
        assert_eq!(*q.delivery_mode(), Some(2));
    }

    #[test]
    fn failure_kinds_decide_retry_or_dead_letter() {
        // The decision in `handle`: retryable and attempts left → retry; otherwise DLQ.
        let permanent = Failure::new(ErrorKind::SchemaViolation, "x");
        let transient = Failure::new(ErrorKind::ReceiverFailed, "x");
        assert!(!permanent.kind.retryable());
        assert!(transient.kind.retryable());
    }
}
