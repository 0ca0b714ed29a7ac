//! The edge as an attacker meets it: slow clients, odd bytes in headers and paths, more
//! headers than anyone needs. Each test sends raw bytes on a socket, as such a client would.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A client that writes bytes by hand and reads one answer, or sees the connection close.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One answer as it came: status, headers (names lowercased) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, String::from_utf8_lossy(&self.body))
    }
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn problem(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Client {
    fn open(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        Client { stream, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// A POST with extra header lines (raw bytes, any content) and a JSON body; its answer.
    fn post(&mut self, path: &str, extra: &[&[u8]], body: &[u8]) -> Answer {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: qiao.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        )
        .into_bytes();
        for line in extra {
            req.extend_from_slice(line);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.send(&req);
        self.answer().expect("an answer")
    }

    /// Writes `bytes` one at a time, `every` apart, on another thread, until the server
    /// stops taking them.
    fn trickle(&self, bytes: Vec<u8>, every: Duration) -> std::thread::JoinHandle<()> {
        let mut s = self.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in bytes {
                std::thread::sleep(every);
                if s.write_all(&[b]).is_err() {
                    return;
                }
            }
        })
    }

    /// The next answer; `None` when the connection closed first.
    fn answer(&mut self) -> Option<Answer> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap_or(0);
        let start = head_end + 4;
        while self.buf.len() < start + len {
            assert!(self.fill(), "closed in the middle of a body");
        }
        let body = self.buf[start..start + len].to_vec();
        self.buf.drain(..start + len);
        Some(Answer { status, headers, body })
    }

    /// Whether the server closed the connection (reading gives end of file or a reset).
    fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => false,
            Err(_) => true,
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("no answer within the read timeout")
            }
            Err(_) => false,
        }
    }
}

