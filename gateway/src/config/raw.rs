//! The configuration files as written: serde structs that mirror the YAML.
//!
//! Every struct denies unknown keys, so a typo is an error with its line and column rather
//! than a silently ignored setting. Nothing here is validated beyond its shape; `compile`
//! resolves references and turns these into the types the runtime uses. Each field's doc
//! comment is its reference documentation (docs/configuration.md follows it).

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::SystemKind;
// The shapes of maps and conditions belong to the code that compiles them.
pub use crate::condition::RawCondition;
pub use crate::mapping::raw::{RawFieldOps, RawFieldSpec, RawLookup, RawLookupRef, RawMap};

pub type Text = Spanned<String>;

/// One YAML file in the config directory. Any file may hold any of the sections; a
/// natural layout is `qiao.yaml` (server), `systems.yaml`, and one file per route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Listener and process settings. At most one file may have this section.
    pub server: Option<Spanned<RawServer>>,
    /// The business systems Qiao talks to, by name.
    #[serde(default)]
    pub systems: IndexMap<Text, RawSystem>,
    /// Lookup tables shared by all routes, by name.
    #[serde(default)]
    pub lookups: IndexMap<Text, RawLookup>,
    /// The routes, by name.
    #[serde(default)]
    pub routes: IndexMap<Text, RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address of the HTTP ingress. Default `127.0.0.1:8080`. Accepts `${ENV}`.
    pub listen: Option<Text>,
    /// Address of the admin listener (`/healthz`, `/readyz`). Default `127.0.0.1:9090`.
    /// Accepts `${ENV}`.
    pub admin_listen: Option<Text>,
    /// Worker threads of the HTTP ingress. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// Largest accepted request body, in bytes, for routes that do not set their own.
    /// Default 10485760 (10 MiB).
    pub max_body_bytes: Option<u64>,
    /// Whether `format` (date, date-time, email, ...) is checked by the schemas of routes
    /// that do not say otherwise. Default `true`.
    pub validate_formats: Option<bool>,
    /// On SIGTERM, how long to keep serving before the listeners close: every answer says
    /// `Connection: close` and `/readyz` answers 503, so that clients and load balancers move
    /// away without a request cut off. Default 5.
    pub drain_seconds: Option<u64>,
    /// After the listeners closed, how long requests and AMQP deliveries in progress get
    /// before the runtimes stop. Default 5.
    pub grace_period_seconds: Option<u64>,
    /// After the grace period, how long in-flight requests get to finish. Default 5.
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// Time a client has to send a whole request header, from its first byte. Default 10000.
    pub header_timeout_ms: Option<u64>,
    /// Time a client has to send a whole request body, once its header is in. Default 60000.
    pub body_timeout_ms: Option<u64>,
    /// How long a connection may wait for its next request before it is closed. Default 60000.
    pub idle_timeout_ms: Option<u64>,
    /// Most header fields a request may have (1 to 256). Default 100.
    pub max_header_count: Option<usize>,
    /// Largest request header, request line included, in bytes (at most 1048575). Default
    /// 61440 (60 KiB).
    pub max_header_bytes: Option<usize>,
    /// Traces: where spans are exported (docs/observability.md).
    pub telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP endpoint, e.g. `http://127.0.0.1:4318/v1/traces` (HTTP) or
    /// `http://127.0.0.1:4317` (gRPC). Empty or absent: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`; when none is set,
    /// export is off. Accepts `${ENV}`.
    pub otlp_endpoint: Option<Text>,
    /// `http/protobuf` (default) or `grpc`. Default: `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: Option<Text>,
    /// Share of new traces kept, 0.0–1.0 (a sampled parent is always followed). Default 1.0.
    pub sample_ratio: Option<f64>,
    /// `service.name` of the spans. Default `qiao` (or `OTEL_SERVICE_NAME`).
    pub service_name: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    /// What the system is: `erp`, `crm`, `oa`, `wms` or `mes`.
    pub kind: Spanned<SystemKind>,
    /// Free text for people reading the config.
    pub description: Option<String>,
    /// How to reach the system over HTTP.
    pub http: Option<RawHttpTransport>,
    /// How to reach the system through an AMQP broker (RabbitMQ).
    pub amqp: Option<RawAmqpTransport>,
    /// How the system says, inside a `2xx` answer, that it did not take a message: a preset
    /// (`kingdee`, `qimen`, `dingtalk`, `salesforce`) or `{ when: <condition>, message: <path> }`,
    /// a condition over the answer body that holds on success. Absent: every `2xx` is a
    /// success. See docs/configuration.md#success.
    pub success: Option<Spanned<RawSuccess>>,
}

