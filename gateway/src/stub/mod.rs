//! Stub business systems: small real HTTP servers that stand in for an ERP, CRM, OA, WMS
//! or MES in the demo, the tests and docker-compose.
//!
//! Each answers its system's real endpoints in the real shape (Kingdee K/3 Cloud WebAPI,
//! Salesforce REST, DingTalk, Qimen, B2MML) and keeps what it received, so that a person or
//! a test can read it back:
//!
//! - `GET /_stub/requests[?path=PREFIX&last=N]` — what arrived, oldest first
//! - `DELETE /_stub/requests` — forget it, and drop pending faults
//! - `GET /_stub/stats` — counts, with duplicates by `x-qiao-message-id`
//! - `POST /_stub/faults` `{"status": 503, "times": 2, "delay_ms": 0}` — misbehave on the
//!   next requests (fault injection for retry and timeout tests)
//!
//! Nothing in the production path depends on this module.

mod systems;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::SystemKind;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One request as the stub received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recorded {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    /// The body as JSON, or as a string when it is not JSON.
    pub body: Value,
    pub message_id: Option<String>,
    pub received_at_ms: u64,
    /// The status the stub answered: a request it refused (404 for a path it does not know,
    /// an injected fault) is kept too, so that an integrator sees what arrived.
    #[serde(default = "ok_status")]
    pub status: u16,
    /// The body's bytes as they arrived (for tests that compare them exactly).
    #[serde(skip)]
    pub raw: Bytes,
}

fn ok_status() -> u16 {
    200
}

/// Misbehaviour for the next requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer this status instead of the normal answer.
    pub status: Option<u16>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// How many requests get this fault. Default 1.
    #[serde(default = "one")]
    pub times: u32,
    /// Only requests whose path starts with this.
    pub path: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug)]
pub struct StubState {
    pub kind: SystemKind,
    /// Requests kept for reading back (the oldest are dropped past `keep`).
    records: Mutex<VecDeque<Recorded>>,
    keep: usize,
    seq: AtomicU64,
    /// Deliveries per message id, to count duplicates.
    ids: Mutex<HashMap<String, u32>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Bill numbers handed out (XSDD000001, ...).
    pub bills: AtomicU64,
}

impl StubState {
    pub fn new(kind: SystemKind, keep: usize) -> Self {
        Self {
            kind,
            records: Mutex::new(VecDeque::new()),
            keep,
            seq: AtomicU64::new(0),
            ids: Mutex::new(HashMap::new()),
            faults: Mutex::new(VecDeque::new()),
            bills: AtomicU64::new(0),
        }
    }

    /// Business requests the stub took (answered 2xx) so far; control requests under
    /// `/_stub` excluded.
    pub fn received(&self) -> Vec<Recorded> {
        self.records.lock().expect("stub lock").iter().filter(|r| (200..300).contains(&r.status)).cloned().collect()
    }

    /// Every business request, refused ones too (`status` says how each was answered).
    pub fn all_requests(&self) -> Vec<Recorded> {
        self.records.lock().expect("stub lock").iter().cloned().collect()
    }

    /// Forgets what was received and drops pending faults.
    pub fn clear(&self) {
        self.records.lock().expect("stub lock").clear();
        self.ids.lock().expect("stub lock").clear();
        self.faults.lock().expect("stub lock").clear();
        self.seq.store(0, Ordering::Relaxed);
    }

    pub fn add_fault(&self, fault: Fault) {
        self.faults.lock().expect("stub lock").push_back(fault);
    }

    pub fn stats(&self) -> Value {
        let ids = self.ids.lock().expect("stub lock");
        let duplicates: u32 = ids.values().map(|n| n.saturating_sub(1)).sum();
        json!({
            "kind": self.kind.as_str(),
            "received": self.seq.load(Ordering::Relaxed),
            "distinct_message_ids": ids.len(),
            "duplicate_deliveries": duplicates,
        })
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("stub lock");
        let i = faults.iter().position(|f| f.path.as_deref().is_none_or(|p| path.starts_with(p)))?;
        let f = &mut faults[i];
        let out = f.clone();
        f.times = f.times.saturating_sub(1);
        if f.times == 0 {
            faults.remove(i);
        }
        Some(out)
    }

    fn record(&self, r: Recorded) {
        if let Some(id) = r.message_id.as_ref().filter(|_| (200..300).contains(&r.status)) {
            *self.ids.lock().expect("stub lock").entry(id.clone()).or_default() += 1;
        }
        let mut records = self.records.lock().expect("stub lock");
        if records.len() >= self.keep {
            records.pop_front();
        }
        records.push_back(r);
    }
}

/// A running stub.
pub struct StubHandle {
    pub addr: SocketAddr,
    pub state: Arc<StubState>,
    stop: watch::Sender<bool>,
}

impl StubHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for StubHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a stub of `kind` on `addr` (port 0 picks a free port) in the current runtime.
pub async fn start(kind: SystemKind, addr: SocketAddr) -> std::io::Result<StubHandle> {
    start_with(kind, addr, 100_000).await
}

/// Like [`start`], keeping at most `keep` requests for reading back.
pub async fn start_with(kind: SystemKind, addr: SocketAddr, keep: usize) -> std::io::Result<StubHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(StubState::new(kind, keep));
    let (stop, mut stopped) = watch::channel(false);
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "stub accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let st = st.clone();
            let mut conn_stop = stopped.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(st.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = conn_stop.changed() => {}
                }
            });
        }
    });
    Ok(StubHandle { addr, state, stop })
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = if status == StatusCode::NO_CONTENT {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec_pretty(body).unwrap_or_default())
    };
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json; charset=utf-8"));
    r
}

