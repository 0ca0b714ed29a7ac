//! The admin listener: `/healthz` (the process is alive) and `/readyz` (it can do its job).

use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::edge::SharedConfig;

pub struct Admin {
    pub config: SharedConfig,
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
            "/readyz" => {
                let config = self.config.load();
                json_response(
                    200,
                    &json!({
                        "status": "ready",
                        "uptime_seconds": self.started.elapsed().as_secs(),
                        "config": {
                            "dir": config.dir.display().to_string(),
                            "routes": config.routes.len(),
                            "systems": config.systems.keys().collect::<Vec<_>>(),
                        },
                        "checks": [{"name": "config", "ok": true}],
                    }),
                )
            }
            _ => json_response(
                404,
                &json!({"type": "urn:qiao:problem:route-not-found", "title": "No route for this path", "status": 404,
                        "detail": format!("the admin listener serves /healthz and /readyz, not {path}")}),
            ),
        }
    }
}
