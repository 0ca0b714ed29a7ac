//! The server section and the systems: HTTP settings, proxy targets, AMQP settings and the
//! topology each broker needs, success rules. Plain data: the runtime builds the clients.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use qiao_connectors::RetryPolicy;
use qiao_connectors::amqp::{Binding, Exchange, Queue, Topology};
use qiao_connectors::http::{HttpAuth, HttpSinkConfig};
use serde_saphyr::Spanned;

use super::super::Place;
use super::super::model::{AmqpSettings, ProxyTarget, ServerSettings, System};
use super::super::raw::{RawAmqpTransport, RawAuth, RawFile, RawHttpTransport, RawServer, RawSuccess};
use super::{Ctx, check_name};
use crate::success::{PRESETS, SuccessRule};

/// Exchange used when a system's `amqp` block names none.
pub const DEFAULT_EXCHANGE: &str = "qiao.events";
const EXCHANGE_TYPES: [&str; 4] = ["topic", "direct", "fanout", "headers"];

pub(super) fn compile_systems(cx: &mut Ctx<'_>, files: &[(PathBuf, RawFile)]) -> IndexMap<String, Arc<System>> {
    let mut systems: IndexMap<String, Arc<System>> = IndexMap::new();
    let mut places: HashMap<String, Place> = HashMap::new();
    for (file, raw) in files {
        for (name, sys) in &raw.systems {
            let place = Place::at(file, &name.referenced);
            if let Some(first) = places.get(&name.value) {
                cx.error(
                    place,
                    format!("system `{}` is defined twice", name.value),
                    Some(format!("first defined at {first}")),
                );
                continue;
            }
            places.insert(name.value.clone(), place.clone());
            check_name(cx, &place, "system", &name.value);
            if sys.http.is_none() && sys.amqp.is_none() {
                cx.broken.insert(name.value.clone());
                cx.error(
                    place,
                    format!("system `{}` has no transport", name.value),
                    Some("add an `http:` block with its `base_url`, or an `amqp:` block with its `url`".into()),
                );
            }
            let (http, proxy) = match &sys.http {
                Some(t) => compile_http(cx, file, &name.value, t).unzip(),
                None => (None, None),
            };
            let amqp = sys.amqp.as_ref().and_then(|a| compile_amqp(cx, file, &name.value, a));
            if (sys.http.is_some() && http.is_none()) || (sys.amqp.is_some() && amqp.is_none()) {
                cx.broken.insert(name.value.clone());
            }
            let success = sys.success.as_ref().and_then(|s| compile_success(cx, file, s));
            let index = systems.len();
            systems.insert(
                name.value.clone(),
                Arc::new(System {
                    name: name.value.clone(),
                    index,
                    kind: sys.kind.value,
                    description: sys.description.clone(),
                    http,
                    proxy,
                    amqp,
                    success,
                }),
            );
        }
    }
    systems
}

/// A preset's name, or a condition over the answer body.
fn compile_success(cx: &mut Ctx<'_>, file: &Path, raw: &Spanned<RawSuccess>) -> Option<SuccessRule> {
    let place = Place::at(file, &raw.referenced);
    match &raw.value {
        RawSuccess::Preset(name) => {
            let rule = SuccessRule::preset(name);
            if rule.is_none() {
                let hint =
                    format!("{}, or `{{ when: <condition>, message: <path> }}`", super::super::suggest(name, PRESETS));
                cx.error(place, format!("unknown success preset `{name}`"), Some(hint));
            }
            rule
        }
        RawSuccess::Rule(rule) => {
            // The rule reads the answer, not the message: `$params`, `$headers` and `$meta`
            // are not there, which the condition's own checks do not know.
            let mut uses = crate::mapping::Uses::default();
            let holds = crate::condition::compile(&rule.when, file, &mut cx.diags, &mut uses)?;
            if uses.any() {
                cx.error(
                    Place::at(file, &rule.when.referenced),
                    "a success rule reads the receiver's answer: `$params`, `$headers` and `$meta` are not there",
                    None,
                );
                return None;
            }
            let message = match &rule.message {
                None => None,
                Some(m) => match crate::mapping::SourcePath::parse(&m.value) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        cx.error(Place::at(file, &m.referenced), format!("bad path `{}`: {e}", m.value), None);
                        return None;
                    }
                },
            };
            Some(SuccessRule::Condition(Box::new(crate::success::OwnRule { holds, message })))
        }
    }
}

