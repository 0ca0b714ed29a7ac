//! Rate limits with the real binary: 429 and its `RateLimit` fields, per-client budgets,
//! outbound limits that queue (HTTP) or slow down (AMQP) and never drop a message, and
//! limits shared by two processes through Redis, with Redis stopped mid-run.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use qiao::config::SystemKind;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = r#"{"formid":"SAL_SaleOrder","data":{"Model":{}}}"#;
const SAVE: &str = "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc";

/// A redis-server of this test's own, on a free port, gone when dropped.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/lib.sh ensure_redis installs it)");
        let r = PrivateRedis { child, port };
        eventually(Duration::from_secs(10), "redis-server listens", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn start(extra: &[(&str, String)]) -> (Stubs, Qiao) {
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("PREFIX".into(), unique_prefix("limits")));
    env.push(("REDIS_URL".into(), "redis://127.0.0.1:1".into()));
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.clone()));
    }
    let qiao = Qiao::run(&fixture("limits"), &env).await;
    (stubs, qiao)
}

async fn post(qiao: &Qiao, path: &str) -> Reply {
    post_json(&qiao.url(path), BODY).await
}

/// A POST sent from a local address of the test's choosing (all of 127/8 is loopback on
/// Linux): how the per-client budgets are told apart until clients authenticate.
async fn post_from(from: [u8; 4], to: SocketAddr, path: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: qiao.test\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer)).await.unwrap().unwrap();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn metrics(qiao: &Qiao) -> String {
    String::from_utf8_lossy(&get(&format!("http://127.0.0.1:{}/metrics", qiao.admin)).await.unwrap().body).into_owned()
}

/// The burst passes with `RateLimit` fields on each answer; the next request gets 429
/// problem+json with `Retry-After` and the fields as draft-ietf-httpapi-ratelimit-headers-11
/// writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_a_request_gets_429_with_retry_after_and_ratelimit_fields() {
    let (_stubs, qiao) = start(&[]).await;
    let first = post(&qiao, "/limited").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("ratelimit-policy"), Some(r#""route";q=1;w=1"#));
    assert_eq!(first.header("ratelimit"), Some(r#""route";r=1;t=1"#));
    let second = post(&qiao, "/limited").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("ratelimit").map(|v| v.starts_with(r#""route";r=0;t="#)), Some(true), "{second:?}");
    let refused = post(&qiao, "/limited").await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit-policy"), Some(r#""route";q=1;w=1"#));
    assert_eq!(refused.header("ratelimit"), Some(r#""route";r=0;t=1"#));
    let p = refused.json();
    assert_eq!(p["error_kind"], "rate-limited");
    assert_eq!(p["status"], 429);
    assert_eq!(p["retry_after_seconds"], 1);
    // Routes without a limit say nothing about limits.
    let free = post(&qiao, "/queued").await;
    assert_eq!(free.status, 200);
    assert_eq!(free.header("ratelimit"), None);
    assert_eq!(metric(&metrics(&qiao).await, "qiao_rate_limited_total{route=\"limited\"}"), 1.0);
}

/// `per: client`: each client has its budget, and a client with one of its own (here by
/// address, 127.0.0.2) gets more than the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_has_its_budget_and_an_override_has_more() {
    let (_stubs, qiao) = start(&[]).await;
    let addr = qiao.addr();
    let mut partner = Vec::new();
    for _ in 0..6 {
        partner.push(post_from([127, 0, 0, 2], addr, "/per-client").await.0);
    }
    assert_eq!(partner, [200, 200, 200, 200, 200, 429], "127.0.0.2 has a burst of 5");
    let (status, answer) = post_from([127, 0, 0, 3], addr, "/per-client").await;
    assert_eq!(status, 200, "another client's budget is whole: {answer}");
    assert!(answer.to_ascii_lowercase().contains("ratelimit-policy: \"client\";q=1;w=1"), "{answer}");
    let (status, answer) = post_from([127, 0, 0, 3], addr, "/per-client").await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert_eq!(post_from([127, 0, 0, 4], addr, "/per-client").await.0, 200);
}

/// A system limited to 5 a second, one at a time, with three places to wait: of eight
/// requests at once, those that find a place wait their turn and are delivered, the others
/// get 503 `destination-busy` with `Retry-After` at once and reach no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_limit_queues_http_requests_then_answers_503() {
    let (stubs, qiao) = start(&[]).await;
    let url = qiao.url("/queued");
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = post_json(&url, BODY).await;
                (r, Instant::now())
            })
        })
        .collect();
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let (r, _) = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                busy += 1;
                assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
                let p = r.json();
                assert_eq!(p["error_kind"], "destination-busy", "{p}");
                assert!(p["detail"].as_str().unwrap().contains("erp-queued takes at most 5 messages a second"), "{p}");
            }
            other => panic!("only 200 or 503: {other} {r:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "nobody waited past max_wait_ms");
    assert_eq!(ok + busy, 8);
    assert!(ok >= 4, "one at once and three from the queue: {ok}");
    assert!(busy >= 1, "eight do not fit: {ok} ok");
    let received: Vec<_> =
        stubs.get(SystemKind::Erp).state.all_requests().into_iter().filter(|r| r.path == SAVE).collect();
    assert_eq!(received.len(), ok, "every 200 was delivered, no 503 was");
    let mut at: Vec<u64> = received.iter().map(|r| r.received_at_ms).collect();
    at.sort();
    let span = at.last().unwrap() - at.first().unwrap();
    assert!(span + 100 >= 200 * (ok as u64 - 1), "5 a second: {ok} in {span} ms ({at:?})");
    assert_eq!(metric(&metrics(&qiao).await, "qiao_destination_busy_total{system=\"erp-queued\"}"), busy as f64);
}

