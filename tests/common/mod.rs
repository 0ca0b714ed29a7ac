//! Harness for end-to-end tests: the real `qiao` binary, started as a user starts it, on
//! free ports, against stub systems that are small real HTTP servers.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qiao::config::SystemKind;
use qiao::stub::{self, StubHandle};
use serde_json::Value;

pub mod otlp;
mod shipped;

#[allow(unused_imports)] // not every test uses the shipped cases
pub use shipped::*;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

pub fn routes_dir() -> PathBuf {
    repo().join("routes")
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// A copy of the shipped routes (schemas, tests and examples too) to change in a test.
pub fn routes_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let (src, dst) = (e.path(), to.join(e.file_name()));
            if src.is_dir() { copy(&src, &dst) } else { std::fs::copy(&src, &dst).map(drop).unwrap() }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&routes_dir(), dir.path());
    dir
}

/// Replaces `from` with `to` in a file, which must contain it.
pub fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} does not contain {from:?}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}

pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("routes/examples").join(name)).expect("example payload")
}

/// A port nobody listens on right now, and that no other test of this machine was given in
/// the last ten minutes. The kernel may hand a port just released here to another test
/// before Qiao binds it; pingora then retries its bind for a while instead of failing, its
/// admin listener answers /healthz, and the test's requests reach the other test's process.
/// So every port given out is claimed with a file that all test processes see.
pub fn free_port() -> u16 {
    let claims = std::env::temp_dir().join("qiao-test-ports");
    let _ = std::fs::create_dir_all(&claims);
    for _ in 0..200 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let claim = claims.join(port.to_string());
        let stale = std::fs::metadata(&claim)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(600)));
        if stale {
            let _ = std::fs::remove_file(&claim);
        }
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&claim).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port that refuses connections for as long as the value lives: bound, never listening,
/// so no other test's listener can be given it meanwhile. A port from [`free_port`] is free
/// only until someone binds it, and a broker URL on it could then reach another test's
/// listener, which accepts and never answers the AMQP handshake.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    ClosedPort { _socket: socket, port }
}

/// A port whose listener takes every connection and never reads or answers it, held until
/// the test's runtime ends: a receiver that hangs, or a broker that never answers the AMQP
/// handshake.
pub async fn silent_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    port
}

/// The real `qiao` binary run as a command, from the repository's root, with `env` set and
/// no inherited log level or journal directory: (exit code, stdout, stderr).
pub fn qiao_command(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("RUST_LOG")
        .env_remove("QIAO_JOURNAL_DIR")
        .current_dir(repo())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A copy of the shipped routes with the CRM order's account name, owner and PO number
/// marked as PII (the PO number is copied into the ERP's note: it must be a token there too).
pub fn routes_with_crm_pii() -> tempfile::TempDir {
    let dir = routes_copy();
    edit(
        &dir.path().join("crm-order-to-erp.yaml"),
        "    max_body_bytes: 2097152\n",
        "    max_body_bytes: 2097152\n    redact: [/records/*/Account/Name, /records/*/Owner/Alias, /records/*/PoNumber]\n",
    );
    dir
}

/// The five stub systems on free ports.
pub struct Stubs {
    pub all: Vec<StubHandle>,
}

impl Stubs {
    pub async fn start() -> Stubs {
        let all = stub::start_all("127.0.0.1".parse().unwrap(), 0).await.expect("stubs start");
        Stubs { all }
    }

    pub fn get(&self, kind: SystemKind) -> &StubHandle {
        self.all.iter().find(|s| s.state.kind == kind).expect("stub of that kind")
    }

    /// `ERP_URL=...` etc., as the shipped systems.yaml reads them, and broker names of
    /// their own (nothing publishes to them) so that tests never meet a person's demo.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            self.all.iter().map(|s| (format!("{}_URL", s.state.kind.as_str().to_uppercase()), s.url())).collect();
        env.push(("AMQP_PREFIX".into(), "qiao.test.shared".into()));
        env
    }
}

/// A running `qiao` process.
pub struct Qiao {
    child: Child,
    pub port: u16,
    pub admin: u16,
    log: PathBuf,
    broker_down_expected: bool,
    _dir: tempfile::TempDir,
}

