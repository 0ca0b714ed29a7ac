//! Not one message lost: 10,000 messages through Qiao while Qiao is killed with SIGKILL, and
//! while RabbitMQ restarts. Counted as sent vs. arrived at the stub + dead-lettered;
//! duplicates (which at-least-once delivery makes unavoidable) are counted and reported.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use qiao::config::SystemKind;

const MESSAGES: usize = 10_000;

async fn publish_all(amqp: &Amqp, exchange: &str, prefix: &str) {
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(500) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for i in chunk {
            let body = format!(r#"{{"code":"MO-{i:05}","qty":{i}}}"#);
            confirms
                .push(amqp.publish(exchange, "mes.test.completed", body.as_bytes(), &format!("{prefix}-{i}")).await);
        }
        for c in confirms {
            let confirmation = c.await.expect("confirmed");
            assert!(
                matches!(confirmation, lapin::Confirmation::Ack(None)),
                "the broker took message: {confirmation:?}"
            );
        }
    }
}

/// Arrived at the ERP stub, by message id.
fn arrived(stubs: &Stubs) -> (usize, u64) {
    let s = stubs.get(SystemKind::Erp).state.stats();
    (s["distinct_message_ids"].as_u64().unwrap() as usize, s["duplicate_deliveries"].as_u64().unwrap())
}

