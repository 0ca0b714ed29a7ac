//! The HTTP edge on pingora: every inbound HTTP request enters here.
//!
//! Message routes (a schema or a map) are handled entirely in `request_filter`: Qiao reads
//! the whole body itself (bounded by `max_body_bytes`), runs the pipeline and delivers
//! through the connector's hyper client, then writes the answer. Nothing goes through
//! pingora's retry buffer, which stops at 64 KiB. Proxy routes (neither) return from
//! `request_filter` and stream through pingora's proxy engine unchanged.

mod answer;
mod message;
mod proxy;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use qiao_connectors::MessageId;

use crate::config::{Config, Route, RouteKind};
use crate::error::{ErrorKind, Failure};
use crate::routing::Found;
pub use proxy::ProxyPlan;

/// The shared, swappable configuration. Each request reads it once.
pub type SharedConfig = Arc<ArcSwap<Config>>;

pub struct Edge {
    pub config: SharedConfig,
}

/// Per-request state shared by the phases.
pub struct Ctx {
    started: Instant,
    /// The config snapshot this request runs on: a reload never splits a request.
    config: Option<Arc<Config>>,
    route: Option<Arc<Route>>,
    message_id: Option<MessageId>,
    error: Option<ErrorKind>,
    status: u16,
    proxy: Option<ProxyPlan>,
    /// Bytes of a proxied body seen so far.
    body_seen: u64,
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            config: None,
            route: None,
            message_id: None,
            error: None,
            status: 0,
            proxy: None,
            body_seen: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let config = self.config.load_full();
        ctx.config = Some(config.clone());
        let (method, path) = {
            let req = session.req_header();
            (req.method.clone(), req.uri.path().to_string())
        };
        let (index, params) = match config.router.find(&method, &path) {
            Found::Route { index, params } => (index, params),
            Found::NotFound => {
                answer::discard_body(session, config.server.max_body_bytes).await;
                let f = Failure::new(ErrorKind::RouteNotFound, format!("no route matches {method} {path}"));
                answer::problem(session, ctx, &f).await?;
                return Ok(true);
            }
            Found::MethodNotAllowed { allow } => {
                answer::discard_body(session, config.server.max_body_bytes).await;
                let mut f = Failure::new(ErrorKind::MethodNotAllowed, format!("{path} does not accept {method}"));
                f.allow = allow.iter().map(|m| m.to_string()).collect();
                answer::problem(session, ctx, &f).await?;
                return Ok(true);
            }
        };
        let route = config.routes[index].clone();
        ctx.route = Some(route.clone());
        ctx.message_id = Some(message::message_id(session));
        match route.kind {
            RouteKind::Proxy => {
                if let Some(f) = proxy::too_large(session, &route) {
                    answer::discard_body(session, route.max_body_bytes.saturating_mul(2)).await;
                    answer::problem(session, ctx, &f).await?;
                    return Ok(true);
                }
                match proxy::plan(session, &route, &params, ctx.message_id.as_ref().expect("set above")).await {
                    Ok(plan) => {
                        ctx.proxy = Some(plan);
                        Ok(false)
                    }
                    Err(f) => {
                        answer::discard_body(session, route.max_body_bytes).await;
                        answer::problem(session, ctx, &f).await?;
                        Ok(true)
                    }
                }
            }
            RouteKind::Message => {
                message::handle(session, ctx, &route, &params).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        match &ctx.route {
            Some(route) if ctx.proxy.is_some() => {
                proxy::count_body(&mut ctx.body_seen, body.as_ref(), route.max_body_bytes)
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
            plan.rewrite(session, upstream_request)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = upstream_response.status.as_u16();
        if let Some(id) = &ctx.message_id {
            upstream_response.insert_header(answer::MESSAGE_ID, id.as_str())?;
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
        let mut f = Failure::new(kind, format!("{system}: {e}")).with("system", system);
        if kind == ErrorKind::PayloadTooLarge
            && let Some(route) = &ctx.route
        {
            f = Failure::new(kind, format!("the body exceeds the {} bytes this route accepts", route.max_body_bytes))
                .with("max_body_bytes", route.max_body_bytes);
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
        let req = session.req_header();
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(ctx.status);
        let elapsed_us = ctx.started.elapsed().as_micros() as u64;
        let route = ctx.route.as_ref().map(|r| &*r.name).unwrap_or("-");
        let message_id = ctx.message_id.as_ref().map(MessageId::as_str).unwrap_or("-");
        let error = ctx.error.map(ErrorKind::slug).unwrap_or("-");
        tracing::info!(
            target: "qiao::access",
            method = %req.method,
            path = req.uri.path(),
            route,
            status,
            error_kind = error,
            message_id,
            duration_ms = elapsed_us as f64 / 1000.0,
            client = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
            transport_error = e.map(|e| e.to_string()),
            "request"
        );
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Proxy failures are already answered with problem+json and logged on the access line.
        ctx.error.is_some()
    }
}
