//! AMQP throughput: Qiao's two AMQP paths beside raw lapin loops on the same broker, in the
//! same run, alternating, in messages per second.
//!
//! Targets (each measured every round; medians over the rounds):
//! - `raw-publish`: lapin publishes N persistent, mandatory messages (the 1,382-byte MES
//!   completion, routes/examples/mes-production-performance.json) to the exchange Qiao
//!   publishes to, with publisher confirms and at most WINDOW unconfirmed → msg/s.
//! - `qiao-publish`: the real `qiao` binary, route `intake` of bench/amqp-config (a copy of
//!   the shipped `mes-completion-intake`: HTTP POST → JSON Schema → publish, persistent,
//!   mandatory, confirmed → 202), driven by wrk with WINDOW connections for DURATION
//!   seconds → 202s per second. Nothing consumes its queue; the bench checks that the
//!   queue holds at least as many messages as there were 202s, then purges it.
//! - `raw-http-publish`: the least any HTTP → AMQP bridge built on these crates does, as a
//!   reference for `qiao-publish`: a bare hyper HTTP/1 server on the bench's runtime that
//!   publishes each POST body unchanged like `raw-publish` (persistent, mandatory, one
//!   confirming channel) and answers 202 after the confirm. No parsing, schema, tracing or
//!   logging. wrk drives it exactly like `qiao-publish` → 202s per second.
//! - `raw-consume`: lapin consumes N pre-filled messages with manual acks, one
//!   `basic.ack` per message, `basic.qos` = PREFETCH (Qiao's) → msg/s.
//! - `raw-consume-http`: the same, plus one HTTP POST per message with hyper to the ERP
//!   stub (the body Qiao's route would send, mapped once up front), CONCURRENCY at a time
//!   like Qiao's consumer, ack after the stub's 200: the fair reference for Qiao.
//! - `qiao-consume`: route `to-erp` (the ERP half of the shipped fan-out route: schema,
//!   map, one HTTP delivery, ack) on N pre-filled messages: Qiao is started after the
//!   fill; the time runs from the first request the stub sees to the N-th distinct
//!   `x-qiao-message-id` (polled every 10 ms on `GET /_stub/stats`).
//! - `qiao-fanout`: the shipped `mes-completion-to-wms-and-erp` (two HTTP deliveries per
//!   message, WMS then ERP), the same way; done when both stubs have N distinct ids.
//! - `qiao-publish-b`, `qiao-consume-b`: `qiao-publish` and `qiao-consume` with the build
//!   `QIAO_BIN_B` (the one before a change), in the same rounds and alternating with them:
//!   an A/B of two builds under the same broker and box.
//!
//! CPU per message (user + system, all threads, from /proc/PID/stat): `side` is the
//! process under test (the bench itself for raw targets, Qiao for Qiao targets), `broker`
//! RabbitMQ's beam.smp, `stub` the HTTP stubs, `box` the whole machine (neighbours too).
//!
//! Run: `bench/amqp.sh` (builds the release binary when missing, then runs this), or
//! `cargo bench -p qiao --bench amqp` with `$CARGO_TARGET_DIR/release/qiao` built. Needs
//! RabbitMQ (AMQP_URL, default guest on 127.0.0.1:5672) and wrk. Every broker name starts
//! with `qiao.bench.<random>`; all of them are deleted at the end. Knobs (environment):
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | `QIAO_BENCH_N` | 20000 | messages per publish / consume measurement |
//! | `QIAO_BENCH_ROUNDS` | 3 | rounds; the order of raw and Qiao alternates |
//! | `QIAO_BENCH_DURATION` | 5 | seconds of wrk per `qiao-publish` measurement (after 1 s of warm-up) |
//! | `QIAO_BENCH_WINDOW` | 256 | unconfirmed publishes (raw), wrk connections (Qiao) |
//! | `QIAO_BENCH_PREFETCH` | 64 | `prefetch` of Qiao's consuming routes and of the raw consumers |
//! | `QIAO_BENCH_CONCURRENCY` | 16 | `concurrency` of Qiao's consuming routes and of `raw-consume-http` |
//! | `QIAO_BENCH_THREADS` | 1 | `qiao run --threads`, and the bench's tokio worker threads |
//! | `QIAO_BENCH_TARGETS` | the seven without `-b` | any of the names above, in this order within a round |
//! | `QIAO_BENCH_PERF` | 0 | 1: after the rounds, `perf record -g` of Qiao during one more `qiao-publish` and `qiao-consume` |
//! | `QIAO_BENCH_OUT` | a temp dir | logs, wrk outputs, perf reports (kept) |
//! | `QIAO_BIN` | `$CARGO_TARGET_DIR/release/qiao` | |
//! | `QIAO_BIN_B` | none | the build the `-b` targets run |
//!
//! Numbers and their reading: docs/performance.md.

// The same allocator as the `qiao` binary, so that the raw loops are not handicapped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/stats.rs"]
mod stats;
use stats::median;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::process::{Child, Command};

type R<T> = Result<T, String>;
type HttpClient = Client<HttpConnector, Full<Bytes>>;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/amqp-config");
const BODY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../routes/examples/mes-production-performance.json");
const SAVE_PATH: &str = "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc";
const ROUTING_KEY: &str = "mes.production.completed";
const TARGETS: [&str; 9] = [
    "raw-publish",
    "raw-http-publish",
    "qiao-publish",
    "qiao-publish-b",
    "raw-consume",
    "raw-consume-http",
    "qiao-consume",
    "qiao-consume-b",
    "qiao-fanout",
];
/// `max_attempts` of the consuming routes in bench/amqp-config: retry queues 1..=4.
const RETRY_QUEUES: usize = 4;

