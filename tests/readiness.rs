//! `/readyz` notices a consumer that takes no work: every processing slot busy with a
//! message that does not finish (here a receiver that accepts and never answers) turns it
//! 503 naming the route, and it recovers once the message finishes. A broker lost after it
//! was connected keeps an instance with HTTP-only routes ready.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_makes_readyz_503_naming_its_route_and_it_recovers() {
    // A receiver that takes connections and requests and never answers.
    let hang_port = silent_port().await;

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

/// A TCP relay to the shared broker that can be cut: the connections through it drop and
/// new ones are refused, as in a broker outage, without stopping the broker other tests use.
struct Relay {
    port: u16,
    cut: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut cut_rx => break,
                    accepted = listener.accept() => {
                        let Ok((mut down, _)) = accepted else { break };
                        conns.spawn(async move {
                            if let Ok(mut up) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            }
                        });
                    }
                }
            }
            conns.abort_all();
        });
        Relay { port, cut: Some(cut) }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn cut(&mut self) {
        let _ = self.cut.take().map(|c| c.send(()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_lost_after_it_was_connected_keeps_http_only_routes_ready() {
    let stubs = Stubs::start().await;
    let mut relay = Relay::start().await;
    let mut env = stubs.env();
    env.push(("AMQP_URL".into(), relay.url()));
    let qiao = Qiao::run(&routes_dir(), &env).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", qiao.admin);
    let broker_check = |body: &serde_json::Value| {
        body["checks"].as_array().unwrap().iter().find(|c| c["name"].as_str().unwrap().starts_with("amqp ")).cloned()
    };
    let before = get(&readyz).await.unwrap();
    assert_eq!(before.status, 200);
    let check = broker_check(&before.json()).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert!(check["consumed_by"].to_string().contains("mes-completion-to-wms-and-erp"), "{check}");
    assert!(check["published_to_by"].to_string().contains("erp-delivery-to-wms"), "{check}");

    relay.cut();
    eventually(Duration::from_secs(10), "readiness to see the broker gone", || async {
        let r = get(&readyz).await.unwrap();
        broker_check(&r.json()).is_some_and(|c| c["ok"] == false)
    })
    .await;
    let r = get(&readyz).await.unwrap();
    let body = r.json();
    assert_eq!(r.status, 200, "the CRM order route needs no broker: {body}");
    let check = broker_check(&body).unwrap();
    assert_eq!(check["required"], false, "{check}");
    assert!(check["detail"].as_str().unwrap().contains("still ready"), "{check}");
    let order = post_json(&qiao.url("/crm/orders/801J000000k3QpRIAU"), example("crm-order.json")).await;
    assert_eq!(order.status, 200, "{}", String::from_utf8_lossy(&order.body));
    let notice = post_json(&qiao.url("/erp/delivery-notices"), example("erp-delivery-notice.json")).await;
    assert_eq!(notice.status, 503, "{}", String::from_utf8_lossy(&notice.body));
    assert_eq!(notice.json()["type"], "urn:qiao:problem:broker-unavailable");
}
