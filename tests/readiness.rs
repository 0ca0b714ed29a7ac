//! `/readyz` notices a consumer that takes no work: every processing slot busy with a
//! message that does not finish (here a receiver that accepts and never answers) turns it
//! 503 naming the route, and it recovers once the message finishes.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_makes_readyz_503_naming_its_route_and_it_recovers() {
    // A receiver that takes connections and requests and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });

    let prefix = unique_prefix("stall");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("qiao.yaml"),
        format!(
            r#"systems:
  mes:
    kind: mes
    amqp: {{ url: "{AMQP_URL}", exchange: "{prefix}.events" }}
  erp:
    kind: erp
    http:
      base_url: http://127.0.0.1:{hang_port}
      request_timeout_ms: 3000
      retry: {{ max_attempts: 1 }}
      circuit_breaker: {{ failure_threshold: 0 }}
routes:
  slow-intake:
    from:
      amqp: {{ system: mes, queue: "{prefix}.in", bindings: [mes.#], prefetch: 1, concurrency: 1, stall_after_ms: 500 }}
    map:
      code: code
    to: {{ system: erp, path: /save }}
    failure: {{ max_attempts: 1 }}
"#
        ),
    )
    .unwrap();
    let qiao = Qiao::run(dir.path(), &[]).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", qiao.admin);
    let amqp = Amqp::connect(AMQP_URL).await;
    assert_eq!(get(&readyz).await.unwrap().status, 200, "idle is not stalled");

    amqp.publish(&format!("{prefix}.events"), "mes.x", br#"{"code":"MO-1"}"#, "stall-1").await.await.unwrap();
    eventually(Duration::from_secs(3), "readiness to name the stalled consumer", || async {
        let r = get(&readyz).await.unwrap();
        let checks = r.json()["checks"].to_string();
        r.status == 503 && checks.contains("consumer slow-intake") && checks.contains("is stalled")
    })
    .await;
    let body = get(&readyz).await.unwrap().json();
    let check = body["checks"].as_array().unwrap().iter().find(|c| c["name"] == "consumer slow-intake").cloned();
    let detail = check.unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains(&format!("{prefix}.in")) && detail.contains("all 1 processing slots busy"), "{detail}");

    // The receiver's timeout ends the delivery (dead-lettered): the consumer moves again.
    eventually(Duration::from_secs(10), "readiness once the message finished", || async {
        get(&readyz).await.unwrap().status == 200
    })
    .await;
    eventually(Duration::from_secs(5), "the message in the dead-letter queue", || async {
        amqp.queue_len(&format!("{prefix}.in.dlq")).await == Some(1)
    })
    .await;
    let queues: Vec<String> = ["in", "in.dlq"].iter().map(|q| format!("{prefix}.{q}")).collect();
    drop(qiao);
    amqp.cleanup(&queues, &[format!("{prefix}.events")]).await;
}
