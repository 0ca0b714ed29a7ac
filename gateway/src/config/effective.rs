//! `qiao run --print-config`: the configuration as it would serve, after `${ENV}`
//! references, defaults and command-line overrides, with every secret masked — what ops
//! check before a deployment, and attach to a ticket without leaking credentials.

use qiao_connectors::http::HttpAuth;
use serde_json::{Value, json};

use super::{Config, Source, Via};

const MASK: &str = "***";

/// The effective configuration as JSON, secrets masked: credentials, passwords in broker
/// URLs, and header values whose names say they are secret.
pub fn effective(config: &Config) -> Value {
    let s = &config.server;
    let t = s.telemetry.clone().with_env();
    let server = json!({
        "listen": s.listen,
        "admin_listen": s.admin_listen,
        "threads": s.threads,
        "max_body_bytes": s.max_body_bytes,
        "validate_formats": s.validate_formats,
        "drain_seconds": s.drain_seconds,
        "grace_period_seconds": s.grace_period_seconds,
        "graceful_shutdown_timeout_seconds": s.graceful_shutdown_timeout_seconds,
        "header_timeout_ms": s.header_timeout.as_millis() as u64,
        "body_timeout_ms": s.body_timeout.as_millis() as u64,
        "idle_timeout_ms": s.idle_timeout.as_millis() as u64,
        "max_header_count": s.max_header_count,
        "max_header_bytes": s.max_header_bytes,
        "telemetry": {
            "otlp_endpoint": t.endpoint,
            "otlp_protocol": format!("{:?}", t.protocol()),
            "sample_ratio": t.sample_ratio.unwrap_or(1.0),
            "service_name": t.service_name.clone().unwrap_or_else(|| "qiao".into()),
        },
        "journal": {
            "dir": s.journal.dir.as_ref().map(|d| d.display().to_string()),
            "segment_bytes": s.journal.segment_bytes,
            "segment_age_seconds": s.journal.segment_age.as_secs(),
            "retention_age_hours": s.journal.retention_age.as_secs() / 3600,
            "retention_bytes": s.journal.retention_bytes,
            "channel": s.journal.channel,
        },
    });
    let systems: serde_json::Map<String, Value> = config
        .systems
        .iter()
        .map(|(name, sys)| {
            let mut v = json!({"kind": sys.kind.as_str()});
            if let Some(h) = &sys.http {
                let headers: serde_json::Map<String, Value> = h
                    .headers
                    .iter()
                    .map(|(k, val)| {
                        let shown = if crate::redact::header_is_secret(k.as_str()) {
                            MASK.to_string()
                        } else {
                            val.to_str().unwrap_or("(binary)").to_string()
                        };
                        (k.as_str().to_string(), Value::String(shown))
                    })
                    .collect();
                v["http"] = json!({
                    "base_url": h.base_url.as_str(),
                    "connect_timeout_ms": h.connect_timeout.as_millis() as u64,
                    "request_timeout_ms": h.request_timeout.as_millis() as u64,
                    "pool_idle_timeout_ms": h.pool_idle_timeout.as_millis() as u64,
                    "pool_max_idle_per_host": h.pool_max_idle_per_host,
                    "headers": headers,
                    "auth": h.auth.as_ref().map(|a| match a {
                        HttpAuth::Basic { username, .. } => json!({"basic": {"username": username, "password": MASK}}),
                        HttpAuth::Bearer { .. } => json!({"bearer": {"token": MASK}}),
                        HttpAuth::Header { name, .. } => json!({"header": {"name": name.as_str(), "value": MASK}}),
                    }),
                    "retry": {
                        "max_attempts": h.retry.max_attempts,
                        "initial_backoff_ms": h.retry.initial_backoff.as_millis() as u64,
                        "max_backoff_ms": h.retry.max_backoff.as_millis() as u64,
                        "retry_statuses": h.retry.retry_statuses,
                    },
                    "circuit_breaker": {
                        "failure_threshold": h.circuit.failure_threshold,
                        "open_ms": h.circuit.open_for.as_millis() as u64,
                    },
                });
            }
            if let Some(a) = &sys.amqp {
                v["amqp"] = json!({
                    "url": qiao_connectors::amqp::redact_url(&a.url),
                    "exchange": a.exchange,
                    "confirm_timeout_ms": a.confirm_timeout.as_millis() as u64,
                    "declare": a.declare,
                });
            }
            v["success"] = match &sys.success {
                None => Value::Null,
                Some(crate::success::SuccessRule::Condition(_)) => "a rule of its own".into(),
                Some(preset) => format!("{preset:?}").to_lowercase().into(),
            };
            (name.clone(), v)
        })
        .collect();
    let routes: serde_json::Map<String, Value> = config
        .routes
        .iter()
        .map(|r| {
            let from = match &r.source {
                Source::Http { methods, path } => json!({"http": {"path": path,
                    "methods": methods.iter().map(|m| m.as_ref().map_or("ANY".to_string(), |m| m.to_string())).collect::<Vec<_>>()}}),
                Source::Amqp(a) => json!({"amqp": {
                    "broker": qiao_connectors::amqp::redact_url(&a.broker), "queue": a.queue,
                    "prefetch": a.prefetch, "concurrency": a.concurrency,
                    "stall_after_ms": a.stall_after.map(|d| d.as_millis() as u64),
                    "max_attempts": a.policy.max_attempts, "dead_letter_queue": a.dead_letter_queue}}),
            };
            let to: Vec<Value> = r
                .destinations
                .iter()
                .map(|d| {
                    let mut v = json!({"system": d.system.name, "map": d.mapping.is_some() || r.mapping.is_some(),
                        "when": d.when.is_some(), "schema": d.schema.as_ref().map(|s| s.file.display().to_string())});
                    match &d.via {
                        Via::Http { method, .. } => {
                            v["transport"] = "http".into();
                            v["method"] = method.as_ref().map_or("POST".to_string(), |m| m.to_string()).into();
                        }
                        Via::Amqp { exchange, .. } => {
                            v["transport"] = "amqp".into();
                            v["exchange"] = exchange.clone().into();
                        }
                    }
                    v
                })
                .collect();
            let kind = match r.kind {
                super::RouteKind::Message => "message",
                super::RouteKind::Proxy => "proxy",
            };
            (
                r.name.to_string(),
                json!({"kind": kind, "from": from, "schema": r.schema.as_ref().map(|s| s.file.display().to_string()),
                       "max_body_bytes": r.max_body_bytes,
                       "concurrency_limit": r.concurrency, "to": to,
                       "replay": {"ignore": r.replay_ignore},
                       "auth": format!("{:?}", r.auth).to_lowercase()}),
            )
        })
        .collect();
    // Clients by name and scope; their keys never (not even as digests).
    let clients: serde_json::Map<String, Value> = config
        .auth
        .clients
        .iter()
        .map(|c| {
            let mut routes: Vec<&str> = c.routes.iter().map(|r| &**r).collect();
            routes.sort_unstable();
            (c.name.to_string(), json!({"api_keys": c.key_digests.len(), "jwt_subject": c.subject, "routes": routes}))
        })
        .collect();
    let auth = config.auth.jwt.as_ref().map(|j| {
        json!({"issuer": j.issuer, "audience": j.audience, "leeway_s": j.leeway_s,
               "algorithms": j.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
               "jwks_file": j.jwks_file.as_ref().map(|p| p.display().to_string()),
               "jwks_keys": j.jwks.as_ref().map_or(0, |s| s.keys.len()),
               "hs256_secret": j.hs256_secret.as_ref().map(|_| "***")})
    });
    json!({"dir": config.dir.display().to_string(), "server": server, "systems": systems, "routes": routes,
           "auth": auth, "clients": clients})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overlay;

    #[test]
    fn secrets_are_masked_and_the_rest_is_shown() {
        let env = Overlay(vec![
            ("CRM_TOKEN".into(), "tok-7f3a9".into()),
            ("AMQP_URL".into(), "amqp://qiao:pa55word@127.0.0.1:5672/%2f".into()),
            ("ERP_URL".into(), "http://erp.example:9101".into()),
        ]);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../routes");
        let config = crate::config::load(&dir, &env).unwrap();
        let shown = effective(&config);
        let text = shown.to_string();
        assert!(!text.contains("tok-7f3a9") && !text.contains("pa55word"), "{text}");
        assert_eq!(shown["systems"]["crm"]["http"]["auth"]["bearer"]["token"], MASK);
        assert_eq!(shown["systems"]["wms"]["amqp"]["url"], "amqp://qiao:***@127.0.0.1:5672/%2f");
        assert_eq!(shown["systems"]["erp"]["http"]["base_url"], "http://erp.example:9101/");
        assert_eq!(shown["systems"]["erp"]["success"], "kingdee");
        assert_eq!(shown["routes"]["crm-order-to-erp"]["to"][0]["system"], "erp");
    }
}
