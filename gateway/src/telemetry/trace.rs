//! Trace context in and out, and the spans of a message's phases.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use qiao_connectors::amqp::{FieldTable, header_str};

use super::w3c;

/// The global propagator, for anything that asks opentelemetry for one. Qiao's own ways in
/// and out read and write `traceparent` and `tracestate` themselves ([`extract_http`],
/// [`inject`]), to the letter of W3C Trace Context ([`super::w3c`]); `baggage` goes through
/// OpenTelemetry's propagator.
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
        // W3C asks senders not to send an empty header, and strict receivers refuse one.
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

/// The flags of the caller's `traceparent`, kept in the context of everything this message
/// does: the SDK's spans keep only `sampled`, and not even that when they are not recorded
/// (export off), but the next hop is owed both as the caller sent them.
#[derive(Clone, Copy, Debug)]
struct CallerFlags(u8);

fn baggage() -> &'static BaggagePropagator {
    static BAGGAGE: OnceLock<BaggagePropagator> = OnceLock::new();
    BAGGAGE.get_or_init(BaggagePropagator::new)
}

/// The caller's context: its trace (when it sent exactly one valid `traceparent`), its
/// `tracestate` entries (only then), and its `baggage`.
fn caller(parent: Option<w3c::Parent>, states: Vec<(String, String)>, carrier: &dyn Extractor) -> Context {
    let cx = baggage().extract_with_context(&Context::new(), carrier);
    let Some(p) = parent else { return cx };
    // OpenTelemetry checks keys its own way (shorter system ids): entries it does not take
    // are left out one by one rather than losing the whole list.
    let state = TraceState::from_key_value(states.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_or_else(|_| {
        let taken = states.iter().filter(|(k, v)| TraceState::from_key_value([(k.as_str(), v.as_str())]).is_ok());
        TraceState::from_key_value(taken.map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_or_default()
    });
    let sc = SpanContext::new(p.trace_id, p.span_id, TraceFlags::new(p.flags), true, state);
    cx.with_remote_span_context(sc).with_value(CallerFlags(p.flags))
}

/// The context an HTTP request carries (`traceparent`, `tracestate`, `baggage`).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    let parent = w3c::traceparent(headers.get_all("traceparent").iter().map(http::HeaderValue::as_bytes));
    let states = match parent {
        Some(_) => w3c::tracestate(headers.get_all("tracestate").iter().filter_map(|v| v.to_str().ok())),
        None => Vec::new(),
    };
    caller(parent, states, &HttpHeaders(headers))
}

/// The context an AMQP message carries in its headers.
pub fn extract_amqp(headers: Option<&FieldTable>) -> Context {
    let pairs = AmqpHeaders(
        ["traceparent", "tracestate", "baggage"]
            .into_iter()
            .filter_map(|k| Some((k, header_str(headers, k)?)))
            .collect(),
    );
    let parent = pairs.get("traceparent").and_then(w3c::parse_traceparent);
    let states = match parent {
        Some(_) => w3c::tracestate(pairs.get("tracestate")),
        None => Vec::new(),
    };
    caller(parent, states, &pairs)
}

/// The headers that carry `cx` to the next hop: `traceparent` with this span's id and the
/// caller's flags (`sampled` also when Qiao records the span itself; `random` as the caller
/// said, or set when Qiao started the trace with a random id), `tracestate` when there is
/// one, `baggage`.
pub fn inject(cx: &Context) -> Vec<(String, String)> {
    let mut out = Pairs(Vec::with_capacity(3));
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        let caller = cx.get::<CallerFlags>().map(|f| f.0);
        let sampled = sc.is_sampled() || caller.is_some_and(|f| f & w3c::SAMPLED != 0);
        let random = caller.is_none_or(|f| f & w3c::RANDOM != 0);
        let flags = if sampled { w3c::SAMPLED } else { 0 } | if random { w3c::RANDOM } else { 0 };
        out.set("traceparent", traceparent(sc.trace_id(), sc.span_id(), flags));
        out.set("tracestate", sc.trace_state().header());
    }
    baggage().inject_context(cx, &mut out);
    out.0
}

