//! Reloading the configuration while traffic flows (SIGHUP, `POST /admin/reload`,
//! `--watch`): the new map applies, no request fails, no message is lost or delivered twice;
//! a broken configuration is refused and the old one keeps serving; a removed AMQP route
//! stops consuming and a route added back starts again, its waiting messages delivered.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use qiao::config::SystemKind;

const ORDER_PATH: &str = "/crm/orders/801J000000k3QpRIAU";

fn env_for(stubs: &Stubs, prefix: &str) -> Vec<(String, String)> {
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "AMQP_PREFIX");
    env.push(("AMQP_PREFIX".into(), prefix.into()));
    env
}

async fn metric(qiao: &Qiao, line_start: &str) -> f64 {
    let text = get(&format!("http://127.0.0.1:{}/metrics", qiao.admin)).await.expect("metrics");
    String::from_utf8_lossy(&text.body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The queues the shipped routes declare under `prefix`, for cleanup.
fn shipped_queues(prefix: &str) -> Vec<String> {
    let base = format!("{prefix}.mes.production-completed");
    let mut q =
        vec![format!("{prefix}.wms.stockout"), base.clone(), format!("{base}.dlq"), format!("{base}.retry.circuit")];
    q.extend((1..5).map(|n| format!("{base}.retry.{n}")));
    q
}

/// Messages (by id) each stub received, counted.
fn received_by_id(stubs: &Stubs, kind: SystemKind) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for r in stubs.get(kind).state.received() {
        if let Some(id) = r.message_id {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_map_applies_on_sighup_with_no_failed_request_and_no_lost_message() {
    let prefix = unique_prefix("reload");
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    let qiao = Qiao::run(routes.path(), &env_for(&stubs, &prefix)).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let queue = format!("{prefix}.mes.production-completed");
    let completion = example("mes-production-performance.json");

    // HTTP and AMQP traffic all through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let http_load = {
        let (stop, url) = (stop.clone(), qiao.url(ORDER_PATH));
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("reload-http-{n}");
                let r = request(
                    "POST",
                    &url,
                    &[("content-type", "application/json"), ("idempotency-key", &key)],
                    example("crm-order.json"),
                )
                .await
                .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
                statuses.push(r);
            }
            statuses
        })
    };
    let mut published = Vec::new();
    let publish_some = async |n: usize, published: &mut Vec<String>| {
        for _ in 0..n {
            let id = format!("reload-amqp-{}", published.len());
            amqp.publish("", &queue, &completion, &id).await.await.expect("confirmed");
            published.push(id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    publish_some(25, &mut published).await;

    let erp = stubs.get(SystemKind::Erp).state.clone();
    assert!(erp.received().iter().all(|r| !r.body.to_string().contains("CRM单 ")), "not yet changed");
    edit(
        &routes.path().join("crm-order-to-erp.yaml"),
        "template: \"CRM订单 {OrderNumber}",
        "template: \"CRM单 {OrderNumber}",
    );
    edit(
        &routes.path().join("mes-completion-to-wms-and-erp.yaml"),
        "template: \"MES {$root",
        "template: \"MES报工 {$root",
    );
    qiao.signal("HUP");
    publish_some(25, &mut published).await;
    eventually(Duration::from_secs(10), "the changed CRM map at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().iter().any(|r| r.body.to_string().contains("CRM单 ")) }
    })
    .await;
    publish_some(25, &mut published).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = http_load.await.unwrap();

    // Every HTTP request answered 200, before, during and after the reload.
    assert!(statuses.len() > 20, "too little HTTP traffic: {}", statuses.len());
    for (i, s) in statuses.iter().enumerate() {
        let (status, body) = s.as_ref().unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(*status, 200, "request {i}: {body}");
    }
    // Every AMQP message reached the WMS and the ERP exactly once.
    eventually(Duration::from_secs(20), "every completion at the WMS and the ERP", || {
        let (wms, erp) = (received_by_id(&stubs, SystemKind::Wms), received_by_id(&stubs, SystemKind::Erp));
        let ids = published.clone();
        async move { ids.iter().all(|id| wms.contains_key(id) && erp.contains_key(id)) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (wms, erp_ids) = (received_by_id(&stubs, SystemKind::Wms), received_by_id(&stubs, SystemKind::Erp));
    for id in &published {
        assert_eq!((wms.get(id), erp_ids.get(id)), (Some(&1), Some(&1)), "{id} delivered once to each");
    }
    let after = erp.received().iter().filter(|r| r.body.to_string().contains("MES报工 ")).count();
    assert!(after > 0, "the changed MES map reached the ERP");
    assert_eq!(metric(&qiao, "qiao_config_reloads_total{result=\"ok\"}").await, 1.0);
    let logs = qiao.logs();
    assert!(logs.contains("configuration reloaded"), "{logs}");
    assert!(!logs.contains("stopping the consumer"), "a changed map restarts no consumer:\n{logs}");

    drop(qiao);
    amqp.cleanup(&shipped_queues(&prefix), &[format!("{prefix}.events")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_with_every_problem_and_the_old_one_serves() {
    let prefix = unique_prefix("reload-broken");
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    let mut env = env_for(&stubs, &prefix);
    env.push(("QIAO_ADMIN_TOKEN".into(), "s3cret-admin".into()));
    let qiao = Qiao::run(routes.path(), &env).await;
    let reload_url = format!("http://127.0.0.1:{}/admin/reload", qiao.admin);

    let r = request("POST", &reload_url, &[], Vec::new()).await.unwrap();
    assert_eq!(r.status, 401, "the admin token is needed");
    assert!(r.header("www-authenticate").is_some());
    let r = request("POST", &reload_url, &[("authorization", "Bearer wrong")], Vec::new()).await.unwrap();
    assert_eq!(r.status, 401);

    let file = routes.path().join("crm-order-to-erp.yaml");
    edit(&file, "system: erp\n", "system: erpp\n");
    edit(&file, "template: \"CRM订单 {OrderNumber}", "template: \"CRM单 {OrderNumber}");
    edit(&file, "FQty: { from: Quantity, as: number }", "FQty: { from: Quantity, as: numbr }");
    let r = request("POST", &reload_url, &[("authorization", "Bearer s3cret-admin")], Vec::new()).await.unwrap();
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let problem = r.json();
    assert_eq!(problem["type"], "urn:qiao:problem:config-invalid");
    let problems: Vec<String> =
        problem["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert!(
        problems.iter().any(|p| p.contains("crm-order-to-erp.yaml:") && p.contains("unknown system `erpp`")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("numbr")), "every problem at once: {problems:?}");

    // The old configuration serves on, and says why it is still the one.
    let order = post_json(&qiao.url(ORDER_PATH), example("crm-order.json")).await;
    assert_eq!(order.status, 200, "{}", String::from_utf8_lossy(&order.body));
    let erp = stubs.get(SystemKind::Erp).state.received();
    assert!(erp.last().unwrap().body.to_string().contains("CRM订单 "), "the old map");
    let ready = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.unwrap();
    assert_eq!(ready.status, 200);
    let ready = ready.json();
    assert!(
        ready["config"]["last_error"]["problems"][0].as_str().unwrap().contains("crm-order-to-erp.yaml"),
        "{ready}"
    );
    assert!(ready["checks"][0]["detail"].as_str().unwrap().contains("was refused"), "{ready}");
    assert_eq!(metric(&qiao, "qiao_config_reloads_total{result=\"error\"}").await, 1.0);
    assert!(qiao.logs().contains("reload refused"));

    // Fixed: applied, and the error is gone.
    edit(&file, "system: erpp\n", "system: erp\n");
    edit(&file, "as: numbr }", "as: number }");
    let r = request("POST", &reload_url, &[("authorization", "Bearer s3cret-admin")], Vec::new()).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "reloaded");
    let ready = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.unwrap().json();
    assert!(ready["config"]["last_error"].is_null(), "{ready}");
    let order = post_json(&qiao.url(ORDER_PATH), example("crm-order.json")).await;
    assert_eq!(order.status, 200);
    assert!(stubs.get(SystemKind::Erp).state.received().last().unwrap().body.to_string().contains("CRM单 "));
    drop(qiao);
    let amqp = Amqp::connect(AMQP_URL).await;
    amqp.cleanup(&shipped_queues(&prefix), &[format!("{prefix}.events")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_amqp_route_stops_consuming_and_comes_back_with_nothing_lost() {
    let prefix = unique_prefix("reload-route");
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    let qiao = Qiao::run(routes.path(), &env_for(&stubs, &prefix)).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let queue = format!("{prefix}.mes.production-completed");
    let reload_url = format!("http://127.0.0.1:{}/admin/reload", qiao.admin);
    eventually(Duration::from_secs(10), "the route's consumer", || {
        let (amqp, queue) = (&amqp, queue.clone());
        async move { amqp.consumer_count(&queue).await == Some(1) }
    })
    .await;

    let route = routes.path().join("mes-completion-to-wms-and-erp.yaml");
    let aside = routes.path().join("tests/mes-route.yaml.off");
    std::fs::rename(&route, &aside).unwrap();
    let r = request("POST", &reload_url, &[], Vec::new()).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let consumers = r.json()["consumers"].clone();
    assert_eq!(consumers[0]["name"], "mes-completion-to-wms-and-erp");
    assert_eq!(consumers[0]["change"], "removed");
    eventually(Duration::from_secs(10), "the consumer to stop", || {
        let (amqp, queue) = (&amqp, queue.clone());
        async move { amqp.consumer_count(&queue).await == Some(0) }
    })
    .await;

    let completion = example("mes-production-performance.json");
    let ids: Vec<String> = (0..20).map(|i| format!("waiting-{i}")).collect();
    for id in &ids {
        amqp.publish("", &queue, &completion, id).await.await.expect("confirmed");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(amqp.queue_len(&queue).await, Some(20), "the messages wait in the queue");
    assert!(received_by_id(&stubs, SystemKind::Wms).is_empty());

    std::fs::rename(&aside, &route).unwrap();
    let r = request("POST", &reload_url, &[], Vec::new()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["consumers"][0]["change"], "added");
    eventually(Duration::from_secs(20), "the waiting messages at the WMS and the ERP", || {
        let (wms, erp) = (received_by_id(&stubs, SystemKind::Wms), received_by_id(&stubs, SystemKind::Erp));
        let ids = ids.clone();
        async move { ids.iter().all(|id| wms.get(id) == Some(&1) && erp.get(id) == Some(&1)) }
    })
    .await;
    drop(qiao);
    amqp.cleanup(&shipped_queues(&prefix), &[format!("{prefix}.events")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_a_saved_file_reloads_by_itself() {
    let prefix = unique_prefix("reload-watch");
    let stubs = Stubs::start().await;
    let routes = routes_copy();
    let args = vec!["run".to_string(), "--config".into(), routes.path().display().to_string(), "--watch".into()];
    let qiao = Qiao::spawn(args, &env_for(&stubs, &prefix)).await;
    edit(
        &routes.path().join("crm-order-to-erp.yaml"),
        "template: \"CRM订单 {OrderNumber}",
        "template: \"CRM单 {OrderNumber}",
    );
    eventually(Duration::from_secs(10), "the reload", || {
        let qiao = &qiao;
        async move { metric(qiao, "qiao_config_reloads_total{result=\"ok\"}").await == 1.0 }
    })
    .await;
    let order = post_json(&qiao.url(ORDER_PATH), example("crm-order.json")).await;
    assert_eq!(order.status, 200);
    assert!(stubs.get(SystemKind::Erp).state.received().last().unwrap().body.to_string().contains("CRM单 "));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&qiao, "qiao_config_reloads_total{result=\"ok\"}").await, 1.0, "one change, one reload");
    drop(qiao);
    let amqp = Amqp::connect(AMQP_URL).await;
    amqp.cleanup(&shipped_queues(&prefix), &[format!("{prefix}.events")]).await;
}