/// A consumer whose destination takes 10 a second slows down: all 30 messages are
/// delivered, none dead-lettered, and never more than the rate (from the stub's receive
/// times, with room for scheduling but not for twice the rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amqp_consumer_slows_down_to_the_destination_rate_and_loses_nothing() {
    let prefix = unique_prefix("limits-amqp");
    let (stubs, qiao) = start(&[("PREFIX", prefix.clone())]).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let n = 30;
    for i in 0..n {
        amqp.publish(&format!("{prefix}.events"), "mes.limits.x", BODY.as_bytes(), &format!("{prefix}-{i}"))
            .await
            .await
            .unwrap();
    }
    let erp = stubs.get(SystemKind::Erp).state.clone();
    eventually(Duration::from_secs(20), "all 30 delivered", || {
        let erp = erp.clone();
        async move { erp.all_requests().len() >= n }
    })
    .await;
    let received = erp.all_requests();
    let mut ids: Vec<String> = received.iter().filter_map(|r| r.message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each message once");
    assert_eq!(amqp.queue_len(&format!("{prefix}.in.dlq")).await.unwrap_or(0), 0, "none dead-lettered");
    let mut at: Vec<u64> = received.iter().map(|r| r.received_at_ms).collect();
    at.sort();
    // 10 a second, one at a time: message k goes at k × 100 ms. Any 11 in a row span at
    // least a second; a little scheduling delay is allowed, twice the rate is not.
    for w in at.windows(11) {
        assert!(w[10] - w[0] >= 700, "more than 10 a second: {at:?}");
    }
    assert!(at[n - 1] - at[0] >= 2_500, "30 at 10 a second take about 2.9 s: {at:?}");
    drop(qiao);
    amqp.cleanup(&[format!("{prefix}.in"), format!("{prefix}.in.dlq")], &[format!("{prefix}.events")]).await;
}

/// Two processes, one budget in Redis (5 a second, burst 5): together they let through
/// about what one would, not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_redis_limit_allow_the_rate_not_twice() {
    let redis = PrivateRedis::start().await;
    let (_stubs, a) = start(&[("REDIS_URL", redis.url())]).await;
    let env = {
        let stubs = Stubs::start().await;
        let mut env = stubs.env();
        env.push(("PREFIX".into(), unique_prefix("limits-b")));
        env.push(("REDIS_URL".into(), redis.url()));
        (stubs, env)
    };
    let b = Qiao::run(&fixture("limits"), &env.1).await;
    let started = Instant::now();
    let (mut ok, mut refused, mut by) = (0u32, 0u32, [0u32; 2]);
    // 40 requests a second for 3 s, alternating between the two processes.
    for i in 0..120 {
        let q = if i % 2 == 0 { &a } else { &b };
        match post(q, "/shared").await.status {
            200 => {
                ok += 1;
                by[i % 2] += 1;
            }
            429 => refused += 1,
            s => panic!("only 200 or 429: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    for q in [&a, &b] {
        assert_eq!(metric(&metrics(q).await, "qiao_rate_limit_fallback_total"), 0.0, "Redis answered every check");
    }
    let most = 5.0 + 5.0 * secs;
    assert!(f64::from(ok) <= most + 1.0, "{ok} passed in {secs:.1} s: more than 5 + 5/s ({most:.0})");
    assert!(f64::from(ok) >= 5.0 + 5.0 * secs * 0.6, "{ok} passed in {secs:.1} s: the budget was not used");
    assert!(by[0] > 0 && by[1] > 0, "both processes served: {by:?}");
    assert!(refused > 0);
}

/// Redis stops mid-run: a limit set to `local` goes on with its share (4 a second / 2
/// replicas: a burst of 2), one set to `refuse` answers 503 with `Retry-After`; no request
/// waits much longer than the timeout, and no other 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_stops_limits_fall_back_or_refuse_as_configured() {
    let mut redis = PrivateRedis::start().await;
    let (_stubs, qiao) = start(&[("REDIS_URL", redis.url())]).await;
    assert_eq!(post(&qiao, "/shared-local").await.status, 200);
    assert_eq!(post(&qiao, "/shared-refuse").await.status, 200);
    redis.stop();

    let mut local = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let r = post(&qiao, "/shared-local").await;
        assert!(t.elapsed() < Duration::from_secs(2), "answered within the timeout, not hung: {:?}", t.elapsed());
        local.push(r.status);
    }
    assert!(local.iter().all(|s| *s == 200 || *s == 429), "{local:?}");
    let passed = local.iter().filter(|s| **s == 200).count();
    assert!((2..=3).contains(&passed), "the local share is a burst of 2: {local:?}");

    let t = Instant::now();
    let r = post(&qiao, "/shared-refuse").await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    let p: Value = r.json();
    assert_eq!(p["error_kind"], "rate-limit-unavailable");
    let m = metrics(&qiao).await;
    assert!(metric(&m, "qiao_rate_limit_fallback_total{fallback=\"local\"") >= 1.0, "{m}");
    assert!(metric(&m, "qiao_rate_limit_fallback_total{fallback=\"refused\"") >= 1.0, "{m}");
}