async fn handle(state: Arc<StubState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, &json!({"error": "unreadable body"}))),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);

    if let Some(control) = path.strip_prefix("/_stub/") {
        return Ok(control_api(&state, &parts.method, control, query.as_deref(), &bytes));
    }

    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    // A header sent several times is kept as one, its values joined by `, ` (RFC 9110
    // section 5.3), so that a test sees the repetition.
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in &parts.headers {
        let Ok(v) = v.to_str() else { continue };
        headers
            .entry(k.as_str().to_string())
            .and_modify(|all| *all = format!("{all}, {v}"))
            .or_insert_with(|| v.to_string());
    }
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let recorded = Recorded {
        seq,
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        message_id: headers.get(crate::headers::MESSAGE_ID.as_str()).cloned(),
        headers,
        body,
        received_at_ms: crate::pipeline::now_ms(),
        status: 200,
        raw: bytes.clone(),
    };

    if let Some(fault) = state.take_fault(&path) {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if let Some(status) = fault.status {
            // Kept with its status; `received()` lists only what the receiver took.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            state.record(Recorded { status: status.as_u16(), ..recorded });
            return Ok(reply(status, &json!({"error": "fault injected by the stub", "status": status.as_u16()})));
        }
    }
    let (status, answer) = systems::answer(&state, &parts.method, &path, query.as_deref(), &recorded.body, seq);
    state.record(Recorded { status: status.as_u16(), ..recorded });
    Ok(reply(status, &answer))
}

fn control_api(
    state: &StubState,
    method: &Method,
    what: &str,
    query: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let param = |name: &str| {
        query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
        })
    };
    match (method, what) {
        (&Method::GET, "requests") => {
            let prefix = param("path").unwrap_or_default();
            // Every request, refused ones too; `?taken=true` lists only what was answered 2xx.
            let all = if param("taken").as_deref() == Some("true") { state.received() } else { state.all_requests() };
            let mut list: Vec<Recorded> = all.into_iter().filter(|r| r.path.starts_with(&prefix)).collect();
            if let Some(last) = param("last").and_then(|n| n.parse::<usize>().ok()) {
                let skip = list.len().saturating_sub(last);
                list.drain(..skip);
            }
            reply(StatusCode::OK, &serde_json::to_value(list).unwrap_or_default())
        }
        (&Method::DELETE, "requests") => {
            state.clear();
            reply(StatusCode::OK, &json!({"cleared": true}))
        }
        (&Method::GET, "stats") | (&Method::GET, "health") => reply(StatusCode::OK, &state.stats()),
        (&Method::POST, "faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                state.add_fault(f);
                reply(StatusCode::OK, &json!({"armed": true}))
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown stub control endpoint", "see": "GET /_stub/requests, DELETE /_stub/requests, GET /_stub/stats, POST /_stub/faults"}),
        ),
    }
}

/// Makes a stub read an AMQP queue too, as a system that consumes from the broker would:
/// each message is kept like a request (method `AMQP`, path `amqp:<queue>`, the routing key
/// as query) and acknowledged. Runs until `stop` turns true; resumes after reconnects.
pub async fn consume_queue(state: Arc<StubState>, url: String, queue: String, stop: watch::Receiver<bool>) {
    use qiao_connectors::amqp::{BasicAckOptions, Broker, BrokerConfig, ConsumeSpec, Topology, string_headers};
    let broker = Broker::new(BrokerConfig {
        url,
        topology: Topology::default(),
        reconnect_initial: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(5),
    });
    let runner = broker.clone();
    let broker_stop = stop.clone();
    tokio::spawn(async move { runner.run(broker_stop).await });
    // Qiao declares the queue when it connects; the stub may get there first.
    if !broker.wait_for_queue(&queue, stop.clone()).await {
        return;
    }
    let spec = ConsumeSpec {
        queue: queue.clone(),
        prefetch: 32,
        concurrency: 1,
        tag: format!("qiao-stub-{}", state.kind),
        drain: Duration::from_secs(1),
    };
    broker
        .consume(
            spec,
            move |d| {
                let (state, queue) = (state.clone(), queue.clone());
                async move {
                    let headers: HashMap<String, String> =
                        string_headers(d.properties.headers().as_ref()).into_iter().collect();
                    let body = serde_json::from_slice(&d.data)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.data).into_owned()));
                    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    state.record(Recorded {
                        seq,
                        method: "AMQP".into(),
                        path: format!("amqp:{queue}"),
                        query: Some(d.routing_key.to_string()),
                        message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
                        headers,
                        body,
                        received_at_ms: crate::pipeline::now_ms(),
                        status: 200,
                        raw: Bytes::from(d.data.clone()),
                    });
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                }
            },
            stop,
        )
        .await;
}

/// Starts one stub of every kind on consecutive ports from `base_port` (0: free ports).
pub async fn start_all(host: std::net::IpAddr, base_port: u16) -> std::io::Result<Vec<StubHandle>> {
    let mut out = Vec::new();
    for (i, kind) in SystemKind::ALL.into_iter().enumerate() {
        let port = if base_port == 0 { 0 } else { base_port + i as u16 };
        out.push(start(kind, SocketAddr::new(host, port)).await?);
    }
    Ok(out)
}