/// A success rule: a preset's name, or a condition of one's own.
#[derive(Debug)]
pub enum RawSuccess {
    Preset(String),
    Rule(Box<RawSuccessRule>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuccessRule {
    /// Holds for the body of a successful answer (the language of `when:`).
    pub when: Spanned<RawCondition>,
    /// A path in the answer body whose value is the receiver's message, for the failure's
    /// detail.
    pub message: Option<Text>,
}

impl<'de> Deserialize<'de> for RawSuccess {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Spelled out rather than untagged, so that a typo inside the rule keeps its place.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSuccess;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a preset (kingdee, qimen, dingtalk, salesforce) or `{ when: ..., message: ... }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawSuccess::Preset(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawSuccessRule::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|r| RawSuccess::Rule(Box::new(r)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpTransport {
    /// Broker URL, `amqp://user:password@host:5672/vhost` (`%2f` is the default vhost).
    /// Accepts `${ENV}`. Systems with the same URL share one pair of connections.
    pub url: Text,
    /// The exchange that messages for this system are published to. Default `qiao.events`.
    /// Accepts `${ENV}`.
    pub exchange: Option<Text>,
    /// Type of that exchange when Qiao declares it: `topic` (default), `direct`, `fanout`,
    /// `headers`.
    pub exchange_type: Option<Text>,
    /// `true` (default): declare the exchanges, queues and bindings Qiao needs at startup,
    /// idempotently. `false`: only check that they exist, and refuse to start consuming or
    /// publishing when they do not.
    pub declare: Option<bool>,
    /// Time the broker has to confirm a publish. Default 5000.
    pub confirm_timeout_ms: Option<u64>,
    /// Queues the system reads, declared and bound to `exchange` so that messages
    /// published for the system are never unroutable.
    #[serde(default)]
    pub queues: Vec<RawAmqpQueue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpQueue {
    /// Queue name. Accepts `${ENV}`.
    pub name: Text,
    /// Routing keys (topic patterns such as `wms.#`) that bind it to the system's exchange.
    #[serde(default)]
    pub bindings: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTransport {
    /// Scheme, host, port and optional path prefix, e.g. `https://erp.example.com/k3cloud`.
    /// Accepts `${ENV}`.
    pub base_url: Text,
    /// Time allowed to open a connection. Default 2000.
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed for one attempt: sending the request and reading the whole answer.
    /// Default 10000.
    pub request_timeout_ms: Option<u64>,
    /// How long an idle pooled connection is kept. Default 90000.
    pub pool_idle_timeout_ms: Option<u64>,
    /// Idle connections kept per host. Default 256.
    pub pool_max_idle_per_host: Option<usize>,
    /// Headers sent with every request. Values accept `${ENV}`.
    #[serde(default)]
    pub headers: IndexMap<Text, Text>,
    /// Credentials presented to the system.
    pub auth: Option<RawAuth>,
    /// Retries of failed deliveries.
    pub retry: Option<RawRetry>,
    /// Stop sending to a system that keeps failing, for a while.
    pub circuit_breaker: Option<RawCircuitBreaker>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Failed deliveries in a row (after their retries) that open the circuit; 0 turns
    /// the breaker off. Default 5.
    pub failure_threshold: Option<u32>,
    /// How long the circuit stays open before one trial request. Default 30000.
    pub open_ms: Option<u64>,
}

/// Exactly one of `basic`, `bearer` or `header`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum RawAuth {
    /// `Authorization: Basic ...`.
    Basic {
        /// Accepts `${ENV}`.
        username: Text,
        /// Accepts `${ENV}`; write `${NAME}`, never the secret itself.
        password: Text,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Accepts `${ENV}`.
        token: Text,
    },
    /// A key in a header of the system's choosing.
    Header {
        /// The header name, e.g. `X-Api-Key`.
        name: Text,
        /// Accepts `${ENV}`.
        value: Text,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included; 1 disables retries. Default 3.
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt; doubles each time, with jitter. Default 100.
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between attempts. Default 2000.
    pub max_backoff_ms: Option<u64>,
    /// Answer statuses that are retried. Default `[429, 502, 503, 504]`. Connection
    /// failures and timeouts are always retried.
    pub retry_statuses: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Free text for people reading the config.
    pub description: Option<String>,
    /// Where messages come from.
    pub from: Spanned<RawSource>,
    /// JSON Schema the inbound body must satisfy; a path relative to the config
    /// directory, e.g. `schemas/crm-order.json`.
    pub schema: Option<Text>,
    /// Whether the schema's `format` keywords are checked. Default: `server.validate_formats`.
    pub validate_formats: Option<bool>,
    /// Largest accepted body for this route, in bytes. Default: `server.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// The field map from the sender's shape to the receiver's (docs/mapping.md). Without
    /// it the validated body is forwarded as parsed (the same JSON, serialized again).
    pub map: Option<RawMap>,
    /// Lookup tables used by this route's map, by name.
    #[serde(default)]
    pub lookups: IndexMap<Text, RawLookup>,
    /// Where messages go: one destination or a list.
    pub to: OneOrMany<RawDestination>,
    /// For routes that consume from AMQP: how failed messages are retried and where they
    /// are dead-lettered (docs/amqp.md).
    pub failure: Option<RawFailure>,
    /// Sensitive fields, as JSON Pointers into the inbound body (`*` for any index or
    /// key), in addition to those the schema marks `x-pii: true`: their values never reach
    /// logs, traces, dead-letter headers or error answers.
    #[serde(default)]
    pub redact: Vec<Text>,
    /// At most this many messages a second on this route (docs/configuration.md#rate-limits).
    pub rate_limit: Option<RawRateLimit>,
    /// HTTP routes: at most this many requests of the route in flight at once; one more
    /// gets 503 with `Retry-After`. Default: no limit.
    pub concurrency_limit: Option<usize>,
    /// How `qiao replay` compares this route's outputs (docs/replay.md).
    pub replay: Option<RawReplay>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    /// Output fields `qiao replay` leaves out of its diffs, as JSON Pointer globs
    /// (`/data/Model/FDate`, `/**/timestamp`): fields filled from the clock or generated ids.
    #[serde(default)]
    pub ignore: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained rate, messages per second.
    pub per_second: u32,
    /// Messages allowed at once above the rate. Default: `per_second`.
    pub burst: Option<u32>,
    /// `route` (default): one budget for everyone; `client`: one per client IP.
    pub per: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailure {
    /// Attempts in all for a retryable failure, the first included. Default 5.
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt; doubles each time, with jitter. Default 1000.
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between attempts. Default 60000.
    pub max_backoff_ms: Option<u64>,
    /// Where messages that cannot be delivered go. Default `<queue>.dlq`. Accepts `${ENV}`.
    pub dead_letter_queue: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Messages arrive as HTTP requests.
    pub http: Option<RawHttpSource>,
    /// Messages are consumed from an AMQP queue.
    pub amqp: Option<RawAmqpSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpSource {
    /// The system the messages come from; its `amqp` block names the broker.
    pub system: Text,
    /// The queue to consume. Accepts `${ENV}`.
    pub queue: Text,
    /// Routing keys that bind the queue to the system's exchange, when Qiao declares.
    #[serde(default)]
    pub bindings: Vec<Text>,
    /// Unacknowledged messages the broker may send ahead. Default 64.
    pub prefetch: Option<u16>,
    /// Messages processed at once. Default 16.
    pub concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSource {
    /// Path to match, with `{name}` parameters and an optional final `{*rest}` catch-all,
    /// e.g. `/crm/orders/{order_id}`.
    pub path: Text,
    /// Methods accepted. Default `[POST]` for message routes, every method for proxy routes.
    pub methods: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Name of a system under `systems`.
    pub system: Text,
    /// Method of the outbound request. Default `POST` for message routes, the inbound
    /// method for proxy routes.
    pub method: Option<Text>,
    /// Path (and query) on the system, appended to its `base_url`. `{name}` inserts a path
    /// parameter of the route; `{$meta.message_id}` and other `$` paths insert message
    /// data. Default: the inbound path for proxy routes; for message routes, the system's
    /// `base_url` itself.
    pub path: Option<Text>,
    /// Extra headers for this destination; values are templates like `path`.
    #[serde(default)]
    pub headers: IndexMap<Text, Text>,
    /// Overrides the system's `request_timeout_ms` (HTTP) or `confirm_timeout_ms` (AMQP).
    pub timeout_ms: Option<u64>,
    /// `http` or `amqp`; needed only when the system has both transports and the
    /// destination sets neither `path`/`method` nor `routing_key`/`exchange`.
    pub transport: Option<Text>,
    /// AMQP: the exchange to publish to. Default: the system's `exchange`.
    pub exchange: Option<Text>,
    /// AMQP: the routing key, a template like `path` (`wms.stockout.{$body.deliveryOrder.warehouseCode}`).
    pub routing_key: Option<Text>,
    /// A field map for this destination only, used instead of the route's `map` (fan-out
    /// to systems that want different shapes).
    pub map: Option<RawMap>,
    /// Send to this destination only when the condition holds (content-based routing). It
    /// reads the validated inbound message. See docs/routing.md.
    pub when: Option<Spanned<RawCondition>>,
    /// JSON Schema the receiving system accepts: the mapped message is checked against it
    /// before delivery, and a failure is a mapping bug (`output-schema-violation`).
    pub schema: Option<Text>,
}

/// One value or a list of values.
#[derive(Debug)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("one destination (a map) or a list of destinations")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| OneOrMany(vec![t]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
