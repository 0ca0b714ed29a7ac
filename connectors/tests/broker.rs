//! The broker connection against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use qiao_connectors::DeliveryErrorKind;
use qiao_connectors::MessageId;
use qiao_connectors::amqp::{
    AmqpPublish, AmqpSink, BasicAckOptions, Binding, Broker, BrokerConfig, ConsumeSpec, Exchange, Queue, Topology,
    header_str,
};
use tokio::sync::watch;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn topology(exchange: &str, queue: &str) -> Topology {
    Topology {
        exchanges: vec![Exchange { name: exchange.into(), kind: "topic".into(), passive: false }],
        queues: vec![Queue { name: queue.into(), dead_letter_to: None, passive: false }],
        bindings: vec![Binding {
            queue: queue.into(),
            exchange: exchange.into(),
            routing_key: "erp.#".into(),
            passive: false,
        }],
    }
}

/// A sink for `system` publishing to `exchange` (5 s for the confirm).
fn sink(system: &str, broker: &Broker, exchange: &str) -> AmqpSink {
    AmqpSink {
        system: system.into(),
        broker: broker.clone(),
        exchange: exchange.into(),
        confirm_timeout: Duration::from_secs(5),
        declare: true,
    }
}

/// `{}` to the sink's exchange with `key`.
fn empty<'a>(key: &'a str, id: &'a MessageId) -> AmqpPublish<'a> {
    AmqpPublish { routing_key: key, exchange: None, body: b"{}", message_id: id, headers: vec![], timeout: None }
}

async fn started(url: &str, topology: Topology) -> (Broker, watch::Sender<bool>) {
    let broker = Broker::new(BrokerConfig {
        url: url.into(),
        topology,
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
    });
    let (stop, rx) = watch::channel(false);
    let b = broker.clone();
    tokio::spawn(async move { b.run(rx).await });
    (broker, stop)
}

async fn cleanup(queue: &str, exchange: &str) {
    let conn = lapin::Connection::connect(URL, Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    let _ = ch.exchange_delete(exchange.into(), Default::default()).await;
}

#[tokio::test]
async fn publishes_with_confirms_and_reports_unroutable_messages() {
    let (exchange, queue) = (format!("qiao.test.{}", suffix()), format!("qiao.test.q.{}", suffix()));
    let (broker, stop) = started(URL, topology(&exchange, &queue)).await;
    assert!(broker.wait_connected(Duration::from_secs(10)).await, "{:?}", broker.last_error());
    let sink = sink("wms", &broker, &exchange);
    let id = MessageId::generate();
    sink.send(AmqpPublish {
        routing_key: "erp.delivery.audited",
        exchange: None,
        body: br#"{"deliveryOrderCode":"FHTZD000001"}"#,
        message_id: &id,
        headers: vec![("x-qiao-route", "erp-delivery-to-wms")],
        timeout: None,
    })
    .await
    .expect("confirmed");

    // It is in the queue, persistent, with its id and headers.
    let conn = lapin::Connection::connect(URL, Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a message");
    assert_eq!(got.delivery.properties.message_id().as_ref().map(|s| s.as_str()), Some(id.as_str()));
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(2));
    assert_eq!(
        header_str(got.delivery.properties.headers().as_ref(), "x-qiao-route").as_deref(),
        Some("erp-delivery-to-wms")
    );

    // A routing key nothing is bound to: the broker returns it, and that is an error.
    let err = sink.send(empty("mes.nothing", &id)).await.unwrap_err();
    assert_eq!(err.kind, DeliveryErrorKind::Unroutable, "{err}");
    assert!(err.detail.contains("mes.nothing"));

    let _ = stop.send(true);
    cleanup(&queue, &exchange).await;
}

#[tokio::test]
async fn publishing_without_a_broker_fails_at_once() {
    // Bound and not listening: refused, and no other test's listener can take the port.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let (broker, stop) = started(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), Topology::default()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!broker.is_connected());
    assert!(broker.last_error().is_some());
    let sink = AmqpSink {
        system: "wms".into(),
        broker,
        exchange: "x".into(),
        confirm_timeout: Duration::from_secs(5),
        declare: true,
    };
    let id = MessageId::generate();
    let started = std::time::Instant::now();
    let err = sink.send(empty("k", &id)).await.unwrap_err();
    assert_eq!(err.kind, DeliveryErrorKind::BrokerUnavailable);
    assert!(err.detail.contains("guest:***"), "the password is redacted: {}", err.detail);
    assert!(started.elapsed() < Duration::from_secs(2), "no waiting for a connection");
    let _ = stop.send(true);
}

#[tokio::test]
async fn an_attempt_that_gets_no_handshake_is_timed_for_readiness() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let (broker, stop) = started(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), Topology::default()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!broker.is_connected());
    let waited = broker.connecting_for().expect("an attempt under way");
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    let _ = stop.send(true);
}

