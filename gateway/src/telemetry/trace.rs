//! Trace context in and out, and the spans of a message's phases.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use qiao_connectors::amqp::{FieldTable, header_str};

pub fn install_propagator() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

pub fn tracer() -> &'static BoxedTracer {
    static TRACER: OnceLock<BoxedTracer> = OnceLock::new();
    TRACER.get_or_init(|| global::tracer("qiao"))
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// AMQP headers hold trace context as long strings or byte arrays, depending on the sender.
struct AmqpHeaders(Vec<(&'static str, String)>);

impl Extractor for AmqpHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        // The propagators write `tracestate: ""` when there is none; W3C Trace Context asks
        // senders not to send an empty header, and strict receivers refuse one.
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

/// The context an HTTP request carries (`traceparent`, `tracestate`, `baggage`).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HttpHeaders(headers)))
}

/// The context an AMQP message carries in its headers.
pub fn extract_amqp(headers: Option<&FieldTable>) -> Context {
    let pairs = AmqpHeaders(
        ["traceparent", "tracestate", "baggage"]
            .into_iter()
            .filter_map(|k| Some((k, header_str(headers, k)?)))
            .collect(),
    );
    global::get_text_map_propagator(|p| p.extract(&pairs))
}

/// The headers that carry `cx` to the next hop.
pub fn inject(cx: &Context) -> Vec<(String, String)> {
    let mut out = Pairs(Vec::with_capacity(3));
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut out));
    out.0
}

/// Trace and span id of `cx`, formatted as hex only when a log line prints them.
pub fn ids(cx: &Context) -> (opentelemetry::trace::TraceId, opentelemetry::trace::SpanId) {
    let span = cx.span();
    let sc = span.span_context();
    (sc.trace_id(), sc.span_id())
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Set by `telemetry::init`: whether any span can be recorded at all.
pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether a span started under `parent` could be recorded, so that its name and attributes
/// are worth building. With nothing to export, never. Otherwise the sampler is parent-based:
/// a known parent that is not sampled means no; a sampled or absent one means maybe.
pub fn may_record(parent: &Context) -> bool {
    EXPORTING.load(Ordering::Relaxed) && {
        let span = parent.span();
        let sc = span.span_context();
        !sc.is_valid() || sc.is_sampled()
    }
}

/// Starts a span as a child of `parent` and returns the context holding it. `describe`
/// gives the span's name and attributes; it runs only when the span may be recorded
/// ([`may_record`]), otherwise the span is named `quiet_name` and has no attributes. Such a
/// span still has its own id, so the trace context sent on is the same either way.
pub fn start(
    kind: SpanKind,
    parent: &Context,
    quiet_name: &'static str,
    describe: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
) -> Context {
    let builder = if may_record(parent) {
        let (name, attrs) = describe();
        tracer().span_builder(name).with_attributes(attrs)
    } else {
        tracer().span_builder(quiet_name)
    };
    let span = builder.with_kind(kind).start_with_context(tracer(), parent);
    parent.with_span(span)
}

/// Ends the span of `cx`, with an error status when `error` is set.
pub fn end(cx: &Context, error: Option<(&str, &str)>) {
    let span = cx.span();
    if let Some((kind, detail)) = error {
        span.set_attribute(KeyValue::new("error.type", kind.to_string()));
        span.set_status(Status::error(detail.to_string()));
    }
    span.end();
}

/// A phase of a message (parse, validate, map, ...): a child span and a latency sample.
pub struct Phase {
    /// None when the span could not be recorded: a phase's span never leaves the process,
    /// so an unrecorded one is not created at all.
    cx: Option<Context>,
    started: Instant,
    name: &'static str,
    route: std::sync::Arc<str>,
}

impl Phase {
    pub fn start(name: &'static str, route: &std::sync::Arc<str>, parent: &Context) -> Phase {
        let cx = may_record(parent).then(|| {
            start(SpanKind::Internal, parent, name, || (name.into(), vec![KeyValue::new("qiao.route", route.clone())]))
        });
        Phase { cx, started: Instant::now(), name, route: route.clone() }
    }

    /// Ends the phase; `error` names the error kind and detail when it failed.
    pub fn finish(self, error: Option<(&str, &str)>) {
        super::metrics::get()
            .phase_seconds
            .with_label_values(&[&*self.route, self.name])
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(cx) = &self.cx {
            end(cx, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_goes_through_http_and_amqp_headers() {
        install_propagator();
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        h.insert("baggage", "tenant=hz01".parse().unwrap());
        let cx = extract_http(&h);
        assert_eq!(ids(&cx).0.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = inject(&cx);
        assert!(out.iter().any(|(k, v)| k == "traceparent" && v.contains("4bf92f3577b34da6a3ce929d0e0e4736")));
        assert!(out.iter().any(|(k, v)| k == "baggage" && v.contains("tenant=hz01")));
        assert!(out.iter().all(|(k, v)| k != "tracestate" && !v.is_empty()), "no empty headers: {out:?}");

        // AMQP senders use byte arrays as often as strings.
        let mut t = FieldTable::default();
        t.insert(
            "traceparent".into(),
            qiao_connectors::amqp::AMQPValue::ByteArray(
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec().into(),
            ),
        );
        assert_eq!(ids(&extract_amqp(Some(&t))).0.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids(&extract_amqp(None)).0.to_string(), "00000000000000000000000000000000");
    }
}
