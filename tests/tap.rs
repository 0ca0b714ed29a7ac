//! `qiao tap` end to end: the real binary's admin listener streams a route's live records,
//! redacted, to the real `qiao tap`; the token is required; a connected tap does not hold
//! the process at SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use qiao::journal::record::{Body, Record};

const TOKEN: &str = "tap-test-admin-token";
const KEY: &str = "tap-test-key";
const ROUTE: &str = "crm-order-to-erp";
/// Values the CRM order carries that must reach no tap in clear.
const CLEAR: [&str; 4] = ["杭州恒泽机电设备有限公司", "HZ-PO-2025-088", "s3cr3t-t0ken-4711", "wangq"];

/// The shipped routes, with the CRM order's PII marked (as tests/journal.rs does), a short
/// drain, and no journal directory: the tap works without one.
fn routes_with_pii() -> tempfile::TempDir {
    let dir = routes_with_crm_pii();
    edit(&dir.path().join("qiao.yaml"), "drain_seconds: 5", "drain_seconds: 2");
    edit(&dir.path().join("qiao.yaml"), "grace_period_seconds: 5", "grace_period_seconds: 1");
    dir
}

async fn start(token: Option<&str>) -> (Stubs, tempfile::TempDir, Qiao) {
    let stubs = Stubs::start().await;
    let routes = routes_with_pii();
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "QIAO_JOURNAL_DIR");
    env.push(("QIAO_JOURNAL_KEY".into(), KEY.into()));
    if let Some(t) = token {
        env.push(("QIAO_ADMIN_TOKEN".into(), t.into()));
    }
    let qiao = Qiao::run(routes.path(), &env).await;
    (stubs, routes, qiao)
}

