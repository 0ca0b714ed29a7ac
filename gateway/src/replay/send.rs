//! `qiao replay --send`: recorded messages delivered again to the live systems, through the
//! one driver on the [`Live`] seam with a runtime built from the configuration, at a given
//! rate. Each is a new message: a new id, the `x-qiao-replay-of` header naming the recorded
//! one on every delivery, and a root span linked to the recorded trace.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use qiao_connectors::MessageId;
use qiao_connectors::http::HttpReply;

use crate::config::{Config, Destination, RouteKind};
use crate::error::Failure;
use crate::journal::Record;
use crate::pipeline::{self, Deliver, Inbound, Live, Outbound};
use crate::runtime::Runtime;
use crate::telemetry::trace;

/// The live seam, with the replay header added to every request it sends.
struct Replaying<'a> {
    live: Live<'a>,
    of: &'a str,
}

impl Deliver for Replaying<'_> {
    async fn send(&self, dest: &Destination, request: &Outbound) -> Result<Option<HttpReply>, Failure> {
        let mut request = request.clone();
        match &mut request {
            Outbound::Http(r) => {
                if let Ok(v) = http::HeaderValue::from_str(self.of) {
                    r.headers.insert(crate::headers::REPLAY_OF, v);
                }
            }
            Outbound::Amqp { headers, .. } => headers.push((crate::headers::REPLAY_OF.into(), self.of.to_string())),
        }
        self.live.send(dest, &request).await
    }
}

/// What came of one re-delivery.
#[derive(Debug)]
pub struct Sent {
    pub original: String,
    pub id: String,
    pub route: String,
    /// `None`: every chosen destination took it.
    pub failure: Option<String>,
}

/// A span link to the recorded trace. The journal keeps the trace id, not the span id, so
/// the link names the trace with a stand-in span id (the trace id's last 8 bytes): trace
/// viewers follow a link by its trace.
fn link_to(record: &Record) -> Option<Link> {
    let trace_id = TraceId::from_hex(&record.trace_id).ok().filter(|t| *t != TraceId::INVALID)?;
    let bytes = trace_id.to_bytes();
    let span_id = SpanId::from_bytes(bytes[8..].try_into().ok()?);
    let span_id = if span_id == SpanId::INVALID { SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]) } else { span_id };
    let cx = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default());
    Some(Link::new(cx, vec![KeyValue::new("qiao.replay_of", record.id.clone())], 0))
}

/// Re-delivers `records` (already filtered, one per message, bodies kept) through `config`'s
/// live systems, at most `rate` a second. `each` hears of every one as it is done.
pub fn send(
    config: Config,
    records: Vec<Record>,
    rate: Option<f64>,
    mut each: impl FnMut(&Sent),
) -> Result<(), String> {
    let telemetry = crate::telemetry::init(&config.server.telemetry.clone().with_env())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let runtime = Runtime::build(Arc::new(config), None)?;
    let result = rt.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for broker in runtime.brokers.values() {
            let (b, s) = (broker.clone(), stopped.clone());
            tasks.push(tokio::spawn(async move { b.run(s).await }));
        }
        for broker in runtime.brokers.values() {
            if !broker.wait_connected(Duration::from_secs(10)).await {
                let _ = stop.send(true);
                return Err(format!(
                    "cannot connect to the AMQP broker {}: {}",
                    broker.display(),
                    broker.last_error().unwrap_or_default()
                ));
            }
        }
        let mut tick = rate.filter(|r| *r > 0.0).map(|r| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        for record in &records {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let sent = one(&runtime, record).await;
            each(&sent);
        }
        let _ = stop.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    });
    drop(telemetry);
    result
}

async fn one(runtime: &Runtime, record: &Record) -> Sent {
    let id = MessageId::generate();
    let mut sent = Sent { original: record.id.clone(), id: id.to_string(), route: record.route.clone(), failure: None };
    let Some(route) = runtime.config.route(&record.route).filter(|r| r.kind != RouteKind::Proxy) else {
        sent.failure = Some(format!("no message route `{}` in the configuration: not sent", record.route));
        return sent;
    };
    let (mut message, params) = match super::recorded_message(record) {
        Ok(m) => m,
        Err(why) => {
            sent.failure = Some(format!("not sent: {why}"));
            return sent;
        }
    };
    message.id = id;
    message.received_at = std::time::SystemTime::now();
    message.headers.push((crate::headers::REPLAY_OF.into(), record.id.clone()));
    let tracer = trace::tracer();
    let span = tracer
        .span_builder(format!("replay {}", route.name))
        .with_kind(SpanKind::Producer)
        .with_links(link_to(record).into_iter().collect())
        .with_attributes(vec![
            KeyValue::new("qiao.route", route.name.clone()),
            KeyValue::new("messaging.message.id", message.id.to_string()),
            KeyValue::new("qiao.replay_of", record.id.clone()),
        ])
        .start_with_context(tracer, &Context::new());
    let cx = Context::new().with_span(span);
    let seam = Replaying { live: Live { runtime, turn: crate::pipeline::Turn::Patient }, of: &record.id };
    let run = pipeline::drive(
        route,
        Inbound { message: &message, params: &params, done: &[], pii_tokens: false },
        &seam,
        &cx,
    )
    .await;
    let failure = run.refused.as_ref().or_else(|| run.failures().next().map(|(_, f)| f));
    sent.failure = failure.map(|f| format!("{} — {}", f.kind.slug(), f.detail));
    trace::end(&cx, failure.map(|f| (f.kind.slug(), f.detail.as_str())));
    sent
}
