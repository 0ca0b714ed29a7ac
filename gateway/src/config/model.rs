//! The compiled configuration: what the runtime works with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use qiao_connectors::SystemKind;
use qiao_connectors::http::HttpSink;

use super::Diagnostic;
use crate::mapping::{Mapping, Template, Uses};
use crate::routing::Router;
use crate::schema::Schema;

#[derive(Debug)]
pub struct Config {
    pub dir: PathBuf,
    pub server: ServerSettings,
    pub systems: IndexMap<String, Arc<System>>,
    pub routes: Vec<Arc<Route>>,
    pub router: Router,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    pub listen: String,
    pub admin_listen: String,
    pub threads: usize,
    pub max_body_bytes: u64,
    pub validate_formats: bool,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_body_bytes: 10 * 1024 * 1024,
            validate_formats: true,
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
        }
    }
}

#[derive(Debug)]
pub struct System {
    pub name: String,
    pub kind: SystemKind,
    pub description: Option<String>,
    /// Delivery of messages (validated, mapped) over HTTP.
    pub http: Option<HttpSink>,
    /// Where proxy routes stream to.
    pub proxy: Option<ProxyTarget>,
}

/// An upstream for pingora's proxy engine, derived from the system's `http` settings.
#[derive(Clone, Debug)]
pub struct ProxyTarget {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The base URL's path, prefixed to every proxied path (no trailing `/`).
    pub base_path: String,
    /// `host[:port]` for the `Host` header.
    pub authority: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Static headers and credentials, added to every proxied request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Read, validate, map and deliver through the connector.
    Message,
    /// Stream through pingora's proxy engine unchanged.
    Proxy,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub description: Option<String>,
    pub file: PathBuf,
    pub kind: RouteKind,
    /// `None`: every method.
    pub methods: Vec<Option<Method>>,
    pub path: String,
    pub schema: Option<Arc<Schema>>,
    pub mapping: Option<Mapping>,
    pub max_body_bytes: u64,
    pub destinations: Vec<Destination>,
    /// Which `$` roots the mapping and the destination templates read.
    pub uses: Uses,
}

#[derive(Debug)]
pub struct Destination {
    pub system: Arc<System>,
    /// `None`: the inbound method (proxy routes) or POST.
    pub method: Option<Method>,
    /// Path and query on the system; bare `{name}`s are path parameters.
    pub path: Option<Template>,
    pub headers: Vec<(HeaderName, Template)>,
    pub timeout: Option<Duration>,
}
