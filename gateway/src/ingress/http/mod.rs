//! The HTTP edge on pingora: every inbound HTTP request enters here.
//!
//! Message routes (a schema or a map) are handled entirely in `request_filter`: Qiao reads
//! the whole body itself (bounded by `max_body_bytes`), runs the pipeline and delivers
//! through the connector's hyper client, then writes the answer. Nothing goes through
//! pingora's retry buffer, which stops at 64 KiB. Proxy routes (neither) return from
//! `request_filter` and stream through pingora's proxy engine unchanged.

mod answer;
mod conn;
mod message;
mod proxy;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use qiao_connectors::MessageId;
use tracing::Instrument;

use crate::config::{Route, RouteKind};
use crate::error::{ErrorKind, Failure};
use crate::limits::{self, Verdict};
use crate::routing::Found;
use crate::runtime::{Runtime, SharedRuntime};
use crate::telemetry::access;
pub use proxy::ProxyPlan;

pub struct Edge {
    pub runtime: SharedRuntime,
}

/// Set when a graceful stop begins (SIGTERM): until the listeners close, every answer says
/// `Connection: close`, so that a client sends its next request on a new connection (to
/// another instance) instead of on one about to close under it.
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts draining: see [`DRAINING`].
pub fn start_draining() {
    DRAINING.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn draining() -> bool {
    DRAINING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The HTTP ingress as a pingora service: the proxy around [`Edge`], behind the connection
/// limits of [`conn`].
pub fn service(
    conf: &Arc<pingora::server::configuration::ServerConf>,
    runtime: SharedRuntime,
) -> pingora::services::listening::Service<conn::EdgeApp> {
    let proxy = pingora::proxy::http_proxy(conf, Edge { runtime: runtime.clone() });
    pingora::services::listening::Service::new("qiao-edge".to_string(), conn::EdgeApp::new(proxy, runtime))
}

/// Per-request state shared by the phases.
pub struct Ctx {
    started: Instant,
    /// The runtime (config and clients) this request runs on: a reload never splits a
    /// request.
    runtime: Option<Arc<Runtime>>,
    route: Option<Arc<Route>>,
    message_id: Option<MessageId>,
    error: Option<ErrorKind>,
    /// What went wrong, already redacted, for the access line.
    error_detail: Option<String>,
    status: u16,
    proxy: Option<ProxyPlan>,
    /// Bytes of a proxied body seen so far.
    body_seen: u64,
    /// When the request body must be in (`server.body_timeout_ms` after the header).
    body_deadline: Instant,
    /// The request's place under its route's `concurrency_limit`.
    permit: Option<crate::limits::Permit>,
    /// `RateLimit-Policy` and `RateLimit` for the answer, on a route with a rate limit.
    rate_fields: Option<Box<[(&'static str, String); 2]>>,
    /// The authenticated client (routes with `auth:`); `None`: anonymous.
    client: Option<Arc<str>>,
    /// The request's server span; phases and deliveries are its children.
    otel: opentelemetry::Context,
    /// The span that gives every log line of this request its trace and message ids.
    log_span: tracing::Span,
    /// The journal's record of the message, when it keeps one (`true`: to disk).
    journal: Option<(Box<crate::journal::Pending>, bool)>,
}

impl Ctx {
    /// The authenticated client's name, for the journal's `Record.client` and per-client
    /// limits; `None` for anonymous callers and routes without `auth:`.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }
}

/// Starts the server span, from the caller's trace context when it sent one.
fn begin(ctx: &mut Ctx, session: &Session, route: Option<&Route>) {
    let req = session.req_header();
    let parent = crate::telemetry::trace::extract_http(&req.headers);
    ctx.otel = crate::telemetry::trace::start(SpanKind::Server, &parent, "http", || {
        let pattern = route.and_then(|r| r.http_path());
        let name = match pattern {
            Some(p) => format!("{} {p}", req.method),
            None => req.method.to_string(),
        };
        let mut attrs = vec![
            KeyValue::new("http.request.method", req.method.to_string()),
            KeyValue::new("url.path", req.uri.path().to_string()),
            KeyValue::new("url.scheme", "http"),
        ];
        if let Some(a) = session.client_addr().and_then(|a| a.as_inet()) {
            attrs.push(KeyValue::new("client.address", a.ip().to_string()));
        }
        if let (Some(p), Some(r)) = (pattern, route) {
            attrs.push(KeyValue::new("http.route", p.to_string()));
            attrs.push(KeyValue::new("qiao.route", r.name.clone()));
        }
        if let Some(id) = &ctx.message_id {
            attrs.push(KeyValue::new("messaging.message.id", id.to_string()));
        }
        (name.into(), attrs)
    });
    let (trace_id, span_id) = crate::telemetry::trace::ids(&ctx.otel);
    ctx.log_span = tracing::info_span!(
        "message",
        trace_id = %trace_id,
        span_id = %span_id,
        route = route.map_or("-", |r| &*r.name),
        message_id = ctx.message_id.as_ref().map_or("-", MessageId::as_str),
    );
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            runtime: None,
            route: None,
            message_id: None,
            error: None,
            error_detail: None,
            status: 0,
            proxy: None,
            body_seen: 0,
            body_deadline: Instant::now(),
            permit: None,
            rate_fields: None,
            client: None,
            otel: opentelemetry::Context::new(),
            log_span: tracing::Span::none(),
            journal: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        conn::began(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let runtime = self.runtime.load_full();
        ctx.runtime = Some(runtime.clone());
        let config = &runtime.config;
        ctx.body_deadline = ctx.started + config.server.body_timeout;
        session.set_total_drain_timeout(Some(config.server.body_timeout));
        if both_lengths(session) {
            begin(ctx, session, None);
            session.set_keepalive(None);
            let f = Failure::new(
                ErrorKind::BadRequest,
                "the request has both Content-Length and Transfer-Encoding: its length is ambiguous \
                 (RFC 9112 section 6.1), a way to smuggle a second request past a proxy",
            );
            answer::problem(session, ctx, &f).await?;
            return Ok(true);
        }
        let (method, path) = {
            let req = session.req_header();
            (req.method.clone(), req.uri.path().to_string())
        };
        let (index, params) = match config.router.find(&method, &path) {
            Found::Route { index, params } => (index, params),
            Found::NotFound => {
                begin(ctx, session, None);
                answer::discard_body(session, config.server.max_body_bytes, ctx.body_deadline).await;
                let f = Failure::new(ErrorKind::RouteNotFound, format!("no route matches {method} {path}"));
                answer::problem(session, ctx, &f).await?;
                return Ok(true);
            }
            Found::MethodNotAllowed { allow } => {
                begin(ctx, session, None);
                answer::discard_body(session, config.server.max_body_bytes, ctx.body_deadline).await;
                let mut f = Failure::new(ErrorKind::MethodNotAllowed, format!("{path} does not accept {method}"));
                f.allow = allow.iter().map(|m| m.to_string()).collect();
                answer::problem(session, ctx, &f).await?;
                return Ok(true);
            }
        };
        let route = config.routes[index].clone();
        ctx.route = Some(route.clone());
        ctx.message_id = Some(message::message_id(session));
        begin(ctx, session, Some(&route));
        if let Some((name, _)) = params.iter().find(|(_, v)| crate::routing::has_dot_segment(v)) {
            answer::discard_body(session, route.max_body_bytes, ctx.body_deadline).await;
            let f = Failure::new(
                ErrorKind::BadRequest,
                format!("path parameter `{name}` holds a dot segment (`.` or `..`, perhaps percent-encoded): refused"),
            );
            answer::problem(session, ctx, &f).await?;
            return Ok(true);
        }
        // Admission: who is calling, then whether the limits let it in (they key on the
        // client). A route without `auth:` reads no header here.
        if route.auth != crate::auth::Mode::None {
            match runtime.verifier.admit(&session.req_header().headers, &route.name, route.auth) {
                Ok(client) => {
                    if let Some(name) = &client {
                        use opentelemetry::trace::TraceContextExt;
                        ctx.otel.span().set_attribute(KeyValue::new("qiao.client", name.to_string()));
                    }
                    ctx.client = client;
                }
                Err(denied) => {
                    answer::discard_body(session, route.max_body_bytes, ctx.body_deadline).await;
                    let kind = if denied.forbidden { ErrorKind::Forbidden } else { ErrorKind::Unauthenticated };
                    let mut f = Failure::new(kind, denied.detail.clone());
                    if !denied.forbidden {
                        f.www_authenticate = Some(denied.challenge());
                    }
                    answer::problem(session, ctx, &f).await?;
                    return Ok(true);
                }
            }
        }
        if let Some(limit) = runtime.route_limit(&route) {
            let ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            let (verdict, policy) = limit.check(ctx.client.as_deref(), ip).await;
            let wait = match verdict {
                Verdict::Allowed { remaining, reset } => {
                    ctx.rate_fields = Some(Box::new([
                        ("ratelimit-policy", limits::policy_field(policy)),
                        ("ratelimit", limits::limit_field(policy, remaining, reset)),
                    ]));
                    None
                }
                Verdict::Limited { wait } => Some(Ok((wait, policy))),
                Verdict::Unavailable => Some(Err(())),
            };
            if let Some(refused) = wait {
                answer::discard_body(session, route.max_body_bytes, ctx.body_deadline).await;
                let f = match refused {
                    Ok((wait, policy)) => {
                        crate::telemetry::metrics::get().rate_limited.with_label_values(&[&*route.name]).inc();
                        let secs = crate::error::whole_seconds(wait);
                        ctx.rate_fields = Some(Box::new([
                            ("ratelimit-policy", limits::policy_field(policy)),
                            ("ratelimit", limits::limit_field(policy, 0, std::time::Duration::from_secs(secs))),
                        ]));
                        Failure::new(
                            ErrorKind::RateLimited,
                            format!("route {} takes no more messages right now; retry in {secs} s", route.name),
                        )
                        .with_retry_after(std::time::Duration::from_secs(secs))
                    }
                    Err(()) => Failure::new(
                        ErrorKind::RateLimitUnavailable,
                        format!(
                            "route {}'s rate limit is shared through Redis, which does not answer, and refuses \
                             then; retry in 1 s",
                            route.name
                        ),
                    )
                    .with_retry_after(std::time::Duration::from_secs(1)),
                };
                answer::problem(session, ctx, &f).await?;
                return Ok(true);
            }
        }
        if let Some(limit) = runtime.concurrency(&route) {
            match limit.try_acquire() {
                // Held by the request's context: the place is free again when the request
                // ends, a proxied answer streamed to its end included.
                Some(permit) => ctx.permit = Some(permit),
                None => {
                    answer::discard_body(session, route.max_body_bytes, ctx.body_deadline).await;
                    let f = Failure::new(
                        ErrorKind::ConcurrencyLimited,
                        format!(
                            "route {} is serving {} requests, as many as it may at once; retry in 1 s",
                            route.name,
                            limit.max()
                        ),
                    )
                    .with_retry_after(std::time::Duration::from_secs(1));
                    answer::problem(session, ctx, &f).await?;
                    return Ok(true);
                }
            }
        }
        match route.kind {
            RouteKind::Proxy => {
                if let Some(f) = proxy::too_large(session, &route) {
                    answer::discard_body(session, route.max_body_bytes.saturating_mul(2), ctx.body_deadline).await;
                    answer::problem(session, ctx, &f).await?;
                    return Ok(true);
                }
                match proxy::plan(session, &route, &params, ctx.message_id.as_ref().expect("set above")).await {
                    Ok(plan) => {
                        ctx.proxy = Some(plan);
                        // pingora streams the body with a timeout per read: each read gets
                        // what is left of the body's time (`request_body_filter`).
                        conn::arm_body_read(session, ctx.body_deadline);
                        Ok(false)
                    }
                    Err(f) => {
                        answer::discard_body(session, route.max_body_bytes, ctx.body_deadline).await;
                        answer::problem(session, ctx, &f).await?;
                        Ok(true)
                    }
                }
            }
            RouteKind::Message => {
                let span = ctx.log_span.clone();
                message::handle(session, ctx, &runtime, &route, &params).instrument(span).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        match &ctx.route {
            Some(route) if ctx.proxy.is_some() => {
                proxy::count_body(&mut ctx.body_seen, body.as_ref(), route.max_body_bytes)?;
                if !end_of_stream && !conn::arm_body_read(session, ctx.body_deadline) {
                    return Err(Error::explain(ErrorType::HTTPStatus(408), "the request body is late"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let plan = ctx.proxy.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no proxy plan"))?;
        plan.peer().await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(plan) = &ctx.proxy {
            plan.rewrite(session, upstream_request, &ctx.otel)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        if let Some(id) = &ctx.message_id {
            upstream_response.insert_header(crate::headers::MESSAGE_ID, id.as_str())?;
        }
        if let Some(fields) = &ctx.rate_fields {
            for (name, value) in fields.iter() {
                upstream_response.insert_header(*name, value.as_str())?;
            }
        }
        if draining() {
            upstream_response.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let kind = proxy::classify(e);
        let Some(kind) = kind else {
            // The client went away or broke the request: nobody to answer.
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        let system = ctx.proxy.as_ref().map(|p| p.system.clone()).unwrap_or_default();
        let mut f = Failure::new(kind, format!("{system}: {e}")).at_system(system);
        if kind == ErrorKind::PayloadTooLarge
            && let Some(route) = &ctx.route
        {
            f = Failure::new(kind, format!("the body exceeds the {} bytes this route accepts", route.max_body_bytes))
                .with_max_body_bytes(route.max_body_bytes);
        }
        if kind == ErrorKind::RequestTimeout {
            f = body_timeout(ctx);
        }
        if session.response_written().is_some() {
            // Headers already went out: the answer cannot be replaced, only cut short.
            ctx.error = Some(kind);
            return FailToProxy { error_code: ctx.status, can_reuse_downstream: false };
        }
        // pingora does not reuse a client connection after a failed upstream attempt: say
        // so in the answer (`Connection: close`) rather than let the client find out.
        session.set_keepalive(None);
        let _ = answer::problem(session, ctx, &f).await;
        FailToProxy { error_code: kind.status(), can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let pending = ctx.journal.take();
        let req = session.req_header();
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(ctx.status);
        let failure = ctx.error.map(|k| (k.slug(), ctx.error_detail.as_deref().unwrap_or("-")));
        let span_error = ctx
            .error
            .map(|k| (k.slug(), k.title()))
            .or(e.map(|_| ("transport", "the connection failed")))
            .filter(|_| status >= 500 || e.is_some());
        access::finish(
            access::Finished {
                way: access::Way::Http {
                    method: req.method.as_str(),
                    path: req.uri.path(),
                    status,
                    client: session.client_addr().map(|a| a as &dyn std::fmt::Display),
                    client_name: ctx.client.as_deref(),
                    transport_error: e.map(|e| e as &dyn std::fmt::Display),
                },
                route: ctx.route.as_ref().map(|r| &*r.name).unwrap_or("-"),
                message_id: ctx.message_id.as_ref().map(MessageId::as_str).unwrap_or("-"),
                failure,
                span_error,
                elapsed: ctx.started.elapsed(),
            },
            &ctx.otel,
            &ctx.log_span,
        );
        if let Some(route) = ctx.route.as_ref().filter(|r| r.kind == RouteKind::Message) {
            journal(session, ctx, route, status, failure, pending);
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Proxy failures are already answered with problem+json and logged on the access line.
        ctx.error.is_some()
    }
}

/// Hands the message's record to the journal: the one made from its run, or one for a
/// message refused before it ran. Proxy routes are not journaled.
fn journal(
    session: &Session,
    ctx: &Ctx,
    route: &Route,
    status: u16,
    failure: Option<(&str, &str)>,
    pending: Option<(Box<crate::journal::Pending>, bool)>,
) {
    let elapsed = ctx.started.elapsed();
    let req = session.req_header();
    let source = || crate::journal::record::Source::Http {
        method: req.method.to_string(),
        path: req.uri.path_and_query().map_or_else(|| req.uri.path().to_string(), |p| p.to_string()),
        params: Vec::new(),
    };
    let (pending, disk) = match pending {
        Some(p) => p,
        None => match crate::journal::wants(route) {
            Some(disk) => {
                let id = ctx.message_id.as_ref().map_or("-", MessageId::as_str);
                let at = std::time::SystemTime::now() - elapsed;
                (crate::journal::Pending::refused_early(route, id, at).with_source(source()), disk)
            }
            None => return,
        },
    };
    let trace_id = crate::telemetry::trace::ids(&ctx.otel).0;
    let end = crate::journal::End {
        source: None,
        headers: req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        trace_id: if trace_id == opentelemetry::trace::TraceId::INVALID { String::new() } else { trace_id.to_string() },
        config: ctx.runtime.as_ref().map_or("", |r| r.config.hash.as_str()),
        status: Some(status),
        fate: None,
        failure,
        elapsed,
        client: ctx.client(),
    };
    crate::journal::submit(pending, disk, end);
}

/// The failure of a body that did not arrive in time.
fn body_timeout(ctx: &Ctx) -> Failure {
    let ms = ctx.runtime.as_ref().map_or(0, |r| r.config.server.body_timeout.as_millis());
    Failure::new(ErrorKind::RequestTimeout, format!("the request body was not complete within {ms} ms"))
}

/// Whether the request header, as sent, has both `Content-Length` and `Transfer-Encoding`.
/// pingora drops the `Content-Length` then and reads the body as chunked (RFC 9112 section
/// 6.3): what the request header says is gone by the time Qiao sees it, so the raw header is
/// read. A server behind a proxy that read the other length would see two requests.
fn both_lengths(session: &Session) -> bool {
    let Some(h1) = session.as_http1() else { return false };
    let raw = h1.get_headers_raw_bytes();
    let (mut length, mut encoding) = (false, false);
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        length |= name.eq_ignore_ascii_case(b"content-length");
        encoding |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
    length && encoding
}
