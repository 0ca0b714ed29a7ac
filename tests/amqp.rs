//! AMQP against the real RabbitMQ: publish with confirms, consume with manual acks, dead
//! letters with reasons, retries with an attempt count, fan-out without duplicates.

mod common;

use std::time::Duration;

use common::*;
use qiao::config::SystemKind;
use qiao::stub::Fault;
use serde_json::json;

struct Setup {
    stubs: Stubs,
    qiao: Qiao,
    amqp: Amqp,
    prefix: String,
}

impl Setup {
    async fn start(test: &str) -> Setup {
        let prefix = unique_prefix(test);
        let stubs = Stubs::start().await;
        let mut env = stubs.env();
        env.push(("PREFIX".into(), prefix.clone()));
        let qiao = Qiao::run(&fixture("amqp"), &env).await;
        let amqp = Amqp::connect(AMQP_URL).await;
        Setup { stubs, qiao, amqp, prefix }
    }

    fn q(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Stops Qiao first: a running Qiao whose consumer loses its queue declares the whole
    /// topology again, and would bring back what is being deleted.
    async fn cleanup(self) {
        let Setup { qiao, amqp, prefix, .. } = self;
        drop(qiao);
        amqp.cleanup(&amqp_fixture_queues(&prefix), &[format!("{prefix}.events")]).await;
    }
}

/// Routable and unroutable publishes at once: every 202 is a message the broker holds and
/// every unroutable one is a 502, whatever the broker's confirms batch together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_never_answer_202_for_a_returned_message() {
    let s = Setup::start("mixed").await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (routable, unroutable) = (s.qiao.url(&format!("/publish/MO-{i}")), s.qiao.url("/unroutable"));
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"code":"MO-{i}","warehouse":"WH-HZ-01"}}"#);
            (i % 2 == 0, post_json(if i % 2 == 0 { &routable } else { &unroutable }, body).await.status)
        }));
    }
    let mut answers = std::collections::BTreeMap::new();
    for t in tasks {
        *answers.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(answers, [((false, 502), 200), ((true, 202), 200)].into_iter().collect(), "(routable, status): count");
    assert_eq!(s.amqp.drain(&s.q("wms.inbox")).await.len(), 200, "the broker holds every message answered 202");
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_amqp_answers_202_only_after_the_broker_confirmed() {
    let s = Setup::start("publish").await;
    let reply = request(
        "POST",
        &s.qiao.url("/publish/FHTZD000517"),
        &[("content-type", "application/json"), ("idempotency-key", "erp-FHTZD000517")],
        serde_json::to_vec(&json!({"code": "FHTZD000517", "warehouse": "WH-HZ-01"})).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["message_id"], "erp-FHTZD000517");

    let got = s.amqp.drain(&s.q("wms.inbox")).await;
    assert_eq!(got.len(), 1, "the broker holds exactly the message that was answered 202");
    let m = &got[0].delivery;
    assert_eq!(m.routing_key.as_str(), "wms.stockout.FHTZD000517", "routing key template");
    assert_eq!(m.properties.message_id().as_ref().map(|s| s.as_str()), Some("erp-FHTZD000517"));
    assert_eq!(*m.properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(m.properties.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    assert_eq!(amqp_header(&m.properties, "x-qiao-route").as_deref(), Some("publish"));
    assert_eq!(amqp_header(&m.properties, "x-warehouse").as_deref(), Some("WH-HZ-01"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.data).unwrap()["code"], "FHTZD000517");

    // Nothing is bound for this routing key: an error, not a silent loss.
    let reply = post_json(&s.qiao.url("/unroutable"), r#"{"code":"x"}"#).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["type"], "urn:qiao:problem:unroutable");
    assert!(reply.json()["detail"].as_str().unwrap().contains("nothing.is.bound.here"));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_messages_are_delivered_over_http_and_acked() {
    let s = Setup::start("consume").await;
    for i in 0..25 {
        s.amqp
            .publish(
                &s.exchange(),
                "mes.test.completed",
                format!(r#"{{"code":"MO250318-{i:02}"}}"#).as_bytes(),
                &format!("mes-{i}"),
            )
            .await
            .await
            .unwrap();
    }
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    eventually(Duration::from_secs(20), "25 deliveries at the ERP", || {
        let erp = erp.clone();
        async move { erp.stats()["distinct_message_ids"] == 25 }
    })
    .await;
    let got = erp.received();
    assert!(got.iter().all(|r| r.body["formid"] == "PRD_INSTOCK"));
    assert!(
        got.iter()
            .any(|r| r.body["data"]["Model"]["FMoBillNo"] == "MO250318-07" && r.message_id.as_deref() == Some("mes-7"))
    );
    eventually(Duration::from_secs(10), "the queue to be empty (all acked)", || async {
        s.amqp.queue_len(&s.q("in")).await == Some(0)
    })
    .await;
    assert_eq!(erp.stats()["duplicate_deliveries"], 0);
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_dead_lettered_at_once_with_the_reason() {
    let s = Setup::start("invalid").await;
    s.amqp.publish(&s.exchange(), "mes.test.x", b"{not json", "bad-json").await.await.unwrap();
    s.amqp.publish(&s.exchange(), "mes.test.x", br#"{"qty": 1}"#, "no-code").await.await.unwrap();
    eventually(Duration::from_secs(15), "2 dead letters", || async {
        s.amqp.queue_len(&s.q("in.dlq")).await == Some(2)
    })
    .await;
    let mut dead = s.amqp.drain(&s.q("in.dlq")).await;
    dead.sort_by_key(|m| m.delivery.properties.message_id().as_ref().map(|s| s.to_string()));
    let (json, schema) = (&dead[0].delivery.properties, &dead[1].delivery.properties);
    assert_eq!(json.message_id().as_ref().unwrap().as_str(), "bad-json");
    assert_eq!(amqp_header(json, "x-qiao-error-kind").as_deref(), Some("malformed-json"));
    assert_eq!(amqp_header(schema, "x-qiao-error-kind").as_deref(), Some("schema-violation"));
    assert!(amqp_header(schema, "x-qiao-error-detail").unwrap().contains("code"));
    assert_eq!(amqp_header(schema, "x-qiao-error-pointers").as_deref(), Some("/code"));
    for p in [json, schema] {
        assert_eq!(amqp_header(p, "x-qiao-route").as_deref(), Some("consume-to-http"));
        assert_eq!(amqp_header(p, "x-qiao-original-queue"), Some(s.q("in")));
        assert_eq!(amqp_header(p, "x-qiao-attempts").as_deref(), Some("1"), "permanent failures are not retried");
        let at = amqp_header(p, "x-qiao-failed-at").unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    }
    assert_eq!(&dead[0].delivery.data[..], b"{not json", "the original body is kept");
    assert!(s.stubs.get(SystemKind::Erp).state.received().is_empty());
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_then_dead_lettered_with_the_attempt_count() {
    let s = Setup::start("retry").await;
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    erp.add_fault(Fault { status: Some(503), times: 100, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.test.x", br#"{"code":"MO-1"}"#, "mo-1").await.await.unwrap();
    eventually(Duration::from_secs(20), "the dead letter", || async {
        s.amqp.queue_len(&s.q("in.dlq")).await == Some(1)
    })
    .await;
    let dead = s.amqp.drain(&s.q("in.dlq")).await;
    let p = &dead[0].delivery.properties;
    assert_eq!(amqp_header(p, "x-qiao-attempts").as_deref(), Some("3"), "max_attempts: 3");
    assert_eq!(amqp_header(p, "x-qiao-error-kind").as_deref(), Some("receiver-failed"));
    assert!(amqp_header(p, "x-qiao-error-detail").unwrap().contains("503"));
    assert!(p.headers().as_ref().unwrap().inner().contains_key("x-death"), "the retries went through the TTL queues");
    assert_eq!(erp.stats()["received"], 3, "one HTTP attempt per delivery attempt");
    assert!(erp.received().is_empty());

    // A receiver that recovers before the last attempt gets the message once.
    erp.clear();
    erp.add_fault(Fault { status: Some(503), times: 1, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.test.x", br#"{"code":"MO-2"}"#, "mo-2").await.await.unwrap();
    eventually(Duration::from_secs(20), "delivery after one retry", || {
        let erp = erp.clone();
        async move { erp.received().len() == 1 }
    })
    .await;
    assert_eq!(s.amqp.queue_len(&s.q("in.dlq")).await, Some(0));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_retries_only_the_destination_that_failed() {
    let s = Setup::start("fanout").await;
    let (erp, wms) = (s.stubs.get(SystemKind::Erp).state.clone(), s.stubs.get(SystemKind::Wms).state.clone());
    wms.add_fault(Fault { status: Some(503), times: 3, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.fan.completed", br#"{"code":"MO250318-01"}"#, "fan-1").await.await.unwrap();
    eventually(Duration::from_secs(20), "the WMS to take the message", || {
        let wms = wms.clone();
        async move { wms.received().len() == 1 }
    })
    .await;
    assert_eq!(wms.stats()["received"], 4, "three 503s, then success");
    assert_eq!(wms.received()[0].body, json!({"entryOrder": {"entryOrderCode": "MO250318-01", "orderType": "SCRK"}}));
    assert_eq!(erp.stats()["received"], 1, "the ERP took it the first time and never again");
    assert_eq!(
        erp.received()[0].body,
        json!({"formid": "PRD_INSTOCK", "data": {"Model": {"FMoBillNo": "MO250318-01"}}})
    );
    assert_eq!(erp.stats()["duplicate_deliveries"], 0);
    assert_eq!(s.amqp.queue_len(&s.q("fan.dlq")).await, Some(0));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_async_routes_answer_503_and_readiness_says_why() {
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("PREFIX".into(), unique_prefix("down")));
    let down = closed_port();
    env.push(("AMQP_URL".into(), format!("amqp://guest:guest@127.0.0.1:{}/%2f", down.port)));
    env.push(("QIAO_TEST_BROKER_DOWN".into(), "1".into()));
    let qiao = Qiao::run(&fixture("amqp"), &env).await;
    let reply = post_json(&qiao.url("/publish/X1"), r#"{"code":"X1","warehouse":"WH-HZ-01"}"#).await;
    assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
    let p = reply.json();
    assert_eq!(p["type"], "urn:qiao:problem:broker-unavailable");
    assert!(p["detail"].as_str().unwrap().contains("guest:***"), "credentials are redacted: {p}");
    // Until the first attempt to connect has failed the check says "connecting" (seen on a
    // loaded CI box); then it must say why.
    let admin = qiao.admin;
    eventually(Duration::from_secs(10), "/readyz to say the broker is not connected", || async move {
        let ready = get(&format!("http://127.0.0.1:{admin}/readyz")).await.unwrap();
        assert_eq!(ready.status, 503);
        ready.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ok"] == false && c["detail"].as_str().unwrap().contains("not connected"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_flows_erp_delivery_to_wms_and_mes_completion_fan_out() {
    let prefix = unique_prefix("shipped");
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "AMQP_PREFIX");
    env.push(("AMQP_PREFIX".into(), prefix.clone()));
    let qiao = Qiao::run(&routes_dir(), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;

    // F3: an audited delivery notice goes to the WMS's queue as a Qimen stockout order.
    let reply = post_json(&qiao.url("/erp/delivery-notices"), example("erp-delivery-notice.json")).await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let got = amqp.drain(&format!("{prefix}.wms.stockout")).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery.routing_key.as_str(), "wms.stockout.create.WH-HZ-01");
    let order: serde_json::Value = serde_json::from_slice(&got[0].delivery.data).unwrap();
    assert_eq!(order["deliveryOrder"]["deliveryOrderCode"], "FHTZD000231");
    assert_eq!(order["deliveryOrder"]["warehouseCode"], "WH-HZ-01", "CK001 through the warehouses lookup");
    assert_eq!(order["deliveryOrder"]["createTime"], "2025-04-08 00:00:00");
    assert_eq!(order["deliveryOrder"]["receiverInfo"]["company"], "杭州恒泽机电设备有限公司");
    assert_eq!(order["orderLines"].as_array().unwrap().len(), 2);
    assert_eq!(
        order["orderLines"][0],
        json!({"orderLineNo": "1", "itemCode": "FG-BJ-3000", "itemName": "变频空压机 3kW", "inventoryType": "ZP",
               "planQty": 20, "batchCode": "FG250325-L2-01", "outBizCode": "FHTZD000231-1"})
    );

    // F4: a production completion is taken in, buffered on the broker, then fanned out.
    let reply = post_json(&qiao.url("/mes/production-completions"), example("mes-production-performance.json")).await;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let (wms, erp) = (stubs.get(SystemKind::Wms).state.clone(), stubs.get(SystemKind::Erp).state.clone());
    eventually(Duration::from_secs(20), "the WMS receipt and the ERP posting", || {
        let (wms, erp) = (wms.clone(), erp.clone());
        async move { wms.received().len() == 1 && erp.received().len() == 1 }
    })
    .await;
    let receipt = &wms.received()[0];
    assert_eq!(receipt.query.as_deref(), Some("method=taobao.qimen.entryorder.create"));
    assert_eq!(
        receipt.body,
        json!({"entryOrder": {"entryOrderCode": "SCRK-MO250318-01", "orderType": "SCRK", "ownerCode": "HZHZ", "warehouseCode": "WH-HZ-01",
                              "relatedOrders": [{"orderType": "MO", "orderCode": "MO250318-01"}]},
               "orderLines": [{"orderLineNo": "1", "itemCode": "FG-BJ-3000", "inventoryType": "ZP", "planQty": 20,
                               "batchCode": "FG250325-L2-01", "productDate": "2025-03-25"}]})
    );
    let posting = &erp.received()[0].body;
    assert_eq!(posting["formid"], "PRD_INSTOCK");
    assert_eq!(
        posting["data"]["Model"]["FEntity"][0],
        json!({"FMaterialId": {"FNumber": "FG-BJ-3000"}, "FRealQty": 20, "FLot": {"FNumber": "FG250325-L2-01"},
               "FMoBillNo": "MO250318-01", "FStockId": {"FNumber": "CK001"}, "FNote": "MES PP-20250325-L2-001"})
    );
    assert_eq!(receipt.message_id, erp.received()[0].message_id, "one message id from intake to both receivers");

    let mut queues = vec![format!("{prefix}.wms.stockout"), format!("{prefix}.mes.production-completed.dlq")];
    queues.push(format!("{prefix}.mes.production-completed"));
    for n in 1..5 {
        queues.push(format!("{prefix}.mes.production-completed.retry.{n}"));
    }
    queues.push(format!("{prefix}.mes.production-completed.retry.circuit"));
    drop(qiao); // before deleting: a running Qiao would declare its queues again
    amqp.cleanup(&queues, &[format!("{prefix}.events")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_declare_false_a_missing_topology_is_reported_and_nothing_is_created() {
    let prefix = unique_prefix("verify");
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("PREFIX".into(), prefix.clone()));
    env.push(("QIAO_TEST_BROKER_DOWN".into(), "1".into()));
    let qiao = Qiao::run(&fixture("amqp-verify"), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", qiao.admin);

    eventually(Duration::from_secs(10), "readiness to name the missing exchange", || async {
        let r = get(&readyz).await.unwrap();
        r.status == 503 && r.json()["checks"].to_string().contains(&format!("verifying exchange `{prefix}.events`"))
    })
    .await;
    assert_eq!(amqp.queue_len(&format!("{prefix}.in")).await, None, "nothing was declared");

    // The owner of the broker creates the topology; Qiao finds it on its next attempt.
    let ch = amqp.conn.create_channel().await.unwrap();
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(
        format!("{prefix}.events").as_str().into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
        Default::default(),
    )
    .await
    .unwrap();
    let queues = ["in", "in.retry.1", "in.retry.circuit", "in.dlq"].map(|q| format!("{prefix}.{q}"));
    for q in &queues {
        ch.queue_declare(q.as_str().into(), durable, Default::default()).await.unwrap();
    }
    ch.queue_bind(
        format!("{prefix}.in").as_str().into(),
        format!("{prefix}.events").as_str().into(),
        "mes.#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(15), "readiness once the topology exists", || async {
        get(&readyz).await.unwrap().status == 200
    })
    .await;
    amqp.publish(&format!("{prefix}.events"), "mes.x", br#"{"code":"MO-9"}"#, "verify-1").await.await.unwrap();
    let erp = stubs.get(SystemKind::Erp).state.clone();
    eventually(Duration::from_secs(10), "the delivery", || {
        let erp = erp.clone();
        async move { erp.received().len() == 1 }
    })
    .await;
    drop(qiao); // before deleting: a running Qiao would declare its queues again
    amqp.cleanup(&queues, &[format!("{prefix}.events")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_progress_counts_only_when_it_was_written_by_the_same_route() {
    let s = Setup::start("progress").await;
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    let publish = |route: &'static str, id: &'static str| {
        let (ch, ex) = (s.amqp.channel.clone(), s.exchange());
        async move {
            let mut h = lapin::types::FieldTable::default();
            h.insert("x-qiao-route".into(), lapin::types::AMQPValue::LongString(route.into()));
            h.insert("x-qiao-delivered".into(), lapin::types::AMQPValue::LongString("erp".into()));
            let props =
                lapin::BasicProperties::default().with_message_id(id.into()).with_headers(h).with_delivery_mode(2);
            ch.basic_publish(ex.as_str().into(), "mes.test.x".into(), Default::default(), br#"{"code":"MO-7"}"#, props)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // Moved here from another route's queue: its progress means nothing here.
    publish("some-other-route", "moved").await;
    eventually(Duration::from_secs(10), "the moved message at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().iter().any(|r| r.message_id.as_deref() == Some("moved")) }
    })
    .await;
    // A retry copy of this route that the ERP already took: acknowledged, not sent again.
    publish("consume-to-http", "already").await;
    eventually(Duration::from_secs(10), "the queue to drain", || async {
        s.amqp.queue_len(&s.q("in")).await == Some(0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!erp.received().iter().any(|r| r.message_id.as_deref() == Some("already")));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_does_not_use_up_the_attempts_of_consumed_messages() {
    let s = Setup::start("circuit").await;
    let oa = s.stubs.get(SystemKind::Oa).state.clone();
    // One failure opens the OA's circuit for 1.5 s; the route allows two attempts, and its
    // retries come back every 75–300 ms, so several of them meet the open circuit.
    oa.add_fault(Fault { status: Some(503), times: 1, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.oa.done", br#"{"code":"MO-9"}"#, "oa-1").await.await.unwrap();
    eventually(Duration::from_secs(15), "the OA to take the message once its circuit closed", || {
        let oa = oa.clone();
        async move { oa.received().len() == 1 }
    })
    .await;
    assert_eq!(oa.stats()["received"], 2, "one 503, then the trial that succeeded; nothing while the circuit was open");
    assert_eq!(oa.received()[0].body["msg"]["text"]["content"], "工单 MO-9 已完工");
    assert_eq!(s.amqp.queue_len(&s.q("oa.dlq")).await, Some(0), "waiting on an open circuit is not an attempt");
    // The copy waited for the circuit's next trial (1.5 s) rather than bouncing through the
    // retry queue every 75–300 ms backoff: one wait, not several.
    let logs = s.qiao.logs();
    assert_eq!(logs.matches("circuit is open; waiting without counting the attempt").count(), 1, "{logs}");
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_waiting_for_an_open_circuit_does_not_hold_up_other_retries() {
    let s = Setup::start("hol").await;
    let oa = s.stubs.get(SystemKind::Oa).state.clone();
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    let circuit_queue = s.q("hol.retry.circuit");
    // One 503 opens oa-paused's circuit for 10 s; the message's retry meets it and waits
    // for the next trial in the circuit queue.
    oa.add_fault(Fault { status: Some(503), times: 1, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.hol.oa", br#"{"code":"MO-OA"}"#, "hol-oa-0").await.await.unwrap();
    eventually(Duration::from_secs(10), "the first copy to wait for the circuit", || async {
        s.amqp.queue_len(&circuit_queue).await == Some(1)
    })
    .await;
    // A second message for the OA meets the open circuit on its first attempt: its copy
    // waits too, not in the first retry queue.
    s.amqp.publish(&s.exchange(), "mes.hol.oa", br#"{"code":"MO-OA"}"#, "hol-oa-1").await.await.unwrap();
    eventually(Duration::from_secs(10), "the second copy to wait for the circuit", || async {
        s.amqp.queue_len(&circuit_queue).await == Some(2)
    })
    .await;
    assert_eq!(s.amqp.queue_len(&s.q("hol.retry.1")).await, Some(0));
    // A message of the same route fails once at the ERP. Its retry (150–300 ms after its
    // first attempt, in the first retry queue) is not held up by the copies that wait for
    // the circuit (10 s): it reaches the ERP while they still wait.
    erp.add_fault(Fault { status: Some(503), times: 1, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.hol.erp", br#"{"code":"MO-ERP"}"#, "hol-erp").await.await.unwrap();
    eventually(Duration::from_secs(30), "the ERP message's retry", || {
        let erp = erp.clone();
        async move { erp.received().len() == 1 }
    })
    .await;
    assert_eq!(erp.stats()["received"], 2, "the 503, then the retry");
    // Had the retry waited behind a copy, that copy would have expired first.
    assert_eq!(s.amqp.queue_len(&circuit_queue).await, Some(2), "the copies still wait for the circuit");
    assert!(oa.received().is_empty());
    // Then the circuit's trial takes the waiting copies, whose waits were not attempts.
    eventually(Duration::from_secs(30), "both OA messages after the circuit's next trial", || {
        let oa = oa.clone();
        async move { oa.received().len() == 2 }
    })
    .await;
    let mut ids: Vec<_> = oa.received().into_iter().filter_map(|r| r.message_id).collect();
    ids.sort();
    assert_eq!(ids, ["hol-oa-0", "hol-oa-1"]);
    assert_eq!(s.amqp.queue_len(&s.q("hol.dlq")).await, Some(0));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_delivery_in_progress_finish_and_acknowledges_it() {
    let mut s = Setup::start("sigterm").await;
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    // The ERP takes 1.5 s to answer: SIGTERM arrives while the delivery is under way.
    erp.add_fault(Fault { delay_ms: 1500, times: 1, ..Fault::default() });
    s.amqp.publish(&s.exchange(), "mes.test.x", br#"{"code":"MO-SIGTERM"}"#, "sigterm-1").await.await.unwrap();
    eventually(Duration::from_secs(10), "Qiao to take the message", || async {
        s.amqp.queue_len(&s.q("in")).await == Some(0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = s.qiao.terminate(Duration::from_secs(20)).await;
    let logs = s.qiao.logs();
    assert!(status.success(), "exit status {status}:\n{logs}");
    assert_eq!(erp.received().len(), 1, "the delivery in progress finished:\n{logs}");
    assert_eq!(erp.received()[0].message_id.as_deref(), Some("sigterm-1"));
    // Acknowledged before the channel closed: nothing went back to the queue.
    assert_eq!(s.amqp.queue_len(&s.q("in")).await, Some(0), "the message was handed back:\n{logs}");
    assert!(logs.contains("AMQP connections closed"), "{logs}");
    s.cleanup().await;
}
