//! The journal end to end: records written by the real binary for HTTP and AMQP messages,
//! redacted before disk, rotated and compressed, read back by `qiao journal`; a full or
//! read-only disk never costs a request.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use qiao::config::SystemKind;
use qiao::journal::read::{self, Filter};
use qiao::journal::record::{Body, Record, Request, Source, Verdict};

const KEY: &str = "journal-test-key";

/// Every byte of every file under `dir`, gzip files decompressed.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            if p.extension().is_some_and(|x| x == "gz") {
                flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut out).unwrap();
            } else {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

fn records(dir: &Path) -> Vec<Record> {
    read::records(&[dir.to_path_buf()], Filter::default()).unwrap().map(|r| r.unwrap()).collect()
}

fn qiao_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qiao")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn journal_env(stubs: &Stubs, dir: &Path) -> Vec<(String, String)> {
    let mut env = stubs.env();
    env.push(("QIAO_JOURNAL_DIR".into(), dir.display().to_string()));
    env.push(("QIAO_JOURNAL_KEY".into(), KEY.into()));
    env
}

async fn send_order(qiao: &Qiao, id: &str) -> Reply {
    request(
        "POST",
        &qiao.url("/crm/orders/801J000000k3QpRIAU?src=test"),
        &[("content-type", "application/json"), ("idempotency-key", id), ("authorization", "Bearer s3cr3t-t0ken-4711")],
        example("crm-order.json"),
    )
    .await
    .unwrap()
}

