//! Delivery over HTTP with hyper: one pooled client per system.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::HttpAuth;
use super::inline::InlinePool;
use crate::error::{DeliveryError, DeliveryErrorKind};
use crate::message::MessageId;
use crate::retry::RetryPolicy;

/// Every delivery carries the message id so that the receiver can deduplicate retries.
pub const MESSAGE_ID_HEADER: HeaderName = HeaderName::from_static("x-qiao-message-id");

/// The largest answer Qiao reads from a receiver; a larger one is an error, not an
/// out-of-memory.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// How to reach one system over HTTP: plain settings, compared on a reload to decide
/// whether the system's client (its pool and circuit) can be kept.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSinkConfig {
    /// The system's name, for errors and logs.
    pub system: String,
    /// Scheme, host, port and an optional path prefix; request paths are appended to it.
    pub base_url: url::Url,
    pub connect_timeout: Duration,
    /// Time for one attempt: sending the request and reading the whole answer.
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub auth: Option<HttpAuth>,
    /// Static headers sent with every request (e.g. Kingdee's `X-KDApi-AcctID`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub retry: RetryPolicy,
    pub circuit: super::CircuitConfig,
}

/// One request to a system. `path` (with its query) is relative to the system's base URL.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub message_id: MessageId,
    /// Overrides the system's request timeout for this request.
    pub timeout: Option<Duration>,
}

/// The receiver's answer, whatever its status.
#[derive(Clone, Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP client bound to one system.
///
/// A plain-HTTP system's connections are driven by the task that delivers
/// ([`super::inline`]); an HTTPS system's by hyper's pooled client, in tasks on the tokio
/// runtime that opened them. Either way a connection's socket belongs to the runtime that
/// opened it; the gateway keeps every runtime that delivers alive for the life of the
/// process, so a sink may be shared between them (see docs/architecture.md, "Where
/// connections live").
#[derive(Clone)]
pub struct HttpSink {
    config: std::sync::Arc<HttpSinkConfig>,
    base: String,
    fixed_headers: std::sync::Arc<Vec<(HeaderName, HeaderValue)>>,
    transport: Transport,
    circuit: std::sync::Arc<super::Circuit>,
}

#[derive(Clone)]
enum Transport {
    /// `http://`: HTTP/1 connections driven in the delivering task; requests carry the
    /// origin form (`/path?query`) and `Host`, made from [`Origin`].
    Inline(std::sync::Arc<InlinePool>, std::sync::Arc<Origin>),
    /// `https://`: hyper's pooled client (TLS, HTTP/2 by ALPN).
    Pooled(Box<HyperClient>),
}

/// What every request to a plain-HTTP system shares, read from its base URL once: the
/// base URL's path (without a trailing `/`) that request paths are joined to, and `Host`.
/// Writing the origin form directly spares parsing an absolute URL per request and then
/// taking it apart again.
struct Origin {
    base_path: String,
    host: HeaderValue,
}

impl Origin {
    fn of(base_url: &url::Url) -> Result<Origin, String> {
        let uri: Uri = base_url.as_str().parse().map_err(|e| format!("base_url is not a valid URI: {e}"))?;
        let authority = uri.authority().ok_or("base_url has no host")?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("base_url's host: {e}"))?;
        Ok(Origin { base_path: uri.path().trim_end_matches('/').to_string(), host })
    }

    /// The request target of `path` (relative to the base URL): `/` when both are empty.
    fn target(&self, path: &str) -> String {
        let mut target = join_url(&self.base_path, path);
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        target
    }
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink").field("system", &self.config.system).field("base", &self.base).finish()
    }
}