impl Qiao {
    /// `qiao run --config DIR` on free ports, with `env` added to the environment.
    pub async fn run(config: &Path, env: &[(String, String)]) -> Qiao {
        let args = vec!["run".to_string(), "--config".to_string(), config.display().to_string()];
        Self::spawn(args, env).await
    }

    /// Any subcommand that serves (`run`, `demo`); listen flags are added. The ports are
    /// free when picked, but a test running beside this one can take them before Qiao binds
    /// them: then Qiao exits saying it cannot listen, and is started again on other ports.
    pub async fn spawn(args: Vec<String>, env: &[(String, String)]) -> Qiao {
        for _ in 0..4 {
            match Self::spawn_once(args.clone(), env).await {
                Ok(q) => return q,
                Err(logs) if logs.contains("cannot listen") || logs.contains("Address already in use") => continue,
                Err(logs) => panic!("qiao exited before it was ready:\n{logs}"),
            }
        }
        panic!("qiao found no free ports in 4 tries");
    }

    async fn spawn_once(args: Vec<String>, env: &[(String, String)]) -> Result<Qiao, String> {
        let mut q = Self::start_on(args, env, free_port(), free_port());
        q.wait_ready().await?;
        Ok(q)
    }

    /// Starts Qiao on the given ports without waiting for it: an upgrading process
    /// (`--upgrade`) takes the ports of a running one, and is ready only once it has them.
    pub fn start_on(mut args: Vec<String>, env: &[(String, String)], port: u16, admin: u16) -> Qiao {
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin}"),
            "--threads".into(),
            "2".into(),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("qiao.log");
        let logfile = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_qiao"))
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .current_dir(repo())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .expect("qiao starts");
        let broker_down_expected = env.iter().any(|(k, v)| k == "QIAO_TEST_BROKER_DOWN" && v == "1");
        Qiao { child, port, admin, log, broker_down_expected, _dir: dir }
    }

    /// Waits until this process holds its ingress socket and says it is ready.
    pub async fn ready(&mut self) {
        if let Err(logs) = self.wait_ready().await {
            panic!("qiao exited before it was ready:\n{logs}");
        }
    }

    /// Waits for the process to exit by itself.
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "qiao did not exit within {within:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...), as `kill -HUP` would.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("kill runs");
        assert!(sent.success(), "kill -{name} {pid} failed");
    }

    /// Stops the process hard, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as `docker stop` or systemd stop it; waits for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("qiao did not exit within {within:?} of SIGTERM:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `Err` with the logs when Qiao exited first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exit status {status}\n{}", self.logs()));
            }
            // A broker that is meant to be down keeps /readyz at 503: then an answer is enough.
            let wanted = |status: u16| status == 200 || (status == 503 && self.broker_down_expected);
            if let Ok(r) = get(&format!("http://127.0.0.1:{}/readyz", self.admin)).await
                && wanted(r.status)
                && self.ingress_is_ours().await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!("qiao was not ready within 30 s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this Qiao process holds the listening socket of its ingress port (and not
    /// another process that took the port first), read from /proc without sending a
    /// request, which would show in the metrics and traces tests count.
    async fn ingress_is_ours(&self) -> bool {
        let port = format!(":{:04X}", self.port);
        let mut inodes = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, state 0A = LISTEN, inode
                if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                    inodes.push(format!("socket:[{}]", f[9]));
                }
            }
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else { return false };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| inodes.iter().any(|i| l.to_string_lossy() == *i)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The JSON access lines that `keep` selects, once there are at least `at_least`.
    /// An access line is written after its answer, so a client can read the answer
    /// before the line is in the log: wait for it rather than read the log once.
    pub async fn access_lines(&self, at_least: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<Value> = self
                .logs()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["target"] == "qiao::access" && keep(l))
                .collect();
            if lines.len() >= at_least {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {at_least} access lines after 10 s:\n{}",
                lines.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Qiao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Reply, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
}

pub async fn get(url: &str) -> Result<Reply, String> {
    request("GET", url, &[], Vec::new()).await
}

pub async fn post_json(url: &str, body: impl Into<Vec<u8>>) -> Reply {
    request("POST", url, &[("content-type", "application/json")], body.into()).await.expect("request")
}