async fn send_order(qiao: &Qiao, id: &str) {
    let reply = request(
        "POST",
        &qiao.url("/crm/orders/801J000000k3QpRIAU"),
        &[("content-type", "application/json"), ("idempotency-key", id), ("authorization", "Bearer s3cr3t-t0ken-4711")],
        example("crm-order.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

/// A running `qiao tap`, its stdout lines and stderr lines as they come.
struct Tap {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    seen_err: Vec<String>,
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tap {
    fn start(qiao: &Qiao, token: Option<&str>, extra: &[&str]) -> Tap {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qiao"));
        cmd.args(["tap", ROUTE, "--admin", &format!("http://127.0.0.1:{}", qiao.admin)])
            .args(extra)
            .env_remove("QIAO_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("TAP_TEST_TOKEN", t).args(["--token-env", "TAP_TEST_TOKEN"]);
        }
        let mut child = cmd.spawn().unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        Tap { child, out: lines_of(out), err: lines_of(err), seen_err: Vec::new() }
    }

    /// Waits for a stderr line containing `what`.
    fn wait_err(&mut self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(l) = self.err.recv_timeout(Duration::from_millis(100)) {
                let found = l.contains(what);
                self.seen_err.push(l);
                if found {
                    return;
                }
            }
        }
        panic!("`qiao tap` did not say `{what}` within {within:?}; stderr: {:?}", self.seen_err);
    }

    /// The next `n` stdout lines.
    fn lines(&mut self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("got {} of {n} lines within {within:?}: {got:?}; stderr: {:?}", got.len(), {
                    self.seen_err.extend(self.err.try_iter());
                    &self.seen_err
                }),
            }
        }
        got
    }

    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.seen_err.extend(self.err.try_iter());
                return s;
            }
            assert!(Instant::now() < deadline, "`qiao tap` did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_follows_the_routes_messages_redacted_as_records_and_as_lines() {
    let (_stubs, _routes, qiao) = start(Some(TOKEN)).await;
    let mut json = Tap::start(&qiao, Some(TOKEN), &["--json"]);
    json.wait_err("tapping route crm-order-to-erp", Duration::from_secs(20));
    let mut text = Tap::start(&qiao, Some(TOKEN), &[]);
    text.wait_err("tapping route crm-order-to-erp", Duration::from_secs(20));

    // Another route's message is not this tap's.
    let other = request(
        "POST",
        &qiao.url("/oa/approvals/purchase"),
        &[("content-type", "application/json")],
        example("oa-purchase-approval.json"),
    )
    .await
    .unwrap();
    send_order(&qiao, "tap-1").await;
    send_order(&qiao, "tap-2").await;

    let lines = json.lines(2, Duration::from_secs(20));
    let tokens = qiao::journal::redact::Tokens::new(KEY.as_bytes());
    let records: Vec<Record> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a Record ({e}): {l}"))).collect();
    assert_eq!(
        records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["tap-1", "tap-2"],
        "other: {}",
        other.status
    );
    for (r, line) in records.iter().zip(&lines) {
        assert_eq!(r.route, ROUTE);
        assert_eq!(r.outcome.status, Some(200));
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(r.attempts[0].system, "erp");
        let Some(Body::Json(body)) = &r.body else { panic!("{:?}", r.body) };
        assert_eq!(body["records"][0]["Account"]["Name"], tokens.token("杭州恒泽机电设备有限公司"));
        for clear in CLEAR {
            assert!(!line.contains(clear), "`{clear}` reached the tap in clear: {line}");
        }
    }

    let lines = text.lines(2, Duration::from_secs(20));
    for (line, id) in lines.iter().zip(["tap-1", "tap-2"]) {
        for part in [id, ROUTE, "http POST /crm/orders/801J000000k3QpRIAU", "delivered", "  200  ", "→ #0 erp 200"] {
            assert!(line.contains(part), "`{part}` is not in the line: {line}");
        }
        assert!(line.ends_with(" ms"), "{line}");
        assert!(CLEAR.iter().all(|c| !line.contains(c)), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_needs_the_admin_token_and_a_known_route() {
    let (_stubs, _routes, qiao) = start(Some(TOKEN)).await;
    let url = |q: &str| format!("http://127.0.0.1:{}/admin/tap?{q}", qiao.admin);
    let auth = format!("Bearer {TOKEN}");

    for headers in [vec![], vec![("authorization", "Bearer wrong-token-of-same-len")]] {
        let r = request("GET", &url("route=crm-order-to-erp"), &headers, Vec::new()).await.unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["type"], "urn:qiao:problem:unauthorized");
        assert!(r.header("www-authenticate").is_some());
    }
    let r = request("GET", &url("route=no-such-route"), &[("authorization", &auth)], Vec::new()).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.json()["detail"].as_str().unwrap().contains("no-such-route"), "{}", r.json());
    let r =
        request("GET", &url("route=crm-order-to-erp&sample=3"), &[("authorization", &auth)], Vec::new()).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.json());
    let r = request("POST", &url("route=crm-order-to-erp"), &[("authorization", &auth)], Vec::new()).await.unwrap();
    assert_eq!(r.status, 405);

    // The CLI says why, and fails.
    let mut tap = Tap::start(&qiao, None, &[]);
    assert!(!tap.wait(Duration::from_secs(20)).success());
    assert!(tap.seen_err.iter().any(|l| l.contains("refused (401)")), "{:?}", tap.seen_err);
    let mut tap = Tap::start(&qiao, Some(TOKEN), &["--json"]);
    let mut cmd_404 = Command::new(env!("CARGO_BIN_EXE_qiao"));
    let out = cmd_404
        .args(["tap", "nope", "--admin", &format!("127.0.0.1:{}", qiao.admin)])
        .env("QIAO_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused (404)"), "{}", String::from_utf8_lossy(&out.stderr));
    tap.wait_err("tapping route", Duration::from_secs(20));
    // The admin listener's other endpoints are served as before, also while a tap streams.
    let r = get(&format!("http://127.0.0.1:{}/healthz", qiao.admin)).await.unwrap();
    assert_eq!(r.status, 200);
    let r = get(&format!("http://127.0.0.1:{}/nothing", qiao.admin)).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.json()["detail"].as_str().unwrap().contains("GET /admin/tap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_tap_is_refused() {
    let (_stubs, _routes, qiao) = start(None).await;
    let url = format!("http://127.0.0.1:{}/admin/tap?route={ROUTE}", qiao.admin);
    let r = request("GET", &url, &[("authorization", "Bearer anything")], Vec::new()).await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.json()["detail"].as_str().unwrap().contains("QIAO_ADMIN_TOKEN"), "{}", r.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_connected_tap_and_the_process_stops_within_the_drain() {
    let (_stubs, _routes, mut qiao) = start(Some(TOKEN)).await;
    let mut tap = Tap::start(&qiao, Some(TOKEN), &[]);
    tap.wait_err("tapping route", Duration::from_secs(20));
    send_order(&qiao, "tap-before-stop").await;
    assert!(tap.lines(1, Duration::from_secs(20))[0].contains("tap-before-stop"));

    let started = Instant::now();
    // drain 2 s + grace 1 s; a tap that held on would add the runtimes' 5 s timeout (8 s).
    assert!(qiao.terminate(Duration::from_secs(15)).await.success());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(7), "the tap held the process: it stopped after {took:?}");
    assert!(tap.wait(Duration::from_secs(5)).success(), "{:?}", tap.seen_err);
    assert!(tap.seen_err.iter().any(|l| l.contains("the tap ended: the gateway is stopping")), "{:?}", tap.seen_err);
}