fn compile_amqp(cx: &mut Ctx<'_>, file: &Path, system: &str, raw: &RawAmqpTransport) -> Option<AmqpSettings> {
    let url = cx.env_value(file, &raw.url)?;
    let place = Place::at(file, &raw.url.referenced);
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "amqp" | "amqps") && u.host_str().is_some() => {}
        _ => {
            cx.error(
                place,
                format!("`{}` is not an AMQP URL", qiao_connectors::amqp::redact_url(&url)),
                Some("write it as amqp://user:password@host:5672/vhost (%2f is the default vhost)".into()),
            );
            return None;
        }
    }
    let exchange = match &raw.exchange {
        Some(e) => cx.env_value(file, e)?,
        None => DEFAULT_EXCHANGE.to_string(),
    };
    let kind = raw.exchange_type.as_ref().map_or("topic".to_string(), |t| t.value.to_ascii_lowercase());
    if !EXCHANGE_TYPES.contains(&kind.as_str()) {
        let t = raw.exchange_type.as_ref().expect("set");
        cx.error(
            Place::at(file, &t.referenced),
            format!("unknown exchange type `{}`", t.value),
            Some(super::super::suggest(&kind, EXCHANGE_TYPES)),
        );
    }
    let passive = !raw.declare.unwrap_or(true);
    let mut topology = Topology::default();
    if !exchange.is_empty() {
        topology.exchanges.push(Exchange { name: exchange.clone(), kind, passive });
    }
    for q in &raw.queues {
        let Some(name) = cx.env_value(file, &q.name) else { continue };
        topology.queues.push(Queue { name: name.clone(), dead_letter_to: None, passive });
        for key in &q.bindings {
            if exchange.is_empty() {
                cx.error(
                    Place::at(file, &key.referenced),
                    "a queue cannot be bound to the default exchange",
                    Some("give the system an `exchange`".into()),
                );
                continue;
            }
            topology.bindings.push(Binding {
                queue: name.clone(),
                exchange: exchange.clone(),
                routing_key: key.value.clone(),
                passive,
            });
        }
    }
    let _ = system;
    cx.brokers.entry(url.clone()).or_default().merge(topology);
    Some(AmqpSettings {
        url,
        exchange,
        confirm_timeout: Duration::from_millis(raw.confirm_timeout_ms.unwrap_or(5_000)),
        declare: !passive,
    })
}