const CLEAR: [&str; 4] = ["杭州恒泽机电设备有限公司", "HZ-PO-2025-088", "s3cr3t-t0ken-4711", "wangq"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_messages_are_recorded_field_by_field_with_pii_as_tokens() {
    let stubs = Stubs::start().await;
    let journal = tempfile::tempdir().unwrap();
    let routes = routes_with_crm_pii();
    let mut qiao = Qiao::run(routes.path(), &journal_env(&stubs, journal.path())).await;

    assert_eq!(send_order(&qiao, "jr-ok-1").await.status, 200);
    // A schema violation: rejected, with the violation's pointer.
    let mut bad: serde_json::Value = serde_json::from_slice(&example("crm-order.json")).unwrap();
    bad["records"][0]["Account"]["AccountNumber"] = serde_json::json!(42);
    let reply = request(
        "POST",
        &qiao.url("/crm/orders/x1"),
        &[("content-type", "application/json"), ("idempotency-key", "jr-bad-1")],
        serde_json::to_vec(&bad).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 422);
    // Refused before the body was read: still recorded.
    let reply =
        request("POST", &qiao.url("/crm/orders/x2"), &[("idempotency-key", "jr-415")], b"x".to_vec()).await.unwrap();
    assert_eq!(reply.status, 415);
    // A graceful stop flushes the journal and compresses the last segment.
    assert!(qiao.terminate(Duration::from_secs(30)).await.success());

    let all = records(journal.path());
    assert_eq!(all.len(), 3, "{all:#?}");
    let ok = all.iter().find(|r| r.id == "jr-ok-1").unwrap();
    assert_eq!(ok.v, 1);
    assert_eq!(ok.route, "crm-order-to-erp");
    assert_eq!(ok.config.len(), 16, "the config hash: {}", ok.config);
    assert!(chrono::DateTime::parse_from_rfc3339(&ok.received_at).is_ok());
    assert!(ok.duration_ms > 0.0);
    match &ok.source {
        Source::Http { method, path, params } => {
            assert_eq!(method, "POST");
            assert_eq!(path, "/crm/orders/801J000000k3QpRIAU?src=test");
            assert_eq!(params, &vec![("order_id".to_string(), "801J000000k3QpRIAU".to_string())]);
        }
        other => panic!("{other:?}"),
    }
    let tokens = qiao::journal::redact::Tokens::new(KEY.as_bytes());
    let auth = ok.headers.iter().find(|(k, _)| k == "authorization").unwrap();
    assert_eq!(auth.1, tokens.token("Bearer s3cr3t-t0ken-4711"));
    assert!(ok.headers.iter().any(|(k, v)| k == "idempotency-key" && v == "jr-ok-1"));
    let Some(Body::Json(body)) = &ok.body else { panic!("{:?}", ok.body) };
    assert_eq!(body["records"][0]["Account"]["Name"], tokens.token("杭州恒泽机电设备有限公司"));
    assert_eq!(body["records"][0]["Account"]["AccountNumber"], "CUST0042", "not PII: kept");
    assert!(ok.validation.ok);
    assert_eq!(ok.chosen, vec![0]);
    assert_eq!(ok.outputs.len(), 1);
    assert_eq!(ok.outputs[0].system, "erp");
    let Body::Json(out) = &ok.outputs[0].body else { panic!() };
    assert_eq!(out["formid"], "SAL_SaleOrder");
    let note = out["data"]["Model"]["FNote"].as_str().unwrap();
    assert!(note.contains(&tokens.token("HZ-PO-2025-088")), "a PII value copied into the output is a token: {note}");
    assert_eq!(ok.attempts.len(), 1);
    let a = &ok.attempts[0];
    assert_eq!((a.index, a.system.as_str(), a.status, a.tries), (0, "erp", Some(200), 1));
    assert!(a.latency_ms > 0.0 && a.error_kind.is_none());
    let Request::Http { method, url, .. } = &a.request else { panic!() };
    assert_eq!(method, "POST");
    assert!(url.starts_with(&stubs.get(SystemKind::Erp).url()), "{url}");
    let Some(Body::Json(answer)) = &a.answer else { panic!("{:?}", a.answer) };
    assert_eq!(answer["Result"]["ResponseStatus"]["IsSuccess"], true);
    assert_eq!(ok.outcome.result, Verdict::Delivered);
    assert_eq!(ok.outcome.status, Some(200));

    let bad = all.iter().find(|r| r.id == "jr-bad-1").unwrap();
    assert!(!bad.validation.ok);
    assert_eq!(bad.validation.kind.as_deref(), Some("schema-violation"));
    assert!(bad.validation.violations.iter().any(|v| v.pointer == "/records/0/Account/AccountNumber"));
    assert!(bad.attempts.is_empty() && bad.outputs.is_empty());
    assert_eq!((bad.outcome.result, bad.outcome.status), (Verdict::Rejected, Some(422)));
    let refused = all.iter().find(|r| r.id == "jr-415").unwrap();
    assert_eq!((refused.outcome.result, refused.outcome.status), (Verdict::Rejected, Some(415)));
    assert_eq!(refused.outcome.kind.as_deref(), Some("unsupported-media-type"));

    // No clear PII value anywhere on disk.
    let text = all_text(journal.path());
    for clear in CLEAR {
        assert!(!text.contains(clear), "`{clear}` reached the journal");
    }
    let files: Vec<PathBuf> = read::segments(&[journal.path().to_path_buf()]).unwrap();
    assert!(files.iter().all(|f| f.to_string_lossy().ends_with(".ndjson.gz")), "closed and compressed: {files:?}");
    assert_eq!(files[0].parent().unwrap().parent().unwrap(), journal.path(), "one directory per process");

    // `qiao journal ls` and `show`.
    let dir = journal.path().display().to_string();
    let (ok_run, out, err) = qiao_cli(&["journal", "ls", "--dir", &dir]);
    assert!(ok_run, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().any(|l| l.contains("jr-ok-1")
            && l.contains("crm-order-to-erp")
            && l.contains("delivered")
            && l.contains("200")),
        "{out}"
    );
    let (_, out, _) = qiao_cli(&["journal", "ls", "--dir", &dir, "--outcome", "rejected"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = qiao_cli(&["journal", "ls", "--dir", &dir, "--route", "no-such-route"]);
    assert_eq!(out.lines().count(), 0, "{out}");
    let (_, out, _) = qiao_cli(&["journal", "ls", "--dir", &dir, "--since", "1h", "--json"]);
    assert_eq!(out.lines().filter(|l| serde_json::from_str::<Record>(l).is_ok()).count(), 3, "{out}");
    let (ok_run, out, err) = qiao_cli(&["journal", "show", "jr-ok-1", "--dir", &dir]);
    assert!(ok_run, "{err}");
    for part in [
        "message jr-ok-1",
        "received    http POST /crm/orders/801J000000k3QpRIAU?src=test",
        "validation  ok",
        "chosen      #0 erp",
        "attempt     #0 erp  POST",
        "→ 200",
        "outcome     delivered, answered 200",
    ] {
        assert!(out.contains(part), "`{part}` not in:\n{out}");
    }
    let (found, _, err) = qiao_cli(&["journal", "show", "nope", "--dir", &dir]);
    assert!(!found && err.contains("no message"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_value_gives_the_same_token_in_two_processes_with_the_same_key() {
    let stubs = Stubs::start().await;
    let routes = routes_with_crm_pii();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, id) in [(&a, "jr-two-a"), (&b, "jr-two-b")] {
        let mut qiao = Qiao::run(routes.path(), &journal_env(&stubs, dir.path())).await;
        assert_eq!(send_order(&qiao, id).await.status, 200);
        assert!(qiao.terminate(Duration::from_secs(30)).await.success());
    }
    let (ra, rb) = (records(a.path()), records(b.path()));
    let name = |r: &Record| match &r.body {
        Some(Body::Json(v)) => v["records"][0]["Account"]["Name"].clone(),
        other => panic!("{other:?}"),
    };
    assert!(name(&ra[0]).as_str().unwrap().starts_with("pii:"));
    assert_eq!(name(&ra[0]), name(&rb[0]));
    assert_eq!(ra[0].outputs[0].body, rb[0].outputs[0].body, "the mapped outputs line up for a diff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_passes_are_recorded_with_their_queue_attempt_and_fate() {
    let prefix = unique_prefix("journal");
    let stubs = Stubs::start().await;
    let journal = tempfile::tempdir().unwrap();
    let mut env = journal_env(&stubs, journal.path());
    env.push(("PREFIX".into(), prefix.clone()));
    let mut qiao = Qiao::run(&fixture("amqp"), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let exchange = format!("{prefix}.events");
    amqp.publish(&exchange, "mes.test.completed", br#"{"code":"MO250318-01"}"#, "jr-amqp-ok").await.await.unwrap();
    amqp.publish(&exchange, "mes.test.x", b"{not json", "jr-amqp-bad").await.await.unwrap();
    eventually(Duration::from_secs(20), "both messages settled", || async {
        amqp.queue_len(&format!("{prefix}.in")).await == Some(0)
            && amqp.queue_len(&format!("{prefix}.in.dlq")).await == Some(1)
    })
    .await;
    assert!(qiao.terminate(Duration::from_secs(30)).await.success());
    amqp.cleanup(&amqp_fixture_queues(&prefix), &[exchange]).await;

    let all = records(journal.path());
    let ok = all.iter().find(|r| r.id == "jr-amqp-ok").expect("the delivered message");
    assert_eq!(ok.source, Source::Amqp { queue: format!("{prefix}.in"), attempt: 1 });
    assert_eq!(ok.outcome.result, Verdict::Delivered);
    assert_eq!(ok.outcome.fate.as_deref(), Some("delivered"));
    assert_eq!(ok.outcome.status, None);
    assert_eq!(ok.attempts.len(), 1);
    assert_eq!(ok.attempts[0].status, Some(200));
    let Body::Json(out) = &ok.outputs[0].body else { panic!() };
    assert_eq!(out["data"]["Model"]["FMoBillNo"], "MO250318-01");
    let bad = all.iter().find(|r| r.id == "jr-amqp-bad").expect("the dead-lettered message");
    assert_eq!(bad.outcome.result, Verdict::Rejected);
    assert_eq!(bad.outcome.fate.as_deref(), Some("dead_lettered"));
    assert_eq!(bad.validation.kind.as_deref(), Some("malformed-json"));
    assert_eq!(bad.body, Some(Body::Text("{not json".into())));
}

/// A Qiao whose journal is in `dir`, with segments of `segment_bytes`.
async fn qiao_with_segments(stubs: &Stubs, dir: &Path, segment_bytes: u64) -> (Qiao, tempfile::TempDir) {
    let routes = routes_copy();
    let qiao_yaml = routes.path().join("qiao.yaml");
    let text = std::fs::read_to_string(&qiao_yaml).unwrap();
    std::fs::write(
        &qiao_yaml,
        format!("{text}  journal:\n    segment_bytes: {segment_bytes}\n    retention_bytes: 200000\n"),
    )
    .unwrap();
    let mut env = stubs.env();
    env.push(("QIAO_JOURNAL_DIR".into(), dir.display().to_string()));
    (Qiao::run(routes.path(), &env).await, routes)
}

async fn metric(qiao: &Qiao, line_start: &str) -> f64 {
    let m = get(&format!("http://127.0.0.1:{}/metrics", qiao.admin)).await.unwrap();
    String::from_utf8_lossy(&m.body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_rotate_compress_and_stay_within_the_retention_size() {
    let stubs = Stubs::start().await;
    let journal = tempfile::tempdir().unwrap();
    let (mut qiao, _routes) = qiao_with_segments(&stubs, journal.path(), 8_000).await;
    for i in 0..60 {
        assert_eq!(send_order(&qiao, &format!("jr-rot-{i}")).await.status, 200);
    }
    assert!(qiao.terminate(Duration::from_secs(30)).await.success());
    let files = read::segments(&[journal.path().to_path_buf()]).unwrap();
    assert!(files.len() > 3, "rotated by size: {files:?}");
    assert!(files.iter().all(|f| f.to_string_lossy().ends_with(".gz")), "{files:?}");
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(total <= 200_000, "{total}");
    let kept = records(journal.path());
    // Retention deletes whole old segments only: the newest records are all there.
    assert!(kept.iter().any(|r| r.id == "jr-rot-59"));
}

fn mount_tmpfs(dir: &Path, opts: &str) -> bool {
    Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(dir).status().is_ok_and(|s| s.success())
}

fn umount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_fails_traffic_and_the_drops_are_counted() {
    let journal = tempfile::tempdir().unwrap();
    if !mount_tmpfs(journal.path(), "size=256k") {
        eprintln!("SKIPPED: mount -t tmpfs was refused here (not root?)");
        return;
    }
    let stubs = Stubs::start().await;
    let (mut qiao, _routes) = qiao_with_segments(&stubs, journal.path(), 64 * 1024 * 1024).await;
    for i in 0..150 {
        let reply = send_order(&qiao, &format!("jr-full-{i}")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", String::from_utf8_lossy(&reply.body));
    }
    eventually(Duration::from_secs(10), "drops counted", || async {
        metric(&qiao, "qiao_journal_dropped_total{reason=\"disk_full\"}").await > 0.0
    })
    .await;
    assert!(metric(&qiao, "qiao_journal_records_total").await > 0.0, "what fit was written");
    assert!(qiao.terminate(Duration::from_secs(30)).await.success());
    // What was written reads back whole: no half line.
    let ok = read::records(&[journal.path().to_path_buf()], Filter::default()).unwrap().all(|r| r.is_ok());
    umount(journal.path());
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_journal_directory_never_fails_traffic() {
    let journal = tempfile::tempdir().unwrap();
    if !mount_tmpfs(journal.path(), "ro,size=64k") {
        eprintln!("SKIPPED: mount -t tmpfs was refused here (not root?)");
        return;
    }
    let stubs = Stubs::start().await;
    let (mut qiao, _routes) = qiao_with_segments(&stubs, journal.path(), 64 * 1024 * 1024).await;
    for i in 0..20 {
        assert_eq!(send_order(&qiao, &format!("jr-ro-{i}")).await.status, 200);
    }
    eventually(Duration::from_secs(10), "drops counted", || async {
        metric(&qiao, "qiao_journal_dropped_total{reason=\"read_only\"}").await > 0.0
    })
    .await;
    assert!(qiao.terminate(Duration::from_secs(30)).await.success());
    umount(journal.path());
}
