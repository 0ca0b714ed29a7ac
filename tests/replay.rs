//! `qiao replay` and `qiao journal to-test` through the real binary, on journal files made
//! from the shipped route tests: every case's message driven through the shipped config (the
//! driver `qiao run` runs, deliveries captured) and written as the journal writes it.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use common::*;
use qiao::config::{self, Source as RouteSource};
use qiao::journal::record::{Body, Outcome, Output, Record, Source, VERSION, Validation, Verdict};
use qiao::testing::prepared_cases;
use qiao_connectors::{Message, MessageId, TraceContext};
use serde_json::Value;

fn qiao(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    qiao_command(args, env)
}

/// The shipped route tests' messages, `copies` times each (ids `rec-<copy>-<case>`), as
/// records of the shipped config. Proxy routes map nothing and are left out.
fn record_shipped(copies: usize) -> Vec<Record> {
    let config = config::load(&routes_dir(), &config::OfflineEnv).expect("the shipped config loads");
    let cases: Vec<_> = prepared_cases(&routes_dir(), &config).unwrap().into_iter().map(Result::unwrap).collect();
    let mut out = Vec::new();
    for copy in 0..copies {
        for (i, case) in cases.iter().enumerate() {
            let route = config.route(&case.route).unwrap();
            if route.kind == qiao::config::RouteKind::Proxy {
                continue;
            }
            let id = format!("rec-{copy}-{i}");
            let message = Message {
                id: MessageId::from_sender(&id),
                headers: case.input.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
                body: case.input.body.clone(),
                trace: TraceContext::default(),
                received_at: std::time::SystemTime::now(),
            };
            let params: Vec<(String, String)> = case.input.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let run = qiao::replay::drive(route, &message, &params);
            let source = match &route.source {
                RouteSource::Http { path, .. } => Source::Http {
                    method: "POST".into(),
                    // As received: the route's path with its parameters filled in.
                    path: case.input.path.clone().unwrap_or_else(|| {
                        params.iter().fold(path.clone(), |p, (k, v)| {
                            p.replace(&format!("{{{k}}}"), v).replace(&format!("{{*{k}}}"), v)
                        })
                    }),
                    params: params.clone(),
                },
                RouteSource::Amqp(a) => Source::Amqp { queue: a.queue.clone(), attempt: 1 },
            };
            let body = match serde_json::from_slice::<Value>(&case.input.body) {
                Ok(v) => Body::Json(std::sync::Arc::new(v)),
                Err(_) => Body::Text(String::from_utf8_lossy(&case.input.body).into_owned()),
            };
            let outputs = run
                .outgoing
                .iter()
                .enumerate()
                .filter_map(|(index, o)| {
                    o.as_ref().map(|o| Output {
                        index,
                        system: route.destinations[index].system.name.clone(),
                        body: Body::Json(o.value.clone()),
                    })
                })
                .collect();
            let refused = run.refused.as_ref();
            out.push(Record {
                v: VERSION,
                id,
                trace_id: format!("{:032x}", 0x4bf9_2f35_77b3_4da6_u128 + (copy * 1000 + i) as u128),
                route: case.route.clone(),
                config: config.hash.clone(),
                received_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                duration_ms: 1.0,
                source,
                client: None,
                replay_of: None,
                headers: message.headers.clone(),
                body: Some(body),
                validation: Validation { ok: refused.is_none(), ..Validation::default() },
                chosen: run.chosen.iter().enumerate().filter(|(_, c)| **c).map(|(i, _)| i).collect(),
                outputs,
                attempts: vec![],
                outcome: Outcome {
                    result: if refused.is_some() { Verdict::Rejected } else { Verdict::Delivered },
                    kind: refused.map(|f| f.kind.slug().to_string()),
                    detail: refused.map(|f| f.detail.clone()),
                    status: Some(refused.map_or(200, |f| f.kind.status())),
                    fate: None,
                },
            });
        }
    }
    out
}

