//! The admin listener: `/healthz` (the process is alive), `/readyz` (it can do its job),
//! `/metrics` (Prometheus text), `POST /admin/reload` and `GET /admin/tap` ([`tap`]).
//!
//! It listens on 127.0.0.1 by default. What changes state (a reload) needs the admin token
//! when `QIAO_ADMIN_TOKEN` is set (`Authorization: Bearer <token>`); the tap, which shows
//! message content, is served only when it is set.

mod tap;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::json;

use crate::runtime::SharedRuntime;

/// How long an attempt to connect to a broker may take before readiness says it gets no
/// answer: against a live RabbitMQ it takes milliseconds.
const HANDSHAKE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Admin {
    pub runtime: SharedRuntime,
    pub started: Instant,
    pub reloader: std::sync::Arc<crate::runtime::reload::Reloader>,
    /// Needed by state-changing endpoints when set.
    pub token: Option<String>,
}

impl Admin {
    /// Whether the request carries the admin token (or none is required), compared in
    /// constant time so that the answer's timing says nothing of the token.
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else { return true };
        let given = session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let (a, b) = (given.as_bytes(), token.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in b.iter().enumerate() {
            diff |= usize::from(x ^ a.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

/// The admin listener as pingora runs it: the tap streams its answer, which [`ServeHttp`]
/// cannot; every other path is answered whole by [`Admin`]'s [`ServeHttp`].
pub struct AdminApp(pub Admin);

#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // As pingora's own `ServeHttp` driver does, with the tap branching off.
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "admin: cannot read a request");
                return None;
            }
        }
        if http.req_header().uri.path() == "/admin/tap" {
            tap::serve(&self.0, http, shutdown).await;
            return None;
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let (parts, body) = self.0.response(&mut http).await.into_parts();
        let header: ResponseHeader = parts.into();
        if let Err(e) = http.write_response_header(Box::new(header)).await {
            tracing::debug!(error = %e, "admin: cannot write an answer");
            return None;
        }
        if !body.is_empty()
            && let Err(e) = http.write_response_body(body.into(), true).await
        {
            tracing::debug!(error = %e, "admin: cannot write an answer");
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(c) => c.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(_) => None,
        }
    }
}

fn problem(status: u16, slug: &str, title: &str, detail: String) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(&json!({"type": format!("urn:qiao:problem:{slug}"), "title": title,
        "status": status, "detail": detail}))
    .unwrap_or_default();
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .header("content-length", body.len())
        .header("cache-control", "no-store");
    if status == 401 {
        r = r.header("www-authenticate", "Bearer realm=\"qiao-admin\"");
    }
    r.body(body).expect("static response parts are valid")
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