pub(super) fn compile_server(cx: &mut Ctx<'_>, files: &[(PathBuf, RawFile)]) -> ServerSettings {
    let mut settings = ServerSettings::default();
    let mut seen: Option<Place> = None;
    for (file, raw) in files {
        let Some(server) = &raw.server else { continue };
        let place = Place::at(file, &server.referenced);
        if let Some(first) = &seen {
            cx.error(
                place,
                "the `server` section appears in more than one file",
                Some(format!("it is already in {first}")),
            );
            continue;
        }
        seen = Some(place.clone());
        let RawServer {
            listen,
            admin_listen,
            threads,
            max_body_bytes,
            validate_formats,
            drain_seconds,
            grace_period_seconds,
            graceful_shutdown_timeout_seconds,
            header_timeout_ms,
            body_timeout_ms,
            idle_timeout_ms,
            max_header_count,
            max_header_bytes,
            telemetry,
            journal,
        } = &server.value;
        if let Some(j) = journal {
            compile_journal(cx, file, &place, j, &mut settings.journal);
        }
        if let Some(t) = telemetry {
            let s = &mut settings.telemetry;
            if let Some(e) = &t.otlp_endpoint
                && let Some(v) = cx.env_value(file, e)
            {
                s.endpoint = Some(v).filter(|v| !v.trim().is_empty());
            }
            if let Some(p) = &t.otlp_protocol {
                match p.value.as_str() {
                    "http/protobuf" => s.protocol = Some(crate::telemetry::OtlpProtocol::HttpProtobuf),
                    "grpc" => s.protocol = Some(crate::telemetry::OtlpProtocol::Grpc),
                    other => cx.error(
                        Place::at(file, &p.referenced),
                        format!("unknown OTLP protocol `{other}`"),
                        Some("`http/protobuf` or `grpc`".into()),
                    ),
                }
            }
            if let Some(r) = t.sample_ratio {
                if !(0.0..=1.0).contains(&r) {
                    cx.error(place.clone(), format!("sample_ratio {r} is not between 0.0 and 1.0"), None);
                }
                s.sample_ratio = Some(r.clamp(0.0, 1.0));
            }
            if let Some(n) = &t.service_name
                && let Some(v) = cx.env_value(file, n)
            {
                s.service_name = Some(v).filter(|v| !v.trim().is_empty());
            }
        }
        for (text, slot) in [(listen, &mut settings.listen), (admin_listen, &mut settings.admin_listen)] {
            if let Some(text) = text
                && let Some(v) = cx.env_value(file, text)
            {
                if v.parse::<std::net::SocketAddr>().is_err() {
                    cx.error(
                        Place::at(file, &text.referenced),
                        format!("`{v}` is not an address to listen on"),
                        Some("write it as host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080".into()),
                    );
                }
                *slot = v;
            }
        }
        if let Some(t) = threads {
            if *t == 0 {
                cx.error(place.clone(), "`threads` must be at least 1", None);
            }
            settings.threads = (*t).max(1);
        }
        if let Some(b) = max_body_bytes {
            settings.max_body_bytes = *b;
        }
        if let Some(v) = validate_formats {
            settings.validate_formats = *v;
        }
        if let Some(s) = drain_seconds {
            settings.drain_seconds = *s;
        }
        if let Some(s) = grace_period_seconds {
            settings.grace_period_seconds = *s;
        }
        if let Some(s) = graceful_shutdown_timeout_seconds {
            settings.graceful_shutdown_timeout_seconds = *s;
        }
        for (key, value, slot) in [
            ("header_timeout_ms", header_timeout_ms, &mut settings.header_timeout),
            ("body_timeout_ms", body_timeout_ms, &mut settings.body_timeout),
            ("idle_timeout_ms", idle_timeout_ms, &mut settings.idle_timeout),
        ] {
            match value {
                Some(0) => cx.error(
                    place.clone(),
                    format!("`{key}` must be at least 1"),
                    Some("a client must be given some time; leave the key out for the default".into()),
                ),
                Some(ms) => *slot = Duration::from_millis(*ms),
                None => {}
            }
        }
        // pingora parses at most 256 header fields of at most 1 MiB in all; past that it
        // answers 400 by itself.
        for (key, value, slot, most) in [
            ("max_header_count", max_header_count, &mut settings.max_header_count, 256),
            ("max_header_bytes", max_header_bytes, &mut settings.max_header_bytes, 1_048_575),
        ] {
            match value {
                Some(n) if *n == 0 || *n > most => cx.error(
                    place.clone(),
                    format!("`{key}: {n}` is out of range"),
                    Some(format!("from 1 to {most}, what pingora can parse")),
                ),
                Some(n) => *slot = *n,
                None => {}
            }
        }
    }
    settings
}

fn compile_journal(
    cx: &mut Ctx<'_>,
    file: &Path,
    place: &Place,
    raw: &super::super::raw::RawJournal,
    s: &mut super::super::model::JournalSettings,
) {
    if let Some(d) = &raw.dir
        && let Some(v) = cx.env_value(file, d)
    {
        s.dir = Some(v.trim()).filter(|v| !v.is_empty()).map(PathBuf::from);
    }
    let positive = |cx: &mut Ctx<'_>, key: &str, v: Option<u64>| match v {
        Some(0) => {
            cx.error(place.clone(), format!("`journal.{key}` must be at least 1"), None);
            None
        }
        v => v,
    };
    if let Some(b) = positive(cx, "segment_bytes", raw.segment_bytes) {
        s.segment_bytes = b;
    }
    if let Some(v) = positive(cx, "segment_age_seconds", raw.segment_age_seconds) {
        s.segment_age = Duration::from_secs(v);
    }
    if let Some(v) = positive(cx, "retention_age_hours", raw.retention_age_hours) {
        s.retention_age = Duration::from_secs(v.saturating_mul(3600));
    }
    if let Some(v) = positive(cx, "retention_bytes", raw.retention_bytes) {
        s.retention_bytes = v;
    }
    if let Some(v) = positive(cx, "channel", raw.channel.map(|c| c as u64)) {
        s.channel = v as usize;
    }
}