/// Requests written by hand on one TCP connection, to see that it stays open.
pub struct RawConn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> RawConn {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        RawConn { stream, buf: Vec::new() }
    }

    /// Sends one request and reads one response: (status, headers lowercased, body).
    pub fn exchange(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use std::io::Write;
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: qiao.test\r\ncontent-length: {}\r\n", body.len());
        if let Some(ct) = content_type {
            req.push_str(&format!("content-type: {ct}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap_or(0);
        let start = head_end + 4;
        while self.buf.len() < start + len {
            self.fill();
        }
        let body = self.buf[start..start + len].to_vec();
        self.buf.drain(..start + len);
        (status, headers, body)
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read from qiao");
        assert!(n > 0, "qiao closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// A CRM order with `lines` order lines (the shipped crm-order route accepts it), small
/// enough in value to go straight to the ERP rather than to an approval.
pub fn crm_order(lines: usize) -> Value {
    let items: Vec<Value> = (0..lines)
        .map(|i| {
            serde_json::json!({
                "Product2": {"ProductCode": format!("FG-BJ-{:04}", i % 10000), "Name": format!("变频空压机 3kW 批次{i}")},
                "Quantity": (i % 50) + 1,
                "UnitPrice": 0.01,
                "ServiceDate": "2025-04-10"
            })
        })
        .collect();
    let mut order: Value = serde_json::from_slice(&example("crm-order.json")).unwrap();
    order["records"][0]["OrderItems"]["records"] = Value::Array(items);
    order["records"][0]["OrderItems"]["totalSize"] = lines.into();
    order
}

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name prefix no other test uses, for queues and exchanges.
pub fn unique_prefix(test: &str) -> String {
    format!("qiao.test.{test}.{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

/// A plain AMQP client for tests: publish, read queues, clean up.
pub struct Amqp {
    pub conn: lapin::Connection,
    pub channel: lapin::Channel,
}

impl Amqp {
    pub async fn connect(url: &str) -> Amqp {
        let conn =
            lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.expect("AMQP connects");
        let channel = conn.create_channel().await.unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        Amqp { conn, channel }
    }

    /// Publishes persistently, with confirms (the caller awaits them in bulk).
    pub async fn publish(&self, exchange: &str, key: &str, body: &[u8], message_id: &str) -> lapin::PublisherConfirm {
        let props = lapin::BasicProperties::default()
            .with_message_id(message_id.into())
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        self.channel.basic_publish(exchange.into(), key.into(), Default::default(), body, props).await.unwrap()
    }

    /// How many messages wait in `queue` (None when it does not exist).
    pub async fn queue_len(&self, queue: &str) -> Option<u32> {
        let ch = self.conn.create_channel().await.unwrap();
        let opts = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        ch.queue_declare(queue.into(), opts, Default::default()).await.ok().map(|q| q.message_count())
    }

    /// How many consumers read `queue` (None when it does not exist).
    pub async fn consumer_count(&self, queue: &str) -> Option<u32> {
        let ch = self.conn.create_channel().await.unwrap();
        let opts = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        ch.queue_declare(queue.into(), opts, Default::default()).await.ok().map(|q| q.consumer_count())
    }

    /// Takes every message from `queue` (acked).
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let mut out = Vec::new();
        while let Ok(Some(m)) =
            self.channel.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true }).await
        {
            out.push(m);
        }
        out
    }

    /// Deletes the queues and exchanges a test made.
    /// Deletes what a test declared. Deleting a queue that does not exist is a channel error
    /// (NOT_FOUND) that closes the channel, so each name gets an open channel.
    pub async fn cleanup(&self, queues: &[String], exchanges: &[String]) {
        let mut ch = self.conn.create_channel().await.unwrap();
        for q in queues {
            if !ch.status().connected() {
                ch = self.conn.create_channel().await.unwrap();
            }
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        for e in exchanges {
            if !ch.status().connected() {
                ch = self.conn.create_channel().await.unwrap();
            }
            let _ = ch.exchange_delete(e.as_str().into(), Default::default()).await;
        }
    }
}

/// Every queue the `amqp` fixture's topology can declare under `prefix`, for cleanup.
pub fn amqp_fixture_queues(prefix: &str) -> Vec<String> {
    let mut queues = vec![format!("{prefix}.wms.inbox")];
    for base in ["in", "fan", "oa", "hol"] {
        queues.push(format!("{prefix}.{base}"));
        queues.push(format!("{prefix}.{base}.dlq"));
        queues.push(format!("{prefix}.{base}.retry.circuit"));
        queues.extend((1..=6).map(|n| format!("{prefix}.{base}.retry.{n}")));
    }
    queues
}

/// A header of a message read back from a queue, as text.
pub fn amqp_header(props: &lapin::BasicProperties, name: &str) -> Option<String> {
    qiao_connectors::amqp::header_str(props.headers().as_ref(), name)
}

/// Waits until `done` returns true, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A RabbitMQ node of the test's own, on free ports, with its data in a temporary
/// directory: it can be stopped and started again (durable queues and persistent messages
/// survive) without disturbing tests that use the shared broker on 5672.
pub struct PrivateBroker {
    pub port: u16,
    node: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    dist_port: u16,
}

impl PrivateBroker {
    pub async fn start() -> PrivateBroker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let dist_port = free_port();
        let node = format!("qiaotest{port}@localhost");
        std::fs::create_dir_all(dir.path().join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("plugins"), "[].\n").unwrap();
        std::fs::write(dir.path().join("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n")).unwrap();
        // rabbitmq-server drops to the rabbitmq user when started as root: let it write.
        if let Some((uid, gid)) = rabbitmq_user() {
            for entry in walk(dir.path()) {
                let _ = std::os::unix::fs::chown(&entry, Some(uid), Some(gid));
            }
        }
        let mut b = PrivateBroker { port, node, dir, child: None, dist_port };
        b.spawn().await;
        b
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("server.out")).unwrap();
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server is installed (./scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let out = std::fs::read_to_string(d.join("server.out")).unwrap_or_default();
                panic!("the private RabbitMQ exited with {status}:\n{out}");
            }
            assert!(Instant::now() < deadline, "the private RabbitMQ did not start within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node the way an operator would (`rabbitmqctl stop`).
    pub fn stop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["-n", &self.node, "stop"]).output();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Closes every client connection, as a network cut or a broker failover does, while
    /// the node keeps running (and keeps the messages).
    pub fn close_connections(&self) {
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "close_all_connections", "-p", "/", "closed by the test"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(out.status.success(), "close_all_connections failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Closes the client connections whose `connection_name` is `name`; how many it closed.
    pub fn close_connections_named(&self, name: &str) -> usize {
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "-q", "list_connections", "pid", "client_properties"])
            .output()
            .expect("rabbitmqctl runs");
        let list = String::from_utf8_lossy(&out.stdout);
        let wanted = format!("{{\"connection_name\",\"{name}\"}}");
        let mut closed = 0;
        for line in list.lines().filter(|l| l.contains(&wanted)) {
            let pid = line.split_whitespace().next().unwrap_or_default();
            let out = Command::new("rabbitmqctl")
                .args(["-n", &self.node, "close_connection", pid, "closed by the test"])
                .output()
                .expect("rabbitmqctl runs");
            assert!(out.status.success(), "close_connection failed: {}", String::from_utf8_lossy(&out.stderr));
            closed += 1;
        }
        closed
    }

    /// How many consumers `queue` has.
    pub fn consumers(&self, queue: &str) -> Option<u32> {
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "-q", "list_queues", "name", "consumers"])
            .output()
            .expect("rabbitmqctl runs");
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok()).flatten()
        })
    }

    /// Sets off (or clears) RabbitMQ's memory alarm, as a broker short of memory does: every
    /// connection that publishes is then blocked, while consuming goes on.
    pub fn memory_alarm(&self, on: bool) {
        let limit: &[&str] = if on { &["absolute", "1"] } else { &["0.4"] };
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "set_vm_memory_high_watermark"])
            .args(limit)
            .output()
            .expect("rabbitmqctl runs");
        assert!(out.status.success(), "set_vm_memory_high_watermark failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops and starts the node again, keeping its data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rabbitmq_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "rabbitmq"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
