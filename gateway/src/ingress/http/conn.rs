//! The edge's connections: the limits pingora 0.9 does not keep by itself.
//!
//! pingora reads a request header with a timeout per read (60 s), and with none at all on
//! a kept-alive connection (`KeepaliveStatus::Infinite`: "FIXME: this should only apply to
//! reads between requests"); it has no total time for a header. A client that sends one
//! byte every few seconds therefore holds a connection, a task and a buffer for as long as
//! it likes, and an idle kept-alive connection is never closed. All of that happens in
//! `HttpSession::read_request`, before any `ProxyHttp` phase runs, so no hook can bound it.
//!
//! So every accepted connection is wrapped ([`Guarded`]) before pingora sees it, and the
//! wrapper keeps the clock while pingora waits for a request:
//!
//! - no byte of the next request within `idle_timeout_ms`: the connection is closed, as if
//!   the client had closed it (pingora then drops it quietly);
//! - a request header that is not complete `header_timeout_ms` after its first byte: a 408
//!   problem document is written and the connection is closed;
//! - a request header with more than `max_header_count` fields or `max_header_bytes` bytes:
//!   a 431 problem document, as soon as the limit is passed (pingora alone takes 256 fields
//!   and 1 MiB, and answers anything past that with a plain-text 400);
//! - pingora's own answers to a request it could not parse (a malformed header, two
//!   different `Content-Length`s: 400; `CONNECT`: 405), written before Qiao sees the
//!   request, are replaced by the same status as a problem document.
//!
//! [`EdgeHttp`] marks the start of each request on the connection (pingora's reuse loop
//! calls it before reading a header) and the edge marks the end of the header
//! ([`began`], from `early_request_filter`); in between, the wrapper's rules apply. Once the
//! header is read, the request's body has its own deadline (`body_timeout_ms`), kept by the
//! edge with pingora's read timeout ([`arm_body_read`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Edge;
use crate::config::ServerSettings;
use crate::error::{ErrorKind, Failure};
use crate::runtime::SharedRuntime;

/// How long connections accepted before the listener closed get to send their request.
const SETTLE: Duration = Duration::from_secs(1);

/// The edge as pingora's listening service runs it: each accepted connection wrapped in a
/// [`Guarded`] stream, then served by pingora's HTTP proxy around [`Edge`].
pub struct EdgeApp {
    http: Arc<EdgeHttp>,
    runtime: SharedRuntime,
}

impl EdgeApp {
    pub fn new(proxy: HttpProxy<Edge>, runtime: SharedRuntime) -> EdgeApp {
        EdgeApp { http: Arc::new(EdgeHttp { proxy: Arc::new(proxy) }), runtime }
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Read once per connection: a reload applies to the connections accepted after it.
        let limits = Limits::from(&self.runtime.load().config.server);
        let guarded: Stream = Box::new(Guarded::new(stream, limits));
        ServerApp::process_new(&self.http, guarded, shutdown).await
    }

    /// Runs when the listener has closed (SIGTERM or SIGQUIT, after the drain). pingora's
    /// cleanup drops every connection that waits for a request header, at once. A
    /// connection accepted just before the listener closed has often not sent its request
    /// by then, and its client would see the connection closed after writing it: so the
    /// cleanup waits a moment first (half the grace period, at most `SETTLE`), while those
    /// requests are read and served (with `Connection: close`: the process is draining).
    async fn cleanup(&self) {
        let grace = Duration::from_secs(self.runtime.load().config.server.grace_period_seconds);
        tokio::time::sleep((grace / 2).min(SETTLE)).await;
        self.http.proxy.http_cleanup().await;
    }
}

/// pingora's HTTP proxy with one addition: before pingora reads each request header on a
/// connection, the connection's wrapper starts its clock.
pub struct EdgeHttp {
    proxy: Arc<HttpProxy<Edge>>,
}

#[async_trait]
impl HttpServerApp for EdgeHttp {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if let Some(g) = session.stream().and_then(|s| s.as_any().downcast_ref::<Guarded>()) {
            g.await_request();
        }
        self.proxy.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.proxy.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// Marks the end of the request header: from here on the request is the edge's, and the
/// connection's header rules no longer apply.
pub fn began(session: &Session) {
    if let Some(g) = session.stream().and_then(|s| s.as_any().downcast_ref::<Guarded>()) {
        g.serving.store(true, Ordering::Release);
    }
}

/// Sets pingora's read timeout for the next read of the request body to what is left
/// until `deadline`; `false` when nothing is left (the body is late).
pub fn arm_body_read(session: &mut Session, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    session.set_read_timeout(Some(left));
    true
}

/// The connection-level limits, from the `server` section.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
}