struct Settings {
    n: usize,
    rounds: usize,
    duration: u64,
    window: usize,
    prefetch: u16,
    concurrency: usize,
    threads: usize,
    targets: Vec<String>,
    perf: bool,
    out: PathBuf,
    qiao_bin: PathBuf,
    /// The build the `-b` targets run.
    qiao_bin_b: Option<PathBuf>,
    amqp_url: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not valid")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env(prefix: &str) -> Settings {
        let target_dir = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_string());
        let targets: Vec<String> = std::env::var("QIAO_BENCH_TARGETS")
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_else(|_| TARGETS.iter().filter(|t| !t.ends_with("-b")).map(|t| t.to_string()).collect());
        let qiao_bin_b = std::env::var("QIAO_BIN_B").ok().filter(|b| !b.is_empty()).map(PathBuf::from);
        for t in &targets {
            assert!(TARGETS.contains(&t.as_str()), "unknown target {t}; targets: {}", TARGETS.join(" "));
            assert!(!t.ends_with("-b") || qiao_bin_b.is_some(), "target {t} runs QIAO_BIN_B, which is not set");
        }
        let out = std::env::var("QIAO_BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir().join(format!("{prefix}.out")));
        Settings {
            n: env_or("QIAO_BENCH_N", 20_000),
            rounds: env_or("QIAO_BENCH_ROUNDS", 3),
            duration: env_or("QIAO_BENCH_DURATION", 5),
            window: env_or("QIAO_BENCH_WINDOW", 256),
            prefetch: env_or("QIAO_BENCH_PREFETCH", 64),
            concurrency: env_or("QIAO_BENCH_CONCURRENCY", 16),
            threads: env_or("QIAO_BENCH_THREADS", 1),
            targets,
            perf: env_or("QIAO_BENCH_PERF", 0) == 1,
            out,
            qiao_bin: std::env::var("QIAO_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|_| Path::new(&target_dir).join("release/qiao")),
            qiao_bin_b,
            amqp_url: std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        }
    }
}

// --- CPU accounting ----------------------------------------------------------------------

/// User + system clock ticks of a process, all threads (0 when it is gone).
fn proc_ticks(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let Some(after) = text.rfind(')').map(|i| &text[i + 2..]) else { return 0 };
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}

/// Busy ticks of the whole machine (all CPUs; idle, iowait and steal excluded).
fn box_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 7 { 0 } else { v[0] + v[1] + v[2] + v[5] + v[6] }
}

/// RabbitMQ's Erlang VM, if this machine runs it.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (comm.trim() == "beam.smp" && String::from_utf8_lossy(&cmdline).contains("rabbit")).then_some(pid)
    })
}

fn clock_tick() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU counters of everything a measurement involves.
#[derive(Clone, Copy, Default)]
struct Cpu {
    side: u64,
    broker: u64,
    stub: u64,
    machine: u64,
}

struct Meter {
    side: Vec<u32>,
    broker: Option<u32>,
    stubs: Vec<u32>,
}

impl Meter {
    fn read(&self) -> Cpu {
        Cpu {
            side: self.side.iter().map(|p| proc_ticks(*p)).sum(),
            broker: self.broker.map_or(0, proc_ticks),
            stub: self.stubs.iter().map(|p| proc_ticks(*p)).sum(),
            machine: box_ticks(),
        }
    }
}

/// One measurement.
#[derive(Clone, Default)]
struct Sample {
    msgs: usize,
    secs: f64,
    /// CPU microseconds per message.
    side_us: f64,
    broker_us: f64,
    stub_us: f64,
    box_us: f64,
    note: String,
}

impl Sample {
    fn new(msgs: usize, secs: f64, before: Cpu, after: Cpu, tick: u64, note: String) -> Sample {
        let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 1e6 / tick as f64 / msgs.max(1) as f64;
        Sample {
            msgs,
            secs,
            side_us: per(before.side, after.side),
            broker_us: per(before.broker, after.broker),
            stub_us: per(before.stub, after.stub),
            box_us: per(before.machine, after.machine),
            note,
        }
    }

    fn rate(&self) -> f64 {
        self.msgs as f64 / self.secs.max(1e-9)
    }
}

// --- processes ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn log_file(out: &Path, name: &str) -> Stdio {
    std::fs::File::create(out.join(name)).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
}

/// SIGINT (Qiao's fast shutdown), then SIGKILL after 5 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg("-INT").arg(pid.to_string()).status().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

struct Stub {
    child: Child,
    url: String,
}

async fn start_stub(s: &Settings, http: &HttpClient, kind: &str) -> R<Stub> {
    let port = free_port();
    let child = Command::new(&s.qiao_bin)
        .args(["--log-level", "warn", "stub", kind, "--listen", &format!("127.0.0.1:{port}")])
        .stdout(log_file(&s.out, &format!("stub-{kind}.log")))
        .stderr(log_file(&s.out, &format!("stub-{kind}.err")))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the {kind} stub: {e}"))?;
    let url = format!("http://127.0.0.1:{port}");
    let stats = format!("{url}/_stub/stats");
    wait_until(Duration::from_secs(10), &format!("the {kind} stub"), || async {
        matches!(call(http, "GET", &stats, &[], Bytes::new()).await, Ok((200, _)))
    })
    .await?;
    Ok(Stub { child, url })
}

impl Stub {
    async fn clear(&self, http: &HttpClient) -> R<()> {
        call(http, "DELETE", &format!("{}/_stub/requests", self.url), &[], Bytes::new()).await.map(drop)
    }

