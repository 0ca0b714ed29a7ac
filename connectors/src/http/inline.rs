//! Plain-HTTP/1 connections to one system, driven in the task that sends the request.
//!
//! hyper's pooled client runs each connection in a task of its own: a request goes to that
//! task through a channel, and its answer comes back through another, so every delivery
//! wakes a second task and hops between the two (a fifth of the message route's CPU time
//! in the profile, docs/performance.md). Here a connection is a hyper HTTP/1 `Connection`
//! future kept idle in a pool between requests: the delivering task takes one, polls it
//! beside its own request until the whole answer is read, and puts it back. Nothing polls an
//! idle connection, so one the system closed meanwhile is found on the next take (polled
//! once: a closed one is ready) and dropped; a request that could not be written at all
//! (the connection died in between) is sent again on a fresh connection.
//!
//! HTTPS systems keep hyper's pooled client (TLS, HTTP/2 by ALPN): the systems of a plant's
//! LAN are mostly plain HTTP, and that is what this serves.

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{DeliveryError, DeliveryErrorKind};

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One connection: the handle requests are sent through, and the connection itself.
struct Link {
    send: SendRequest<Full<Bytes>>,
    conn: Conn,
    idle_since: Instant,
}

/// Idle connections to one `host:port`, most recently used last.
pub(super) struct InlinePool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Link>>,
}

/// The answer: its head and its whole body.
pub(super) type Answer = (http::response::Parts, Bytes);

impl InlinePool {
    pub(super) fn new(
        host: String,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> InlinePool {
        InlinePool { host, port, connect_timeout, idle_timeout, max_idle, idle: Mutex::new(Vec::new()) }
    }

    /// Sends `req` and reads the whole answer (at most `max_body` bytes), on an idle
    /// connection when there is one that is still open, else on a new one.
    pub(super) async fn request(
        &self,
        system: &str,
        mut req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, DeliveryError> {
        // hyper's connection writes the URI as it is given and adds no `Host` (its pooled
        // client does both): the request line takes the origin form, `Host` the authority.
        if let Some(authority) = req.uri().authority().cloned() {
            if !req.headers().contains_key(http::header::HOST)
                && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
            {
                req.headers_mut().insert(http::header::HOST, host);
            }
            let origin = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = origin.into();
        }
        loop {
            let (mut link, reused) = match self.take() {
                Some(link) => (link, true),
                None => (self.connect(system).await?, false),
            };
            let sent = drive(&mut link.conn, link.send.try_send_request(req)).await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(mut e) => match e.take_message() {
                    // Not written: the idle connection had died. Nothing reached the system.
                    Some(back) if reused => {
                        req = back;
                        continue;
                    }
                    _ => return Err(io(system, "sending the request failed", e.error())),
                },
            };
            let (parts, body) = resp.into_parts();
            let body = drive(&mut link.conn, Limited::new(body, max_body).collect())
                .await
                .map_err(|e| {
                    DeliveryError::new(DeliveryErrorKind::Io, system, format!("reading the answer failed: {e}"))
                })?
                .to_bytes();
            self.put(link);
            return Ok((parts, body));
        }
    }

    /// The most recently used idle connection that is still open; expired ones are closed.
    fn take(&self) -> Option<Link> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        idle.retain(|l| now.duration_since(l.idle_since) < self.idle_timeout);
        while let Some(mut link) = idle.pop() {
            if open(&mut link) {
                return Some(link);
            }
        }
        None
    }

    /// Back into the pool, unless the connection is closing (the system said
    /// `Connection: close`) or the pool is full.
    fn put(&self, mut link: Link) {
        if !open(&mut link) {
            return;
        }
        link.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(link);
        }
    }

    async fn connect(&self, system: &str) -> Result<Link, DeliveryError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let tcp = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let detail = format!("cannot connect to {}:{}: {e}", self.host, self.port);
                return Err(DeliveryError::new(DeliveryErrorKind::Connect, system, detail));
            }
            Err(_) => {
                let detail = format!(
                    "cannot connect to {}:{}: no answer within {} ms",
                    self.host,
                    self.port,
                    self.connect_timeout.as_millis()
                );
                return Err(DeliveryError::new(DeliveryErrorKind::Connect, system, detail));
            }
        };
        let _ = tcp.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| io(system, "starting HTTP on the connection failed", &e))?;
        Ok(Link { send, conn, idle_since: Instant::now() })
    }
}

/// Whether the connection can take a request: it has not ended (polled once, without
/// waiting) and its handle is ready.
fn open(link: &mut Link) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(&mut link.conn).poll(&mut cx) {
        Poll::Ready(_) => false,
        Poll::Pending => matches!(link.send.poll_ready(&mut cx), Poll::Ready(Ok(()))),
    }
}

/// Polls `f` and the connection it needs together, until `f` is done. A connection that
/// ends first (closed, failed) has handed its error to `f`, which then ends with it.
async fn drive<F: Future>(conn: &mut Conn, f: F) -> F::Output {
    let mut f = pin!(f);
    let mut ended = false;
    std::future::poll_fn(|cx| {
        // The connection first: what it reads is then ready for `f` in the same poll.
        if !ended && std::pin::Pin::new(&mut *conn).poll(cx).is_ready() {
            ended = true;
        }
        f.as_mut().poll(cx)
    })
    .await
}

fn io(system: &str, what: &str, e: &hyper::Error) -> DeliveryError {
    let mut detail = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    DeliveryError::new(DeliveryErrorKind::Io, system, detail)
}
