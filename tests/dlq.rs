//! `qiao dlq` against the real RabbitMQ and a running Qiao: list and show dead letters
//! without taking them, preview them against the current config, re-drive the selected
//! ones, and a re-drive killed half way that loses nothing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use qiao::config::SystemKind;
use qiao::stub::Fault;

const ROUTE: &str = "consume-to-http";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

struct Setup {
    stubs: Stubs,
    qiao: Qiao,
    amqp: Amqp,
    prefix: String,
    env: Vec<(String, String)>,
}

impl Setup {
    async fn start(test: &str) -> Setup {
        let prefix = unique_prefix(test);
        let stubs = Stubs::start().await;
        let mut env = stubs.env();
        env.push(("PREFIX".into(), prefix.clone()));
        let qiao = Qiao::run(&fixture("amqp"), &env).await;
        let amqp = Amqp::connect(AMQP_URL).await;
        Setup { stubs, qiao, amqp, prefix, env }
    }

    fn q(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn dlq(&self) -> String {
        self.q("in.dlq")
    }

    /// A message to the route's queue, with a trace context.
    async fn send(&self, id: &str, body: &str) {
        let mut headers = qiao_connectors::amqp::FieldTable::default();
        use qiao_connectors::amqp::FieldTableExt;
        headers.put_str("traceparent", &format!("00-{TRACE_ID}-00f067aa0ba902b7-01"));
        let props = lapin::BasicProperties::default()
            .with_message_id(id.into())
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        let exchange = format!("{}.events", self.prefix);
        self.amqp
            .channel
            .basic_publish(exchange.as_str().into(), "mes.test.x".into(), Default::default(), body.as_bytes(), props)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn wait_dead_letters(&self, n: u32) {
        eventually(Duration::from_secs(30), &format!("{n} dead letters"), || async {
            self.amqp.queue_len(&self.dlq()).await == Some(n)
        })
        .await;
    }

    /// `qiao dlq ARGS --config <fixture>`: (exit code, stdout, stderr).
    fn dlq_cmd(&self, args: &[&str]) -> (i32, String, String) {
        self.dlq_cmd_in(&fixture("amqp"), args)
    }

    fn dlq_cmd_in(&self, config: &Path, args: &[&str]) -> (i32, String, String) {
        let config = config.display().to_string();
        let args: Vec<&str> = ["dlq"].into_iter().chain(args.iter().copied()).chain(["--config", &config]).collect();
        qiao_command(&args, &self.env)
    }

    /// The message ids in the dead-letter queue, in order, as `dlq ls --route` lists them.
    fn listed_ids(&self) -> Vec<String> {
        let (code, out, err) = self.dlq_cmd(&["ls", "--route", ROUTE]);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .skip(1)
            .filter(|l| !l.contains("read without taking"))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    async fn cleanup(self) {
        let Setup { qiao, amqp, prefix, .. } = self;
        drop(qiao);
        amqp.cleanup(&amqp_fixture_queues(&prefix), &[format!("{prefix}.events")]).await;
    }
}

/// Three dead letters, one per cause: malformed JSON, a schema violation, a receiver that
/// refused the message (400).
async fn three_dead_letters(s: &Setup) {
    s.stubs.get(SystemKind::Erp).state.add_fault(Fault { status: Some(400), times: 1, ..Default::default() });
    s.send("rejected", r#"{"code":"MO-1"}"#).await;
    s.wait_dead_letters(1).await;
    s.send("bad-json", "{not json").await;
    s.wait_dead_letters(2).await;
    s.send("qty-text", r#"{"code":"MO-2","qty":"7"}"#).await;
    s.wait_dead_letters(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_show_read_dead_letters_without_taking_them() {
    let s = Setup::start("dlq-ls").await;
    three_dead_letters(&s).await;

    let (code, out, err) = s.dlq_cmd(&["ls"]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with(ROUTE)).unwrap_or_else(|| panic!("no row for the route:\n{out}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), [ROUTE, &s.dlq(), "3"], "{out}");

    let (code, out, err) = s.dlq_cmd(&["ls", "--route", ROUTE]);
    assert_eq!(code, 0, "{err}");
    let line =
        |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no {id}:\n{out}")).to_string();
    for (id, kind) in
        [("rejected", "receiver-rejected"), ("bad-json", "malformed-json"), ("qty-text", "schema-violation")]
    {
        let l = line(id);
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[2], kind, "{l}");
        assert_eq!(cols[3], "1", "attempts: {l}");
        assert_eq!(cols[4], "mes.test.x", "the original routing key: {l}");
        assert!(cols[1].ends_with('Z'), "when: {l}");
    }
    assert!(line("rejected").contains("erp answered 400"), "{out}");
    assert!(out.contains(&format!("3 messages in {}", s.dlq())), "{out}");

    // Reading took nothing and kept the order, however often it is done.
    let first = s.listed_ids();
    assert_eq!(first, ["rejected", "bad-json", "qty-text"]);
    assert_eq!(s.listed_ids(), first);
    assert_eq!(s.amqp.queue_len(&s.dlq()).await, Some(3));

    let (code, out, err) = s.dlq_cmd(&["show", "--route", ROUTE, "rejected"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "message id      rejected",
        "error kind      receiver-rejected",
        &format!("trace id        {TRACE_ID}"),
        "redelivered     yes",
        "x-qiao-original-queue = ",
        "\"code\": \"MO-1\"",
    ] {
        assert!(out.contains(want), "`{want}` not in:\n{out}");
    }
    let (code, out, _) = s.dlq_cmd(&["show", "--route", ROUTE, "bad-json"]);
    assert_eq!(code, 0);
    assert!(out.contains("body\n{not json"), "a body that is not JSON is shown as it is:\n{out}");
    let (code, _, err) = s.dlq_cmd(&["show", "--route", ROUTE, "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no message with id `nobody`") && err.contains("3 messages"), "{err}");
    let (code, _, err) = s.dlq_cmd(&["ls", "--route", "publish"]);
    assert_eq!(code, 1);
    assert!(err.contains("served over HTTP"), "{err}");

    // Everything is still there, in order, each marked redelivered by the reads.
    let left = s.amqp.drain(&s.dlq()).await;
    let ids: Vec<String> =
        left.iter().map(|m| m.delivery.properties.message_id().as_ref().unwrap().to_string()).collect();
    assert_eq!(ids, first);
    assert!(left.iter().all(|m| m.delivery.redelivered));
    s.cleanup().await;
}

/// One message's lines of a preview: its own, then the indented ones.
fn block(out: &str, id: &str) -> String {
    let start = out.find(&format!("{id}  dead-lettered as")).unwrap_or_else(|| panic!("no {id}:\n{out}"));
    let mut lines = out[start..].lines();
    let head = lines.next().unwrap_or_default();
    std::iter::once(head).chain(lines.take_while(|l| l.starts_with("  "))).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_says_what_would_pass_now_and_moves_nothing() {
    let s = Setup::start("dlq-preview").await;
    three_dead_letters(&s).await;

    let (code, out, err) = s.dlq_cmd(&["replay", "--route", ROUTE, "--all", "--preview"]);
    assert_eq!(code, 1, "some would still fail: exit 1\n{out}{err}");
    // The receiver is fine again: the refused message would pass, and this is what it gets.
    let rejected = block(&out, "rejected");
    assert!(rejected.contains("dead-lettered as receiver-rejected: erp answered 400"), "{rejected}");
    assert!(rejected.contains("now: would pass"), "{rejected}");
    assert!(rejected.contains("\"FMoBillNo\": \"MO-1\""), "the mapped output:\n{rejected}");
    assert!(block(&out, "bad-json").contains("now: would fail with malformed-json"), "{out}");
    let qty = block(&out, "qty-text");
    assert!(qty.contains("now: would fail with schema-violation") && qty.contains("/qty"), "{qty}");
    assert!(out.contains("3 selected: 1 would pass, 2 would fail; nothing was moved"), "{out}");

    // With the schema fixed, the schema violation would pass too.
    let fixed = tempfile::tempdir().unwrap();
    for f in ["routes.yaml", "systems.yaml", "schemas/code.json"] {
        std::fs::create_dir_all(fixed.path().join("schemas")).unwrap();
        std::fs::copy(fixture("amqp").join(f), fixed.path().join(f)).unwrap();
    }
    edit(
        &fixed.path().join("schemas/code.json"),
        r#""qty": { "type": "number" }"#,
        r#""qty": { "type": ["number", "string"] }"#,
    );
    let (code, out, err) = s.dlq_cmd_in(fixed.path(), &["replay", "--route", ROUTE, "--id", "qty-text", "--preview"]);
    assert_eq!(code, 0, "{out}{err}");
    let qty = block(&out, "qty-text");
    assert!(qty.contains("now: would pass") && qty.contains("\"FMoBillNo\": \"MO-2\""), "{qty}");
    assert!(out.contains("1 selected: 1 would pass, 0 would fail"), "{out}");

    assert_eq!(s.amqp.queue_len(&s.dlq()).await, Some(3), "a preview moves nothing");
    assert!(s.stubs.get(SystemKind::Erp).state.received().is_empty(), "and sends nothing");
    s.cleanup().await;
}

/// `--preview --against DIR`: each message against the config it failed with (the field
/// changes of every destination's output, old → new), and the destinations that took a
/// message before (`x-qiao-delivered`) shown as skipped, which the re-drive then skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_against_the_old_config_shows_field_changes_and_skips_what_was_delivered() {
    const FAN: &str = "fan-out";
    let s = Setup::start("dlq-against").await;
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    let wms = s.stubs.get(SystemKind::Wms).state.clone();
    let exchange = format!("{}.events", s.prefix);
    let fan_dlq = s.q("fan.dlq");
    let dead = |n: u32| {
        let (amqp, q) = (&s.amqp, fan_dlq.clone());
        eventually(Duration::from_secs(30), "fan-out dead letters", move || {
            let q = q.clone();
            async move { amqp.queue_len(&q).await == Some(n) }
        })
    };
    // fan-1: the ERP refuses it, the WMS takes it: dead-lettered with `x-qiao-delivered: wms`.
    erp.add_fault(Fault { status: Some(400), times: 1, ..Default::default() });
    s.amqp.publish(&exchange, "mes.fan.x", br#"{"code":"MO-7"}"#, "fan-1").await.await.unwrap();
    dead(1).await;
    // fan-2: both refuse it; no destination took it.
    erp.add_fault(Fault { status: Some(400), times: 1, ..Default::default() });
    wms.add_fault(Fault { status: Some(400), times: 1, ..Default::default() });
    s.amqp.publish(&exchange, "mes.fan.x", br#"{"code":"MO-8"}"#, "fan-2").await.await.unwrap();
    dead(2).await;
    fn ids(stub: &qiao::stub::StubState) -> Vec<String> {
        stub.received().iter().filter_map(|r| r.message_id.clone()).collect()
    }
    assert_eq!(ids(&wms), ["fan-1"], "the WMS took fan-1 only");
    assert!(ids(&erp).is_empty());
    let (code, out, _) = s.dlq_cmd(&["show", "--route", FAN, "fan-1"]);
    assert_eq!(code, 0);
    assert!(out.contains("x-qiao-delivered = wms\n"), "{out}");

    // The fix: the ERP's bill number gets a prefix, the WMS's order type changes.
    let fixed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fixed.path().join("schemas")).unwrap();
    for f in ["routes.yaml", "systems.yaml", "schemas/code.json"] {
        std::fs::copy(fixture("amqp").join(f), fixed.path().join(f)).unwrap();
    }
    let routes = fixed.path().join("routes.yaml");
    edit(
        &routes,
        "          data.Model.FMoBillNo: code\n      - system: wms",
        "          data.Model.FMoBillNo: { template: \"MES-{code}\" }\n      - system: wms",
    );
    edit(&routes, "entryOrder.orderType: { const: SCRK }", "entryOrder.orderType: { const: SCRK2 }");
    let old = fixture("amqp").display().to_string();
    let (code, out, err) =
        s.dlq_cmd_in(fixed.path(), &["replay", "--route", FAN, "--all", "--preview", "--against", &old]);
    assert_eq!(code, 0, "both would pass: {out}{err}");

    let one = block(&out, "fan-1");
    assert!(one.contains("dead-lettered as receiver-rejected: erp answered 400"), "{one}");
    assert!(one.contains("now: would pass"), "{one}");
    assert!(one.contains(&format!("against {old}: passes too")), "{one}");
    assert!(one.contains("\"FMoBillNo\": \"MES-MO-7\""), "the new output:\n{one}");
    assert!(one.contains("      ~ /data/Model/FMoBillNo: \"MO-7\" → \"MES-MO-7\""), "the field diff:\n{one}");
    assert!(one.contains("  to wms: skipped: it took the message before (x-qiao-delivered)"), "{one}");
    // A destination that is skipped gets nothing: neither a body nor a diff.
    assert!(!one.contains("SCRK") && !one.contains("/qimen/router"), "{one}");
    assert_eq!(one.matches("against ").count(), 2, "the message, and its one destination sent:\n{one}");

    let two = block(&out, "fan-2");
    assert!(!two.contains("skipped"), "nothing took fan-2:\n{two}");
    assert!(two.contains("      ~ /data/Model/FMoBillNo: \"MO-8\" → \"MES-MO-8\""), "{two}");
    assert!(two.contains("  to wms: POST /qimen/router?method=taobao.qimen.entryorder.create"), "{two}");
    assert!(two.contains("      ~ /entryOrder/orderType: \"SCRK\" → \"SCRK2\""), "{two}");
    assert_eq!(two.matches("      ~ ").count(), 2, "two fields changed, one per destination:\n{two}");
    assert!(out.contains("2 selected: 2 would pass, 0 would fail; nothing was moved"), "{out}");

    // The other way round: what the old config makes of them, against the fixed one.
    let fixed_dir = fixed.path().display().to_string();
    let (code, out, _) = s.dlq_cmd(&["replay", "--route", FAN, "--id", "fan-2", "--preview", "--against", &fixed_dir]);
    assert_eq!(code, 0);
    assert!(block(&out, "fan-2").contains("~ /entryOrder/orderType: \"SCRK2\" → \"SCRK\""), "{out}");

    // A message that fails now and passed there.
    edit(&fixed.path().join("schemas/code.json"), r#""qty": { "type": "number" }"#, r#""qty": { "type": "string" }"#);
    erp.add_fault(Fault { status: Some(400), times: 1, ..Default::default() });
    wms.add_fault(Fault { status: Some(400), times: 1, ..Default::default() });
    s.amqp.publish(&exchange, "mes.fan.x", br#"{"code":"MO-9","qty":7}"#, "fan-3").await.await.unwrap();
    dead(3).await;
    let (code, out, _) =
        s.dlq_cmd_in(fixed.path(), &["replay", "--route", FAN, "--id", "fan-3", "--preview", "--against", &old]);
    assert_eq!(code, 1, "it would fail now: {out}");
    let three = block(&out, "fan-3");
    assert!(
        three.contains("now: would fail with schema-violation")
            && three.contains(&format!("against {old}: passes there")),
        "{three}"
    );

    // The mistakes: --against without --preview, a directory with no config.
    let (code, _, err) = s.dlq_cmd(&["replay", "--route", FAN, "--all", "--against", &old]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--preview"), "{err}");
    let none = tempfile::tempdir().unwrap();
    let (code, _, err) =
        s.dlq_cmd(&["replay", "--route", FAN, "--all", "--preview", "--against", &none.path().display().to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("(--against) has errors"), "{err}");

    assert_eq!(s.amqp.queue_len(&fan_dlq).await, Some(3), "a preview moves nothing");
    assert_eq!(ids(&wms), ["fan-1"], "and sends nothing");
    assert!(ids(&erp).is_empty());

    // The re-drive does what the preview said: fan-1 goes to the ERP, not again to the WMS.
    let (code, out, err) = s.dlq_cmd(&["replay", "--route", FAN, "--id", "fan-1", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(15), "fan-1 at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().iter().any(|r| r.message_id.as_deref() == Some("fan-1")) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ids(&erp), ["fan-1"]);
    assert_eq!(ids(&wms), ["fan-1"], "the WMS, which took it before, got no second copy");
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_ids_are_redriven_and_the_others_stay_in_order() {
    let s = Setup::start("dlq-select").await;
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    erp.add_fault(Fault { status: Some(400), times: 8, ..Default::default() });
    for i in 0..8 {
        s.send(&format!("m-{i}"), &format!(r#"{{"code":"MO-{i}"}}"#)).await;
        s.wait_dead_letters(i + 1).await;
    }
    let before = s.listed_ids();
    assert_eq!(before.len(), 8);

    // Not on a terminal and without --yes: refused, nothing moved.
    let (code, _, err) = s.dlq_cmd(&["replay", "--route", ROUTE, "--id", "m-3"]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(s.amqp.queue_len(&s.dlq()).await, Some(8));

    let (code, out, err) = s.dlq_cmd(&[
        "replay",
        "--route",
        ROUTE,
        "--id",
        "m-3",
        "--id",
        "m-6",
        "--id",
        "m-99",
        "--yes",
        "--in-flight",
        "4",
    ]);
    assert_eq!(code, 1, "an id that is not there fails the command\n{out}{err}");
    assert!(out.contains("re-driven m-3\nre-driven m-6\n"), "{out}");
    assert!(out.contains("2 re-driven; 6 not selected left in place") && out.contains("not found: m-99"), "{out}");

    eventually(Duration::from_secs(15), "m-3 and m-6 at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().len() == 2 }
    })
    .await;
    let got = erp.received();
    let mut ids: Vec<&str> = got.iter().map(|r| r.message_id.as_deref().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["m-3", "m-6"], "the original message ids");
    let traceparent = got[0].headers.get("traceparent").cloned().unwrap_or_default();
    assert!(traceparent.contains(TRACE_ID), "the re-driven message stays in its trace: {traceparent:?}");

    let after = s.listed_ids();
    let expected: Vec<String> = before.iter().filter(|i| *i != "m-3" && *i != "m-6").cloned().collect();
    assert_eq!(after, expected, "the others stay, in their order");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(erp.received().len(), 2, "nothing else was sent");
    s.cleanup().await;
}

/// The proof of the issue: 1,000 dead letters, a re-drive killed with SIGKILL half way,
/// then run again. Every message is delivered, none is lost, and at most one (the message
/// whose copy was published when the kill came, not yet taken out of the dead-letter
/// queue) is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_killed_half_way_loses_nothing() {
    const N: usize = 1000;
    let s = Setup::start("dlq-kill").await;
    let erp = s.stubs.get(SystemKind::Erp).state.clone();
    erp.add_fault(Fault { status: Some(400), times: N as u32, ..Default::default() });
    let exchange = format!("{}.events", s.prefix);
    let mut confirms = Vec::new();
    for i in 0..N {
        confirms.push(
            s.amqp
                .publish(&exchange, "mes.test.x", format!(r#"{{"code":"MO-{i}"}}"#).as_bytes(), &format!("k-{i}"))
                .await,
        );
    }
    for c in confirms {
        c.await.unwrap();
    }
    s.wait_dead_letters(N as u32).await;
    erp.clear();

    let out = tempfile::NamedTempFile::new().unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(["dlq", "replay", "--route", ROUTE, "--all", "--yes", "--rate", "400/s"])
        .args(["--config", &fixture("amqp").display().to_string()])
        .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("RUST_LOG")
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "300 re-driven messages at the ERP", || {
        let erp = erp.clone();
        async move { erp.received().len() >= 300 }
    })
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let said = std::fs::read_to_string(out.path()).unwrap().lines().filter(|l| l.starts_with("re-driven ")).count();
    // Once the broker has requeued what the killed process held, the dead letters and the
    // delivered messages add up, give or take the one in the window.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let left = loop {
        let dlq = s.amqp.queue_len(&s.dlq()).await.unwrap_or(0) as usize;
        let distinct = erp.stats()["distinct_message_ids"].as_u64().unwrap() as usize;
        if s.amqp.queue_len(&s.q("in")).await == Some(0) && (N..=N + 1).contains(&(dlq + distinct)) {
            break dlq;
        }
        assert!(std::time::Instant::now() < deadline, "{dlq} dead letters and {distinct} delivered after the kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(left > 0 && left <= N - 300, "killed half way: {left} left in the dead-letter queue");
    eprintln!("first run: killed after {said} confirmed re-drives; {left} left in the dead-letter queue");

    let started = std::time::Instant::now();
    // Many copies in flight at once this time: a run that is not cut off duplicates nothing.
    let (code, out2, err) = s.dlq_cmd(&["replay", "--route", ROUTE, "--all", "--yes", "--in-flight", "64"]);
    assert_eq!(code, 0, "{err}");
    let took = started.elapsed();
    eprintln!(
        "second run: {left} re-driven in {took:?} ({:.0}/s, the process's start included)",
        left as f64 / took.as_secs_f64()
    );
    assert!(out2.contains(&format!("{left} re-driven; 0 not selected")), "{out2}");
    eventually(Duration::from_secs(60), "every message at the ERP", || {
        let erp = erp.clone();
        async move { erp.stats()["distinct_message_ids"] == N }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in erp.received() {
        *counts.entry(r.message_id.clone().unwrap()).or_default() += 1;
    }
    let missing: Vec<String> = (0..N).map(|i| format!("k-{i}")).filter(|id| !counts.contains_key(id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("delivered twice: {twice:?}");
    assert!(
        twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
        "at most the one message in the window: {twice:?}"
    );
    assert_eq!(s.amqp.queue_len(&s.dlq()).await, Some(0));
    s.cleanup().await;
}