    /// (`received`, `distinct_message_ids`, `duplicate_deliveries`).
    async fn stats(&self, http: &HttpClient) -> R<(u64, u64, u64)> {
        let (_, body) = call(http, "GET", &format!("{}/_stub/stats", self.url), &[], Bytes::new()).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("stub stats: {e}"))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok((n("received"), n("distinct_message_ids"), n("duplicate_deliveries")))
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

struct Qiao {
    child: Child,
    url: String,
}

impl Qiao {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Everything shared by the measurements.
struct Bench {
    s: Settings,
    prefix: String,
    config: PathBuf,
    http: HttpClient,
    conn: Connection,
    erp: Stub,
    wms: Stub,
    body: Bytes,
    /// What `to-erp` sends the ERP for `body`.
    mapped: Bytes,
    broker: Option<u32>,
    tick: u64,
    qiao_starts: usize,
    /// Fills so far: message ids are unique across the whole run.
    fills: std::cell::Cell<usize>,
}

impl Bench {
    fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    fn q(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// Every queue the bench or Qiao may have declared.
    fn queues(&self) -> Vec<String> {
        let mut out = vec![self.q("published"), self.q("raw")];
        for base in ["to-erp", "fan-out"] {
            out.push(self.q(base));
            out.push(self.q(&format!("{base}.dlq")));
            out.extend((1..=RETRY_QUEUES).map(|n| self.q(&format!("{base}.retry.{n}"))));
            out.push(self.q(&format!("{base}.retry.circuit")));
        }
        out
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AMQP_PREFIX", self.prefix.clone()),
            ("AMQP_URL", self.s.amqp_url.clone()),
            ("ERP_URL", self.erp.url.clone()),
            ("WMS_URL", self.wms.url.clone()),
        ]
    }

    fn meter(&self, side: Vec<u32>) -> Meter {
        Meter { side, broker: self.broker, stubs: vec![self.erp.pid(), self.wms.pid()] }
    }