/// Writes records as a journal: the first half plain, the rest in a closed (gzipped)
/// segment of another process's directory, with a torn last line as a crash leaves it.
fn write_journal(dir: &Path, records: &[Record]) {
    let (a, b) = records.split_at(records.len() / 2);
    std::fs::create_dir_all(dir.join("host-1")).unwrap();
    std::fs::create_dir_all(dir.join("host-2")).unwrap();
    let mut plain = std::fs::File::create(dir.join("host-1/00001.ndjson")).unwrap();
    for r in a {
        writeln!(plain, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
    plain.write_all(b"{\"v\":1,\"id\":\"torn").unwrap();
    let gz = std::fs::File::create(dir.join("host-2/00001.ndjson.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
    for r in b {
        writeln!(gz, "{}", serde_json::to_string(r).unwrap()).unwrap();
    }
    gz.finish().unwrap();
}

fn journal(copies: usize) -> (tempfile::TempDir, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let records = record_shipped(copies);
    write_journal(dir.path(), &records);
    (dir, records)
}

fn replay_json(journal: &Path, config: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["replay", journal.to_str().unwrap(), "--config", config.to_str().unwrap(), "--json"];
    args.extend(extra);
    let (code, out, err) = qiao(&args, &[]);
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, doc, err)
}

/// The records that reached the ERP on crm-order-to-erp: those a change of its ERP map
/// touches.
fn to_erp(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.route == "crm-order-to-erp" && r.outcome.result == Verdict::Delivered && r.chosen == vec![0])
        .map(|r| r.id.clone())
        .collect()
}

#[test]
fn the_same_config_replays_every_message_unchanged() {
    let (dir, records) = journal(3);
    let (code, out, err) =
        qiao(&["replay", dir.path().to_str().unwrap(), "--config", "routes", "--fail-on-change"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.trim(), format!("{} unchanged, 0 changed, 0 now rejected, 0 now accepted", records.len()));
    assert!(err.contains("1 line is not a record"), "the torn line is reported: {err}");
}

#[test]
fn a_changed_mapping_field_shows_as_exactly_that_pointer_on_exactly_the_affected_messages() {
    let (dir, records) = journal(3);
    let affected = to_erp(&records);
    assert!(affected.len() >= 6, "the shipped tests send orders to the ERP: {affected:?}");
    let routes = routes_copy();
    edit(
        &routes.path().join("crm-order-to-erp.yaml"),
        "template: \"CRM订单 {OrderNumber} / 客户PO",
        "template: \"CRM订单 {OrderNumber} / PO",
    );
    let (code, doc, err) = replay_json(dir.path(), routes.path(), &["--fail-on-change"]);
    assert_eq!(code, 1, "--fail-on-change fails: {err}");
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), records.len());
    let changed: Vec<&Value> = messages.iter().filter(|m| m["status"] != "unchanged").collect();
    let ids: Vec<&str> = changed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, affected, "exactly the messages that reached the ERP");
    for m in &changed {
        assert_eq!(m["status"], "changed");
        let dests = m["destinations"].as_array().unwrap();
        assert_eq!(dests.len(), 1, "{m}");
        assert_eq!(dests[0]["system"], "erp");
        let fields = dests[0]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 1, "{m}");
        assert_eq!(fields[0]["pointer"], "/data/Model/FNote");
        assert_eq!(fields[0]["kind"], "changed");
        assert!(fields[0]["old"].as_str().unwrap().contains("/ 客户PO "), "{m}");
        assert!(fields[0]["new"].as_str().unwrap().contains("/ PO "), "{m}");
    }
    let n = affected.len();
    assert_eq!(
        doc["summary"],
        serde_json::json!({"unchanged": records.len() - n, "changed": n, "now_rejected": 0, "now_accepted": 0, "skipped": 0})
    );

    // The same as lines for a person, and as JUnit for CI.
    let junit = dir.path().join("replay.xml");
    let (code, out, _) = qiao(
        &[
            "replay",
            dir.path().to_str().unwrap(),
            "--config",
            routes.path().to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "without --fail-on-change a change is not a failure: {out}");
    assert!(out.contains(&format!("~ changed {} (crm-order-to-erp", affected[0])), "{out}");
    assert!(out.contains("~ /data/Model/FNote: \"CRM订单"), "{out}");
    assert!(out.contains(" → \"CRM订单"), "{out}");
    assert!(!out.contains("\x1b["), "no colour when not a terminal");
    assert!(out.ends_with(&format!("{} unchanged, {n} changed, 0 now rejected, 0 now accepted\n", records.len() - n)));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let suite = &report.test_suites[0];
    assert_eq!(suite.test_cases.len(), records.len());
    assert_eq!(suite.failures, n);
    let failed = suite.test_cases.iter().find(|c| c.name.as_str() == affected[0]).unwrap();
    match &failed.status {
        quick_junit::TestCaseStatus::NonSuccess { description, .. } => {
            let d = description.as_ref().unwrap().as_str();
            assert!(d.contains("erp (destination 0)") && d.contains("/data/Model/FNote"), "{d}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn outcome_changes_are_reported_and_unreplayable_records_skipped() {
    let (dir, mut records) = journal(1);
    let affected: Vec<String> = records
        .iter()
        .filter(|r| r.route == "crm-order-to-erp" && r.outcome.result == Verdict::Delivered)
        .map(|r| r.id.clone())
        .collect();
    assert!(affected.len() > to_erp(&records).len(), "orders to the ERP and to the approval");
    // A record whose route kept no body cannot be replayed.
    let mut omitted = records[0].clone();
    omitted.id = "no-body".into();
    omitted.body = Some(Body::Omitted("bodies: false".into()));
    records.push(omitted.clone());
    let extra = dir.path().join("host-3");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("00001.ndjson"), serde_json::to_string(&omitted).unwrap() + "\n").unwrap();
    // The CRM's orders now must say `totalSize: 2`: every one it took before is now refused.
    let routes = routes_copy();
    edit(&routes.path().join("schemas/crm-order.json"), "\"const\": 1", "\"const\": 2");
    let (code, doc, _) = replay_json(dir.path(), routes.path(), &["--fail-on-change"]);
    assert_eq!(code, 1);
    let now_rejected: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "now_rejected")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(now_rejected, affected);
    let m = doc["messages"].as_array().unwrap().iter().find(|m| m["id"] == affected[0]).unwrap();
    assert!(m["detail"].as_str().unwrap().starts_with("was delivered, now rejected: 422 schema-violation"), "{m}");
    let skipped = doc["messages"].as_array().unwrap().iter().find(|m| m["id"] == "no-body").unwrap();
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["detail"].as_str().unwrap().contains("bodies: false"), "{skipped}");
    assert_eq!(doc["summary"]["skipped"], 1);
    assert_eq!(doc["summary"]["now_rejected"], affected.len());

    // The shipped config, one message picked by id and route.
    let (code, out, _) = qiao(
        &[
            "replay",
            dir.path().to_str().unwrap(),
            "--config",
            "routes",
            "--route",
            "crm-order-to-erp",
            "--id",
            &affected[0],
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "1 unchanged, 0 changed, 0 now rejected, 0 now accepted");
}

#[test]
fn a_field_from_the_clock_is_found_as_noise_and_silenced_by_ignore() {
    let (dir, records) = journal(2);
    let routes = routes_copy();
    // A stamp from the clock in the DingTalk approval of big orders.
    edit(
        &routes.path().join("crm-order-to-erp.yaml"),
        "dept_id: { const: -1 }",
        "dept_id: { const: -1 }\n          stamp: { jq: 'now' }",
    );
    let big: Vec<&Record> = records.iter().filter(|r| r.route == "crm-order-to-erp" && r.chosen == vec![1]).collect();
    assert!(!big.is_empty());
    let (code, out, err) = qiao(
        &["replay", dir.path().to_str().unwrap(), "--config", routes.path().to_str().unwrap(), "--detect-noise"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("    /stamp   ({} messages)", big.len())), "{out}");
    assert!(out.contains("--ignore '/stamp'"), "{out}");
    assert!(!out.contains("/data/Model"), "nothing else is noise: {out}");
    // Against the recording, the new field is a change until it is ignored.
    assert!(out.contains(&format!("{} changed", big.len())), "{out}");
    let (code, out, _) = qiao(
        &[
            "replay",
            dir.path().to_str().unwrap(),
            "--config",
            routes.path().to_str().unwrap(),
            "--ignore",
            "/stamp",
            "--fail-on-change",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("{} unchanged, 0 changed, 0 now rejected, 0 now accepted", records.len()));
    // The same from the route's config.
    edit(
        &routes.path().join("crm-order-to-erp.yaml"),
        "    max_body_bytes: 2097152",
        "    max_body_bytes: 2097152\n    replay: { ignore: [\"/**/stamp\"] }",
    );
    let (code, out, _) = qiao(
        &["replay", dir.path().to_str().unwrap(), "--config", routes.path().to_str().unwrap(), "--fail-on-change"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    // Noise in the shipped config: none.
    let (_, out, _) = qiao(&["replay", dir.path().to_str().unwrap(), "--config", "routes", "--detect-noise"], &[]);
    assert!(out.contains("noise: none found"), "{out}");
}

#[tokio::test]
async fn send_redelivers_with_a_new_id_and_the_replay_header() {
    let stubs = Stubs::start().await;
    let (dir, records) = journal(1);
    let original = to_erp(&records)[0].clone();
    let journal = dir.path().to_str().unwrap().to_string();
    let env = stubs.env();
    // Not a terminal and no --yes: nothing is sent.
    let (code, _, err) = tokio::task::spawn_blocking({
        let (journal, original, env) = (journal.clone(), original.clone(), env.clone());
        move || qiao(&["replay", &journal, "--config", "routes", "--id", &original, "--send"], &env)
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a terminal") && err.contains("--yes"), "{err}");
    assert!(stubs.get(qiao::config::SystemKind::Erp).state.received().is_empty());

    let (code, out, err) = tokio::task::spawn_blocking({
        let (journal, original, env) = (journal.clone(), original.clone(), env.clone());
        move || {
            qiao(
                &["replay", &journal, "--config", "routes", "--id", &original, "--send", "--yes", "--rate", "20/s"],
                &env,
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 sent, 0 failed"), "{out}");
    let got = stubs.get(qiao::config::SystemKind::Erp).state.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].headers.get("x-qiao-replay-of").map(String::as_str), Some(original.as_str()));
    let new_id = got[0].message_id.clone().unwrap();
    assert_ne!(new_id, original);
    assert!(out.contains(&format!("sent {original} as {new_id}")), "{out}");
    // What was sent is what was recorded.
    let recorded = records.iter().find(|r| r.id == original).unwrap();
    let Body::Json(body) = &recorded.outputs[0].body else { panic!() };
    assert_eq!(&got[0].body, &**body);
    assert!(got[0].headers.contains_key("traceparent"), "a new trace: {:?}", got[0].headers);
}

#[test]
fn journal_to_test_writes_a_case_that_passes_qiao_test_and_catches_a_regression() {
    let (dir, records) = journal(1);
    let id = to_erp(&records)[0].clone();
    let routes = routes_copy();
    let config = routes.path().to_str().unwrap();
    let (code, out, err) =
        qiao(&["journal", "to-test", &id, "--dir", dir.path().to_str().unwrap(), "--config", config], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let file = routes.path().join("tests").join(format!("crm-order-to-erp.journal-{}.yaml", id.replace('-', "")));
    assert!(out.contains(&file.display().to_string()), "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("expect:") && text.contains("FNote"), "{text}");
    let (code, out, err) = qiao(&["test", config, "--filter", &id], &[]);
    assert_eq!(code, 0, "{out}\n{err}\n{text}");
    assert!(out.contains("1 passed"), "{out}");
    // The case holds the route to today's output.
    edit(&routes.path().join("crm-order-to-erp.yaml"), "FEntryTaxRate: { const: 13 }", "FEntryTaxRate: { const: 9 }");
    let (code, out, _) = qiao(&["test", config, "--filter", &id], &[]);
    assert_eq!(code, 1, "{out}");
    // A message the journal does not have.
    let (code, _, err) =
        qiao(&["journal", "to-test", "nope", "--dir", dir.path().to_str().unwrap(), "--config", config], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no message `nope`"), "{err}");
}

/// docs/performance.md, "replay": 10,000 recorded messages read and replayed.
#[test]
fn ten_thousand_records_replay_within_a_minute() {
    let one = record_shipped(1);
    let records: Vec<Record> = (0..10_000)
        .map(|i| {
            let mut r = one[i % one.len()].clone();
            r.id = format!("perf-{i}");
            r
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_journal(dir.path(), &records);
    if let Ok(keep) = std::env::var("QIAO_TEST_KEEP_JOURNAL") {
        write_journal(Path::new(&keep), &records);
    }
    let started = Instant::now();
    let (code, out, err) = qiao(&["replay", dir.path().to_str().unwrap(), "--config", "routes"], &[]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "10000 unchanged, 0 changed, 0 now rejected, 0 now accepted");
    let rate = 10_000.0 / took.as_secs_f64();
    eprintln!("replay: 10000 records in {:.2} s: {rate:.0} messages/s", took.as_secs_f64());
    // A debug build on a shared 2-core box: ~1 ms of CPU a message (docs/performance.md);
    // the floor catches a replay that became quadratic or blocks, not a slow neighbour.
    assert!(rate > 150.0, "{rate:.0} messages/s");
}

/// The proof, live: the shipped route tests' messages sent through the real
/// `qiao run` (over HTTP, and onto the AMQP route's queue) with the journal on, Qiao stopped
/// gracefully so that the journal is complete, then `qiao replay` on what that journal
/// holds: one mapping field changed shows on exactly the messages it touches, the
/// unchanged config shows nothing, and `--fail-on-change` says so in its exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_by_the_live_binary_one_changed_field_shows_on_exactly_its_messages() {
    use std::collections::BTreeSet;
    const KEY: &str = "replay-live-key";
    let prefix = unique_prefix("replay-live");
    let stubs = Stubs::start().await;
    let journal = tempfile::tempdir().unwrap();
    let recorded_with = routes_copy();
    let mut env = shipped_env(&stubs, &prefix);
    env.push(("QIAO_JOURNAL_DIR".into(), journal.path().display().to_string()));
    // The same key for the recording and the replay: PII tokens line up.
    env.push(("QIAO_JOURNAL_KEY".into(), KEY.into()));
    let config = config::load(recorded_with.path(), &config::Overlay(env.clone())).expect("the shipped routes load");
    let cases = prepared_cases(recorded_with.path(), &config).expect("the route tests load");
    let mut live = Qiao::run(recorded_with.path(), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let mut tap = EventsTap::open(&amqp, &prefix).await;

    // Every (route, id) the journal must hold, and the crm-order-to-erp messages that
    // reached the ERP: those a change of the ERP's FNote touches.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut to_erp: BTreeSet<String> = BTreeSet::new();
    let uniq = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
    for (i, case) in cases.into_iter().enumerate() {
        let mut case = case.unwrap_or_else(|e| panic!("case {i}: {e}"));
        let id = format!("live-{i}-{uniq}");
        case.input.message_id = Some(id.clone());
        let route = config.route(&case.route).expect("the case's route").clone();
        let what = format!("case `{}` (route {})", case.name, case.route);
        let offline = qiao::simulate::run(&route, &case.input);
        let reply = send_case(&live, &amqp, &route, &case.input, &id).await;
        // Wait for each message's end, so that the journal has it when Qiao stops.
        match &offline {
            Ok(captured) => {
                if let Some(r) = &reply {
                    assert!(r.status < 300, "{what}: answered {}", r.status);
                }
                for c in captured {
                    arrived(&stubs, &amqp, &mut tap, &id, c).await;
                    if case.route == "crm-order-to-erp" && c.system == "erp" {
                        to_erp.insert(id.clone());
                    }
                    // A message published onto a queue an AMQP route consumes (the MES
                    // intake's) passes through that route too, under the same id.
                    for next in consumers_of(&config, c) {
                        let input = qiao::simulate::Input {
                            body: c.bytes.clone(),
                            message_id: Some(id.clone()),
                            ..Default::default()
                        };
                        for d in qiao::simulate::run(&next, &input).expect("the fan-out passes") {
                            arrived(&stubs, &amqp, &mut tap, &id, &d).await;
                        }
                        expected.insert((next.name.to_string(), id.clone()));
                    }
                }
            }
            Err(f) => match (&reply, &route.source) {
                (Some(r), _) => assert_eq!(r.status, f.kind.status(), "{what}"),
                (None, RouteSource::Amqp(src)) => drop(dead_letter(&amqp, &src.dead_letter_queue, &id).await),
                (None, RouteSource::Http { .. }) => unreachable!(),
            },
        }
        // Proxy routes are not journaled (they map nothing).
        if route.kind != config::RouteKind::Proxy {
            expected.insert((case.route.clone(), id));
        }
    }
    assert!(live.terminate(std::time::Duration::from_secs(30)).await.success(), "{}", live.logs());
    cleanup_shipped(&amqp, &config, tap).await;

    let records: Vec<Record> = qiao::journal::read::records(&[journal.path().to_path_buf()], Default::default())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let got: BTreeSet<(String, String)> = records.iter().map(|r| (r.route.clone(), r.id.clone())).collect();
    assert_eq!(got, expected, "the journal holds every message the live binary handled");
    assert_eq!(records.len(), expected.len(), "one pass each");
    assert!(records.iter().any(|r| matches!(r.source, Source::Amqp { .. })), "AMQP messages recorded");
    assert!(records.iter().any(|r| matches!(r.source, Source::Http { .. })), "HTTP messages recorded");
    assert!(to_erp.len() >= 2, "orders reached the ERP: {to_erp:?}");
    // The delivery notice's contact fields are PII (x-pii): on disk they are tokens, and the
    // replay runs on those.
    let notice = records.iter().find(|r| r.route == "erp-delivery-to-wms" && r.outcome.result == Verdict::Delivered);
    let Some(Body::Json(body)) = notice.and_then(|r| r.body.as_ref()) else { panic!("a delivered notice: {notice:?}") };
    let phone = body.pointer("/Model/FLinkPhone").and_then(Value::as_str).unwrap_or_default();
    assert!(phone.starts_with("pii:"), "the phone number is a token on disk: {phone}");
    let n = expected.len();
    eprintln!("recorded live: {n} messages ({} to the ERP on crm-order-to-erp)", to_erp.len());
    let key = [("QIAO_JOURNAL_KEY".to_string(), KEY.to_string())];
    let replay = |config: &Path, extra: &[&str]| {
        let mut args = vec!["replay", journal.path().to_str().unwrap(), "--config", config.to_str().unwrap()];
        args.extend(extra);
        qiao(&args, &key)
    };

    // The config it was recorded with: every message unchanged, and --fail-on-change passes.
    let (code, out, err) = replay(recorded_with.path(), &["--json", "--fail-on-change"]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let not_unchanged: Vec<&Value> =
        doc["messages"].as_array().unwrap().iter().filter(|m| m["status"] != "unchanged").collect();
    assert!(not_unchanged.is_empty(), "{not_unchanged:#?}");
    assert_eq!(
        doc["summary"],
        serde_json::json!({"unchanged": n, "changed": 0, "now_rejected": 0, "now_accepted": 0, "skipped": 0})
    );
    assert_eq!(code, 0, "{err}");

    // One mapping field changed in one route.
    let changed = routes_copy();
    edit(
        &changed.path().join("crm-order-to-erp.yaml"),
        "template: \"CRM订单 {OrderNumber} / 客户PO",
        "template: \"CRM订单 {OrderNumber} / PO",
    );
    let (code, out, err) = replay(changed.path(), &["--json", "--fail-on-change"]);
    assert_eq!(code, 1, "--fail-on-change fails on a change: {err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), n);
    let changed_ids: BTreeSet<String> =
        messages.iter().filter(|m| m["status"] != "unchanged").map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(changed_ids, to_erp, "exactly the messages that reached the ERP");
    for m in messages.iter().filter(|m| m["status"] != "unchanged") {
        assert_eq!(m["status"], "changed", "{m}");
        assert_eq!(m["route"], "crm-order-to-erp", "{m}");
        let dests = m["destinations"].as_array().unwrap();
        assert_eq!(dests.len(), 1, "{m}");
        assert_eq!(dests[0]["system"], "erp");
        let fields = dests[0]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 1, "one field and nothing else: {m}");
        assert_eq!(fields[0]["pointer"], "/data/Model/FNote");
        assert_eq!(fields[0]["kind"], "changed");
        assert!(fields[0]["old"].as_str().unwrap().contains("/ 客户PO "), "{m}");
        assert!(fields[0]["new"].as_str().unwrap().contains("/ PO "), "{m}");
    }
    let k = to_erp.len();
    assert_eq!(
        doc["summary"],
        serde_json::json!({"unchanged": n - k, "changed": k, "now_rejected": 0, "now_accepted": 0, "skipped": 0})
    );
    // The lines for a person: without --fail-on-change a change is no failure.
    let (code, out, err) = replay(changed.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with(&format!("{} unchanged, {k} changed, 0 now rejected, 0 now accepted\n", n - k)), "{out}");
    let (code, out, _) = replay(recorded_with.path(), &["--fail-on-change"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), format!("{n} unchanged, 0 changed, 0 now rejected, 0 now accepted"));
}

/// The AMQP routes of `config` whose queue a delivery `c` was published into (by the
/// brokers' bindings: exchange and routing key).
fn consumers_of(config: &config::Config, c: &qiao::simulate::Captured) -> Vec<std::sync::Arc<config::Route>> {
    let Some(key) = c.routing_key.as_deref() else { return Vec::new() };
    let queues: Vec<&str> = config
        .brokers
        .values()
        .flat_map(|t| &t.bindings)
        .filter(|b| b.exchange == c.path && b.routing_key == key)
        .map(|b| b.queue.as_str())
        .collect();
    config
        .routes
        .iter()
        .filter(|r| matches!(&r.source, RouteSource::Amqp(a) if queues.contains(&a.queue.as_str())))
        .cloned()
        .collect()
}
