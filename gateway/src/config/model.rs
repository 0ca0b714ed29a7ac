//! The compiled configuration: plain data, nothing live. The runtime ([`crate::runtime`])
//! builds HTTP clients, brokers and consumers from it; `qiao check`, `qiao test`, `qiao map`
//! and the fuzz targets use it without opening a connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use qiao_connectors::RetryPolicy;
use qiao_connectors::amqp::Topology;
use qiao_connectors::http::HttpSinkConfig;

use super::{Diagnostic, SystemKind};
use crate::mapping::{Mapping, Template, Uses};
use crate::routing::Router;
use crate::schema::Schema;

#[derive(Debug)]
pub struct Config {
    pub dir: PathBuf,
    /// A digest of the directory's files ([`super::hash_dir`]): what `/readyz` shows and
    /// every journal record names.
    pub hash: String,
    pub server: ServerSettings,
    pub systems: IndexMap<String, Arc<System>>,
    pub routes: Vec<Arc<Route>>,
    pub router: Router,
    /// The clients of HTTP routes and how their credentials are checked.
    pub auth: Arc<crate::auth::Settings>,
    /// Every broker URL in use, with the exchanges, queues and bindings its systems and
    /// routes need declared (or verified).
    pub brokers: IndexMap<String, Topology>,
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    /// The route of this name.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    pub listen: String,
    pub admin_listen: String,
    pub threads: usize,
    pub max_body_bytes: u64,
    pub validate_formats: bool,
    pub drain_seconds: u64,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// Time allowed for a whole request header, from its first byte.
    pub header_timeout: Duration,
    /// Time allowed for a whole request body, from the end of its header.
    pub body_timeout: Duration,
    /// Time a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Most header fields a request may have.
    pub max_header_count: usize,
    /// Largest request header (request line and fields, as sent), in bytes.
    pub max_header_bytes: usize,
    pub telemetry: crate::telemetry::TelemetrySettings,
    pub journal: JournalSettings,
}

/// Where and how the journal is written (docs/journal.md).
#[derive(Clone, Debug, PartialEq)]
pub struct JournalSettings {
    /// `None`: the journal is off (the tap still works).
    pub dir: Option<std::path::PathBuf>,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    pub retention_age: Duration,
    pub retention_bytes: u64,
    /// Records waiting for the writer, at most; past it they are dropped and counted.
    pub channel: usize,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            dir: None,
            segment_bytes: 64 * 1024 * 1024,
            segment_age: Duration::from_secs(3600),
            retention_age: Duration::from_secs(7 * 24 * 3600),
            retention_bytes: 1024 * 1024 * 1024,
            channel: 8192,
        }
    }
}

/// What the journal keeps of one route's messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteJournal {
    pub enabled: bool,
    /// Share of the route's messages recorded, 0.0 to 1.0.
    pub sample: f64,
    /// Whether received and mapped bodies are kept.
    pub bodies: bool,
    /// Whether receivers' answers are kept.
    pub answers: bool,
}

impl Default for RouteJournal {
    fn default() -> Self {
        Self { enabled: true, sample: 1.0, bodies: true, answers: true }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_body_bytes: 10 * 1024 * 1024,
            validate_formats: true,
            drain_seconds: 5,
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_header_count: 100,
            max_header_bytes: 60 * 1024,
            telemetry: crate::telemetry::TelemetrySettings::default(),
            journal: JournalSettings::default(),
        }
    }
}

#[derive(Debug)]
pub struct System {
    pub name: String,
    /// Position in [`Config::systems`]: the runtime keeps each system's live parts there.
    pub index: usize,
    pub kind: SystemKind,
    pub description: Option<String>,
    /// Delivery of messages (validated, mapped) over HTTP.
    pub http: Option<HttpSinkConfig>,
    /// Where proxy routes stream to.
    pub proxy: Option<ProxyTarget>,
    /// Delivery through an AMQP broker.
    pub amqp: Option<AmqpSettings>,
    /// How the system reports a failure inside a `2xx` answer.
    pub success: Option<crate::success::SuccessRule>,
    /// At most this many deliveries a second, from every route together.
    pub rate_limit: Option<crate::limits::OutboundSettings>,
}

/// How to publish to a system through its broker.
#[derive(Clone, Debug, PartialEq)]
pub struct AmqpSettings {
    /// The broker's URL: the key of [`Config::brokers`].
    pub url: String,
    /// The exchange messages for this system are published to.
    pub exchange: String,
    pub confirm_timeout: Duration,
    /// Whether Qiao declares this system's exchange and queues (`false`: only verifies).
    pub declare: bool,
}