/// One check per broker, naming the routes that consume from it and the HTTP routes that
/// publish to it. A broker not reached since the start makes the instance unready (a new
/// replica waits for it while the others serve). One lost later makes it unready only when
/// nothing it serves over HTTP works without a broker that is down: readiness steers HTTP
/// traffic, consumers go on either way, and every replica meets the same broker, so taking
/// all of them out would only stop the HTTP routes that never needed it.
fn broker_checks(runtime: &crate::runtime::Runtime) -> Vec<serde_json::Value> {
    use crate::config::{Source, Via};
    let config = &runtime.config;
    let down = |url: &str| runtime.broker(url).is_some_and(|b| !b.is_connected());
    let publishes_to = |route: &crate::config::Route, url: &str| {
        route
            .destinations
            .iter()
            .any(|d| matches!(d.via, Via::Amqp { .. }) && d.system.amqp.as_ref().is_some_and(|a| a.url == url))
    };
    let http_routes = || config.routes.iter().filter(|r| matches!(r.source, Source::Http { .. }));
    let some_http_route_works =
        http_routes().any(|r| !runtime.brokers.keys().any(|url| down(url) && publishes_to(r, url)));
    let mut checks = Vec::new();
    for (url, broker) in &runtime.brokers {
        let ok = broker.is_connected();
        let consumers: Vec<&str> = config
            .routes
            .iter()
            .filter(|r| matches!(&r.source, Source::Amqp(s) if s.broker == *url))
            .map(|r| &*r.name)
            .collect();
        let publishers: Vec<&str> = http_routes().filter(|r| publishes_to(r, url)).map(|r| &*r.name).collect();
        checks.push(json!({
            "name": format!("amqp {}", broker.display()),
            "ok": ok,
            "required": ok || !broker.has_connected() || !some_http_route_works,
            "detail": match (ok, broker.publishing_blocked()) {
                // Still ready: consumers go on, and another instance would meet
                // the same broker; HTTP routes that publish answer 503 meanwhile.
                (true, Some(reason)) => format!("connected; the broker blocks publishing: {reason}"),
                (true, None) => "connected".to_string(),
                (false, _) => {
                    let why = match (broker.connecting_for(), broker.last_error()) {
                        (Some(t), last) if t >= HANDSHAKE_PATIENCE => {
                            let last = last.map(|e| format!("; the attempt before: {e}")).unwrap_or_default();
                            format!(
                                "not connected: connecting for {} s without an answer to the AMQP handshake (a \
                                 port that is not a broker, a broker still starting, or a peer that does not \
                                 answer){last}",
                                t.as_secs()
                            )
                        }
                        (_, Some(e)) => format!("not connected: {e}"),
                        (_, None) => "connecting".to_string(),
                    };
                    if some_http_route_works && broker.has_connected() {
                        format!("{why}; still ready: HTTP routes that do not publish to it keep serving")
                    } else {
                        why
                    }
                }
            },
            "consumed_by": consumers,
            "published_to_by": publishers,
        }));
    }
    checks
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match path.as_str() {
            "/admin/reload" => {
                if method != http::Method::POST {
                    return problem(
                        405,
                        "method-not-allowed",
                        "Method not allowed",
                        "POST /admin/reload reloads the configuration".into(),
                    );
                }
                if !self.authorized(session) {
                    return problem(
                        401,
                        "unauthorized",
                        "The admin token is missing or wrong",
                        "send `Authorization: Bearer <QIAO_ADMIN_TOKEN>`".into(),
                    );
                }
                let outcome = self.reloader.reload("POST /admin/reload").await;
                let (status, body) = crate::runtime::reload::Reloader::answer(&outcome);
                let mut r = json_response(status, &body);
                if status != 200 {
                    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/problem+json"));
                }
                r
            }
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
                let status = self.reloader.status();
                let mut detail =
                    format!("{} routes from {}, hash {}", config.routes.len(), config.dir.display(), status.hash);
                if let Some((at, problems)) = &status.last_error {
                    // Still ready: the old configuration keeps serving.
                    detail.push_str(&format!(
                        "; the reload at {at} was refused ({} problems), the first: {}",
                        problems.len(),
                        problems.first().map(String::as_str).unwrap_or("-")
                    ));
                }
                let mut checks = vec![json!({"name": "config", "ok": true, "detail": detail})];
                if crate::ingress::http::draining() {
                    checks.push(json!({"name": "shutdown", "ok": false,
                        "detail": "draining after SIGTERM: finishing what is in progress, taking no new work"}));
                }
                checks.extend(broker_checks(&runtime));
                for route in &config.routes {
                    if let crate::config::Source::Amqp(src) = &route.source
                        && let Some(after) = src.stall_after
                        && let Some(why) = crate::ingress::amqp::progress::stalled(&route.name, after)
                    {
                        checks.push(json!({"name": format!("consumer {}", route.name), "ok": false,
                            "detail": format!("route {} on queue {} is stalled: {why}", route.name, src.queue)}));
                    }
                }
                // A check marked `"required": false` is reported but keeps the instance ready.
                let ready = checks.iter().all(|c| c["ok"] == true || c["required"] == false);
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
                        "config": {
                            "hash": status.hash,
                            "loaded_at": status.loaded_at,
                            "reloads": status.reloads,
                            "last_error": status.last_error.as_ref().map(|(at, p)| json!({"at": at, "problems": p})),
                        },
                        "checks": checks,
                        "systems": circuits,
                    }),
                )
            }
            _ => json_response(
                404,
                &json!({"type": "urn:qiao:problem:route-not-found", "title": "No route for this path", "status": 404,
                        "detail": format!("the admin listener serves /healthz, /readyz, /metrics, POST /admin/reload and GET /admin/tap, not {path}")}),
            ),
        }
    }
}
