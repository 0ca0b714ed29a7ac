//! Prometheus metrics, served as text on the admin listener (`/metrics`).
//!
//! Every label takes values from a bounded set: route and system names from the config,
//! status codes, error kinds, phase names. Names follow `qiao_*_total` / `qiao_*_seconds`.

use std::sync::OnceLock;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// HTTP requests answered, by route and status.
    pub requests: IntCounterVec,
    /// Time from request to answer, by route.
    pub request_seconds: HistogramVec,
    /// Time spent in each phase (parse, validate, map, deliver, publish, process).
    pub phase_seconds: HistogramVec,
    /// Messages refused by the route's schema.
    pub validation_failures: IntCounterVec,
    /// Deliveries to destination systems, by outcome (`ok` or an error kind).
    pub deliveries: IntCounterVec,
    /// Attempts beyond the first, by route and system.
    pub retries: IntCounterVec,
    /// Messages sent to a dead-letter queue, by error kind.
    pub dead_letters: IntCounterVec,
    /// Failures of any kind, by route and error kind.
    pub errors: IntCounterVec,
    /// Requests refused by a rate limit.
    pub rate_limited: IntCounterVec,
    /// AMQP deliveries being processed right now, by route.
    pub amqp_in_flight: IntGaugeVec,
    /// What became of AMQP deliveries (delivered, retried, dead_lettered, requeued).
    pub amqp_messages: IntCounterVec,
    /// 1 while the connection to a broker is up.
    pub amqp_connected: IntGaugeVec,
    /// 1 while a system's circuit breaker is open.
    pub circuit_open: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    /// Journal records not written, by reason (docs/journal.md).
    pub journal_dropped: IntCounterVec,
    /// Journal records written.
    pub journal_records: prometheus::IntCounter,
}

const LATENCY: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY.to_vec()), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let r = Registry::new();
        Metrics {
            requests: counter(
                &r,
                "qiao_http_requests_total",
                "HTTP requests answered, by route and status",
                &["route", "status"],
            ),
            request_seconds: histogram(
                &r,
                "qiao_http_request_duration_seconds",
                "Time from HTTP request to answer",
                &["route"],
            ),
            phase_seconds: histogram(
                &r,
                "qiao_phase_duration_seconds",
                "Time spent in each phase of a message",
                &["route", "phase"],
            ),
            validation_failures: counter(
                &r,
                "qiao_validation_failures_total",
                "Messages refused by the route's schema",
                &["route"],
            ),
            deliveries: counter(
                &r,
                "qiao_deliveries_total",
                "Deliveries to destination systems, by outcome",
                &["route", "system", "outcome"],
            ),
            retries: counter(&r, "qiao_retries_total", "Delivery attempts beyond the first", &["route", "system"]),
            dead_letters: counter(
                &r,
                "qiao_dead_letters_total",
                "Messages dead-lettered, by the failing system (`-`: the message itself) and error kind",
                &["route", "system", "error_kind"],
            ),
            errors: counter(
                &r,
                "qiao_errors_total",
                "Failed messages and requests, by error kind",
                &["route", "error_kind"],
            ),
            rate_limited: counter(&r, "qiao_rate_limited_total", "Requests refused by a rate limit", &["route"]),
            amqp_in_flight: gauge(&r, "qiao_amqp_in_flight", "AMQP deliveries being processed", &["route"]),
            amqp_messages: counter(
                &r,
                "qiao_amqp_messages_total",
                "AMQP deliveries, by what became of them",
                &["route", "fate"],
            ),
            amqp_connected: gauge(&r, "qiao_amqp_connected", "1 while the connection to the broker is up", &["broker"]),
            circuit_open: gauge(&r, "qiao_circuit_open", "1 while a system's circuit breaker is open", &["system"]),
            config_reloads: counter(
                &r,
                "qiao_config_reloads_total",
                "Configuration reloads, applied (`ok`) or refused (`error`)",
                &["result"],
            ),
            journal_dropped: counter(
                &r,
                "qiao_journal_dropped_total",
                "Journal records dropped: the writer fell behind (`channel_full`) or could not write",
                &["reason"],
            ),
            journal_records: {
                let c = prometheus::IntCounter::new("qiao_journal_records_total", "Journal records written")
                    .expect("valid metric");
                r.register(Box::new(c.clone())).expect("registered once");
                c
            },
            registry: r,
        }
    })
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
