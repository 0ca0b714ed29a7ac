//! Plain-HTTP/1 connections to one system, driven in the task that sends the request.
//!
//! hyper's pooled client runs each connection in a task of its own: a request goes to that
//! task through a channel, and its answer comes back through another, so every delivery
//! wakes a second task and hops between the two (a fifth of the message route's CPU time
//! in the profile, docs/performance.md). Here a connection is a hyper HTTP/1 `Connection`
//! future kept idle in a pool between requests: the delivering task takes one, polls it
//! beside its own request until the whole answer is read, and puts it back. An idle
//! connection is polled only once in a while (by the next take, and by a reaper every half
//! idle timeout), so one the system closed meanwhile is found then (polled once: a closed one
//! is ready) and dropped; a request that could not be written at all (the connection died
//! in between) is sent again on a fresh connection.
//!
//! HTTPS systems keep hyper's pooled client (TLS, HTTP/2 by ALPN): the systems of a plant's
//! LAN are mostly plain HTTP, and that is what this serves.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Whether the task that closes expired and closed idle connections runs.
    reaping: AtomicBool,
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
        InlinePool {
            host,
            port,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            reaping: AtomicBool::new(false),
        }
    }

    /// Sends `req` and reads the whole answer (at most `max_body` bytes), on an idle
    /// connection when there is one that is still open, else on a new one.
    pub(super) async fn request(
        self: &Arc<Self>,
        system: &str,
        mut req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, DeliveryError> {
        // hyper's connection writes the URI as it is given and adds no `Host` (its pooled
        // client does both): the request line takes the origin form, `Host` the authority.
        // The sink sends the origin form and `Host` already; an absolute URI is made so here.
        if let Some(authority) = req.uri().authority().cloned() {
            if !req.headers().contains_key(http::header::HOST)
                && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
            {
                req.headers_mut().insert(http::header::HOST, host);
            }
            let origin = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = origin.into();
        }
        self.start_reaping();
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

    /// Closes idle connections past the idle timeout, and those the system closed, every
    /// half timeout, on the runtime of the first request: idle sockets are not kept past
    /// `pool_idle_timeout` (nor half-closed) when traffic stops. Ends with the pool.
    fn start_reaping(self: &Arc<Self>) {
        // A plain load first: every delivery passes here, and only the first starts it.
        if self.reaping.load(Ordering::Relaxed) || self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.retain_mut(|l| now.duration_since(l.idle_since) < pool.idle_timeout && open(l));
            }
        });
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A bare HTTP/1.1 server: answers `ok` to every request; closes each connection after
    /// its first answer when `close_after_one` (as a system closing idle connections does),
    /// without saying so. Counts connections and keeps each request's head.
    async fn server(close_after_one: bool) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicUsize::new(0));
        let (c, h, e) = (conns.clone(), heads.clone(), ended.clone());
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let (h, e) = (h.clone(), e.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    e.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        h.lock().unwrap().push(head);
                        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                        if close_after_one {
                            return;
                        }
                    }
                });
            }
        });
        (port, conns, heads, ended)
    }

    fn pool(port: u16) -> Arc<InlinePool> {
        Arc::new(InlinePool::new("127.0.0.1".into(), port, Duration::from_secs(1), Duration::from_secs(30), 8))
    }

    fn request(port: u16) -> Request<Full<Bytes>> {
        Request::post(format!("http://127.0.0.1:{port}/k3cloud/Save.kdsvc?x=1"))
            .body(Full::new(Bytes::from_static(b"{\"FBillNo\":\"XSDD000123\"}")))
            .unwrap()
    }

    #[tokio::test]
    async fn one_connection_serves_request_after_request_in_origin_form_with_a_host() {
        let (port, conns, heads, _) = server(false).await;
        let p = pool(port);
        for _ in 0..3 {
            let (parts, body) = p.request("erp", request(port), 1024).await.unwrap();
            assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"ok"[..]));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        let heads = heads.lock().unwrap();
        assert!(heads[0].starts_with("POST /k3cloud/Save.kdsvc?x=1 HTTP/1.1\r\n"), "{}", heads[0]);
        assert!(heads[0].to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{port}\r\n")), "{}", heads[0]);
    }

    #[tokio::test]
    async fn a_connection_the_system_closed_while_idle_is_replaced_and_nothing_fails() {
        let (port, conns, heads, _) = server(true).await;
        let p = pool(port);
        for _ in 0..3 {
            let (parts, _) = p.request("erp", request(port), 1024).await.unwrap();
            assert_eq!(parts.status.as_u16(), 200);
            // Let the close arrive while the connection is idle in the pool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        assert_eq!(heads.lock().unwrap().len(), 3, "each request reached the system once");
    }

    #[tokio::test]
    async fn an_answer_larger_than_allowed_fails_and_no_system_means_a_connect_error() {
        let (port, _, _, _) = server(false).await;
        let e = pool(port).request("erp", request(port), 1).await.unwrap_err();
        assert_eq!(e.kind, DeliveryErrorKind::Io);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let e = pool(dead).request("erp", request(dead), 1024).await.unwrap_err();
        assert_eq!(e.kind, DeliveryErrorKind::Connect, "{}", e.detail);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout_without_further_traffic() {
        let (port, _, _, ended) = server(false).await;
        let timeout = Duration::from_secs(1);
        let p = Arc::new(InlinePool::new("127.0.0.1".into(), port, Duration::from_secs(1), timeout, 8));
        p.request("erp", request(port), 1024).await.unwrap();
        let idle_since = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if idle_since.elapsed() < timeout / 2 {
            assert_eq!(ended.load(Ordering::SeqCst), 0, "kept within the timeout");
        }
        let deadline = idle_since + Duration::from_secs(5);
        while ended.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ended.load(Ordering::SeqCst), 1, "closed once the timeout passed, with no request to notice");
        assert!(idle_since.elapsed() >= timeout, "not before the timeout");
        assert!(p.idle.lock().unwrap().is_empty());
    }
}
