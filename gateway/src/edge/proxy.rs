//! Proxy routes: stream through pingora's proxy engine to one system, body unread.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;
use qiao_connectors::MessageId;
use serde_json::{Map, Value};

use crate::config::{Route, System, Via};
use crate::error::ErrorKind;
use crate::mapping::Scope;

pub struct ProxyPlan {
    pub system: String,
    target: Arc<System>,
    method: Option<http::Method>,
    path_and_query: String,
    message_id: MessageId,
}

/// Works out where the request goes: the destination's path (with the route's path
/// parameters) or the inbound path, under the system's base path, with the inbound query.
pub async fn plan(session: &Session, route: &Route, params: &[(String, String)], id: &MessageId) -> Result<ProxyPlan> {
    let dest = &route.destinations[0];
    let (method, dest_path) = match &dest.via {
        Via::Http { method, path } => (method.clone(), path.as_ref()),
        Via::Amqp { .. } => return Err(Error::explain(ErrorType::InternalError, "proxy routes deliver over HTTP")),
    };
    let uri = &session.req_header().uri;
    let path = match dest_path {
        Some(t) => {
            let p: Map<String, Value> = params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            let mut vars = Map::new();
            vars.insert("params".into(), Value::Object(p));
            vars.insert("meta".into(), serde_json::json!({"message_id": id.as_str(), "route": &*route.name}));
            let vars = Value::Object(vars);
            t.render(&Scope { current: &Value::Null, document: &Value::Null, vars: &vars })
                .map_err(|e| Error::explain(ErrorType::InternalError, format!("destination path: {}", e.reason)))?
        }
        None => uri.path().to_string(),
    };
    let target = dest.system.clone();
    let base = target.proxy.as_ref().map(|p| p.base_path.as_str()).unwrap_or("");
    let mut path_and_query = format!("{base}{path}");
    if let Some(q) = uri.query() {
        path_and_query.push(if path_and_query.contains('?') { '&' } else { '?' });
        path_and_query.push_str(q);
    }
    Ok(ProxyPlan { system: target.name.clone(), target, method, path_and_query, message_id: id.clone() })
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
        peer.options.connection_timeout = Some(t.connect_timeout);
        peer.options.read_timeout = Some(t.read_timeout);
        peer.options.write_timeout = Some(t.read_timeout);
        Ok(Box::new(peer))
    }

    pub fn rewrite(&self, session: &Session, req: &mut RequestHeader) -> Result<()> {
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
        req.insert_header("x-qiao-message-id", self.message_id.as_str())?;
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
        HTTPStatus(s) if *s == 413 => ErrorKind::PayloadTooLarge,
        _ => match e.esource() {
            ErrorSource::Upstream => ErrorKind::ReceiverFailed,
            ErrorSource::Downstream => return None,
            ErrorSource::Internal | ErrorSource::Unset => ErrorKind::Internal,
        },
    })
}