fn compile_http(
    cx: &mut Ctx<'_>,
    file: &Path,
    system: &str,
    raw: &RawHttpTransport,
) -> Option<(HttpSinkConfig, ProxyTarget)> {
    let base = cx.env_value(file, &raw.base_url)?;
    let base_place = Place::at(file, &raw.base_url.referenced);
    let url = match url::Url::parse(&base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        Ok(u) => {
            cx.error(
                base_place,
                format!("base_url `{base}` must be an http:// or https:// URL with a host (scheme is {})", u.scheme()),
                None,
            );
            return None;
        }
        Err(e) => {
            cx.error(
                base_place,
                format!("base_url `{base}` is not a URL: {e}"),
                Some("e.g. http://127.0.0.1:9101 or https://erp.example.com/k3cloud".into()),
            );
            return None;
        }
    };
    if url.query().is_some() || url.fragment().is_some() {
        cx.error(
            base_place.clone(),
            format!("base_url `{base}` may not have a query or fragment"),
            Some("put queries in the destination `path`".into()),
        );
    }

    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let place = Place::at(file, &name.referenced);
        let Ok(hname) = HeaderName::from_bytes(name.value.as_bytes()) else {
            cx.error(place, format!("`{}` is not a valid header name", name.value), None);
            continue;
        };
        let Some(v) = cx.env_value(file, value) else {
            continue;
        };
        match HeaderValue::from_str(&v) {
            Ok(hv) => headers.push((hname, hv)),
            Err(_) => cx.error(
                Place::at(file, &value.referenced),
                format!("the value of header `{}` is not a valid header value", name.value),
                None,
            ),
        }
    }

    let auth = match &raw.auth {
        None => None,
        Some(RawAuth::Basic { username, password }) => {
            let (u, p) = (cx.env_value(file, username), cx.env_value(file, password));
            Some(HttpAuth::Basic { username: u?, password: p? })
        }
        Some(RawAuth::Bearer { token }) => Some(HttpAuth::Bearer { token: cx.env_value(file, token)? }),
        Some(RawAuth::Header { name, value }) => {
            let Ok(hname) = HeaderName::from_bytes(name.value.as_bytes()) else {
                cx.error(
                    Place::at(file, &name.referenced),
                    format!("`{}` is not a valid header name", name.value),
                    None,
                );
                return None;
            };
            Some(HttpAuth::Header { name: hname, value: cx.env_value(file, value)? })
        }
    };
    let mut all_headers = headers.clone();
    if let Some(a) = &auth {
        match a.header() {
            Ok(h) => all_headers.push(h),
            Err(e) => cx.error(base_place.clone(), format!("system `{system}`: {e}"), None),
        }
    }

    let defaults = RetryPolicy::default();
    let retry = match &raw.retry {
        None => defaults,
        Some(r) => RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            initial_backoff: r.initial_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.initial_backoff),
            max_backoff: r.max_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.max_backoff),
            retry_statuses: r.retry_statuses.clone().unwrap_or(defaults.retry_statuses),
        },
    };
    let connect_timeout = Duration::from_millis(raw.connect_timeout_ms.unwrap_or(2_000));
    let request_timeout = Duration::from_millis(raw.request_timeout_ms.unwrap_or(10_000));
    let sink = HttpSinkConfig {
        system: system.to_string(),
        base_url: url.clone(),
        connect_timeout,
        request_timeout,
        pool_idle_timeout: Duration::from_millis(raw.pool_idle_timeout_ms.unwrap_or(90_000)),
        pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(256),
        auth,
        headers,
        retry,
        circuit: qiao_connectors::http::CircuitConfig {
            failure_threshold: raw.circuit_breaker.as_ref().and_then(|c| c.failure_threshold).unwrap_or(5),
            open_for: Duration::from_millis(raw.circuit_breaker.as_ref().and_then(|c| c.open_ms).unwrap_or(30_000)),
        },
    };
    let tls = url.scheme() == "https";
    let host = url.host_str().expect("checked above").to_string();
    let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let proxy = ProxyTarget {
        host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port,
        tls,
        base_path: url.path().trim_end_matches('/').to_string(),
        authority,
        connect_timeout,
        read_timeout: request_timeout,
        headers: all_headers,
    };
    Some((sink, proxy))
}