    /// Starts `QIAO_BIN`, or `QIAO_BIN_B` for a `-b` target.
    async fn start_qiao(&mut self, wait_ready: bool, build_b: bool) -> R<Qiao> {
        let (port, admin) = (free_port(), free_port());
        self.qiao_starts += 1;
        let n = self.qiao_starts;
        let bin = match (&self.s.qiao_bin_b, build_b) {
            (Some(b), true) => b.clone(),
            _ => self.s.qiao_bin.clone(),
        };
        let mut cmd = Command::new(&bin);
        cmd.args(["--log-level", "warn", "run", "--config"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--threads", &self.s.threads.to_string()])
            .stdout(log_file(&self.s.out, &format!("qiao-{n}.log")))
            .stderr(log_file(&self.s.out, &format!("qiao-{n}.err")))
            .kill_on_drop(true);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let qiao = Qiao { child, url: format!("http://127.0.0.1:{port}") };
        if wait_ready {
            let ready = format!("http://127.0.0.1:{admin}/readyz");
            let http = &self.http;
            wait_until(Duration::from_secs(30), "Qiao to be ready (/readyz 200)", || async {
                matches!(call(http, "GET", &ready, &[], Bytes::new()).await, Ok((200, _)))
            })
            .await
            .map_err(|e| format!("{e}; see {}/qiao-{n}.err", self.s.out.display()))?;
        }
        Ok(qiao)
    }

    async fn channel(&self) -> R<Channel> {
        self.conn.create_channel().await.map_err(|e| format!("channel: {e}"))
    }

    async fn queue_len(&self, queue: &str) -> R<u32> {
        let ch = self.channel().await?;
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        let q =
            ch.queue_declare(queue.into(), opts, FieldTable::default()).await.map_err(|e| format!("{queue}: {e}"))?;
        let _ = ch.close(200, "".into()).await;
        Ok(q.message_count())
    }

    async fn purge(&self, queue: &str) -> R<u32> {
        let ch = self.channel().await?;
        let n = ch
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| format!("purge {queue}: {e}"))?;
        let _ = ch.close(200, "".into()).await;
        Ok(n)
    }

    /// Fills `queue` with `n` copies of the body (distinct message ids), confirmed.
    async fn fill(&self, queue: &str, n: usize, tag: &str) -> R<()> {
        let ch = self.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
        self.fills.set(self.fills.get() + 1);
        let tag = format!("{tag}{}", self.fills.get());
        publish_n(&ch, "", queue, &self.body, n, self.s.window, &tag).await?;
        let _ = ch.close(200, "".into()).await;
        let len = self.queue_len(queue).await?;
        if len as usize != n {
            return Err(format!("{queue} holds {len} messages after a fill of {n}"));
        }
        Ok(())
    }

    async fn cleanup(&self) {
        let Ok(ch) = self.channel().await else { return };
        for q in self.queues() {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        let _ = ch.exchange_delete(self.exchange().as_str().into(), ExchangeDeleteOptions::default()).await;
        let _ = ch.close(200, "".into()).await;
    }
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut done: F) -> R<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out after {timeout:?} waiting for {what}"))
}

async fn call(http: &HttpClient, method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> R<(u16, Bytes)> {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// Whether a Kingdee answer says the bill was saved (the stub writes pretty JSON).
fn saved(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    text.contains("\"IsSuccess\": true") || text.contains("\"IsSuccess\":true")
}

fn properties(id: String) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers
        .insert(ShortString::from("x-qiao-route"), AMQPValue::LongString(LongString::from("raw".as_bytes().to_vec())));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_app_id("qiao-bench".into())
        .with_headers(headers)
}

/// Publishes `n` persistent, mandatory messages with at most `window` unconfirmed.
async fn publish_n(ch: &Channel, exchange: &str, key: &str, body: &[u8], n: usize, window: usize, tag: &str) -> R<()> {
    let mut pending = FuturesUnordered::new();
    let check = |c: Result<Confirmation, lapin::Error>| match c {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(other) => Err(format!("publish not confirmed: {other:?}")),
        Err(e) => Err(format!("publish failed: {e}")),
    };
    let options = BasicPublishOptions { mandatory: true, immediate: false };
    for i in 0..n {
        if pending.len() >= window {
            check(pending.next().await.expect("pending confirms"))?;
        }
        let confirm = ch
            .basic_publish(exchange.into(), key.into(), options, body, properties(format!("{tag}-{i}")))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        pending.push(confirm);
    }
    while let Some(c) = pending.next().await {
        check(c)?;
    }
    Ok(())
}

// --- the measurements --------------------------------------------------------------------

async fn raw_publish(b: &Bench) -> R<Sample> {
    let queue = b.q("published");
    b.purge(&queue).await?;
    let ch = b.channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let meter = b.meter(vec![std::process::id()]);
    let (c0, t0) = (meter.read(), Instant::now());
    publish_n(&ch, &b.exchange(), ROUTING_KEY, &b.body, b.s.n, b.s.window, "raw").await?;
    let (secs, c1) = (t0.elapsed().as_secs_f64(), meter.read());
    let _ = ch.close(200, "".into()).await;
    let held = b.purge(&queue).await? as usize;
    if held != b.s.n {
        return Err(format!("raw-publish: {held} messages in {queue}, not {}", b.s.n));
    }
    Ok(Sample::new(b.s.n, secs, c0, c1, b.tick, format!("window {}", b.s.window)))
}

/// The checks and the row of a publish target driven by wrk: no answer but 202 (`refused`
/// counts the server's own failures), and every 202 a message in `queue`.
async fn publish_sample(
    b: &Bench,
    target: &str,
    queue: &str,
    w: &Wrk,
    refused: usize,
    (c0, c1): (Cpu, Cpu),
    wrk_file: &str,
) -> R<Sample> {
    if w.errors > 0 || refused > 0 {
        return Err(format!("{target}: {} non-202 answers or socket errors (see {wrk_file})", w.errors.max(refused)));
    }
    // Every 202 is a confirmed message: the queue must hold at least as many (the
    // warm-up's too, and requests still in flight when wrk stopped).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = b.queue_len(queue).await? as usize;
    if held < w.requests {
        return Err(format!("{target}: {held} messages in {queue} after {} 202s", w.requests));
    }
    let note = format!(
        "{} conns, p50 {:.1} ms, p99 {:.1} ms, wrk {:.1} µs",
        b.s.window,
        w.p50_ms,
        w.p99_ms,
        w.cpu_secs * 1e6 / w.requests.max(1) as f64
    );
    Ok(Sample::new(w.requests, w.secs, c0, c1, b.tick, note))
}

/// `raw-http-publish`: hyper in, lapin out, nothing between (see the header).
async fn raw_http_publish(b: &Bench, round: usize) -> R<Sample> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let queue = b.q("published");
    b.purge(&queue).await?;
    let ch = Arc::new(b.channel().await?);
    ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let url = format!("http://{}/publish", listener.local_addr().map_err(|e| e.to_string())?);
    let exchange: Arc<str> = b.exchange().into();
    let published = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let server = {
        let (published, refused) = (published.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (ch, exchange, published, refused) =
                    (ch.clone(), exchange.clone(), published.clone(), refused.clone());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (ch, exchange, published, refused) =
                        (ch.clone(), exchange.clone(), published.clone(), refused.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let id = format!("rawhttp-{}", published.fetch_add(1, Ordering::Relaxed));
                        let options = BasicPublishOptions { mandatory: true, immediate: false };
                        let confirmed = match ch
                            .basic_publish(exchange.as_ref().into(), ROUTING_KEY.into(), options, &body, properties(id))
                            .await
                        {
                            Ok(pending) => matches!(pending.await, Ok(Confirmation::Ack(None))),
                            Err(_) => false,
                        };
                        let status = if confirmed { 202 } else { 503 };
                        if !confirmed {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        let answer = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(b"{\"status\":\"accepted\"}")))
                            .expect("a valid response");
                        Ok::<_, std::convert::Infallible>(answer)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    let result = async {
        wrk(b, &url, 1, &format!("wrk-raw-warmup-{round}.txt")).await?;
        let meter = b.meter(vec![std::process::id()]);
        let c0 = meter.read();
        let file = format!("wrk-raw-{round}.txt");
        let w = wrk(b, &url, b.s.duration, &file).await?;
        let c1 = meter.read();
        publish_sample(b, "raw-http-publish", &queue, &w, refused.load(Ordering::Relaxed), (c0, c1), &file).await
    }
    .await;
    server.abort();
    b.purge(&queue).await?;
    result
}

struct Wrk {
    requests: usize,
    secs: f64,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    /// wrk's own CPU time (user + system), when measured.
    cpu_secs: f64,
}

fn parse_wrk(text: &str) -> Wrk {
    let ms = |v: &str| {
        let n: f64 = v.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse().unwrap_or(0.0);
        if v.ends_with("us") {
            n / 1000.0
        } else if v.ends_with("ms") {
            n
        } else if v.ends_with('s') {
            n * 1000.0
        } else {
            n
        }
    };
    let mut w = Wrk { requests: 0, secs: 0.0, errors: 0, p50_ms: 0.0, p99_ms: 0.0, cpu_secs: 0.0 };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" requests in ") {
            w.requests = f[0].parse().unwrap_or(0);
            w.secs = ms(f[3].trim_end_matches(',')) / 1000.0;
        } else if line.contains("Non-2xx or 3xx responses:") {
            w.errors += f.last().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if line.contains("Socket errors:") {
            w.errors += f.iter().filter_map(|v| v.trim_end_matches(',').parse::<usize>().ok()).sum::<usize>();
        } else if f.first() == Some(&"50%") {
            w.p50_ms = ms(f[1]);
        } else if f.first() == Some(&"99%") {
            w.p99_ms = ms(f[1]);
        }
    }
    w
}

async fn wrk(b: &Bench, url: &str, secs: u64, out: &str) -> R<Wrk> {
    let script = b.s.out.join("post.lua");
    // Under /usr/bin/time when there is one, for wrk's own CPU time.
    let times = b.s.out.join(format!("{out}.cpu"));
    let timed = Path::new("/usr/bin/time").is_file();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%U %S", "-o"]).arg(&times).arg("wrk");
        c
    } else {
        Command::new("wrk")
    };
    let output = cmd
        .args(["-t", "1", "-c", &b.s.window.to_string(), "-d", &format!("{secs}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .await
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let _ = std::fs::write(b.s.out.join(out), &text);
    if !output.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr)));
    }
    let mut w = parse_wrk(&text);
    if timed {
        let cpu = std::fs::read_to_string(&times).unwrap_or_default();
        w.cpu_secs = cpu.split_whitespace().filter_map(|v| v.parse::<f64>().ok()).sum();
    }
    Ok(w)
}

async fn qiao_publish(b: &mut Bench, round: usize, perf: Option<&str>, build_b: bool) -> R<Sample> {
    let queue = b.q("published");
    b.purge(&queue).await?;
    let mut qiao = b.start_qiao(true, build_b).await?;
    let url = format!("{}/mes/production-completions", qiao.url);
    let result = async {
        wrk(b, &url, 1, &format!("wrk-warmup-{round}.txt")).await?;
        let meter = b.meter(vec![qiao.pid()]);
        let c0 = meter.read();
        let recorder = match perf {
            Some(name) => Some(perf_record(b, qiao.pid(), name)?),
            None => None,
        };
        let file = format!("wrk-{round}.txt");
        let w = wrk(b, &url, b.s.duration, &file).await?;
        let c1 = meter.read();
        if let (Some(rec), Some(name)) = (recorder, perf) {
            perf_report(b, rec, name).await;
        }
        publish_sample(b, "qiao-publish", &queue, &w, 0, (c0, c1), &file).await
    }
    .await;
    stop(&mut qiao.child).await;
    b.purge(&queue).await?;
    result
}

async fn raw_consume(b: &Bench, with_http: bool) -> R<Sample> {
    let queue = b.q("raw");
    b.fill(&queue, b.s.n, "raw-c").await?;
    b.erp.clear(&b.http).await?;
    let ch = b.channel().await?;
    ch.basic_qos(b.s.prefetch, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
    let meter = b.meter(vec![std::process::id()]);
    let (c0, t0) = (meter.read(), Instant::now());
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "qiao-bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let n = b.s.n;
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    let permits = Arc::new(tokio::sync::Semaphore::new(b.s.concurrency.max(1)));
    let url: Arc<str> = format!("{}{SAVE_PATH}", b.erp.url).into();
    for _ in 0..n {
        let delivery = match consumer.next().await {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(format!("consume: {e}")),
            None => return Err("the consumer ended".into()),
        };
        if !with_http {
            delivery.acker.ack(BasicAckOptions::default()).await.map_err(|e| format!("ack: {e}"))?;
            continue;
        }
        // As Qiao's consumer: a permit before the task, CONCURRENCY deliveries at once.
        let permit = permits.clone().acquire_owned().await.map_err(|e| e.to_string())?;
        let (http, body, url) = (b.http.clone(), b.mapped.clone(), url.clone());
        let (done, failed, finished) = (done.clone(), failed.clone(), finished.clone());
        tokio::spawn(async move {
            let id = delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
            let headers = [
                ("content-type", "application/json"),
                ("x-qiao-message-id", id.as_str()),
                ("x-kdapi-acctid", "5f8e2c1a9b7d3e40"),
                ("x-kdapi-lcid", "2052"),
            ];
            let ok = matches!(call(&http, "POST", &url, &headers, body).await, Ok((200, ref answer)) if saved(answer));
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            drop(permit);
            if done.fetch_add(1, Ordering::AcqRel) + 1 == n {
                finished.notify_one();
            }
        });
    }
    if with_http {
        finished.notified().await;
    }
    let (secs, c1) = (t0.elapsed().as_secs_f64(), meter.read());
    let _ = ch.basic_cancel("qiao-bench-raw".into(), BasicCancelOptions::default()).await;
    let _ = ch.close(200, "".into()).await;
    if failed.load(Ordering::Relaxed) > 0 {
        return Err(format!("raw-consume-http: {} deliveries failed", failed.load(Ordering::Relaxed)));
    }
    let mut note = format!("prefetch {}", b.s.prefetch);
    if with_http {
        let (_, distinct, dups) = b.erp.stats(&b.http).await?;
        if distinct as usize != n || dups > 0 {
            return Err(format!("raw-consume-http: the stub has {distinct} distinct ids, {dups} duplicates"));
        }
        note += &format!(", concurrency {}, 1 POST each", b.s.concurrency);
    }
    wait_until(Duration::from_secs(10), "the raw queue to be empty", || async {
        b.queue_len(&queue).await.is_ok_and(|l| l == 0)
    })
    .await?;
    Ok(Sample::new(n, secs, c0, c1, b.tick, note))
}

async fn qiao_consume(b: &mut Bench, fan_out: bool, n: usize, perf: Option<&str>, build_b: bool) -> R<Sample> {
    let queue = b.q(if fan_out { "fan-out" } else { "to-erp" });
    b.fill(&queue, n, if fan_out { "fan" } else { "one" }).await?;
    b.erp.clear(&b.http).await?;
    b.wms.clear(&b.http).await?;
    // Under perf, attach once Qiao runs its threads (attached at exec, perf recorded
    // nothing); the first ~50 ms of consumption are then not profiled.
    let mut qiao = b.start_qiao(perf.is_some(), build_b).await?;
    let result = async {
        let meter = b.meter(vec![qiao.pid()]);
        let recorder = match perf {
            Some(name) => Some(perf_record(b, qiao.pid(), name)?),
            None => None,
        };
        let stubs: Vec<&Stub> = if fan_out { vec![&b.wms, &b.erp] } else { vec![&b.erp] };
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut first: Option<(Instant, u64, Cpu)> = None;
        let (t1, c1) = loop {
            if Instant::now() > deadline {
                return Err(format!("{queue}: not drained in 300 s; see {}", b.s.out.display()));
            }
            let mut done = true;
            let mut received = Vec::new();
            for stub in &stubs {
                let (r, distinct, _) = stub.stats(&b.http).await?;
                received.push(r);
                done &= distinct as usize >= n;
            }
            let now = Instant::now();
            // Started when any stub saw a request; progress then is the slowest
            // destination's count (fan-out: a message is done when both have it).
            if first.is_none() && received.iter().any(|r| *r > 0) {
                first = Some((now, received.iter().copied().min().unwrap_or(0), meter.read()));
            }
            if done {
                break (now, meter.read());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (t0, k, c0) = first.expect("progress was seen");
        if let (Some(rec), Some(name)) = (recorder, perf) {
            perf_report(b, rec, name).await;
        }
        for stub in &stubs {
            let (_, distinct, dups) = stub.stats(&b.http).await?;
            if distinct as usize != n || dups > 0 {
                return Err(format!("{queue}: a stub has {distinct} distinct ids and {dups} duplicates"));
            }
        }
        wait_until(Duration::from_secs(10), "the consumed queue to be empty (all acked)", || async {
            b.queue_len(&queue).await.is_ok_and(|l| l == 0)
        })
        .await?;
        let dlq = b.queue_len(&format!("{queue}.dlq")).await?;
        if dlq > 0 {
            return Err(format!("{queue}: {dlq} dead letters"));
        }
        let msgs = n - k as usize;
        let note = format!(
            "prefetch {}, concurrency {}, {} POST{} each",
            b.s.prefetch,
            b.s.concurrency,
            stubs.len(),
            if stubs.len() > 1 { "s" } else { "" }
        );
        Ok(Sample::new(msgs, (t1 - t0).as_secs_f64(), c0, c1, b.tick, note))
    }
    .await;
    stop(&mut qiao.child).await;
    result
}

// --- perf (opt-in) -----------------------------------------------------------------------

fn perf_record(b: &Bench, pid: u32, name: &str) -> R<Child> {
    Command::new("perf")
        .args(["record", "-F", "999", "-g", "--call-graph", "dwarf,16384", "-p", &pid.to_string(), "-o"])
        .arg(b.s.out.join(format!("perf-{name}.data")))
        .stdout(log_file(&b.s.out, &format!("perf-record-{name}.log")))
        .stderr(log_file(&b.s.out, &format!("perf-record-{name}.err")))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("perf: {e}"))
}

async fn perf_report(b: &Bench, mut rec: Child, name: &str) {
    stop(&mut rec).await;
    let data = b.s.out.join(format!("perf-{name}.data"));
    for (suffix, mode, limit) in [("self", "--no-children", "0.5"), ("children", "--children", "1")] {
        let report = Command::new("perf")
            .args(["report", "-i"])
            .arg(&data)
            .args([mode, "--percent-limit", limit, "--stdio", "-g", "none", "--sort", "symbol"])
            .output()
            .await;
        if let Ok(r) = report {
            let _ = std::fs::write(b.s.out.join(format!("perf-{name}-{suffix}.txt")), r.stdout);
        }
    }
    println!("  perf {name}: {}/perf-{name}-{{self,children}}.txt", b.s.out.display());
}

// --- the run -----------------------------------------------------------------------------

/// The bench's copy of bench/amqp-config, with PREFETCH and CONCURRENCY written in.
fn write_config(s: &Settings, dir: &Path) -> R<()> {
    let copy =
        |from: &Path, to: &Path| std::fs::copy(from, to).map(drop).map_err(|e| format!("{}: {e}", from.display()));
    std::fs::create_dir_all(dir.join("schemas")).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(Path::new(CONFIG).join("schemas")).map_err(|e| e.to_string())?.flatten() {
        copy(&entry.path(), &dir.join("schemas").join(entry.file_name()))?;
    }
    for name in ["qiao.yaml", "systems.yaml"] {
        copy(&Path::new(CONFIG).join(name), &dir.join(name))?;
    }
    let routes = std::fs::read_to_string(Path::new(CONFIG).join("routes.yaml")).map_err(|e| e.to_string())?;
    let routes = routes
        .replace("prefetch: 64", &format!("prefetch: {}", s.prefetch))
        .replace("concurrency: 16", &format!("concurrency: {}", s.concurrency));
    std::fs::write(dir.join("routes.yaml"), routes).map_err(|e| e.to_string())
}

/// The bytes route `to-erp` sends the ERP for `body`, from Qiao's own driver (captured).
fn mapped_body(config: &Path, env: Vec<(String, String)>, body: &[u8]) -> R<Bytes> {
    let config = qiao::config::load(config, &qiao::config::Overlay(env))
        .map_err(|d| d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))?;
    let route = config.route("to-erp").ok_or("no route to-erp")?;
    let input = qiao::simulate::Input { body: Bytes::copy_from_slice(body), ..Default::default() };
    let captured = qiao::simulate::run(route, &input).map_err(|f| f.detail.clone())?;
    captured.into_iter().next().map(|c| c.bytes).ok_or_else(|| "to-erp mapped nothing".to_string())
}

async fn setup(s: Settings, prefix: String) -> R<Bench> {
    std::fs::create_dir_all(&s.out).map_err(|e| format!("{}: {e}", s.out.display()))?;
    if !s.qiao_bin.is_file() {
        return Err(format!(
            "no Qiao binary at {}: run bench/amqp.sh, or cargo build --release -p qiao first",
            s.qiao_bin.display()
        ));
    }
    if let Some(b) = s.qiao_bin_b.as_ref().filter(|b| !b.is_file()) {
        return Err(format!("no Qiao binary at QIAO_BIN_B={}", b.display()));
    }
    let body = Bytes::from(std::fs::read(BODY).map_err(|e| format!("{BODY}: {e}"))?);
    std::fs::write(
        s.out.join("post.lua"),
        format!(
            "local f = assert(io.open(\"{BODY}\", \"rb\"))\nwrk.method = \"POST\"\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let config = s.out.join("config");
    write_config(&s, &config)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let http: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(http);
    let conn = Connection::connect(&s.amqp_url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.amqp_url))?;
    let erp = start_stub(&s, &http, "erp").await?;
    let wms = start_stub(&s, &http, "wms").await?;
    let env = vec![
        ("AMQP_PREFIX".to_string(), prefix.clone()),
        ("AMQP_URL".to_string(), s.amqp_url.clone()),
        ("ERP_URL".to_string(), erp.url.clone()),
        ("WMS_URL".to_string(), wms.url.clone()),
    ];
    let mapped = mapped_body(&config, env, &body)?;
    Ok(Bench {
        s,
        prefix,
        config,
        http,
        conn,
        erp,
        wms,
        body,
        mapped,
        broker: broker_pid(),
        tick: clock_tick(),
        qiao_starts: 0,
        fills: std::cell::Cell::new(0),
    })
}

/// Declares the topology through Qiao (one start), and checks each path once.
async fn check(b: &mut Bench) -> R<()> {
    let mut qiao = b.start_qiao(true, false).await?;
    let result = async {
        let (status, answer) = call(
            &b.http,
            "POST",
            &format!("{}/mes/production-completions", qiao.url),
            &[("content-type", "application/json")],
            b.body.clone(),
        )
        .await?;
        if status != 202 {
            return Err(format!("intake answered {status}: {}", String::from_utf8_lossy(&answer)));
        }
        wait_until(Duration::from_secs(5), "the published message", || async {
            b.queue_len(&b.q("published")).await.is_ok_and(|l| l == 1)
        })
        .await?;
        b.purge(&b.q("published")).await?;
        Ok(())
    }
    .await;
    stop(&mut qiao.child).await;
    result?;
    // The raw consumers' queue: durable, no arguments, like Qiao's.
    let ch = b.channel().await?;
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(b.q("raw").as_str().into(), opts, FieldTable::default()).await.map_err(|e| e.to_string())?;
    let _ = ch.close(200, "".into()).await;
    // One message through each consuming route, end to end.
    for fan_out in [false, true] {
        qiao_consume(b, fan_out, 20, None, false).await.map_err(|e| format!("check of the consuming route: {e}"))?;
    }
    let (_, answer) = call(&b.http, "GET", &format!("{}/_stub/requests", b.erp.url), &[], Bytes::new()).await?;
    let answer = String::from_utf8_lossy(&answer);
    if !answer.contains("PRD_INSTOCK") {
        return Err(format!(
            "the ERP stub did not get a PRD_INSTOCK: {}",
            answer.chars().take(300).collect::<String>()
        ));
    }
    Ok(())
}

const HEADER: &str = "round target               msgs    secs    msg/s   side µs  broker µs  stub µs   box µs  note";

fn row(round: &str, target: &str, s: &Sample) -> String {
    format!(
        "{round:<5} {target:<17} {:>8} {:>7.2} {:>8.0} {:>9.1} {:>10.1} {:>8.1} {:>8.1}  {}",
        s.msgs,
        s.secs,
        s.rate(),
        s.side_us,
        s.broker_us,
        s.stub_us,
        s.box_us,
        s.note
    )
}

async fn run(b: &mut Bench) -> R<()> {
    let s = &b.s;
    println!(
        "AMQP bench: {} messages per measurement, {} rounds, window {}, prefetch {}, concurrency {}, Qiao --threads {}, bench runtime {} worker thread(s)",
        s.n, s.rounds, s.window, s.prefetch, s.concurrency, s.threads, s.threads
    );
    println!(
        "broker {} (beam.smp pid {}), Qiao {}{}, body {} bytes, names {}.*",
        s.amqp_url.split('@').next_back().unwrap_or_default(),
        b.broker.map_or("not found".into(), |p| p.to_string()),
        s.qiao_bin.display(),
        s.qiao_bin_b.as_ref().map_or(String::new(), |b| format!(" (-b: {})", b.display())),
        b.body.len(),
        b.prefix
    );
    println!(
        "machine: {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!("CPU columns: µs of CPU per message (side: the bench for raw-*, Qiao for qiao-*)\n");
    check(b).await?;
    println!("{HEADER}");
    let mut results: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let targets = b.s.targets.clone();
    for round in 1..=b.s.rounds {
        // Alternate: raw first in odd rounds, Qiao first in even ones, within each group
        // of targets that are compared.
        let mut order = targets.clone();
        if round % 2 == 0 {
            for group in [
                &["raw-publish", "raw-http-publish", "qiao-publish", "qiao-publish-b"][..],
                &["raw-consume-http", "qiao-consume", "qiao-consume-b"],
            ] {
                let at: Vec<usize> = (0..order.len()).filter(|&i| group.contains(&order[i].as_str())).collect();
                let names: Vec<String> = at.iter().rev().map(|&i| order[i].clone()).collect();
                for (&i, name) in at.iter().zip(names) {
                    order[i] = name;
                }
            }
        }
        for t in &order {
            let sample = match t.as_str() {
                "raw-publish" => raw_publish(b).await,
                "raw-http-publish" => raw_http_publish(b, round).await,
                "qiao-publish" => qiao_publish(b, round, None, false).await,
                "qiao-publish-b" => qiao_publish(b, round, None, true).await,
                "raw-consume" => raw_consume(b, false).await,
                "raw-consume-http" => raw_consume(b, true).await,
                "qiao-consume" => qiao_consume(b, false, b.s.n, None, false).await,
                "qiao-consume-b" => qiao_consume(b, false, b.s.n, None, true).await,
                "qiao-fanout" => qiao_consume(b, true, b.s.n, None, false).await,
                _ => unreachable!(),
            }?;
            println!("{}", row(&round.to_string(), t, &sample));
            results.entry(t.clone()).or_default().push(sample);
        }
    }
    println!("\nmedians over {} rounds:", b.s.rounds);
    println!("{HEADER}");
    let mut med = BTreeMap::new();
    for t in &targets {
        let v = &results[t];
        let m = Sample {
            msgs: v.iter().map(|s| s.msgs).sum::<usize>() / v.len(),
            secs: 0.0,
            side_us: median(v.iter().map(|s| s.side_us).collect()),
            broker_us: median(v.iter().map(|s| s.broker_us).collect()),
            stub_us: median(v.iter().map(|s| s.stub_us).collect()),
            box_us: median(v.iter().map(|s| s.box_us).collect()),
            note: v[0].note.clone(),
        };
        let rate = median(v.iter().map(Sample::rate).collect());
        let rates: Vec<String> = v.iter().map(|s| format!("{:.0}", s.rate())).collect();
        println!(
            "{:<5} {t:<17} {:>8} {:>7} {:>8.0} {:>9.1} {:>10.1} {:>8.1} {:>8.1}  runs: {}",
            "med",
            m.msgs,
            "",
            rate,
            m.side_us,
            m.broker_us,
            m.stub_us,
            m.box_us,
            rates.join(" ")
        );
        med.insert(t.as_str(), rate);
    }
    println!();
    for (qiao, raw, target) in [
        ("qiao-publish", "raw-publish", Some(0.8)),
        ("raw-http-publish", "raw-publish", None),
        ("qiao-publish", "raw-http-publish", None),
        ("qiao-consume", "raw-consume", Some(0.8)),
        ("qiao-consume", "raw-consume-http", None),
        ("qiao-fanout", "raw-consume-http", None),
        ("qiao-publish-b", "raw-http-publish", None),
        ("qiao-consume-b", "raw-consume-http", None),
        ("qiao-publish", "qiao-publish-b", None),
        ("qiao-consume", "qiao-consume-b", None),
    ] {
        if let (Some(q), Some(r)) = (med.get(qiao), med.get(raw)) {
            let ratio = q / r;
            let verdict = target.map_or(String::new(), |t| {
                format!(" (target >= {t:.2}: {})", if ratio >= t { "met" } else { "NOT met" })
            });
            println!("{qiao}/{raw}: {ratio:.2}{verdict}");
        }
    }
    if b.s.perf {
        println!("\nperf: Qiao under one more qiao-publish and qiao-consume (3 x N messages)");
        qiao_publish(b, 0, Some("qiao-publish"), false).await?;
        let n = b.s.n * 3;
        qiao_consume(b, false, n, Some("qiao-consume"), false).await?;
    }
    println!("\noutputs: {}", b.s.out.display());
    Ok(())
}

fn main() {
    // `cargo test --benches` runs every bench target without --bench: nothing to do here
    // (this one needs a broker, wrk and the release binary).
    if !std::env::args().any(|a| a == "--bench") {
        println!("amqp bench: skipped (run with cargo bench -p qiao --bench amqp, or bench/amqp.sh)");
        return;
    }
    let prefix = format!("qiao.bench.{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let settings = Settings::from_env(&prefix);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let mut bench = setup(settings, prefix.clone()).await?;
            let result = run(&mut bench).await;
            bench.cleanup().await;
            let mut stubs = [bench.erp, bench.wms];
            for stub in &mut stubs {
                let _ = stub.child.kill().await;
            }
            result
        })
    }))
    .unwrap_or_else(|_| Err("panicked".into()));
    // A failure before the bench existed (or a panic, whose unwinding kills the children) may leave names behind: delete them
    // by prefix from a fresh connection.
    if outcome.is_err() {
        runtime.block_on(async {
            if let Ok(conn) = Connection::connect(
                &std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
                ConnectionProperties::default(),
            )
            .await
                && let Ok(ch) = conn.create_channel().await
            {
                let mut names = vec![format!("{prefix}.published"), format!("{prefix}.raw")];
                for base in ["to-erp", "fan-out"] {
                    names.push(format!("{prefix}.{base}"));
                    names.push(format!("{prefix}.{base}.dlq"));
                    names.extend((1..=RETRY_QUEUES).map(|n| format!("{prefix}.{base}.retry.{n}")));
                    names.push(format!("{prefix}.{base}.retry.circuit"));
                }
                for q in names {
                    let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
                }
                let _ = ch
                    .exchange_delete(format!("{prefix}.events").as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        });
    }
    if let Err(e) = outcome {
        eprintln!("amqp bench failed: {e}");
        std::process::exit(1);
    }
}
