//! Traces, metrics, logs, health: the real binary, real RabbitMQ, stub systems and a small
//! real OTLP/HTTP collector.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::otlp::{self, Collector};
use common::*;
use qiao::config::SystemKind;
use serde_json::{Value, json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn with_prefix(stubs: &Stubs, prefix: &str) -> Vec<(String, String)> {
    let mut env = stubs.env();
    env.retain(|(k, _)| k != "AMQP_PREFIX");
    env.push(("AMQP_PREFIX".into(), prefix.to_string()));
    env
}

fn json_run(config: &std::path::Path, level: &str) -> Vec<String> {
    ["--log-format", "json", "--log-level", level, "run", "--config"]
        .into_iter()
        .map(String::from)
        .chain([config.display().to_string()])
        .collect()
}

/// `traceparent` as (trace id, parent id).
fn traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent `{value}`");
    (parts[1].to_string(), parts[2].to_string())
}

/// Whether `ancestor` is `span` or above it in `spans`.
fn descends(spans: &[otlp::Span], span: &otlp::Span, ancestor: &otlp::Span) -> bool {
    let mut at = span;
    for _ in 0..32 {
        if at.span_id == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == at.parent) {
            Some(p) => at = p,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_caller_through_rabbitmq_to_both_receivers() {
    let collector = Collector::start().await;
    let prefix = unique_prefix("trace");
    let stubs = Stubs::start().await;
    let mut env = with_prefix(&stubs, &prefix);
    env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), collector.endpoint()));
    let qiao = Qiao::spawn(json_run(&routes_dir(), "info"), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;

    let reply = request(
        "POST",
        &qiao.url("/mes/production-completions"),
        &[
            ("content-type", "application/json"),
            ("traceparent", &format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
            ("tracestate", "crm=t61rcWkgMzE"),
            ("baggage", "tenant=hz01"),
        ],
        example("mes-production-performance.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let message_id = reply.json()["message_id"].as_str().unwrap().to_string();

    let (wms, erp) = (stubs.get(SystemKind::Wms).state.clone(), stubs.get(SystemKind::Erp).state.clone());
    eventually(Duration::from_secs(20), "the WMS receipt and the ERP posting", || {
        let (wms, erp) = (wms.clone(), erp.clone());
        async move { wms.received().len() == 1 && erp.received().len() == 1 }
    })
    .await;

    // Both receivers see the caller's trace, each under a span id of Qiao's, with the
    // caller's tracestate and baggage carried across the broker.
    let mut receiver_parents = Vec::new();
    for got in [&wms.received()[0], &erp.received()[0]] {
        let (trace, parent) = traceparent(got.headers.get("traceparent").expect("traceparent at the receiver"));
        assert_eq!(trace, TRACE_ID);
        assert_ne!(parent, CALLER_SPAN, "a new span id per hop");
        assert_eq!(got.headers.get("tracestate").map(String::as_str), Some("crm=t61rcWkgMzE"));
        assert!(got.headers.get("baggage").is_some_and(|b| b.contains("tenant=hz01")), "{:?}", got.headers);
        receiver_parents.push(parent);
    }
    assert_ne!(receiver_parents[0], receiver_parents[1], "one client span per destination");

    // The collector gets the whole tree: server → publish → process → two client calls.
    eventually(Duration::from_secs(20), "the spans of both ingresses at the collector", || {
        let spans = collector.trace(TRACE_ID);
        async move { spans.iter().filter(|s| s.kind == otlp::CLIENT).count() == 2 }
    })
    .await;
    let spans = collector.trace(TRACE_ID);
    if std::env::var_os("QIAO_PRINT_TRACE").is_some() {
        eprintln!("{}", otlp::tree(&spans));
    }
    let one = |kind: i32| {
        let found: Vec<&otlp::Span> = spans.iter().filter(|s| s.kind == kind).collect();
        assert_eq!(found.len(), 1, "one span of kind {kind}: {spans:#?}");
        found[0].clone()
    };
    let server = one(otlp::SERVER);
    let producer = one(otlp::PRODUCER);
    let consumer = one(otlp::CONSUMER);
    assert_eq!(server.parent, CALLER_SPAN, "the server span continues the caller's trace");
    assert_eq!(server.name, "POST /mes/production-completions");
    assert_eq!(server.attr("http.route"), Some("/mes/production-completions"));
    assert_eq!(server.attr("http.response.status_code"), Some("202"));
    assert_eq!(server.attr("qiao.route"), Some("mes-completion-intake"));
    assert_eq!(server.service, "qiao");

    assert!(descends(&spans, &producer, &server), "publish under the HTTP server span");
    assert_eq!(producer.name, format!("publish {prefix}.events"));
    assert_eq!(producer.attr("messaging.system"), Some("rabbitmq"));
    assert_eq!(producer.attr("messaging.operation.type"), Some("publish"));
    assert_eq!(producer.attr("messaging.destination.name"), Some(format!("{prefix}.events").as_str()));
    assert_eq!(producer.attr("messaging.rabbitmq.destination.routing_key"), Some("mes.production.completed"));
    assert_eq!(producer.attr("messaging.message.id"), Some(message_id.as_str()));
    assert_eq!(producer.attr("qiao.system"), Some("mes"));

    assert_eq!(consumer.parent, producer.span_id, "the consumer continues the context the message carried");
    assert_eq!(consumer.name, format!("process {prefix}.mes.production-completed"));
    assert_eq!(consumer.attr("messaging.system"), Some("rabbitmq"));
    assert_eq!(consumer.attr("messaging.operation.type"), Some("process"));
    assert_eq!(consumer.attr("messaging.message.id"), Some(message_id.as_str()));
    assert_eq!(consumer.attr("qiao.route"), Some("mes-completion-to-wms-and-erp"));
    assert_eq!(consumer.attr("qiao.fate"), Some("delivered"));

    let clients: Vec<&otlp::Span> = spans.iter().filter(|s| s.kind == otlp::CLIENT).collect();
    let mut systems: Vec<&str> = clients.iter().filter_map(|c| c.attr("qiao.system")).collect();
    systems.sort();
    assert_eq!(systems, ["erp", "wms"]);
    for client in &clients {
        assert!(descends(&spans, client, &consumer), "deliveries under the consumer span");
        assert_eq!(client.name, "POST");
        assert_eq!(client.attr("http.response.status_code"), Some("200"));
        assert!(receiver_parents.contains(&client.span_id), "the receiver's parent is the client span");
    }
    // The phases in between, on both sides of the broker.
    for (phase, root) in [("validate", &server), ("validate", &consumer), ("map", &consumer)] {
        assert!(
            spans.iter().any(|s| s.name == phase && descends(&spans, s, root) && s.span_id != root.span_id),
            "a `{phase}` span under {}",
            root.name
        );
    }
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    // JSON logs: the access lines of both ingresses carry the trace and their span.
    let access = qiao.access_lines(2, |l| l["trace_id"] == TRACE_ID).await;
    let logs = qiao.logs();
    let span_of = |transport: &str| {
        access
            .iter()
            .find(|l| l["transport"] == transport)
            .unwrap_or_else(|| panic!("{transport} access line:\n{logs}"))["span_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(span_of("http"), server.span_id);
    assert_eq!(span_of("amqp"), consumer.span_id);
    for line in &access {
        assert_eq!(line["message_id"], message_id.as_str());
    }

    drop(qiao); // before deleting: a running Qiao would declare its queues again
    cleanup_prefix(&amqp, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_incoming_context_qiao_starts_a_trace() {
    let collector = Collector::start().await;
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), collector.endpoint()));
    let qiao = Qiao::run(&routes_dir(), &env).await;

    let reply = post_json(&qiao.url("/crm/orders/8015g00000ABCDE"), example("crm-order.json")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let erp = stubs.get(SystemKind::Erp).state.clone();
    let got = erp.received();
    let (trace, parent) = traceparent(got[0].headers.get("traceparent").expect("traceparent"));
    assert_ne!(trace, "0".repeat(32));
    eventually(Duration::from_secs(20), "the new trace at the collector", || {
        let spans = collector.trace(&trace);
        async move { spans.len() >= 2 }
    })
    .await;
    let spans = collector.trace(&trace);
    let server = spans.iter().find(|s| s.kind == otlp::SERVER).expect("server span");
    assert_eq!(server.parent, "", "a root span");
    let client = spans.iter().find(|s| s.kind == otlp::CLIENT).expect("client span");
    assert_eq!(client.span_id, parent);
    assert!(descends(&spans, client, server));
    // The route picks its destination by a condition: that phase has a span of its own.
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for phase in ["parse", "validate", "dispatch", "map"] {
        assert!(names.contains(&phase), "{phase} in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_follows_a_sampled_caller_and_the_ratio_drops_new_traces() {
    let collector = Collector::start().await;
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    for (k, v) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc_endpoint().as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ("OTEL_SERVICE_NAME", "qiao-hangzhou"),
    ] {
        env.push((k.into(), v.into()));
    }
    let qiao = Qiao::run(&routes_dir(), &env).await;
    let url = qiao.url("/crm/orders/8015g00000ABCDE");
    let erp = stubs.get(SystemKind::Erp).state.clone();

    // Ratio 0: a new trace is not kept, yet its context still reaches the receiver, unsampled
    // (and with the random flag of Trace Context Level 2: Qiao's trace ids are random).
    let reply = post_json(&url, example("crm-order.json")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let unsampled = erp.received()[0].headers["traceparent"].clone();
    assert!(unsampled.ends_with("-02"), "{unsampled}");
    let (unsampled_trace, _) = traceparent(&unsampled);

    // A caller that sampled its trace is followed whatever the ratio.
    let parent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let headers = [("content-type", "application/json"), ("traceparent", parent.as_str())];
    let reply = request("POST", &url, &headers, example("crm-order.json")).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(erp.received()[1].headers["traceparent"].ends_with("-01"));
    eventually(Duration::from_secs(20), "the sampled trace over gRPC", || {
        let spans = collector.trace(TRACE_ID);
        async move { spans.iter().any(|s| s.kind == otlp::CLIENT) && spans.iter().any(|s| s.kind == otlp::SERVER) }
    })
    .await;
    assert!(collector.spans().iter().all(|s| s.service == "qiao-hangzhou"));
    assert!(collector.trace(&unsampled_trace).is_empty(), "the unsampled trace is not exported");
}

/// `name{labels} value` lines, checked against the exposition format: every sample belongs
/// to a family with `# TYPE`, values are numbers, histogram buckets only grow.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = BTreeMap::new();
    let mut buckets: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (what, name, value) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            if what == "TYPE" {
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&value), "{line}");
                types.insert(name.to_string(), value.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value is not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("qiao_"), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {family}");
        let labels = &series[name.len()..];
        assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        if types[family] == "counter" {
            assert!(name.ends_with("_total"), "counter {name} ends in _total");
        }
        // Cumulative buckets never shrink (they come in order of `le`).
        if let Some((base, labels)) = series.split_once("_bucket{") {
            let key = format!("{base}{{{}", labels.split("le=").next().unwrap());
            if let Some(prev) = buckets.insert(key, value) {
                assert!(value >= prev, "bucket below the one before: {line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or_else(|| {
        let near: Vec<&String> = samples.keys().filter(|k| k.starts_with(series.split('{').next().unwrap())).collect();
        panic!("no sample {series}; have {near:#?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent_while_the_collector_hangs() {
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    // A collector that takes connections and never answers: export hangs in the background
    // and traffic must not notice.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", blackhole.local_addr().unwrap());
    env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), endpoint));
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for stream in blackhole.incoming().flatten() {
            h.lock().unwrap().push(stream);
        }
    });
    let qiao = Qiao::run(&routes_dir(), &env).await;

    let good = example("crm-order.json");
    let mut bad: Value = serde_json::from_slice(&good).unwrap();
    bad.as_object_mut().unwrap().remove("totalSize");
    for _ in 0..2 {
        let r = post_json(&qiao.url("/crm/orders/8015g00000ABCDE"), good.clone()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    eventually(Duration::from_secs(20), "an export stuck at the collector", || {
        let n = held.lock().unwrap().len();
        async move { n > 0 }
    })
    .await;
    for _ in 0..5 {
        let r = post_json(&qiao.url("/crm/orders/8015g00000ABCDE"), good.clone()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    for _ in 0..3 {
        let r = post_json(&qiao.url("/crm/orders/8015g00000ABCDE"), serde_json::to_vec(&bad).unwrap()).await;
        assert_eq!(r.status, 422);
    }
    let r = post_json(&qiao.url("/no/such/route"), good.clone()).await;
    assert_eq!(r.status, 404);

    // A request is counted when its access line is written, just after the answer went
    // out: wait for the last one.
    let metrics = format!("http://127.0.0.1:{}/metrics", qiao.admin);
    eventually(Duration::from_secs(10), "the last request counted", || {
        let metrics = metrics.clone();
        async move { get(&metrics).await.is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("status=\"404\"")) }
    })
    .await;
    let reply = get(&metrics).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let samples = parse_prometheus(&text);

    let route = "crm-order-to-erp";
    assert_eq!(sample(&samples, &format!("qiao_http_requests_total{{route=\"{route}\",status=\"200\"}}")), 7.0);
    assert_eq!(sample(&samples, &format!("qiao_http_requests_total{{route=\"{route}\",status=\"422\"}}")), 3.0);
    assert_eq!(sample(&samples, "qiao_http_requests_total{route=\"-\",status=\"404\"}"), 1.0);
    assert_eq!(sample(&samples, &format!("qiao_validation_failures_total{{route=\"{route}\"}}")), 3.0);
    assert_eq!(
        sample(&samples, &format!("qiao_deliveries_total{{outcome=\"ok\",route=\"{route}\",system=\"erp\"}}")),
        7.0
    );
    assert_eq!(sample(&samples, &format!("qiao_http_request_duration_seconds_count{{route=\"{route}\"}}")), 10.0);
    assert_eq!(
        sample(&samples, &format!("qiao_phase_duration_seconds_count{{phase=\"validate\",route=\"{route}\"}}")),
        10.0
    );
    assert_eq!(
        sample(&samples, &format!("qiao_phase_duration_seconds_count{{phase=\"deliver\",route=\"{route}\"}}")),
        7.0
    );
    let connected: Vec<(&String, &f64)> =
        samples.iter().filter(|(k, _)| k.starts_with("qiao_amqp_connected{")).collect();
    assert!(!connected.is_empty() && connected.iter().all(|(_, v)| **v == 1.0), "{connected:?}");
    assert!(connected.iter().all(|(k, _)| !k.contains("guest:guest")), "no credentials in labels");
    // No label carries a per-message value (ids, paths, bodies): label values are few.
    for series in samples.keys() {
        assert!(!series.contains("/crm/orders"), "a path as a label value: {series}");
        assert!(!series.contains("SO-"), "an order number as a label value: {series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pii_or_credential_reaches_logs_traces_or_answers() {
    let collector = Collector::start().await;
    let prefix = unique_prefix("redact");
    let stubs = Stubs::start().await;
    let mut env = with_prefix(&stubs, &prefix);
    env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), collector.endpoint()));
    let qiao = Qiao::spawn(json_run(&routes_dir(), "debug"), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;

    let phone = "PII-13805710042";
    let contact = "张PII秘书";
    let token = "s3cr3t-token-9f2a";
    let cookie = "c00kie-77e1";
    let mut notice: Value = serde_json::from_slice(&example("erp-delivery-notice.json")).unwrap();
    let model = notice.pointer_mut("/Model").expect("a Kingdee Model");
    model["FLinkMan"] = json!(contact);
    let valid = serde_json::to_vec(&notice).unwrap();
    notice.pointer_mut("/Model").unwrap()["FLinkPhone"] = json!(phone);
    let invalid = serde_json::to_vec(&notice).unwrap();
    let auth = format!("Bearer {token}");
    let cookies = format!("session={cookie}");
    let headers =
        [("content-type", "application/json"), ("authorization", auth.as_str()), ("cookie", cookies.as_str())];

    let refused = request("POST", &qiao.url("/erp/delivery-notices"), &headers, invalid).await.unwrap();
    assert_eq!(refused.status, 422, "{}", String::from_utf8_lossy(&refused.body));
    let problem = refused.json();
    assert_eq!(problem["errors"][0]["pointer"], "/Model/FLinkPhone", "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("redacted"), "{problem}");
    let accepted = request("POST", &qiao.url("/erp/delivery-notices"), &headers, valid).await.unwrap();
    assert_eq!(accepted.status, 202, "{}", String::from_utf8_lossy(&accepted.body));
    // The receiver gets the data it needs: redaction is for logs, traces and errors.
    let delivered = amqp.drain(&format!("{prefix}.wms.stockout")).await;
    assert_eq!(delivered.len(), 1);
    assert!(String::from_utf8_lossy(&delivered[0].delivery.data).contains(contact));

    eventually(Duration::from_secs(20), "both requests' spans at the collector", || {
        let n = collector.spans().iter().filter(|s| s.kind == otlp::SERVER).count();
        async move { n == 2 }
    })
    .await;
    qiao.access_lines(2, |_| true).await; // every line of both requests is written
    let logs = qiao.logs();
    assert!(logs.contains("DEBUG"), "debug logging is on:\n{logs}");
    assert!(logs.contains("/Model/FLinkPhone"), "the violation is logged, by pointer:\n{logs}");
    let spans = format!("{:?}", collector.spans());
    for secret in [phone, contact, token, cookie] {
        assert!(!String::from_utf8_lossy(&refused.body).contains(secret), "{secret} in the answer");
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        assert!(!spans.contains(secret), "{secret} in the spans");
    }
    drop(qiao); // before deleting: a running Qiao would declare its queues again
    cleanup_prefix(&amqp, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_and_open_circuits_answer_503_and_show_in_readyz_and_metrics() {
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("DOWN_URL".into(), format!("http://127.0.0.1:{}", free_port())));
    let qiao = Qiao::run(&fixture("resilience"), &env).await;

    // 2 at once, then 1 a second: a quick burst meets the limit.
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..20 {
        let r = post_json(&qiao.url("/limited"), r#"{"n": 1}"#).await;
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert!(statuses[..2].iter().all(|s| *s == 200), "the burst passes: {statuses:?}");
    let retry_after: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.header("content-type"), Some("application/problem+json"));
    assert_eq!(limited.json()["type"], "urn:qiao:problem:rate-limited");
    assert_eq!(limited.json()["route"], "limited");

    // Two failed deliveries open the circuit; the third is refused without a connection.
    for _ in 0..2 {
        let r = post_json(&qiao.url("/flaky"), "{}").await;
        assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    }
    let open = post_json(&qiao.url("/flaky"), "{}").await;
    assert_eq!(open.status, 503, "{}", String::from_utf8_lossy(&open.body));
    assert_eq!(open.json()["type"], "urn:qiao:problem:circuit-open");
    let detail = open.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("circuit is open") && !detail.contains("attempt"), "nothing was tried: {detail}");
    // open_ms is 60 s: the sender is told to come back at the next trial, not before.
    let retry_after: u64 = open.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(open.json()["retry_after_seconds"], retry_after);

    let ready = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.unwrap();
    assert_eq!(ready.status, 200, "one failing receiver does not make Qiao unready");
    let body = ready.json();
    let systems = body["systems"].as_array().unwrap();
    assert!(systems.contains(&json!({"system": "flaky", "circuit": "open"})), "{body}");
    assert!(systems.contains(&json!({"system": "erp", "circuit": "closed"})), "{body}");

    let metrics = format!("http://127.0.0.1:{}/metrics", qiao.admin);
    eventually(Duration::from_secs(10), "the circuit-open answer counted", || {
        let metrics = metrics.clone();
        async move { get(&metrics).await.is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("status=\"503\"")) }
    })
    .await;
    let text = get(&metrics).await.unwrap();
    let samples = parse_prometheus(std::str::from_utf8(&text.body).unwrap());
    assert_eq!(sample(&samples, "qiao_rate_limited_total{route=\"limited\"}"), 1.0);
    assert_eq!(sample(&samples, "qiao_http_requests_total{route=\"limited\",status=\"429\"}"), 1.0);
    assert_eq!(sample(&samples, "qiao_circuit_open{system=\"flaky\"}"), 1.0);
    assert_eq!(sample(&samples, "qiao_circuit_open{system=\"erp\"}"), 0.0);

    let health = get(&format!("http://127.0.0.1:{}/healthz", qiao.admin)).await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_broker_that_is_down() {
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    let down = closed_port();
    env.push(("AMQP_URL".into(), format!("amqp://guest:guest@127.0.0.1:{}/%2f", down.port)));
    env.push(("QIAO_TEST_BROKER_DOWN".into(), "1".into()));
    let qiao = Qiao::run(&routes_dir(), &env).await;
    // Until the first attempt to connect has failed the broker is "connecting": not ready
    // either, but without a reason yet. The admin port can answer before that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let ready = get(&format!("http://127.0.0.1:{}/readyz", qiao.admin)).await.unwrap();
        assert_eq!(ready.status, 503);
        let body = ready.json();
        assert_eq!(body["status"], "not ready");
        let broker =
            body["checks"].as_array().unwrap().iter().find(|c| c["name"].as_str().unwrap().starts_with("amqp "));
        let broker = broker.unwrap_or_else(|| panic!("{body}"));
        assert_eq!(broker["ok"], false);
        assert!(!broker["name"].as_str().unwrap().contains("guest:guest"), "no credentials in readyz: {body}");
        let detail = broker["detail"].as_str().unwrap();
        if detail == "connecting" && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        assert!(detail.starts_with("not connected"), "{body}");
        break;
    }
}

/// A broker URL whose peer accepts the connection and never answers the AMQP handshake
/// (not a broker, a broker still starting, a black hole): lapin waits for it without a
/// bound, and readiness says so after a few seconds instead of "connecting".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_when_the_broker_does_not_answer_the_handshake() {
    let port = silent_port().await;
    let stubs = Stubs::start().await;
    let mut env = stubs.env();
    env.push(("AMQP_URL".into(), format!("amqp://guest:guest@127.0.0.1:{port}/%2f")));
    env.push(("QIAO_TEST_BROKER_DOWN".into(), "1".into()));
    let qiao = Qiao::run(&routes_dir(), &env).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", qiao.admin);
    eventually(std::time::Duration::from_secs(12), "readyz to say the handshake gets no answer", || async {
        let ready = get(&readyz).await.unwrap();
        assert_eq!(ready.status, 503);
        let body = ready.json();
        let broker =
            body["checks"].as_array().unwrap().iter().find(|c| c["name"].as_str().unwrap().starts_with("amqp "));
        let detail = broker.unwrap_or_else(|| panic!("{body}"))["detail"].as_str().unwrap().to_string();
        assert!(detail == "connecting" || detail.contains("without an answer to the AMQP handshake"), "{detail}");
        detail.contains("without an answer to the AMQP handshake")
    })
    .await;
}

async fn cleanup_prefix(amqp: &Amqp, prefix: &str) {
    let mut queues = vec![
        format!("{prefix}.wms.stockout"),
        format!("{prefix}.mes.production-completed"),
        format!("{prefix}.mes.production-completed.dlq"),
    ];
    for n in 1..5 {
        queues.push(format!("{prefix}.mes.production-completed.retry.{n}"));
    }
    queues.push(format!("{prefix}.mes.production-completed.retry.circuit"));
    amqp.cleanup(&queues, &[format!("{prefix}.events")]).await;
}
