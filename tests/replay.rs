//! `qiao replay` and `qiao journal to-test` through the real binary, on journal files made
//! from the shipped route tests: every case's message driven through the shipped config (the
//! driver `qiao run` runs, deliveries captured) and written as the journal writes it.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use qiao::config::{self, Source as RouteSource};
use qiao::journal::record::{Body, Outcome, Output, Record, Source, VERSION, Validation, Verdict};
use qiao::testing::prepared_cases;
use qiao_connectors::{Message, MessageId, TraceContext};
use serde_json::Value;

fn qiao(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("RUST_LOG")
        .env_remove("QIAO_JOURNAL_DIR")
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
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
            let params: Vec<(String, String)> =
                case.input.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
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
                Ok(v) => Body::Json(v),
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
                        body: Body::Json((*o.value).clone()),
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
        &["replay", dir.path().to_str().unwrap(), "--config", "routes", "--route", "crm-order-to-erp", "--id", &affected[0]],
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
    assert_eq!(&got[0].body, body);
    assert!(got[0].headers.contains_key("traceparent"), "a new trace: {:?}", got[0].headers);
}

#[test]
fn journal_to_test_writes_a_case_that_passes_qiao_test_and_catches_a_regression() {
    let (dir, records) = journal(1);
    let id = to_erp(&records)[0].clone();
    let routes = routes_copy();
    let config = routes.path().to_str().unwrap();
    let (code, out, err) = qiao(&["journal", "to-test", &id, "--dir", dir.path().to_str().unwrap(), "--config", config], &[]);
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
fn ten_thousand_records_replay_in_seconds() {
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
    assert!(rate > 1000.0, "thousands a second: {rate:.0}/s");
}
