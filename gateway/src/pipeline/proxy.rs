//! A proxy route's one phase: where the request goes. The body is not read; the edge
//! streams it through pingora's proxy engine, and `qiao test` shows the same target.

use http::header::{HeaderName, HeaderValue};
use qiao_connectors::Message;
use serde_json::Value;

use crate::config::{Route, Via};
use crate::error::{ErrorKind, Failure};
use crate::mapping::{Scope, Template};

/// The upstream request of a proxy route.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyTarget {
    /// `None`: the inbound method.
    pub method: Option<http::Method>,
    /// Under the system's base path, with the inbound query.
    pub path_and_query: String,
    /// The destination's own headers, rendered.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The destination's path (with the route's path parameters) or the inbound path, under
/// the system's base path, with the inbound query; and the destination's headers. `message`
/// carries the inbound headers when the route's templates read them.
pub fn proxy_target(
    route: &Route,
    message: &Message,
    params: &[(String, String)],
    inbound_path: &str,
    query: Option<&str>,
) -> Result<ProxyTarget, Failure> {
    let dest = &route.destinations[0];
    let Via::Http { method, path } = &dest.via else {
        return Err(Failure::new(ErrorKind::Internal, "proxy routes deliver over HTTP"));
    };
    // The same `$params`, `$headers` and `$meta` a message route's templates read; path
    // parameters stay percent-encoded, as they go back into a path.
    let vars = super::vars(route, message, params, true);
    let scope = Scope { current: &Value::Null, document: &Value::Null, vars: &vars };
    let render = |what: &str, t: &Template| {
        let rendered = if what == "path" { t.render_uri(&scope) } else { t.render(&scope) };
        rendered.map_err(|e| {
            Failure::new(ErrorKind::MappingFailed, format!("destination {what} needs `{}`: {}", e.path, e.reason))
                .at_system(dest.system.name.clone())
        })
    };
    let path = match path {
        Some(t) => super::destination_path(t, |t| render("path", t), &dest.system.name)?,
        None => inbound_path.to_string(),
    };
    let mut headers = Vec::with_capacity(dest.headers.len());
    for (name, t) in &dest.headers {
        let value = HeaderValue::from_str(&render("header", t)?).map_err(|_| {
            Failure::new(ErrorKind::MappingFailed, format!("header {name} would not be a valid header value"))
                .at_system(dest.system.name.clone())
        })?;
        headers.push((name.clone(), value));
    }
    let base = dest.system.proxy.as_ref().map(|p| p.base_path.as_str()).unwrap_or("");
    let mut path_and_query = format!("{base}{path}");
    if let Some(q) = query {
        path_and_query.push(if path_and_query.contains('?') { '&' } else { '?' });
        path_and_query.push_str(q);
    }
    Ok(ProxyTarget { method: method.clone(), path_and_query, headers })
}