impl HttpSink {
    pub fn new(config: HttpSinkConfig) -> Result<Self, String> {
        match config.base_url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(format!("base_url scheme must be http or https, not {other}"));
            }
        }
        let mut fixed_headers = config.headers.clone();
        if let Some(auth) = &config.auth {
            fixed_headers.push(auth.header()?);
        }

        let transport = if config.base_url.scheme() == "http" {
            let host = config.base_url.host_str().ok_or("base_url has no host")?;
            // `[::1]` in a URL is `::1` to connect to.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = config.base_url.port_or_known_default().unwrap_or(80);
            Transport::Inline(
                std::sync::Arc::new(InlinePool::new(
                    host,
                    port,
                    config.connect_timeout,
                    config.pool_idle_timeout,
                    config.pool_max_idle_per_host,
                )),
                std::sync::Arc::new(Origin::of(&config.base_url)?),
            )
        } else {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(config.connect_timeout));
            http.set_nodelay(true);
            http.enforce_http(false);
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Transport::Pooled(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(config.pool_idle_timeout)
                    .pool_max_idle_per_host(config.pool_max_idle_per_host)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(tls),
            ))
        };

        let base = config.base_url.as_str().trim_end_matches('/').to_string();
        let circuit = std::sync::Arc::new(super::Circuit::new(config.circuit.clone()));
        Ok(Self {
            circuit,
            config: std::sync::Arc::new(config),
            base,
            fixed_headers: std::sync::Arc::new(fixed_headers),
            transport,
        })
    }

    pub fn system(&self) -> &str {
        &self.config.system
    }

    pub fn config(&self) -> &HttpSinkConfig {
        &self.config
    }

    /// Whether both are the same client (one pool, one circuit), not two built alike.
    pub fn same_client(&self, other: &HttpSink) -> bool {
        std::sync::Arc::ptr_eq(&self.circuit, &other.circuit)
    }

    pub fn circuit_state(&self) -> super::CircuitState {
        self.circuit.state()
    }

    /// The absolute URL a relative path resolves to.
    pub fn url_for(&self, path: &str) -> String {
        join_url(&self.base, path)
    }

    /// Delivers with the system's retry policy. Returns the last answer received, whatever
    /// its status: what a status means is the caller's decision. Fails only when no answer
    /// came at all (or the request could not be built).
    pub async fn send(&self, request: &HttpRequest) -> Result<HttpReply, DeliveryError> {
        let ticket = match self.circuit.admit() {
            Ok(t) => t,
            Err(left) => {
                let mut e = DeliveryError::new(
                    DeliveryErrorKind::CircuitOpen,
                    &self.config.system,
                    format!(
                        "the circuit is open after repeated failures; the next trial is in {} ms",
                        left.as_millis()
                    ),
                );
                e.attempts = 0;
                e.retry_after = Some(left);
                return Err(e);
            }
        };
        let result = self.send_with_retries(request).await;
        match &result {
            Ok(reply) if !self.config.retry.retries_status(reply.status.as_u16()) => ticket.success(),
            // An invalid request says nothing about the system; the ticket is dropped.
            Err(e) if !e.retryable() => {}
            _ => ticket.failure(),
        }
        result
    }

    async fn send_with_retries(&self, request: &HttpRequest) -> Result<HttpReply, DeliveryError> {
        let policy = &self.config.retry;
        let mut attempt = 1;
        loop {
            let outcome = self.attempt(request).await;
            let more = attempt < policy.max_attempts.max(1);
            let wait = match &outcome {
                Ok(reply) if more && policy.retries_status(reply.status.as_u16()) => {
                    let backoff = policy.backoff(attempt);
                    Some(retry_after(&reply.headers).map_or(backoff, |ra| ra.min(policy.max_backoff).max(backoff)))
                }
                Err(e) if more && e.retryable() => Some(policy.backoff(attempt)),
                _ => None,
            };
            match wait {
                Some(wait) => {
                    tracing::debug!(
                        system = %self.config.system,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        outcome = %match &outcome { Ok(r) => r.status.to_string(), Err(e) => e.detail.clone() },
                        "retrying delivery"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => {
                    return match outcome {
                        Ok(mut reply) => {
                            reply.attempts = attempt;
                            Ok(reply)
                        }
                        Err(mut e) => {
                            e.attempts = attempt;
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// One attempt, bounded by the request timeout.
    async fn attempt(&self, request: &HttpRequest) -> Result<HttpReply, DeliveryError> {
        let system = &self.config.system;
        let target = match &self.transport {
            Transport::Inline(_, origin) => origin.target(&request.path),
            Transport::Pooled(_) => self.url_for(&request.path),
        };
        let uri: Uri = target
            .parse()
            .map_err(|e| DeliveryError::new(DeliveryErrorKind::Invalid, system, format!("invalid URL: {e}")))?;
        let mut builder = http::Request::builder().method(request.method.clone()).uri(uri);
        let headers = builder.headers_mut().expect("a fresh builder has headers");
        // Sized for all of them (the three below included): growing the map rehashes it.
        *headers = HeaderMap::with_capacity(self.fixed_headers.len() + request.headers.len() + 3);
        for (name, value) in self.fixed_headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in request.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        if let Ok(id) = HeaderValue::from_str(request.message_id.as_str()) {
            headers.insert(MESSAGE_ID_HEADER, id);
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(request.body.len()));
        if let Transport::Inline(_, origin) = &self.transport
            && !headers.contains_key(HOST)
        {
            headers.insert(HOST, origin.host.clone());
        }
        let req = builder
            .body(Full::new(request.body.clone()))
            .map_err(|e| DeliveryError::new(DeliveryErrorKind::Invalid, system, e.to_string()))?;

        let timeout = request.timeout.unwrap_or(self.config.request_timeout);
        let exchange = async {
            let (parts, body) = match &self.transport {
                Transport::Inline(pool, _) => pool.request(system, req, MAX_REPLY_BYTES).await?,
                Transport::Pooled(client) => {
                    let resp = client.request(req).await.map_err(|e| classify(system, &e))?;
                    let (parts, body) = resp.into_parts();
                    let body = Limited::new(body, MAX_REPLY_BYTES)
                        .collect()
                        .await
                        .map_err(|e| {
                            DeliveryError::new(DeliveryErrorKind::Io, system, format!("reading the answer failed: {e}"))
                        })?
                        .to_bytes();
                    (parts, body)
                }
            };
            Ok(HttpReply { status: parts.status, headers: parts.headers, body, attempts: 1 })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::timeout(system, timeout)),
        }
    }
}

impl HttpSinkConfig {
    /// The absolute URL a relative path resolves to, as the sink built from these settings
    /// sends it.
    pub fn url_for(&self, path: &str) -> String {
        join_url(self.base_url.as_str().trim_end_matches('/'), path)
    }
}

/// `base` (no trailing `/`) joined with a path relative to it.
fn join_url(base: &str, path: &str) -> String {
    // Pushed, not `format!`ed: this runs for every delivery.
    let mut url = String::with_capacity(base.len() + 1 + path.len());
    url.push_str(base);
    if !(path.is_empty() || path.starts_with('/') || path.starts_with('?')) {
        url.push('/');
    }
    url.push_str(path);
    url
}

/// Names the failure in words an operator can act on.
fn classify(system: &str, e: &hyper_util::client::legacy::Error) -> DeliveryError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    let kind = if e.is_connect() { DeliveryErrorKind::Connect } else { DeliveryErrorKind::Io };
    DeliveryError::new(kind, system, detail)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from business systems and ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_joins_the_base_with_one_slash() {
        for (path, url) in [
            ("", "http://erp:8080/k3"),
            ("/Save", "http://erp:8080/k3/Save"),
            ("Save", "http://erp:8080/k3/Save"),
            ("?a=1", "http://erp:8080/k3?a=1"),
            ("销售/订单", "http://erp:8080/k3/销售/订单"),
        ] {
            assert_eq!(join_url("http://erp:8080/k3", path), url);
        }
    }

    fn sink(base: &str) -> HttpSink {
        HttpSink::new(HttpSinkConfig {
            system: "erp".into(),
            base_url: base.parse().unwrap(),
            connect_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(500),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 8,
            auth: None,
            headers: vec![],
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                retry_statuses: vec![503],
            },
            circuit: crate::http::CircuitConfig::default(),
        })
        .unwrap()
    }

    #[test]
    fn paths_are_joined_to_the_base_url() {
        let s = sink("http://127.0.0.1:9101/k3cloud/");
        assert_eq!(s.url_for("/Save.kdsvc"), "http://127.0.0.1:9101/k3cloud/Save.kdsvc");
        assert_eq!(s.url_for("Save.kdsvc"), "http://127.0.0.1:9101/k3cloud/Save.kdsvc");
        assert_eq!(s.url_for("?method=x"), "http://127.0.0.1:9101/k3cloud?method=x");
    }

    #[test]
    fn the_origin_form_joins_the_base_path() {
        for (base, path, target, host) in [
            ("http://erp:8080", "", "/", "erp:8080"),
            ("http://erp:8080/", "?a=1", "/?a=1", "erp:8080"),
            ("http://erp", "/Save", "/Save", "erp"),
            ("http://erp:80/k3cloud/", "", "/k3cloud", "erp"),
            ("http://ERP:8080/k3cloud", "Save", "/k3cloud/Save", "erp:8080"),
            ("http://erp:8080/k3cloud", "/Save?x=%E9", "/k3cloud/Save?x=%E9", "erp:8080"),
        ] {
            let origin = Origin::of(&base.parse().unwrap()).unwrap();
            assert_eq!(origin.target(path), target, "{base} + {path}");
            assert_eq!(origin.host, host, "{base}");
        }
    }

    /// The head of the one request `listener` receives (answered 200).
    async fn head_received(listener: tokio::net::TcpListener) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the head ended");
            got.extend_from_slice(&buf[..n]);
        }
        socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&got[..end]).into_owned()
    }

    #[tokio::test]
    async fn a_plain_http_request_carries_the_origin_form_and_host() {
        for (given_host, want_host) in [(None, "127.0.0.1:PORT"), (Some("erp.example.com"), "erp.example.com")] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let received = tokio::spawn(head_received(listener));
            let s = sink(&format!("http://127.0.0.1:{port}/k3cloud/"));
            let mut headers = HeaderMap::new();
            if let Some(h) = given_host {
                headers.insert(HOST, HeaderValue::from_static(h));
            }
            let req = HttpRequest {
                method: Method::POST,
                path: "/Save.kdsvc?x=1".into(),
                headers,
                body: Bytes::from_static(b"{}"),
                message_id: MessageId::generate(),
                timeout: None,
            };
            let reply = s.send(&req).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            let head = received.await.unwrap();
            let lines: Vec<&str> = head.lines().collect();
            assert_eq!(lines[0], "POST /k3cloud/Save.kdsvc?x=1 HTTP/1.1", "{head}");
            let hosts: Vec<&&str> = lines.iter().filter(|l| l.to_ascii_lowercase().starts_with("host:")).collect();
            assert_eq!(hosts.len(), 1, "one Host: {head}");
            assert_eq!(hosts[0][5..].trim(), want_host.replace("PORT", &port.to_string()), "{head}");
        }
    }

    #[test]
    fn other_schemes_are_refused() {
        let err =
            HttpSink::new(HttpSinkConfig { base_url: "ftp://x".parse().unwrap(), ..sink("http://x").config().clone() })
                .unwrap_err();
        assert!(err.contains("ftp"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_retried_connect_error() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = sink(&format!("http://127.0.0.1:{port}"));
        let req = HttpRequest {
            method: Method::POST,
            path: "/x".into(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
            message_id: MessageId::generate(),
            timeout: None,
        };
        let err = s.send(&req).await.unwrap_err();
        assert_eq!(err.kind, DeliveryErrorKind::Connect, "{err}");
        assert_eq!(err.attempts, 2);
        assert!(err.retryable());
    }

    #[test]
    fn retry_after_seconds_are_read() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }
}