fn report(what: &str, delivered: usize, dead: usize, duplicates: u64) {
    eprintln!(
        "{what}: sent {MESSAGES}, arrived {delivered} distinct, dead-lettered {dead}, lost {}, duplicates {duplicates}",
        MESSAGES - delivered - dead
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_in_the_middle_of_the_stream_loses_nothing() {
    let prefix = unique_prefix("sigkill");
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("PREFIX".into(), prefix.clone()));
    let amqp = Amqp::connect(AMQP_URL).await;

    // Qiao declares the topology on start; then the messages go in.
    let mut qiao = Qiao::run(&fixture("amqp"), &env).await;
    qiao.kill();
    publish_all(&amqp, &format!("{prefix}.events"), &prefix).await;
    assert_eq!(amqp.queue_len(&format!("{prefix}.in")).await, Some(MESSAGES as u32));

    let mut qiao = Qiao::run(&fixture("amqp"), &env).await;
    eventually(Duration::from_secs(60), "a third of the stream", || async { arrived(&stubs).0 >= MESSAGES / 3 }).await;
    qiao.kill();
    let at_kill = arrived(&stubs).0;
    assert!(at_kill < MESSAGES, "killed in the middle ({at_kill} arrived)");

    let qiao = Qiao::run(&fixture("amqp"), &env).await;
    let dlq = format!("{prefix}.in.dlq");
    eventually(Duration::from_secs(120), "every message accounted for", || async {
        arrived(&stubs).0 + amqp.queue_len(&dlq).await.unwrap_or(0) as usize >= MESSAGES
    })
    .await;
    let (delivered, duplicates) = arrived(&stubs);
    let dead = amqp.queue_len(&dlq).await.unwrap_or(0) as usize;
    report("SIGKILL", delivered, dead, duplicates);
    assert_eq!(delivered + dead, MESSAGES, "zero lost");
    assert_eq!(dead, 0, "nothing failed, so nothing is dead-lettered");
    let ids: HashSet<String> =
        stubs.get(SystemKind::Erp).state.received().iter().filter_map(|r| r.message_id.clone()).collect();
    for i in 0..MESSAGES {
        assert!(ids.contains(&format!("{prefix}-{i}")), "message {i} never arrived");
    }
    eventually(Duration::from_secs(30), "the queue to drain", || async {
        amqp.queue_len(&format!("{prefix}.in")).await == Some(0)
    })
    .await;
    drop(qiao); // before deleting: a running Qiao would declare its queues again
    cleanup(&amqp, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rabbitmq_restart_in_the_middle_of_the_streams_loses_nothing() {
    let mut broker = PrivateBroker::start().await;
    let prefix = unique_prefix("restart");
    let stubs = Stubs::start().await;
    let env = env_on(&stubs, &prefix, &broker);
    let qiao = Qiao::run(&fixture("amqp"), &env).await;
    let amqp = Amqp::connect(&broker.url()).await;
    let inbox = format!("{prefix}.wms.inbox");

    // Stream 1, AMQP → HTTP: 10,000 messages queued; consumption under way when the broker goes.
    publish_all(&amqp, &format!("{prefix}.events"), &prefix).await;
    drop(amqp);
    eventually(Duration::from_secs(60), "a third of the stream", || async { arrived(&stubs).0 >= MESSAGES / 3 }).await;

    // Stream 2, HTTP → AMQP: 10,000 requests, each retried with its Idempotency-Key until
    // answered 202 (the broker's confirm); 503s while the broker is down are expected.
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (url, accepted, refused, next) = (qiao.url("/publish/"), accepted.clone(), refused.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= MESSAGES {
                    return;
                }
                let key = format!("pub-{i}");
                let body = format!(r#"{{"code":"FHTZD{i:06}","warehouse":"WH-HZ-01"}}"#).into_bytes();
                loop {
                    let headers = [("content-type", "application/json"), ("idempotency-key", key.as_str())];
                    match request("POST", &format!("{url}FHTZD{i:06}"), &headers, body.clone()).await {
                        Ok(r) if r.status == 202 => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(r) => {
                            assert!(
                                r.status == 503 || r.status == 502,
                                "unexpected {}: {}",
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            );
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "publishing under way", || async { accepted.load(Ordering::Relaxed) >= 1_000 })
        .await;

    let (consumed_before, _) = arrived(&stubs);
    broker.restart().await;
    eprintln!(
        "RabbitMQ restarted: {consumed_before} consumed and {} published before",
        accepted.load(Ordering::Relaxed)
    );

    for s in senders {
        s.await.unwrap();
    }
    let dlq = format!("{prefix}.in.dlq");
    let amqp = Amqp::connect(&broker.url()).await;
    eventually(Duration::from_secs(180), "every consumed message accounted for", || async {
        arrived(&stubs).0 + amqp.queue_len(&dlq).await.unwrap_or(0) as usize >= MESSAGES
    })
    .await;
    let (delivered, duplicates) = arrived(&stubs);
    let dead = amqp.queue_len(&dlq).await.unwrap_or(0) as usize;
    report("RabbitMQ restart, AMQP → HTTP", delivered, dead, duplicates);
    assert_eq!(delivered + dead, MESSAGES, "zero lost on the consuming side");

    // Every request answered 202 is in the WMS's queue; resent ones may be there twice.
    let published = amqp.drain(&inbox).await;
    let ids: Vec<String> =
        published.iter().filter_map(|m| m.delivery.properties.message_id().as_ref().map(|s| s.to_string())).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    eprintln!(
        "RabbitMQ restart, HTTP → AMQP: sent {MESSAGES}, 202 {}, 503/502 answers retried {}, in the queue {} ({} distinct), lost {}, duplicates {}",
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        ids.len(),
        distinct.len(),
        MESSAGES - distinct.len(),
        ids.len() - distinct.len()
    );
    assert_eq!(accepted.load(Ordering::Relaxed), MESSAGES);
    for i in 0..MESSAGES {
        assert!(
            distinct.contains(&format!("pub-{i}")),
            "request {i} was answered 202 but its message is not in the queue"
        );
    }
    assert!(refused.load(Ordering::Relaxed) > 0, "the restart really interrupted publishing");
}

async fn cleanup(amqp: &Amqp, prefix: &str) {
    amqp.cleanup(&amqp_fixture_queues(prefix), &[format!("{prefix}.events")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_a_failing_delivery_makes_no_second_copy() {
    let broker = PrivateBroker::start().await;
    let prefix = unique_prefix("cut");
    let stubs = Stubs::start().await;
    let env = env_on(&stubs, &prefix, &broker);
    // The fixture's ERP gives up after 2 s; here it waits long enough for the cut to land
    // while the first attempt is under way, however slowly rabbitmqctl starts.
    let config = amqp_fixture_with_a_patient_erp();
    let qiao = Qiao::run(config.path(), &env).await;
    let erp = stubs.get(SystemKind::Erp).state.clone();
    // The first delivery fails, slowly: the connection is cut while it is under way. The
    // broker gives the message back at once and Qiao, reconnected, delivers it again; the
    // first attempt's 503 then arrives, after 8 s, for a channel that no longer exists.
    erp.add_fault(qiao::stub::Fault { status: Some(503), delay_ms: 8000, times: 1, ..Default::default() });
    let amqp = Amqp::connect(&broker.url()).await;
    amqp.publish(&format!("{prefix}.events"), "mes.test.x", br#"{"code":"MO-CUT"}"#, "cut-1").await.await.unwrap();
    drop(amqp);
    eventually(Duration::from_secs(10), "the first attempt under way", || {
        let erp = erp.clone();
        async move { erp.stats()["received"] == 1 }
    })
    .await;
    broker.close_connections();
    eventually(Duration::from_secs(20), "the redelivered message at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().len() == 1 }
    })
    .await;
    // Past the 503 of the first attempt, and past the retry a copy would have made.
    eventually(Duration::from_secs(20), "the first attempt's 503", || async {
        qiao.logs().contains("the channel closed while the message was processed")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = qiao.logs();
    assert_eq!(erp.received().len(), 1, "delivered once:\n{logs}");
    assert_eq!(erp.stats()["duplicate_deliveries"], 0, "no retry copy of the cut attempt:\n{logs}");
    let amqp = Amqp::connect(&broker.url()).await;
    assert_eq!(amqp.queue_len(&format!("{prefix}.in")).await, Some(0));
    assert_eq!(amqp.queue_len(&format!("{prefix}.in.dlq")).await, Some(0));
    assert!(logs.contains("the channel closed while the message was processed"), "{logs}");
}

/// RabbitMQ blocks every connection that publishes while a resource alarm is on, and a
/// blocked connection is not read at all: acks on it would wait too. Consumers have a
/// connection of their own, so a queue still drains while publishing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_blocks_publishing_but_not_consuming() {
    const WAITING: usize = 300;
    let broker = PrivateBroker::start().await;
    let prefix = unique_prefix("alarm");
    let (exchange, queue) = (format!("{prefix}.events"), format!("{prefix}.in"));
    // The messages wait in the route's queue before Qiao starts (more than its prefetch of
    // 128, so that they can only all arrive if acks get through).
    let amqp = Amqp::connect(&broker.url()).await;
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    let exchange_options = lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() };
    let ch = &amqp.channel;
    ch.exchange_declare(exchange.as_str().into(), lapin::ExchangeKind::Topic, exchange_options, Default::default())
        .await
        .unwrap();
    ch.queue_declare(queue.as_str().into(), durable, Default::default()).await.unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "mes.test.#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let mut confirms = Vec::new();
    for i in 0..WAITING {
        let body = format!(r#"{{"code":"MO-{i:03}"}}"#);
        confirms.push(amqp.publish(&exchange, "mes.test.x", body.as_bytes(), &format!("alarm-{i}")).await);
    }
    for c in confirms {
        assert!(matches!(c.await.unwrap(), lapin::Confirmation::Ack(None)));
    }
    drop(amqp);
    broker.memory_alarm(true);

    let stubs = Stubs::start().await;
    let erp = stubs.get(SystemKind::Erp).state.clone();
    // The first deliveries are slow, so that Qiao's publish below lands while they are
    // under way and their acks are still to come.
    erp.add_fault(qiao::stub::Fault { delay_ms: 1500, times: 64, ..Default::default() });
    let env = env_on(&stubs, &prefix, &broker);
    // The fixture's ERP gives up after 2 s; the slow deliveries must not time out (and be
    // delivered twice) on a loaded machine.
    let config = amqp_fixture_with_a_patient_erp();
    let qiao = Qiao::run(config.path(), &env).await;
    // Readiness tells the alarm before anything is published (a probe does).
    eventually(Duration::from_secs(15), "readiness to tell the alarm", || async {
        get(&format!("http://127.0.0.1:{}/readyz", qiao.admin))
            .await
            .is_ok_and(|r| r.json()["checks"].to_string().contains("blocks publishing"))
    })
    .await;
    let publish = {
        let url = format!("http://127.0.0.1:{}/publish/MO-ALARM", qiao.port);
        tokio::spawn(async move { post_json(&url, r#"{"code":"MO-ALARM","warehouse":"WH-SH-01"}"#).await })
    };
    eventually(Duration::from_secs(60), "every waiting message at the ERP while publishing is blocked", || {
        let erp = erp.clone();
        async move { erp.received().len() == WAITING }
    })
    .await;
    let blocked = publish.await.unwrap();
    assert_eq!(blocked.status, 503, "no 202 while the broker blocks publishing: {:?}", blocked.body);
    let logs = qiao.logs();
    assert!(logs.contains("the broker blocked publishing"), "{logs}");
    // Readiness says so, and stays ready: consuming goes on.
    let readyz = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.unwrap();
    assert_eq!(readyz.status, 200);
    let checks = readyz.json()["checks"].to_string();
    assert!(checks.contains("connected; the broker blocks publishing"), "{checks}");

    broker.memory_alarm(false);
    eventually(Duration::from_secs(30), "publishing once the alarm is over", || async {
        post_json(
            &format!("http://127.0.0.1:{}/publish/MO-ALARM", qiao.port),
            r#"{"code":"MO-ALARM","warehouse":"WH-SH-01"}"#,
        )
        .await
        .status
            == 202
    })
    .await;
    let readyz = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.unwrap();
    assert!(!readyz.json()["checks"].to_string().contains("blocks publishing"));
    let amqp = Amqp::connect(&broker.url()).await;
    assert_eq!(amqp.queue_len(&queue).await, Some(0));
    assert_eq!(erp.stats()["duplicate_deliveries"], 0);
}

/// Either connection of the pair lost: both are made anew, and the consumer moves to the
/// new pair (one consumer on the queue, not one per generation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_publishing_connection_alone_renews_both() {
    let broker = PrivateBroker::start().await;
    let prefix = unique_prefix("pubcut");
    let stubs = Stubs::start().await;
    let env = env_on(&stubs, &prefix, &broker);
    let qiao = Qiao::run(&fixture("amqp"), &env).await;
    let erp = stubs.get(SystemKind::Erp).state.clone();
    let publish = |code: &'static str| {
        let url = format!("http://127.0.0.1:{}/publish/{code}", qiao.port);
        async move { post_json(&url, format!(r#"{{"code":"{code}","warehouse":"WH-SH-01"}}"#)).await.status }
    };
    eventually(Duration::from_secs(20), "Qiao publishing", || async { publish("MO-1").await == 202 }).await;
    let amqp = Amqp::connect(&broker.url()).await;
    amqp.publish(&format!("{prefix}.events"), "mes.test.x", br#"{"code":"MO-A"}"#, "pubcut-a").await.await.unwrap();
    eventually(Duration::from_secs(10), "the first message at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().len() == 1 }
    })
    .await;

    assert_eq!(broker.close_connections_named("qiao-publish"), 1);
    eventually(Duration::from_secs(20), "the reconnection", || async {
        qiao.logs().matches("connected to the AMQP broker").count() == 2
    })
    .await;
    eventually(Duration::from_secs(20), "publishing again", || async { publish("MO-2").await == 202 }).await;
    amqp.publish(&format!("{prefix}.events"), "mes.test.x", br#"{"code":"MO-B"}"#, "pubcut-b").await.await.unwrap();
    eventually(Duration::from_secs(20), "the second message at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().len() == 2 }
    })
    .await;
    let logs = qiao.logs();
    // The consumer left the old consuming connection, which Qiao closed, for the new one.
    let resubscribed = format!("consuming queue={prefix}.in ");
    assert!(logs.lines().any(|l| l.contains(&resubscribed) && l.contains("generation=2")), "{logs}");
    assert_eq!(broker.consumers(&format!("{prefix}.in")), Some(1), "{logs}");
    assert_eq!(erp.stats()["duplicate_deliveries"], 0);
}

/// The environment of the `amqp` fixture for `stubs`, on `broker`'s node, under `prefix`.
fn env_on(stubs: &Stubs, prefix: &str, broker: &PrivateBroker) -> Vec<(String, String)> {
    let mut env = stubs.env();
    env.push(("PREFIX".into(), prefix.to_string()));
    env.push(("AMQP_URL".into(), broker.url()));
    env
}

/// The `amqp` fixture in a temporary copy whose ERP waits 30 s for an answer instead of 2.
fn amqp_fixture_with_a_patient_erp() -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    copy_dir(&fixture("amqp"), config.path());
    let systems = config.path().join("systems.yaml");
    let text = std::fs::read_to_string(&systems).unwrap();
    assert!(text.contains("request_timeout_ms: 2000"), "the fixture changed");
    std::fs::write(&systems, text.replace("request_timeout_ms: 2000", "request_timeout_ms: 30000")).unwrap();
    config
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replicas are competing consumers: two Qiao processes on one queue split the stream, and
/// every message arrives, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_split_one_queue_and_lose_nothing() {
    let prefix = unique_prefix("replicas");
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("PREFIX".into(), prefix.clone()));
    let amqp = Amqp::connect(AMQP_URL).await;
    let first = Qiao::run(&fixture("amqp"), &env).await;
    let second = Qiao::run(&fixture("amqp"), &env).await;
    publish_all(&amqp, &format!("{prefix}.events"), &prefix).await;
    let dlq = format!("{prefix}.in.dlq");
    eventually(Duration::from_secs(120), "every message at the ERP", || async {
        arrived(&stubs).0 + amqp.queue_len(&dlq).await.unwrap_or(0) as usize >= MESSAGES
    })
    .await;
    let (delivered, duplicates) = arrived(&stubs);
    report("two replicas", delivered, 0, duplicates);
    assert_eq!(delivered, MESSAGES, "zero lost");
    let handled =
        |q: &Qiao| q.logs().matches("fate=\"delivered\"").count() + q.logs().matches("\"fate\":\"delivered\"").count();
    let (a, b) = (handled(&first), handled(&second));
    assert!(a > MESSAGES / 10 && b > MESSAGES / 10, "both replicas consumed: {a} and {b}");
    drop((first, second));
    cleanup(&amqp, &prefix).await;
}
