//! Proxy routes: stream through pingora's proxy engine to one system, body unread.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::SystemTime;

use bytes::Bytes;
use qiao_connectors::{Message, MessageId, TraceContext};

use crate::config::{Route, System};
use crate::error::ErrorKind;
use crate::pipeline;

pub struct ProxyPlan {
    pub system: String,
    target: Arc<System>,
    method: Option<http::Method>,
    path_and_query: String,
    message_id: MessageId,
    /// The destination's own headers, rendered.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The destination's `timeout_ms`, when it overrides the system's.
    timeout: Option<std::time::Duration>,
}

/// Works out where the request goes: the destination's path (with the route's path
/// parameters) or the inbound path, under the system's base path, with the inbound query.
pub async fn plan(
    session: &Session,
    route: &Route,
    params: &[(String, String)],
    id: &MessageId,
) -> std::result::Result<ProxyPlan, crate::error::Failure> {
    let req = session.req_header();
    let head = Message {
        id: id.clone(),
        headers: if route.uses.headers {
            req.headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect()
        } else {
            Vec::new()
        },
        body: Bytes::new(),
        trace: TraceContext::default(),
        received_at: SystemTime::now(),
    };
    let pipeline::ProxyTarget { method, path_and_query, headers } =
        pipeline::proxy_target(route, &head, params, req.uri.path(), req.uri.query())?;
    let dest = &route.destinations[0];
    let target = dest.system.clone();
    Ok(ProxyPlan {
        system: target.name.clone(),
        target,
        method,
        path_and_query,
        message_id: id.clone(),
        headers,
        timeout: dest.timeout,
    })
}

impl ProxyPlan {
    pub async fn peer(&self) -> Result<Box<HttpPeer>> {
        let t = self
            .target
            .proxy
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "system has no HTTP transport"))?;
        let addr: SocketAddr = match t.host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, t.port),
            Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("cannot resolve {}", t.host)))?,
        };
        let mut peer = HttpPeer::new(addr, t.tls, t.host.clone());
        let io_timeout = self.timeout.unwrap_or(t.read_timeout);
        peer.options.connection_timeout = Some(t.connect_timeout);
        peer.options.read_timeout = Some(io_timeout);
        peer.options.write_timeout = Some(io_timeout);
        Ok(Box::new(peer))
    }

    pub fn rewrite(&self, session: &Session, req: &mut RequestHeader, trace: &opentelemetry::Context) -> Result<()> {
        let t = self
            .target
            .proxy
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "system has no HTTP transport"))?;
        let uri: http::Uri = self.path_and_query.parse().map_err(|e| {
            Error::explain(ErrorType::InternalError, format!("bad upstream path {}: {e}", self.path_and_query))
        })?;
        req.set_uri(uri);
        if let Some(m) = &self.method {
            req.set_method(m.clone());
        }
        req.insert_header("host", t.authority.as_str())?;
        for (name, value) in &t.headers {
            req.insert_header(name.clone(), value.clone())?;
        }
        for (name, value) in &self.headers {
            req.insert_header(name.clone(), value.clone())?;
        }
        req.insert_header(crate::headers::MESSAGE_ID, self.message_id.as_str())?;
        // The next hop continues the trace, with this request's span as its parent: the
        // caller's trace headers go, all of them (a second `traceparent`, several
        // `tracestate`s, a `tracestate` of a trace that restarted), and Qiao's come, as on a
        // message route.
        for name in ["traceparent", "tracestate", "baggage"] {
            req.remove_header(name);
        }
        for (name, value) in crate::telemetry::trace::inject(trace) {
            req.insert_header(name, value)?;
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded = match req.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {}", addr.ip()),
                None => addr.ip().to_string(),
            };
            req.insert_header("x-forwarded-for", forwarded)?;
        }
        Ok(())
    }
}

/// What a proxy failure means for the sender; `None` when the sender itself failed.
pub fn classify(e: &Error) -> Option<ErrorKind> {
    use ErrorType::*;
    Some(match e.etype() {
        ConnectTimedout | ConnectRefused | ConnectNoRoute | TLSHandshakeFailure | TLSHandshakeTimedout
        | InvalidCert | HandshakeError | ConnectError | ConnectProxyFailure | SocketError | BindError => {
            ErrorKind::ReceiverUnreachable
        }
        ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => ErrorKind::ReceiverTimeout,
        // The client's body did not come in time: pingora's read timeout, set to what was
        // left of `body_timeout_ms`, or the edge's own check (`request_body_filter`).
        ReadTimedout if e.esource() == &ErrorSource::Downstream => ErrorKind::RequestTimeout,
        HTTPStatus(408) => ErrorKind::RequestTimeout,
        // Raised by the edge's own body counter (`request_body_filter`).
        HTTPStatus(413) => ErrorKind::PayloadTooLarge,
        _ => match e.esource() {
            ErrorSource::Upstream => ErrorKind::ReceiverFailed,
            ErrorSource::Downstream => return None,
            ErrorSource::Internal | ErrorSource::Unset => ErrorKind::Internal,
        },
    })
}

/// A proxied body with a declared `Content-Length` over the route's limit is refused
/// before anything is sent; a chunked one is counted as it streams (`count_body`).
pub fn too_large(session: &Session, route: &Route) -> Option<crate::error::Failure> {
    let declared: u64 = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())?;
    (declared > route.max_body_bytes).then(|| {
        crate::error::Failure::new(
            ErrorKind::PayloadTooLarge,
            format!("the body has {declared} bytes; this route accepts at most {}", route.max_body_bytes),
        )
        .with_max_body_bytes(route.max_body_bytes)
    })
}

/// Counts a streamed body; past the route's limit the upload is cut and answered 413.
pub fn count_body(seen: &mut u64, chunk: Option<&Bytes>, limit: u64) -> Result<()> {
    *seen += chunk.map_or(0, |c| c.len() as u64);
    if *seen > limit {
        return Err(Error::explain(
            ErrorType::HTTPStatus(413),
            format!("the body exceeds the {limit} bytes this route accepts"),
        ));
    }
    Ok(())
}
