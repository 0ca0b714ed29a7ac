//! A binary upgrade under load, with pingora's hand-off: a new process started with
//! `--upgrade` takes the listening sockets of the running one when it gets SIGQUIT. Not one
//! connection is refused, no request is cut off or answered 5xx, and the old process drains and
//! exits 0 while the new one serves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_refuses_no_connection_and_cuts_no_request() {
    let prefix = unique_prefix("upgrade");
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    edit(&routes.path().join("qiao.yaml"), "drain_seconds: 5", "drain_seconds: 1");
    edit(&routes.path().join("qiao.yaml"), "grace_period_seconds: 5", "grace_period_seconds: 1");
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "AMQP_PREFIX");
    env.push(("AMQP_PREFIX".into(), prefix.clone()));
    let sock = routes.path().join("upgrade.sock");
    let args = |upgrade: bool| {
        let mut a = vec!["run".to_string(), "--config".into(), routes.path().display().to_string()];
        a.extend(["--upgrade-sock".to_string(), sock.display().to_string()]);
        if upgrade {
            a.push("--upgrade".into());
        }
        a
    };
    let mut old = Qiao::spawn(args(false), &env).await;
    let url = old.url("/crm/orders/801J000000k3QpRIAU");

    // Clients on new connections (every accept counts) and on keep-alive ones. A keep-alive
    // client keeps an idle connection for 2 s, less than the old process keeps its own
    // (drain, pingora's 5 s hand-off, half the grace): a connection the old one closes while idle
    // could otherwise be taken for a request at that very moment, the keep-alive race no
    // server can prevent (RFC 9112 §9.8; hyper may hold a second idle connection for long
    // when a request starts before the previous one's connection is back in its pool).
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (stop, url) = (stop.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let fresh = c % 2 == 0;
            let builder = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(if fresh { 0 } else { 4 })
                .pool_idle_timeout(Duration::from_secs(2))
                .clone();
            let client: Client<_, Full<Bytes>> = builder.build_http();
            let (mut answered, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(example("crm-order.json"))))
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(r)) => {
                        let status = r.status().as_u16();
                        match r.into_body().collect().await {
                            Ok(_) if status < 500 => answered += 1,
                            Ok(_) => failed.push(format!("answered {status}")),
                            Err(e) => failed.push(format!("body cut: {e:?}")),
                        }
                    }
                    Ok(Err(e)) => failed.push(format!(
                        "{} ({} client): {e:?}",
                        if e.is_connect() { "refused" } else { "cut off" },
                        if fresh { "fresh" } else { "keep-alive" }
                    )),
                    Err(_) => failed.push("no answer within 10 s".into()),
                }
            }
            (answered, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut new = Qiao::start_on(args(true), &env, old.port, old.admin);
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    new.ready().await;
    let status = old.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "the old process exits 0 after the hand-off: {status}\n{}", old.logs());
    // The new process alone serves for a while.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let at_erp = stubs.get(qiao::config::SystemKind::Erp).state.received().len();
    let mut answered = 0;
    for c in clients {
        let (a, failed) = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "requests failed across the upgrade: {failed:?}\nold:\n{}\nnew:\n{}",
            old.logs(),
            new.logs()
        );
        answered += a;
    }
    assert!(answered > 50, "too little traffic: {answered}");
    assert!(at_erp as u32 >= answered / 2, "the ERP got the orders");
    assert!(old.logs().contains("SIGQUIT: draining, then handing the listening sockets over"), "{}", old.logs());
    let ready = get(&format!("http://127.0.0.1:{}/readyz", new.admin)).await.unwrap();
    assert_eq!(ready.status, 200, "the new process is ready");
    drop(new);
    let amqp = Amqp::connect(AMQP_URL).await;
    let base = format!("{prefix}.mes.production-completed");
    let mut queues =
        vec![format!("{prefix}.wms.stockout"), base.clone(), format!("{base}.dlq"), format!("{base}.retry.circuit")];
    queues.extend((1..5).map(|n| format!("{base}.retry.{n}")));
    amqp.cleanup(&queues, &[format!("{prefix}.events")]).await;
}