impl From<&ServerSettings> for Limits {
    fn from(s: &ServerSettings) -> Limits {
        Limits {
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            max_header_count: s.max_header_count,
            max_header_bytes: s.max_header_bytes,
        }
    }
}

/// Where a request header ends and how big it is, counted as its bytes arrive: lines end at
/// `\n` (with or without `\r`, as httparse reads them); the header ends at the first empty
/// line after some text (empty lines before the request line are skipped, as httparse does).
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    bytes: usize,
    /// Lines ended so far, the request line included.
    lines: usize,
    begun: bool,
    after_lf: bool,
    done: bool,
}

/// What the scan found wrong with a header.
#[derive(Debug, PartialEq, Eq)]
enum Oversize {
    Fields(usize),
    Bytes(usize),
}

impl Scan {
    /// Reads `chunk`; stops at the end of the header. `Err` as soon as a limit is passed.
    /// A line at a time (`memchr` finds its end): byte by byte this was 1.3% of a request.
    fn feed(&mut self, chunk: &[u8], limits: &Limits) -> Result<(), Oversize> {
        let mut rest = chunk;
        if self.done || rest.is_empty() {
            return Ok(());
        }
        if !self.begun {
            let blank = rest.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(rest.len());
            self.count(blank, limits)?;
            rest = &rest[blank..];
            if rest.is_empty() {
                return Ok(());
            }
            self.begun = true;
        }
        loop {
            let Some(end) = memchr::memchr(b'\n', rest) else {
                self.count(rest.len(), limits)?;
                // Only a `\r` leaves a line empty so far.
                if rest.iter().any(|&b| b != b'\r') {
                    self.after_lf = false;
                }
                return Ok(());
            };
            self.count(end + 1, limits)?;
            if rest[..end].iter().any(|&b| b != b'\r') {
                self.after_lf = false;
            }
            if self.after_lf {
                self.done = true;
                return Ok(());
            }
            self.after_lf = true;
            self.lines += 1;
            if self.lines - 1 > limits.max_header_count {
                return Err(Oversize::Fields(limits.max_header_count));
            }
            rest = &rest[end + 1..];
        }
    }

    fn count(&mut self, n: usize, limits: &Limits) -> Result<(), Oversize> {
        self.bytes += n;
        if self.bytes > limits.max_header_bytes {
            return Err(Oversize::Bytes(limits.max_header_bytes));
        }
        Ok(())
    }
}

/// An accepted connection, with the clock of the request pingora is waiting for.
pub struct Guarded {
    inner: Stream,
    limits: Limits,
    /// Bumped by [`EdgeHttp`] each time pingora starts reading a request header.
    epoch: AtomicU32,
    /// Set by the edge once it has the request header ([`began`]).
    serving: AtomicBool,
    /// The epoch this side last saw: a new one resets the clock.
    seen_epoch: u32,
    /// When the wait for the current request began, and when its first byte came.
    waiting_since: Instant,
    header_started: Option<Instant>,
    scan: Scan,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An answer of our own being written instead of reading further; then the error to
    /// give pingora.
    refusal: Option<Refusal>,
}