/// `00-{trace id}-{span id}-{flags}` in lowercase hex, written with `hex` into one buffer:
/// through `format!` the ids' `LowerHex` cost 2k instructions of every delivery.
fn traceparent(trace: opentelemetry::trace::TraceId, span: opentelemetry::trace::SpanId, flags: u8) -> String {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The slices are exactly twice the ids' lengths, so encoding cannot fail.
    for (bytes, at) in [(&trace.to_bytes()[..], 3..35), (&span.to_bytes()[..], 36..52), (&[flags][..], 53..55)] {
        hex::encode_to_slice(bytes, &mut out[at]).expect("two hex digits per byte fit");
    }
    String::from_utf8(out.to_vec()).expect("hex digits and dashes are ASCII")
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
    fn traceparent_is_written_as_format_writes_it() {
        use opentelemetry::trace::{SpanId, TraceId};
        for (t, sp, flags) in [
            (0x4bf92f3577b34da6a3ce929d0e0e4736_u128, 0x00f067aa0ba902b7_u64, 0x01_u8),
            (1, 1, 0),
            (u128::MAX, u64::MAX, 0xff),
            (0x0a000000000000000000000000000000, 0x0b00000000000000, 0x03),
        ] {
            let (t, sp) = (TraceId::from(t), SpanId::from(sp));
            assert_eq!(traceparent(t, sp, flags), format!("00-{t}-{sp}-{flags:02x}"));
        }
    }

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

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    /// What the next hop gets from a span Qiao starts under `parent`, with export off (the
    /// sampler drops every span, as `telemetry::init` sets it up without an endpoint).
    fn next_hop(parent: &Context) -> Vec<(String, String)> {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
            .build();
        let span = provider.tracer("test").start_with_context("server", parent);
        inject(&parent.with_span(span))
    }

    fn header<'a>(out: &'a [(String, String)], name: &str) -> Option<&'a str> {
        out.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn sampled_and_random_flags_go_on_with_export_off() {
        for (flags, sent) in [("01", "01"), ("03", "03"), ("02", "02"), ("00", "00")] {
            let cx = extract_http(&headers(&[("traceparent", &format!("00-{ID}-00f067aa0ba902b7-{flags}"))]));
            let out = next_hop(&cx);
            let tp = header(&out, "traceparent").unwrap();
            assert!(tp.starts_with(&format!("00-{ID}-")), "{tp}");
            assert!(!tp.contains("00f067aa0ba902b7"), "a span id of Qiao's own: {tp}");
            assert!(tp.ends_with(&format!("-{sent}")), "{flags}: {tp}");
        }
        // A trace Qiao starts has a random id: the random flag says so.
        let out = next_hop(&Context::new());
        assert!(header(&out, "traceparent").unwrap().ends_with("-02"), "{out:?}");
    }

    #[test]
    fn a_bad_or_second_traceparent_restarts_the_trace_without_its_tracestate() {
        let valid = format!("00-{ID}-00f067aa0ba902b7-01");
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for bad in [
            vec![("traceparent", valid.as_str()), ("traceparent", other)],
            vec![("traceparent", &*valid.to_uppercase())],
            vec![("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
            vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
        ] {
            let mut pairs = bad.clone();
            pairs.push(("tracestate", "congo=t61rcWkgMzE"));
            let out = next_hop(&extract_http(&headers(&pairs)));
            let tp = header(&out, "traceparent").unwrap();
            assert!(!tp.contains(ID) && !tp.contains("0af7651916cd43dd8448eb211c80319c"), "{bad:?}: {tp}");
            assert_eq!(header(&out, "tracestate"), None, "{bad:?}");
        }
    }

    #[test]
    fn tracestate_headers_are_combined_and_cleaned() {
        let cx = extract_http(&headers(&[
            ("traceparent", &format!("00-{ID}-00f067aa0ba902b7-01")),
            ("tracestate", "rojo=00f067aa0ba902b7,BAD=1"),
            ("tracestate", "congo=t61rcWkgMzE,rojo=again"),
        ]));
        let out = next_hop(&cx);
        assert_eq!(header(&out, "tracestate"), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
        assert_eq!(out.iter().filter(|(k, _)| k == "tracestate").count(), 1);
    }
}
