//! A graceful stop under load (SIGTERM, as `docker stop` and Kubernetes send it): no request
//! that Qiao accepted is answered 5xx or cut off, keep-alive clients are told to close first,
//! no AMQP message is lost, and the process exits 0 within drain + grace + timeout.
//!
//! The clients go on sending through the drain, as they do while a load balancer notices
//! `/readyz` answering 503, and stop half a second before it ends, as they do once it has.
//! Requests keep-alive clients had already written when SIGTERM came are among them: pingora
//! alone drops such connections at once (32 of 32 reset in a fault test).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qiao::config::SystemKind;

/// What one request came to.
#[derive(Debug)]
enum Got {
    Answer(u16, bool),
    /// No connection could be made: the listeners were closed. Nothing was sent.
    Refused,
    /// A request that was sent and got no answer: what must not happen.
    CutOff(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request_and_loses_no_message() {
    let prefix = unique_prefix("shutdown");
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    edit(&routes.path().join("qiao.yaml"), "drain_seconds: 5", "drain_seconds: 2");
    edit(&routes.path().join("qiao.yaml"), "grace_period_seconds: 5", "grace_period_seconds: 2");
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "AMQP_PREFIX");
    env.push(("AMQP_PREFIX".into(), prefix.clone()));
    let mut qiao = Qiao::run(routes.path(), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let queue = format!("{prefix}.mes.production-completed");

    // 16 keep-alive clients, each on its own pooled connection, sending orders back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (stop, url) = (stop.clone(), qiao.url("/crm/orders/801J000000k3QpRIAU"));
        clients.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut got = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("shutdown-{c}-{n}"))
                    .body(Full::new(Bytes::from(example("crm-order.json"))))
                    .unwrap();
                got.push(match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Err(_) => Got::CutOff("no answer within 10 s".into()),
                    Ok(Err(e)) if e.is_connect() => Got::Refused,
                    Ok(Err(e)) => Got::CutOff(format!("{e:?}")),
                    Ok(Ok(r)) => {
                        let close = r.headers().get("connection").is_some_and(|v| v == "close");
                        let status = r.status().as_u16();
                        match r.into_body().collect().await {
                            Ok(_) => Got::Answer(status, close),
                            Err(e) => Got::CutOff(format!("body: {e:?}")),
                        }
                    }
                });
                if matches!(got.last(), Some(Got::Refused)) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            got
        }));
    }
    // AMQP traffic through the stop too.
    let completion = example("mes-production-performance.json");
    let mut published = 0;
    for _ in 0..30 {
        amqp.publish("", &queue, &completion, &format!("shutdown-amqp-{published}")).await.await.unwrap();
        published += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    qiao.signal("TERM");
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.expect("the admin listener answers");
    assert_eq!(ready.status, 503, "draining is not ready: {}", String::from_utf8_lossy(&ready.body));
    for _ in 0..30 {
        amqp.publish("", &queue, &completion, &format!("shutdown-amqp-{published}")).await.await.unwrap();
        published += 1;
    }
    let status = qiao.terminate(Duration::from_secs(12)).await;
    let took = started.elapsed();
    stopper.await.unwrap();
    let logs = qiao.logs();
    assert!(status.success(), "exit status {status}:\n{logs}");
    assert!(took < Duration::from_secs(9), "drain 2 + grace 2 + timeout 5 at most, took {took:?}");

    let mut answered = 0;
    let mut told_to_close = 0;
    for c in clients {
        for g in c.await.unwrap() {
            match g {
                Got::Answer(status, close) => {
                    assert!(status < 500, "an accepted request was answered {status}:\n{logs}");
                    answered += 1;
                    told_to_close += usize::from(close);
                }
                Got::Refused => panic!("a connection was refused while Qiao was draining:\n{logs}"),
                Got::CutOff(e) => panic!("a request was cut off: {e}\n{logs}"),
            }
        }
    }
    assert!(answered > 100, "too little traffic: {answered}");
    assert!(told_to_close >= 16, "draining answers say Connection: close ({told_to_close})");

    // Every message was delivered to both receivers, or waits in its queue.
    let (wms, erp) = (stubs.get(SystemKind::Wms).state.received(), stubs.get(SystemKind::Erp).state.received());
    let delivered: std::collections::HashSet<String> = wms
        .iter()
        .filter_map(|r| r.message_id.clone())
        .filter(|id| id.starts_with("shutdown-amqp-") && erp.iter().any(|e| e.message_id.as_deref() == Some(id)))
        .collect();
    let waiting = amqp.queue_len(&queue).await.unwrap_or(0) as usize;
    assert!(
        delivered.len() + waiting >= published,
        "{} delivered + {waiting} waiting < {published} published",
        delivered.len()
    );
    let q = |s: &str| format!("{prefix}.{s}");
    let mut queues = vec![q("wms.stockout"), queue.clone(), format!("{queue}.dlq"), format!("{queue}.retry.circuit")];
    queues.extend((1..5).map(|n| format!("{queue}.retry.{n}")));
    amqp.cleanup(&queues, &[q("events")]).await;
}

/// A connection accepted just before the listener closed, whose client writes its request a
/// moment after: pingora's cleanup alone drops every connection still waiting for a request
/// at once, and that client saw its request cut off (tests/upgrade.rs, now and then). Qiao
/// waits half the grace period (at most 1 s) first, and answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_written_just_after_the_listener_closed_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    edit(&routes.path().join("qiao.yaml"), "drain_seconds: 5", "drain_seconds: 1");
    let mut qiao = Qiao::run(routes.path(), &stubs.env()).await;
    let addr = ("127.0.0.1", qiao.port);
    qiao.signal("TERM");
    // During the drain the listener still accepts: a connection, with nothing sent yet.
    let mut held = tokio::net::TcpStream::connect(addr).await.expect("accepted during the drain");
    eventually(Duration::from_secs(10), "the listener to close", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let body = example("crm-order.json");
    let head = format!(
        "POST /crm/orders/801J000000k3QpRIAU HTTP/1.1\r\nhost: qiao\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // A write can succeed on a connection the server already closed; the answer tells.
    let _ = held.write_all(head.as_bytes()).await;
    let _ = held.write_all(&body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 200"),
        "no answer to a request on an accepted connection: {answer:?}\n{}",
        qiao.logs()
    );
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(stubs.get(SystemKind::Erp).state.received().len(), 1, "the order reached the ERP");
    assert!(qiao.exited(Duration::from_secs(15)).await.success(), "{}", qiao.logs());
}