async fn edge() -> (Stubs, Qiao) {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&fixture("edge-security"), &stubs.env()).await;
    (stubs, qiao)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_a_byte_at_a_time_gets_408_and_the_connection_closes() {
    let (_stubs, qiao) = edge().await;
    let mut c = Client::open(qiao.addr());
    let started = Instant::now();
    c.send(b"POST /orders HTTP/1.1\r\nhost: qiao.test\r\n");
    // Each byte comes well within pingora's 60 s read timeout; the header never ends.
    let writer = c.trickle(b"x-slow: ".iter().copied().cycle().take(60).collect(), Duration::from_millis(200));
    let a = c.answer().expect("an answer before the connection closes");
    assert_eq!(a.status, 408);
    let p = a.problem();
    assert_eq!(p["type"], "urn:qiao:problem:request-timeout");
    assert!(p["detail"].as_str().unwrap().contains("1000 ms"), "{p}");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(4), "after {:?}", started.elapsed());
    assert!(c.closed(), "the connection is closed after the 408");
    writer.join().unwrap();
    // The access line is written after the answer: wait for it.
    eventually(Duration::from_secs(10), "the refusal on the access line", || async {
        qiao.logs().lines().any(|l| l.contains("qiao::access") && l.contains("request-timeout"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_comes_too_slowly_gets_408_on_message_and_proxy_routes() {
    let (stubs, qiao) = edge().await;
    for path in ["/orders", "/erp/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"] {
        let mut c = Client::open(qiao.addr());
        let started = Instant::now();
        let body = br#"{"formid":"SAL_SaleOrder","data":{"Model":{"FNote":"slow"}}}"#.to_vec();
        c.send(
            format!(
                "POST {path} HTTP/1.1\r\nhost: qiao.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let writer = c.trickle(body, Duration::from_millis(200));
        let a = c.answer().expect("an answer");
        assert_eq!(a.status, 408, "{path}: {a:?}");
        assert_eq!(a.problem()["type"], "urn:qiao:problem:request-timeout", "{path}");
        assert!(started.elapsed() < Duration::from_secs(4), "{path}: after {:?}", started.elapsed());
        assert!(c.closed(), "{path}: the connection is closed after the 408");
        writer.join().unwrap();
    }
    assert_eq!(stubs.get(qiao::config::SystemKind::Erp).state.stats()["received"], 0, "nothing half-read was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let (_stubs, qiao) = edge().await;
    let mut c = Client::open(qiao.addr());
    let body = br#"{"formid":"SAL_SaleOrder","data":{"Model":{}}}"#;
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: qiao.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.send(&[request.as_bytes(), body].concat());
    assert_eq!(c.answer().expect("an answer").status, 200);
    // The connection is kept for the next request, then closed when none comes.
    let started = Instant::now();
    assert!(c.closed(), "closed after idling");
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(1000) && idle < Duration::from_secs(5), "closed after {idle:?}");
}

/// Whatever a client puts in a header or a body, a value templated into a destination path
/// or header is the client's problem or goes through; it never makes Qiao answer 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_header_or_body_value_makes_a_5xx() {
    let (_stubs, qiao) = edge().await;
    let values: [&[u8]; 6] = [b"Save now", b"Save#fragment", b"Save?x=1", b"Save\tnow", b"Sav\xe9", b"\"Save\""];
    for value in values {
        let mut c = Client::open(qiao.addr());
        let a = c.post("/by-header", &[&[b"x-op: ", value].concat()], b"{}");
        let shown = String::from_utf8_lossy(value);
        assert!(a.status < 500, "x-op: {shown:?} gave {a:?}");
        if a.header("content-type") == Some("application/problem+json") {
            assert_ne!(a.problem()["error_kind"], "internal", "x-op: {shown:?}");
        }
    }
    for op in ["Save now", "Save#fragment", "Save?x=1", "a\u{0}b", "业务", "Save/../../x"] {
        let mut c = Client::open(qiao.addr());
        let body = serde_json::to_vec(&serde_json::json!({"op": op})).unwrap();
        let a = c.post("/by-body", &[], &body);
        assert!(a.status < 500, "op {op:?} gave {a:?}");
    }
}

/// On a catch-all proxy route, a path that climbs (`a/../../x`, spelled out or encoded) is
/// refused before anything is sent; dots inside a segment are just characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_in_a_path_parameter_are_refused() {
    let (stubs, qiao) = edge().await;
    let erp = stubs.get(qiao::config::SystemKind::Erp);
    let mut c = Client::open(qiao.addr());
    for path in [
        "/erp/a/../../x",
        "/erp/a/%2e%2e/%2E%2E/x",
        "/erp/a/.%2e/x",
        "/erp/./x",
        "/erp/a%2F..%2F..%2Fx",
        "/erp/a%5C..%5Cx",
        "/erp/x/..",
        "/erp/a/..;/x",
    ] {
        // Keep-alive: each refusal leaves the connection usable for the next.
        let a = c.post(path, &[], b"{}");
        assert_eq!(a.status, 400, "{path}: {a:?}");
        let p = a.problem();
        assert_eq!(p["type"], "urn:qiao:problem:bad-request", "{path}");
        assert_eq!(p["route"], "passthrough", "{path}");
        assert!(p["detail"].as_str().unwrap().contains("`op`"), "{path}: {p}");
    }
    assert!(erp.state.all_requests().is_empty(), "nothing reached the ERP: {:?}", erp.state.all_requests());
    // Dots that are not a whole segment are ordinary characters.
    let a = c.post("/erp/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc", &[], b"{}");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        erp.state.all_requests()[0].path,
        "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"
    );
}

/// Values from headers and the body go into a destination path percent-encoded: they stay
/// one value, and never become another path, a query or a fragment. Path parameters, still
/// encoded as they came, keep their `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_in_a_destination_path_are_percent_encoded() {
    let (stubs, qiao) = edge().await;
    let erp = stubs.get(qiao::config::SystemKind::Erp);
    let last = || erp.state.all_requests().last().cloned().expect("the ERP got a request");
    let mut c = Client::open(qiao.addr());
    let service = "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService";

    // A header value into a proxy route's path: one segment, no query.
    c.post("/by-header", &[b"x-op: ../admin?x=1#f"], b"{}");
    let got = last();
    assert_eq!(got.path, format!("{service}...%2Fadmin%3Fx%3D1%23f.common.kdsvc"));
    assert_eq!(got.query, None);
    assert_eq!(got.headers["x-op"], "../admin?x=1#f", "headers carry the value as it is");
    c.post("/by-header", &[b"x-op: Save now"], b"{}");
    assert_eq!(last().path, format!("{service}.Save%20now.common.kdsvc"));

    // A body value into a message route's path, UTF-8 encoded byte by byte.
    c.post("/by-body", &[], r#"{"op": "出库 x?y#z"}"#.as_bytes());
    let got = last();
    assert_eq!(got.path, format!("{service}.%E5%87%BA%E5%BA%93%20x%3Fy%23z.common.kdsvc"));
    assert_eq!(got.query, None);
    // `/../` inside a value is encoded, but a receiver that decodes `%2F` first would
    // still climb: refused.
    let before = erp.state.all_requests().len();
    let a = c.post("/by-body", &[], br#"{"op": "Save/../../admin"}"#);
    assert_eq!(a.status, 422, "{a:?}");
    assert_eq!(erp.state.all_requests().len(), before);

    // A header value into a query stays one parameter.
    let a = c.post("/by-query", &[b"x-op: Save&admin=true"], b"{}");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(last().query.as_deref(), Some("op=Save%26admin%3Dtrue"));

    // A catch-all parameter keeps its slashes and its escapes.
    c.post("/erp/sub/dir/x%20y.kdsvc", &[], b"{}");
    assert_eq!(last().path, "/k3cloud/sub/dir/x%20y.kdsvc");

    // A value that is a whole segment cannot be `..`: refused, nothing sent.
    let before = erp.state.all_requests().len();
    for op in ["..", "."] {
        let a = c.post("/by-segment", &[], serde_json::to_vec(&serde_json::json!({"op": op})).unwrap().as_slice());
        assert_eq!(a.status, 422, "{op}: {a:?}");
        assert_eq!(a.problem()["error_kind"], "mapping-failed");
    }
    assert_eq!(erp.state.all_requests().len(), before, "nothing sent for a dot segment");
    let a = c.post("/by-segment", &[], br#"{"op": "a/b"}"#);
    assert_eq!(a.status, 404, "the stub has no such path, but it was asked: {a:?}");
    assert_eq!(last().path, "/k3cloud/a%2Fb/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc");
}

/// A request with more header fields or bytes than `server.max_header_count` (100) and
/// `server.max_header_bytes` (60 KiB) gets 431 as a problem document, also past what
/// pingora parses at all (256 fields); requests pingora cannot parse get a problem document
/// instead of pingora's empty plain 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_headers_get_problem_documents() {
    let (stubs, qiao) = edge().await;
    // `post` sends three fields of its own (host, content-type, content-length).
    let fields = |n: usize| (0..n).map(|i| format!("x-field-{i}: {i}").into_bytes()).collect::<Vec<_>>();
    let mut c = Client::open(qiao.addr());
    let ok = fields(97);
    let a = c.post("/orders", &ok.iter().map(Vec::as_slice).collect::<Vec<_>>(), b"{}");
    assert_eq!(a.status, 200, "100 fields pass: {a:?}");
    for n in [98, 300] {
        let mut c = Client::open(qiao.addr());
        let many = fields(n);
        let a = c.post("/orders", &many.iter().map(Vec::as_slice).collect::<Vec<_>>(), b"{}");
        assert_eq!(a.status, 431, "{} fields: {a:?}", n + 3);
        let p = a.problem();
        assert_eq!(p["type"], "urn:qiao:problem:headers-too-large");
        assert_eq!(p["detail"], "the request has more than 100 header fields");
        assert_eq!(a.header("connection"), Some("close"));
        assert!(c.closed());
    }
    // 50 KiB in one field passes; 70 KiB (pingora alone takes up to 1 MiB) does not.
    let mut c = Client::open(qiao.addr());
    let a = c.post("/orders", &[format!("x-big: {}", "a".repeat(50 * 1024)).as_bytes()], b"{}");
    assert_eq!(a.status, 200, "{a:?}");
    let a = c.post("/orders", &[format!("x-big: {}", "a".repeat(70 * 1024)).as_bytes()], b"{}");
    assert_eq!(a.status, 431, "{a:?}");
    assert_eq!(a.problem()["detail"], "the request header is larger than 61440 bytes");

    // What pingora refuses before Qiao sees the request: a problem document all the same.
    let refused: [(&[u8], u16, &str); 4] = [
        (b"POST /orders HTTP/1.1\r\nhost: a\r\nno colon here\r\n\r\n", 400, "bad-request"),
        (b"POST /orders HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}", 400, "bad-request"),
        (b"POST /orders HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n", 400, "bad-request"),
        (b"CONNECT erp.example:443 HTTP/1.1\r\nhost: erp.example:443\r\n\r\n", 405, "method-not-allowed"),
    ];
    for (request, status, kind) in refused {
        let mut c = Client::open(qiao.addr());
        c.send(request);
        let a = c.answer().unwrap_or_else(|| panic!("no answer to {}", String::from_utf8_lossy(request)));
        assert_eq!(a.status, status, "{}: {a:?}", String::from_utf8_lossy(request));
        assert_eq!(a.problem()["error_kind"], kind);
        assert_eq!(a.header("server"), None, "not pingora's answer");
        assert!(c.closed());
    }
    assert_eq!(stubs.get(qiao::config::SystemKind::Erp).state.stats()["received"], 2, "only the two good ones");
}

/// A request with both Content-Length and Transfer-Encoding has two lengths; pingora would
/// silently pick the chunked one. Refused on every route, before any route is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_and_json_nesting_is_bounded() {
    let (stubs, qiao) = edge().await;
    for path in ["/orders", "/erp/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"] {
        let mut c = Client::open(qiao.addr());
        c.send(
            format!(
                "POST {path} HTTP/1.1\r\nhost: qiao.test\r\ncontent-type: application/json\r\n\
                 Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        let a = c.answer().expect("an answer");
        assert_eq!(a.status, 400, "{path}: {a:?}");
        let p = a.problem();
        assert_eq!(p["error_kind"], "bad-request");
        assert!(p["detail"].as_str().unwrap().contains("both Content-Length and Transfer-Encoding"), "{p}");
        assert_eq!(a.header("connection"), Some("close"));
    }
    assert_eq!(stubs.get(qiao::config::SystemKind::Erp).state.stats()["received"], 0);

    // 64 levels of arrays and objects pass; 65 are malformed JSON that says so.
    let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1)).into_bytes();
    let mut c = Client::open(qiao.addr());
    assert_eq!(c.post("/orders", &[], &nested(64)).status, 200);
    let a = c.post("/orders", &[], &nested(65));
    assert_eq!(a.status, 400, "{a:?}");
    let p = a.problem();
    assert_eq!(p["error_kind"], "malformed-json");
    assert!(p["detail"].as_str().unwrap().contains("deeper than 64 levels"), "{p}");
}

/// `concurrency_limit: 1`: while one request waits for a slow ERP, the next gets 503 with
/// `Retry-After`; once the first is answered, the route takes requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_over_its_concurrency_limit_answers_503() {
    let (stubs, qiao) = edge().await;
    stubs.get(qiao::config::SystemKind::Erp).state.add_fault(qiao::stub::Fault {
        delay_ms: 1500,
        times: 1,
        ..Default::default()
    });
    let addr = qiao.addr();
    let body = br#"{"formid":"SAL_SaleOrder","data":{"Model":{}}}"#;
    let slow = std::thread::spawn(move || Client::open(addr).post("/capped", &[], body).status);
    std::thread::sleep(Duration::from_millis(400));
    let a = Client::open(addr).post("/capped", &[], body);
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.header("retry-after"), Some("1"));
    let p = a.problem();
    assert_eq!(p["error_kind"], "concurrency-limited");
    assert_eq!(p["route"], "capped");
    assert_eq!(p["retry_after_seconds"], 1);
    assert_eq!(slow.join().unwrap(), 200, "the first request was served");
    assert_eq!(Client::open(addr).post("/capped", &[], body).status, 200, "the place is free again");
    // Other routes were never limited.
    assert_eq!(Client::open(addr).post("/orders", &[], body).status, 200);
}

/// Trace context as W3C Trace Context says, the same on a message route and a proxy route:
/// a second or malformed `traceparent` restarts the trace and drops `tracestate`; several
/// `tracestate` headers become one, without bad entries; `sampled` and `random` go on as the
/// caller sent them, with export off (this fixture exports nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_read_to_the_letter_on_both_kinds_of_route() {
    let (stubs, qiao) = edge().await;
    let erp = stubs.get(qiao::config::SystemKind::Erp);
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = |flags: &str| format!("traceparent: 00-{id}-00f067aa0ba902b7-{flags}").into_bytes();
    let body = br#"{"formid":"SAL_SaleOrder","data":{"Model":{}}}"#;
    for path in ["/orders", "/erp/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"] {
        let mut c = Client::open(qiao.addr());
        let mut sent = |lines: &[&[u8]]| {
            let a = c.post(path, lines, body);
            assert_eq!(a.status, 200, "{path}: {a:?}");
            erp.state.all_requests().last().cloned().unwrap().headers
        };
        let one = |h: &std::collections::HashMap<String, String>, name: &str| {
            let v = h.get(name).cloned();
            assert!(v.as_ref().is_none_or(|v| !v.contains(", ")), "{path}: one {name} header: {v:?}");
            v
        };

        // Flags as sent, the trace id kept, a span id of Qiao's, one combined tracestate.
        let h = sent(&[&parent("03"), b"tracestate: rojo=1,BAD=2", b"tracestate: congo=t61,rojo=3"]);
        let tp = one(&h, "traceparent").unwrap();
        assert!(tp.starts_with(&format!("00-{id}-")) && tp.ends_with("-03"), "{path}: {tp}");
        assert!(!tp.contains("00f067aa0ba902b7"), "{path}: {tp}");
        assert_eq!(one(&h, "tracestate").as_deref(), Some("rojo=1,congo=t61"), "{path}");
        let h = sent(&[&parent("00")]);
        assert!(one(&h, "traceparent").unwrap().ends_with("-00"), "{path}: not sampled, not random");

        // A second traceparent, uppercase hex, version ff, a zero id: a new trace, no tracestate.
        let upper = format!("traceparent: 00-{}-00F067AA0BA902B7-01", id.to_uppercase()).into_bytes();
        let zero = b"traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_vec();
        let ff = format!("traceparent: ff-{id}-00f067aa0ba902b7-01").into_bytes();
        let twice = b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec();
        for bad in [vec![parent("01"), twice], vec![upper], vec![zero], vec![ff]] {
            let mut lines: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
            lines.push(b"tracestate: congo=t61");
            let h = sent(&lines);
            let tp = one(&h, "traceparent").unwrap();
            assert!(!tp.contains(id) && !tp.contains("0af7651916cd43dd8448eb211c80319c"), "{path}: {tp}");
            assert!(tp.ends_with("-02"), "{path}: a new trace, random id, not sampled: {tp}");
            assert_eq!(one(&h, "tracestate"), None, "{path}: the old tracestate is dropped");
        }
    }
}
