//! The shipped route tests' messages through a live `qiao run`: each case sent as a sender
//! sends it (HTTP to the route's path, or published onto the AMQP route's queue), and what
//! came of it found where it lands (at the stub systems, on the broker, in the dead-letter
//! queue). tests/differential.rs compares that with `qiao test`; tests/replay.rs records it
//! in the journal and replays it.

use std::time::Duration;

use bytes::Bytes;
use qiao::config::{Route, Source};
use qiao::simulate::{Captured, Input};

use super::{Amqp, Qiao, Reply, Stubs, request};

/// The stubs' environment with broker names of this test's own (`AMQP_PREFIX`).
pub fn shipped_env(stubs: &Stubs, prefix: &str) -> Vec<(String, String)> {
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "AMQP_PREFIX");
    env.push(("AMQP_PREFIX".into(), prefix.to_string()));
    env
}

/// A queue bound to the exchange every AMQP destination of the shipped systems publishes
/// to (`<prefix>.events`), to see what was published. Opened once Qiao runs: Qiao declares
/// the exchange.
pub struct EventsTap {
    pub exchange: String,
    pub queue: String,
    /// Read from the queue and not yet claimed by [`arrived`].
    seen: Vec<lapin::message::BasicGetMessage>,
}

impl EventsTap {
    pub async fn open(amqp: &Amqp, prefix: &str) -> EventsTap {
        let exchange = format!("{prefix}.events");
        let queue = format!("{prefix}.tap");
        amqp.channel.queue_declare(queue.as_str().into(), Default::default(), Default::default()).await.unwrap();
        amqp.channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        EventsTap { exchange, queue, seen: Vec::new() }
    }
}

/// Sends one case's input to the live Qiao as message `id`: the answer for an HTTP route,
/// `None` for an AMQP route once the broker took the message.
pub async fn send_case(qiao: &Qiao, amqp: &Amqp, route: &Route, input: &Input, id: &str) -> Option<Reply> {
    match &route.source {
        Source::Http { path, .. } => {
            let path = input.path.clone().unwrap_or_else(|| fill(path, &input.params));
            let method = input.method.clone().unwrap_or_else(|| "POST".into());
            let mut headers: Vec<(String, String)> =
                input.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                headers.push(("content-type".into(), "application/json".into()));
            }
            headers.push(("idempotency-key".into(), id.to_string()));
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Some(request(&method, &qiao.url(&path), &h, input.body.to_vec()).await.expect("an answer"))
        }
        Source::Amqp(src) => {
            let confirm = amqp.publish("", &src.queue, &input.body, id).await;
            confirm.await.expect("the broker takes the message");
            None
        }
    }
}

/// A route's path pattern with its parameters filled in.
pub fn fill(pattern: &str, params: &indexmap::IndexMap<String, String>) -> String {
    let mut path = pattern.to_string();
    for (k, v) in params {
        path = path.replace(&format!("{{{k}}}"), v);
    }
    path
}

/// The bytes that reached the destination of `c` for message `id`: at the stub system
/// (HTTP), or on the tap (AMQP).
pub async fn arrived(stubs: &Stubs, amqp: &Amqp, tap: &mut EventsTap, id: &str, c: &Captured) -> Bytes {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if c.transport == "http" {
            let kind = stubs.all.iter().find(|s| s.state.kind.as_str() == c.system).expect("a stub per system");
            let (path, query) = c.path.split_once('?').map_or((c.path.as_str(), None), |(p, q)| (p, Some(q)));
            let found = kind.state.received().into_iter().find(|r| {
                r.message_id.as_deref() == Some(id)
                    && r.path == path
                    && r.query.as_deref() == query
                    && r.method == c.method
            });
            if let Some(r) = found {
                return r.raw;
            }
        } else {
            tap.seen.extend(amqp.drain(&tap.queue).await);
            let found = tap.seen.iter().position(|m| {
                m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id)
                    && Some(m.delivery.routing_key.as_str()) == c.routing_key.as_deref()
            });
            if let Some(i) = found {
                return Bytes::from(tap.seen.remove(i).delivery.data);
            }
        }
        assert!(std::time::Instant::now() < deadline, "nothing reached {} for message {id} ({c:?})", c.system);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead letter of message `id` in `queue` (taken out of it).
pub async fn dead_letter(amqp: &Amqp, queue: &str, id: &str) -> lapin::message::BasicGetMessage {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        for m in amqp.drain(queue).await {
            if m.delivery.properties.message_id().as_ref().map(|s| s.as_str()) == Some(id) {
                return m;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter for message {id} in {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes every queue the shipped systems declare under this test's prefix, and the tap.
/// Qiao must have stopped: a running one would declare them again.
pub async fn cleanup_shipped(amqp: &Amqp, config: &qiao::config::Config, tap: EventsTap) {
    let mut queues: Vec<String> =
        config.brokers.values().flat_map(|t| t.queues.iter().map(|q| q.name.clone())).collect();
    queues.push(tap.queue);
    amqp.cleanup(&queues, &[tap.exchange]).await;
}