#[tokio::test]
async fn consumes_with_manual_acks() {
    let (exchange, queue) = (format!("qiao.test.{}", suffix()), format!("qiao.test.q.{}", suffix()));
    let (broker, stop) = started(URL, topology(&exchange, &queue)).await;
    assert!(broker.wait_connected(Duration::from_secs(10)).await);
    let sink = sink("erp", &broker, &exchange);
    for i in 0..20 {
        let id = MessageId::from_sender(&format!("m-{i}"));
        sink.send(empty("erp.x", &id)).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spec = ConsumeSpec {
        queue: queue.clone(),
        prefetch: 8,
        concurrency: 4,
        tag: format!("test-{}", suffix()),
        drain: Duration::from_secs(1),
    };
    let (cstop, crx) = watch::channel(false);
    let b = broker.clone();
    tokio::spawn(async move {
        b.consume(
            spec,
            move |d| {
                let tx = tx.clone();
                async move {
                    let id = d.properties.message_id().as_ref().map(|s| s.to_string());
                    d.acker.ack(BasicAckOptions::default()).await.unwrap();
                    let _ = tx.send(id);
                }
            },
            crx,
        )
        .await
    });
    let mut ids = Vec::new();
    while ids.len() < 20 {
        let id = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("deliveries arrive").unwrap();
        ids.push(id.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    let _ = cstop.send(true);
    let _ = stop.send(true);
    cleanup(&queue, &exchange).await;
}

#[tokio::test]
async fn a_consumer_on_a_missing_queue_does_not_take_the_connection_down() {
    let (exchange, queue) = (format!("qiao.test.{}", suffix()), format!("qiao.test.q.{}", suffix()));
    let (broker, stop) = started(URL, topology(&exchange, &queue)).await;
    assert!(broker.wait_connected(Duration::from_secs(10)).await);
    let generation = broker.subscribe().borrow().as_ref().map(|l| l.generation);
    let (cstop, crx) = watch::channel(false);
    let b = broker.clone();
    let spec = ConsumeSpec {
        queue: format!("qiao.test.missing.{}", suffix()),
        prefetch: 1,
        concurrency: 1,
        tag: format!("test-{}", suffix()),
        drain: Duration::from_millis(100),
    };
    tokio::spawn(async move { b.consume(spec, |_d| async {}, crx).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(broker.subscribe().borrow().as_ref().map(|l| l.generation), generation, "same connection");
    let sink = sink("wms", &broker, &exchange);
    let id = MessageId::generate();
    sink.send(empty("erp.x", &id)).await.expect("publishing still works");
    let _ = cstop.send(true);
    let _ = stop.send(true);
    cleanup(&queue, &exchange).await;
}

#[tokio::test]
async fn a_publish_to_a_missing_exchange_fails_alone_and_the_next_one_works() {
    let (exchange, queue) = (format!("qiao.test.{}", suffix()), format!("qiao.test.q.{}", suffix()));
    let (broker, stop) = started(URL, topology(&exchange, &queue)).await;
    assert!(broker.wait_connected(Duration::from_secs(10)).await);
    let sink = sink("wms", &broker, &exchange);
    let id = MessageId::generate();
    let missing = format!("qiao.test.missing.{}", suffix());
    let err = sink.send(AmqpPublish { exchange: Some(&missing), ..empty("erp.x", &id) }).await.unwrap_err();
    assert!(err.detail.contains("NOT_FOUND") || err.detail.contains("not"), "{err}");
    for _ in 0..3 {
        sink.send(empty("erp.x", &id)).await.expect("the publishes after it go through");
    }
    // At once: publishes share channels, but only with publishes to the same exchange, so the
    // channel a missing exchange closes takes none of the others with it.
    let sink = std::sync::Arc::new(sink);
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (sink, missing) = (sink.clone(), missing.clone());
        tasks.push(tokio::spawn(async move {
            let id = MessageId::generate();
            let to_missing = i % 4 == 0;
            let publish = AmqpPublish { exchange: to_missing.then_some(missing.as_str()), ..empty("erp.x", &id) };
            (to_missing, sink.send(publish).await.map_err(|e| e.kind))
        }));
    }
    let mut failed_good = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (false, Err(kind)) => failed_good.push(kind),
            (true, Ok(())) => panic!("a publish to a missing exchange was confirmed"),
            _ => {}
        }
    }
    let _ = stop.send(true);
    cleanup(&queue, &exchange).await;
    assert!(failed_good.is_empty(), "publishes to the existing exchange failed: {failed_good:?}");
}

#[tokio::test]
async fn a_queue_deleted_behind_the_consumer_is_declared_again() {
    let (exchange, queue) = (format!("qiao.test.{}", suffix()), format!("qiao.test.q.{}", suffix()));
    let (broker, stop) = started(URL, topology(&exchange, &queue)).await;
    assert!(broker.wait_connected(Duration::from_secs(10)).await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (cstop, crx) = watch::channel(false);
    let b = broker.clone();
    let spec = ConsumeSpec {
        queue: queue.clone(),
        prefetch: 4,
        concurrency: 1,
        tag: format!("t-{}", suffix()),
        drain: Duration::from_millis(100),
    };
    tokio::spawn(async move {
        b.consume(
            spec,
            move |d| {
                let tx = tx.clone();
                async move {
                    d.acker.ack(BasicAckOptions::default()).await.unwrap();
                    let _ = tx.send(());
                }
            },
            crx,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let conn = lapin::Connection::connect(URL, Default::default()).await.unwrap();
    conn.create_channel()
        .await
        .unwrap()
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let sink = sink("erp", &broker, &exchange);
    let id = MessageId::generate();
    // Until the queue is back, the message is unroutable; then it is consumed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sent = sink.send(empty("erp.x", &id)).await;
        if sent.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the queue was not declared again: {sent:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("consumed after the queue came back");
    let _ = cstop.send(true);
    let _ = stop.send(true);
    cleanup(&queue, &exchange).await;
}

/// `basic.return` names no delivery tag: with many publishes in flight on one channel, upstream
/// lapin paired returns with the wrong confirms (83 of 2,000 each way here), so an unroutable
/// message was reported confirmed. The patched lapin (third_party/lapin) pairs each return
/// with its own publish; here up to 256 share a channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_routable_and_unroutable_publishes_are_told_apart() {
    let (exchange, queue) = (format!("qiao.test.{}", suffix()), format!("qiao.test.q.{}", suffix()));
    let (broker, stop) = started(URL, topology(&exchange, &queue)).await;
    assert!(broker.wait_connected(Duration::from_secs(10)).await, "{:?}", broker.last_error());
    let sink =
        std::sync::Arc::new(AmqpSink { confirm_timeout: Duration::from_secs(30), ..sink("wms", &broker, &exchange) });
    let n = 4000;
    let mut tasks = Vec::new();
    for i in 0..n {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let routable = i % 2 == 0;
            let id = MessageId::generate();
            let r = sink.send(empty(if routable { "erp.x" } else { "mes.nothing" }, &id)).await;
            (routable, r.map_err(|e| e.kind))
        }));
    }
    let mut wrong = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (true, Ok(())) | (false, Err(DeliveryErrorKind::Unroutable)) => {}
            (true, _) => wrong.0 += 1,
            (false, _) => wrong.1 += 1,
        }
    }
    // The burst is over: the channels it opened closed as their last publishes ended, but
    // for the idle ones kept for the next (at most two per exchange).
    let id = MessageId::generate();
    let one = empty("erp.x", &id);
    sink.send(one).await.expect("confirmed");
    let idle = broker.idle_publisher_channels();
    let idle_ok = (1..=2).contains(&idle);
    let conn = lapin::Connection::connect(URL, Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let held = ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap()
        .message_count();
    let _ = stop.send(true);
    cleanup(&queue, &exchange).await;
    assert_eq!(wrong, (0, 0), "(routable ones not reported confirmed, unroutable ones not reported returned)");
    assert_eq!(held as usize, n / 2 + 1, "the queue holds every routable message");
    assert!(idle_ok, "{idle} idle publisher channels after the burst");
}