/// An upstream for pingora's proxy engine, derived from the system's `http` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyTarget {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The base URL's path, prefixed to every proxied path (no trailing `/`).
    pub base_path: String,
    /// `host[:port]` for the `Host` header.
    pub authority: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Static headers and credentials, added to every proxied request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Read, validate, map and deliver through the connector.
    Message,
    /// Stream through pingora's proxy engine unchanged.
    Proxy,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub description: Option<String>,
    pub file: PathBuf,
    pub kind: RouteKind,
    pub source: Source,
    pub schema: Option<Arc<Schema>>,
    pub mapping: Option<Mapping>,
    pub max_body_bytes: u64,
    pub destinations: Vec<Destination>,
    /// Which `$` roots the mapping and the destination templates read.
    pub uses: Uses,
    /// What must never appear in logs, traces or answers.
    pub redactor: crate::redact::Redactor,
    /// What the journal keeps of this route's messages.
    pub journal: RouteJournal,
    /// Position in [`Config::routes`]: the runtime keeps each route's live limiter there.
    pub index: usize,
    pub rate_limit: Option<crate::limits::InboundSettings>,
    /// At most this many requests in flight (HTTP routes); the runtime keeps the count.
    pub concurrency: Option<usize>,
    /// Whether callers must say who they are (HTTP routes).
    pub auth: crate::auth::Mode,
    /// Output pointers (globs) `qiao replay` leaves out of its diffs (`replay.ignore`).
    pub replay_ignore: Vec<String>,
}

/// Where a route's messages come from.
#[derive(Debug)]
pub enum Source {
    Http {
        /// `None`: every method.
        methods: Vec<Option<Method>>,
        path: String,
    },
    Amqp(AmqpSource),
}

/// A queue a route consumes, and what happens to messages that fail.
#[derive(Debug)]
pub struct AmqpSource {
    pub system: Arc<System>,
    /// The broker's URL: the key of [`Config::brokers`].
    pub broker: String,
    pub queue: String,
    pub prefetch: u16,
    pub concurrency: usize,
    /// How long every slot may be busy with nothing finishing before `/readyz` calls the
    /// consumer stalled; `None`: never.
    pub stall_after: Option<Duration>,
    /// Attempts and backoff of retryable failures (`retry_statuses` unused).
    pub policy: RetryPolicy,
    /// `<queue>.retry.<n>` for attempt n = 1 .. max_attempts-1.
    pub retry_queues: Vec<String>,
    /// `<queue>.retry.circuit`, where copies wait for an open circuit's next trial (none
    /// when the route has no retries). Its own queue because RabbitMQ expires messages only
    /// at a queue's head: a copy that waits for a circuit must not hold up a short retry.
    pub circuit_queue: Option<String>,
    pub dead_letter_queue: String,
}

impl AmqpSource {
    /// What a consumer of this source is made of: when it is the same in two configs, a
    /// reload keeps the consumer running.
    pub fn consumer_settings(&self) -> (&str, &str, u16, usize) {
        (&self.broker, &self.queue, self.prefetch, self.concurrency)
    }
}

impl Route {
    /// An HTTP route whose destinations are all AMQP answers 202 once the broker has
    /// confirmed, instead of relaying a receiver's answer.
    pub fn answers_accepted(&self) -> bool {
        !self.destinations.is_empty() && self.destinations.iter().all(|d| matches!(d.via, Via::Amqp { .. }))
    }

    pub fn http_path(&self) -> Option<&str> {
        match &self.source {
            Source::Http { path, .. } => Some(path),
            Source::Amqp(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct Destination {
    pub system: Arc<System>,
    pub via: Via,
    /// HTTP headers, or AMQP message headers; values are templates.
    pub headers: Vec<(HeaderName, Template)>,
    pub timeout: Option<Duration>,
    /// This destination's own field map, used instead of the route's.
    pub mapping: Option<Mapping>,
    /// Send here only when this holds for the inbound message.
    pub when: Option<crate::condition::Condition>,
    /// What the receiver accepts; the mapped message is checked before delivery.
    pub schema: Option<Arc<Schema>>,
    /// The fields the receiver's schema marks `x-pii: true`: tokens in the journal.
    pub redactor: crate::redact::Redactor,
    /// Where the config names the destination's system.
    pub place: super::Place,
}

#[derive(Debug)]
pub enum Via {
    Http {
        /// `None`: the inbound method (proxy routes) or POST.
        method: Option<Method>,
        /// Path and query on the system; bare `{name}`s are path parameters.
        path: Option<Template>,
    },
    Amqp {
        /// `None`: the system's exchange.
        exchange: Option<String>,
        routing_key: Template,
    },
}