struct Refusal {
    bytes: Bytes,
    written: usize,
    error: io::ErrorKind,
    message: String,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("inner", &self.inner).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Guarded {
    pub fn new(inner: Stream, limits: Limits) -> Guarded {
        Guarded {
            inner,
            limits,
            epoch: AtomicU32::new(0),
            serving: AtomicBool::new(false),
            seen_epoch: 0,
            waiting_since: Instant::now(),
            header_started: None,
            scan: Scan::default(),
            timer: None,
            refusal: None,
        }
    }

    /// pingora is about to read the next request header.
    fn await_request(&self) {
        self.serving.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn client(&self) -> String {
        self.inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_else(|| "-".to_string())
    }

    /// Gives up on the request: answers `failure` (closing the connection) and then fails
    /// pingora's read with `error`.
    fn refuse(&mut self, failure: &Failure, error: io::ErrorKind) {
        let client = self.client();
        crate::telemetry::access::refused_connection(failure, &client);
        self.refusal =
            Some(Refusal { bytes: problem_response(failure), written: 0, error, message: failure.detail.clone() });
    }

    /// Writes what is left of the refusal (best effort: a client that does not read it
    /// loses it).
    fn write_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let r = self.refusal.as_mut().expect("a refusal");
        while r.written < r.bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &r.bytes[r.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => r.written = r.bytes.len() + 1,
                Poll::Ready(Ok(n)) => r.written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        if r.written == r.bytes.len() {
            let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
            r.written += 1;
        }
        Poll::Ready(())
    }

    /// Writes what is left of the refusal; then pingora's read fails with its error.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.write_refusal(cx));
        let r = self.refusal.as_ref().expect("a refusal");
        Poll::Ready(Err(io::Error::new(r.error, r.message.clone())))
    }

    /// pingora answers a request it could not parse (400) or will not serve (`CONNECT`,
    /// 405) before Qiao sees it, with an empty plain answer: the same status as a problem
    /// document goes out instead. `None` for anything else.
    fn substitute(&self, head: &[u8]) -> Option<Failure> {
        let status = head.strip_prefix(b"HTTP/1.1 ").or_else(|| head.strip_prefix(b"HTTP/1.0 "))?.get(..3)?;
        Some(match status {
            b"400" => Failure::new(
                ErrorKind::BadRequest,
                "the request is not valid HTTP/1.1: a malformed request line or header field, a \
                 Content-Length that is not a number or is repeated with another value, or a \
                 Transfer-Encoding that does not end in chunked",
            ),
            b"405" => Failure::new(ErrorKind::MethodNotAllowed, "CONNECT is not served here"),
            _ => return None,
        })
    }
}

/// A complete answer with a problem document, closing the connection.
fn problem_response(failure: &Failure) -> Bytes {
    let body = serde_json::to_vec(&failure.problem(None, None, None)).unwrap_or_default();
    let status = http::StatusCode::from_u16(failure.kind.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        super::answer::PROBLEM_JSON,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return this.poll_refusal(cx);
        }
        if this.serving.load(Ordering::Acquire) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let epoch = this.epoch.load(Ordering::Acquire);
        if epoch != this.seen_epoch {
            this.seen_epoch = epoch;
            this.waiting_since = Instant::now();
            this.header_started = None;
            this.scan = Scan::default();
        }
        let deadline = match this.header_started {
            Some(t) => t + this.limits.header_timeout,
            None => this.waiting_since + this.limits.idle_timeout,
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.header_started.is_none() {
                    this.header_started = Some(Instant::now());
                }
                if let Err(over) = this.scan.feed(&buf.filled()[before..], &this.limits) {
                    // pingora does not get these bytes: the answer is ours.
                    buf.set_filled(before);
                    let detail = match over {
                        Oversize::Fields(n) => format!("the request has more than {n} header fields"),
                        Oversize::Bytes(n) => format!("the request header is larger than {n} bytes"),
                    };
                    this.refuse(&Failure::new(ErrorKind::HeadersTooLarge, detail), io::ErrorKind::InvalidData);
                    return this.poll_refusal(cx);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.deadline() != deadline.into() {
            timer.as_mut().reset(deadline.into());
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match this.header_started {
            // Nothing of a next request: close as a client closing its idle connection would.
            None => Poll::Ready(Ok(())),
            Some(_) => {
                let ms = this.limits.header_timeout.as_millis();
                let f = Failure::new(
                    ErrorKind::RequestTimeout,
                    format!("the request header was not complete within {ms} ms of its first byte"),
                );
                this.refuse(&f, io::ErrorKind::TimedOut);
                this.poll_refusal(cx)
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refusal.is_none()
            && !this.serving.load(Ordering::Acquire)
            && this.header_started.is_some()
            && let Some(failure) = this.substitute(buf)
        {
            this.refuse(&failure, io::ErrorKind::InvalidData);
        }
        if this.refusal.is_some() {
            // Our own answer goes out instead, and nothing may follow it.
            ready!(this.write_refusal(cx));
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refusal.is_none() && !this.serving.load(Ordering::Acquire) && this.header_started.is_some() {
            // Possibly pingora's own answer: go through `poll_write`, which looks at it.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        if this.refusal.is_some() {
            ready!(this.write_refusal(cx));
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// After a refusal, how long and how much of what the client still sends is read and
/// dropped before the connection closes.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
        if self.refusal.is_none() {
            return;
        }
        // A refusal leaves the client in the middle of its request. Closing a socket with
        // unread bytes makes the kernel send a reset, which can destroy the answer before
        // the client reads it: read on for a little while first (nginx's lingering close).
        use tokio::io::AsyncReadExt;
        let until = tokio::time::Instant::now() + LINGER;
        let mut buf = [0u8; 8192];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match tokio::time::timeout_at(until, self.inner.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => dropped += n,
                _ => break,
            }
        }
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(count: usize, bytes: usize) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_header_count: count,
            max_header_bytes: bytes,
        }
    }

    #[test]
    fn the_scan_finds_the_end_of_a_header_however_lines_end() {
        for head in [
            &b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\nhost: a\n\n",
            b"GET / HTTP/1.1\r\nhost: a\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n",
        ] {
            let mut s = Scan::default();
            // Byte by byte: the end is found across reads too.
            for b in head {
                s.feed(std::slice::from_ref(b), &limits(100, 1000)).unwrap();
            }
            assert!(s.done, "{}", String::from_utf8_lossy(head));
            assert_eq!(s.lines, 2, "{}", String::from_utf8_lossy(head));
        }
        let mut s = Scan::default();
        s.feed(b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\n\r\n\r\n\r\n", &limits(100, 40)).unwrap();
        assert_eq!(s.bytes, 38, "the body after the header is not counted");
    }

    /// The scan as it was first written, a byte at a time: the reference for the faster one.
    fn feed_bytewise(s: &mut Scan, chunk: &[u8], limits: &Limits) -> Result<(), Oversize> {
        for &b in chunk {
            if s.done {
                break;
            }
            s.bytes += 1;
            if s.bytes > limits.max_header_bytes {
                return Err(Oversize::Bytes(limits.max_header_bytes));
            }
            if !s.begun {
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                s.begun = true;
            }
            match b {
                b'\n' if s.after_lf => s.done = true,
                b'\n' => {
                    s.after_lf = true;
                    s.lines += 1;
                    if s.lines - 1 > limits.max_header_count {
                        return Err(Oversize::Fields(limits.max_header_count));
                    }
                }
                b'\r' => {}
                _ => s.after_lf = false,
            }
        }
        Ok(())
    }

    #[test]
    fn the_scan_reads_lines_as_the_bytewise_scan_reads_bytes() {
        // Headers made of the bytes that matter (CR, LF, others), cut into reads of every
        // size, against several limits: the same verdict, bytes, lines and end.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut compared = 0;
        for _ in 0..4000 {
            let len = (next() % 48) as usize;
            let head: Vec<u8> = (0..len).map(|_| [b'\r', b'\n', b'a', b':'][(next() % 4) as usize]).collect();
            let cut = 1 + (next() % 9) as usize;
            for limits in [limits(100, 1000), limits(2, 1000), limits(100, 12), limits(0, 5)] {
                let (mut fast, mut slow) = (Scan::default(), Scan::default());
                let (mut got, mut want) = (Ok(()), Ok(()));
                for part in head.chunks(cut) {
                    if got.is_ok() {
                        got = fast.feed(part, &limits);
                    }
                    if want.is_ok() {
                        want = feed_bytewise(&mut slow, part, &limits);
                    }
                }
                let what = format!("{:?} in reads of {cut}", String::from_utf8_lossy(&head));
                assert_eq!(got, want, "{what}");
                if want.is_ok() {
                    assert_eq!(
                        (fast.bytes, fast.lines, fast.done, fast.begun),
                        (slow.bytes, slow.lines, slow.done, slow.begun),
                        "{what}"
                    );
                    assert_eq!(fast.after_lf, slow.after_lf, "{what}");
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 16_000);
    }

    #[test]
    fn the_scan_stops_at_the_limits() {
        let mut s = Scan::default();
        let head = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n";
        assert_eq!(s.feed(head, &limits(2, 1000)), Err(Oversize::Fields(2)));
        let mut s = Scan::default();
        assert!(s.feed(head, &limits(3, 1000)).is_ok());
        let mut s = Scan::default();
        assert_eq!(s.feed(head, &limits(100, 20)), Err(Oversize::Bytes(20)));
        // Empty lines before the request line count as bytes, so they cannot pile up.
        let mut s = Scan::default();
        assert_eq!(s.feed(&[b'\n'; 50], &limits(100, 20)), Err(Oversize::Bytes(20)));
    }
}
