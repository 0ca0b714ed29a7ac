//! The admin listener: `/healthz` (the process is alive), `/readyz` (it can do its job) and
//! `/metrics` (Prometheus text).

use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::runtime::SharedRuntime;

pub struct Admin {
    pub runtime: SharedRuntime,
    pub started: Instant,
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => json_response(200, &json!({"status": "ok"})),
            "/metrics" => {
                let m = crate::telemetry::metrics::get();
                let runtime = self.runtime.load();
                // States that are cheaper to read at scrape time than to track.
                for broker in runtime.brokers.values() {
                    m.amqp_connected.with_label_values(&[broker.display()]).set(i64::from(broker.is_connected()));
                }
                for system in runtime.config.systems.values() {
                    if let Some(http) = &runtime.links(system).http {
                        let open = http.circuit_state() == qiao_connectors::http::CircuitState::Open;
                        m.circuit_open.with_label_values(&[&system.name]).set(i64::from(open));
                    }
                }
                let body = m.render().into_bytes();
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .header("content-length", body.len())
                    .body(body)
                    .expect("static response parts are valid")
            }
            "/readyz" => {
                let runtime = self.runtime.load();
                let config = &runtime.config;
                let mut checks = vec![
                    json!({"name": "config", "ok": true, "detail": format!("{} routes from {}", config.routes.len(), config.dir.display())}),
                ];
                for broker in runtime.brokers.values() {
                    let ok = broker.is_connected();
                    checks.push(json!({
                        "name": format!("amqp {}", broker.display()),
                        "ok": ok,
                        "detail": match (ok, broker.publishing_blocked()) {
                            // Still ready: consumers go on, and another instance would meet
                            // the same broker; HTTP routes that publish answer 503 meanwhile.
                            (true, Some(reason)) => format!("connected; the broker blocks publishing: {reason}"),
                            (true, None) => "connected".to_string(),
                            (false, _) => broker.last_error().map_or("connecting".to_string(), |e| format!("not connected: {e}")),
                        },
                    }));
                }
                let ready = checks.iter().all(|c| c["ok"] == true);
                // An open circuit is one failing receiver, not a gateway that cannot work:
                // it is reported, and does not make the whole instance unready.
                let circuits: Vec<serde_json::Value> = config
                    .systems
                    .values()
                    .filter_map(|s| {
                        let state = runtime.links(s).http.as_ref()?.circuit_state();
                        Some(json!({"system": s.name, "circuit": state.as_str()}))
                    })
                    .collect();
                json_response(
                    if ready { 200 } else { 503 },
                    &json!({
                        "status": if ready { "ready" } else { "not ready" },
                        "uptime_seconds": self.started.elapsed().as_secs(),
                        "routes": config.routes.len(),
                        "checks": checks,
                        "systems": circuits,
                    }),
                )
            }
            _ => json_response(
                404,
                &json!({"type": "urn:qiao:problem:route-not-found", "title": "No route for this path", "status": 404,
                        "detail": format!("the admin listener serves /healthz, /readyz and /metrics, not {path}")}),
            ),
        }
    }
}
