//! The command line: `check` on good and broken configs, `demo`, `--help`, `--version`.

mod common;

use std::process::Command;

use common::*;

fn qiao(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_passes_the_shipped_routes_with_a_summary() {
    let (code, out, err) = qiao(&["check", "routes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "5 systems, 7 routes OK");
}

#[test]
fn check_reports_every_problem_with_its_place_and_a_hint() {
    let dir = fixture("broken");
    let (code, out, err) = qiao(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let expect = [
        // (file:line:col, message fragment, hint fragment)
        ("typo.yaml:5:7:", "unknown field `request_timout_ms`", "did you mean `request_timeout_ms`?"),
        (
            "systems.yaml:9:17:",
            "environment variable QIAO_TEST_NEVER_SET is not set and has no default",
            "${NAME:-value}",
        ),
        ("unknown-system.yaml:6:15:", "unknown system `erpp`", "did you mean `erp`?"),
        ("missing-schema.yaml:4:13:", "schema file `schemas/nope.json` not found", "relative to the config directory"),
        ("bad-map.yaml:8:23:", "bad source path `records[0..Id`", "docs/mapping.md#paths"),
        ("bad-map.yaml:9:30:", "unknown type `numbr`", "did you mean `number`?"),
        ("dup-b.yaml:4:21:", "duplicate route path: route `dup-a` already takes POST /orders", "dup-a.yaml"),
        ("dup-b.yaml:7:19:", "unknown system `erq`", "did you mean `erp`?"),
    ];
    for (place, message, hint) in expect {
        let line = err.lines().position(|l| l.contains(place) && l.contains(message));
        let Some(i) = line else { panic!("no `{place} ... {message}` in:\n{err}") };
        let next = err.lines().nth(i + 1).unwrap_or("");
        assert!(next.contains("hint:") && next.contains(hint), "hint `{hint}` missing after line {i}:\n{err}");
    }
    assert!(err.trim_end().ends_with(&format!("8 errors and 0 warnings in {}", dir.display())), "{err}");
}

#[test]
fn check_reports_every_mistake_of_a_route_in_one_run() {
    // One route with five independent mistakes of different kinds. Before, the unknown key
    // hid the whole file, and the checks against the schemas waited for a clean route.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("schemas/account.json"),
        r#"{ "type": "object", "required": ["Account"],
  "properties": { "Account": { "type": "object",
    "properties": { "AccountNumber": { "type": "string" }, "Name": { "type": "string" }, "Amount": { "type": "string" } } } } }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("schemas/customer.json"),
        r#"{ "type": "object", "required": ["FName", "FCustId"], "additionalProperties": false,
  "properties": { "FName": { "type": "string" }, "FAmount": { "type": "number" },
    "FCustId": { "type": "object", "properties": { "FNumber": { "type": "string" } } } } }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("systems.yaml"),
        "systems:\n  erp: { kind: erp, http: { base_url: \"http://127.0.0.1:9\" } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("customer.yaml"),
        "\
routes:
  crm-account-to-erp:
    from: { http: { path: /crm/accounts } }
    schema: schemas/account.json
    map:
      FName: Account.Name
      FAmount: Account.Amount
      FCustId.FNumber: { from: Account.AccountNumbr, required: true }
      FNote: { jq: '.Account | {name: .Name' }
    to:
      - system: erp
        pth: /customers
        schema: schemas/customer.json
      - system: erpp
        path: /audit
",
    )
    .unwrap();
    let (code, out, err) = qiao(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let expect = [
        ("customer.yaml:12:9: error:", "unknown field `pth`", "did you mean `path`?"),
        ("customer.yaml:9:20: error:", "jq error at column 24 of `.Account | {name: .Name`", "docs/mapping.md#jq"),
        ("customer.yaml:14:17: error:", "unknown system `erpp`", "did you mean `erp`?"),
        (
            "customer.yaml:8:32: error:",
            "source path `Account.AccountNumbr`: `AccountNumbr` is not in",
            "did you mean `AccountNumber`?",
        ),
        ("customer.yaml:9:7: error:", "erp's schema", "docs/checks.md"),
        (
            "customer.yaml:7:16: error:",
            "`FAmount` gets a string (from `Account.Amount`), but erp's schema wants a number",
            "docs/checks.md",
        ),
    ];
    for (place, message, hint) in expect {
        let line = err.lines().position(|l| l.contains(place) && l.contains(message));
        let Some(i) = line else { panic!("no `{place} ... {message}` in:\n{err}") };
        let next = err.lines().nth(i + 1).unwrap_or("");
        assert!(next.contains("hint:") && next.contains(hint), "hint `{hint}` missing after line {i}:\n{err}");
    }
    assert!(err.contains("does not allow `FNote`"), "{err}");
    assert!(err.trim_end().ends_with(&format!("6 errors and 0 warnings in {}", dir.path().display())), "{err}");
}

#[test]
fn check_refuses_a_literal_destination_path_that_cannot_be_sent() {
    // A path without placeholders is checked once, at load, not for every message: one with
    // a dot segment or a space would fail every message it was used for.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("systems.yaml"),
        "systems:\n  erp: { kind: erp, http: { base_url: \"http://127.0.0.1:9\" } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("paths.yaml"),
        "\
routes:
  dots:
    from: { http: { path: /a } }
    to: [{ system: erp, path: /k3cloud/../admin }]
  space:
    from: { http: { path: /b } }
    to: [{ system: erp, path: '/orders list?a=1' }]
  rendered:
    from: { http: { path: /c } }
    to: [{ system: erp, path: '/orders/{$headers.x-order-id}' }]
  literal-braces:
    from: { http: { path: /d } }
    to: [{ system: erp, path: '/orders?q={{x}}' }]
",
    )
    .unwrap();
    let (code, out, err) = qiao(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("paths.yaml:4:31: error: destination path `/k3cloud/../admin` has a dot segment"), "{err}");
    assert!(
        err.contains("paths.yaml:7:31: error: destination path `/orders list?a=1` is not a valid URL path"),
        "{err}"
    );
    // A path with placeholders is checked when rendered; `{{x}}` is a literal `{x}`.
    assert!(err.trim_end().ends_with(&format!("2 errors and 0 warnings in {}", dir.path().display())), "{err}");
}

#[test]
fn check_of_a_missing_directory_fails_clearly() {
    let (code, _, err) = qiao(&["check", "/nonexistent/qiao-routes"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the config directory"), "{err}");
}

#[test]
fn run_refuses_to_start_on_a_broken_config() {
    let dir = fixture("broken");
    let (code, _, err) = qiao(&["run", "--config", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing was started"), "{err}");
}

#[test]
fn help_has_examples_and_version_is_the_crate_version() {
    let (code, out, _) = qiao(&["--help"]);
    assert_eq!(code, 0);
    for word in ["run", "check", "demo", "stub", "Examples:", "qiao demo"] {
        assert!(out.contains(word), "`{word}` missing from --help:\n{out}");
    }
    let (code, out, _) = qiao(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("qiao {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_shipped_routes_with_its_own_stubs() {
    let demo = Qiao::spawn(
        vec!["demo".into(), "--stub-base-port".into(), "0".into()],
        &[("AMQP_PREFIX".into(), "qiao.test.demo".into())],
    )
    .await;
    let reply = post_json(&demo.url("/crm/orders/801J000000k3QpRIAU"), example("crm-order.json")).await;
    assert_eq!(reply.status, 200, "{}\n{}", String::from_utf8_lossy(&reply.body), demo.logs());
    assert_eq!(reply.json()["Result"]["ResponseStatus"]["IsSuccess"], true, "the ERP stub answered");
    let reply = post_json(&demo.url("/crm/orders/801J000000k3QpRIAU"), r#"{"totalSize":1,"records":[{}]}"#).await;
    assert_eq!(reply.status, 422);
    assert!(demo.logs().contains("Qiao demo"), "banner printed");
}

#[test]
fn qiao_test_passes_the_shipped_route_tests_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = qiao(&["test", "routes", "--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let last = out.trim_end().lines().last().unwrap();
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 18, "{out}");
    assert_eq!(last, format!("{passed} passed, 0 failed"));
    for route in [
        "crm-order-to-erp",
        "oa-purchase-approved-to-erp",
        "wms-material-issue-to-mes",
        "erp-delivery-to-wms",
        "mes-completion-intake",
        "mes-completion-to-wms-and-erp",
        "erp-webapi-passthrough",
    ] {
        assert!(out.contains(&format!("test {route} › ")), "every shipped route has tests: {route}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(&format!("tests=\"{passed}\" failures=\"0\"")), "{xml}");
}

#[test]
fn qiao_test_reports_failures_like_cargo_test_and_exits_non_zero() {
    let dir = fixture("failing-tests");
    let (code, out, _) = qiao(&["test", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("test orders › passes ... ok"), "{out}");
    assert!(out.contains("test orders › expects the wrong quantity ... FAILED"), "{out}");
    assert!(out.contains("erp: body at /qty: expected 4, got 3"), "{out}");
    assert!(out.contains("expected a rejection, but the message went to erp"), "{out}");
    assert!(out.trim_end().ends_with("1 passed, 2 failed"), "{out}");
}

#[test]
fn qiao_map_shows_what_a_route_makes_of_a_message() {
    let example = repo().join("routes/examples/wms-material-issue.json");
    let (code, out, err) = qiao(&["map", "--route", "wms-material-issue-to-mes", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let docs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(docs[0]["system"], "mes");
    assert_eq!(docs[0]["path"], "/api/b2mml/ProcessProductionPerformance");
    assert_eq!(docs[0]["body"]["ProductionPerformance"]["ProductionResponse"][0]["ProductionRequestID"], "MO250318-01");

    // From standard input, refused: the problem document and exit 1.
    let mut child = Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(["map", "--route", "crm-order-to-erp", "--param", "order_id=X"])
        .current_dir(repo())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(br#"{"totalSize": 1, "records": [{}]}"#).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let problem: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(problem["error_kind"], "schema-violation");
    assert!(problem["errors"].as_array().unwrap().len() >= 4);

    // A route that reads its path parameters says which to give.
    let example = repo().join("routes/examples/crm-order.json");
    let (code, _, err) = qiao(&["map", "--route", "crm-order-to-erp", example.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("add --param order_id=..."), "{err}");
    let (code, out, err) = qiao(&[
        "map",
        "--route",
        "crm-order-to-erp",
        "--param",
        "order_id=801J000000k3QpRIAU",
        example.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CRM订单"), "{out}");
}

#[test]
fn strict_turns_warnings_into_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/order.json"), r#"{"type":"object","properties":{"no":{"type":"string"}}}"#)
        .unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "systems:\n  erp: { kind: erp, http: { base_url: \"http://127.0.0.1:9\" } }\nroutes:\n  r:\n    from: { http: { path: /r } }\n    schema: schemas/order.json\n    map:\n      FBillNo: number\n    to: { system: erp }\n",
    )
    .unwrap();
    let (code, out, err) = qiao(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 warning)"), "{out}");
    assert!(err.contains("r.yaml:8:16: warning: source path `number`: `number` is not in"), "{err}");
    assert!(err.contains("hint: see docs/checks.md"), "{err}");
    let (code, _, err) = qiao(&["check", "--strict", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("1 warning in"), "{err}");
}

#[test]
fn print_config_shows_the_effective_configuration_with_secrets_masked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(["run", "--config", "routes", "--print-config", "--listen", "0.0.0.0:18080"])
        .current_dir(repo())
        .env("CRM_TOKEN", "crm-tok-SECRET-1")
        .env("AMQP_URL", "amqp://qiao:amqp-pw-SECRET-2@mq.internal:5672/%2f")
        .env("ERP_URL", "https://erp.example.com/k3cloud")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("SECRET"), "a secret was printed:\n{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["server"]["listen"], "0.0.0.0:18080", "flags apply");
    assert_eq!(doc["systems"]["erp"]["http"]["base_url"], "https://erp.example.com/k3cloud");
    assert_eq!(doc["systems"]["crm"]["http"]["auth"]["bearer"]["token"], "***");
    assert_eq!(doc["systems"]["wms"]["amqp"]["url"], "amqp://qiao:***@mq.internal:5672/%2f");
    assert_eq!(
        doc["routes"]["mes-completion-to-wms-and-erp"]["from"]["amqp"]["queue"],
        "qiao.mes.production-completed"
    );
}

/// `qiao stub` stops cleanly on SIGTERM and SIGINT, also started as a script's background
/// job (SIGINT ignored from the start) and so also as a container's PID 1, which no signal
/// stops by default: before, `podman stop` waited out its timeout, and a script's `kill -INT`
/// never returned.
#[test]
fn a_stub_stops_on_sigterm_and_sigint() {
    // At `warn` too: the stub once logged the signal it waited for inside `info!`, and a
    // disabled level does not evaluate its arguments, so it exited at once.
    for (signal, level) in [("TERM", "info"), ("INT", "info"), ("TERM", "warn"), ("INT", "warn")] {
        let addr = format!("127.0.0.1:{}", free_port());
        // `wait $!` makes the shell's exit status the stub's: 0, or 128 + a killing signal.
        let script = r#""$0" --log-level "$2" stub erp --listen "$1" & echo $!; wait $!"#;
        let mut shell = Command::new("sh")
            .args(["-c", script, env!("CARGO_BIN_EXE_qiao"), &addr, level])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh starts");
        let mut pid = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(shell.stdout.take().unwrap()), &mut pid).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(shell.try_wait().unwrap().is_none(), "the stub exited before any signal (--log-level {level})");
            assert!(std::time::Instant::now() < deadline, "the stub did not listen on {addr}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let sent = Command::new("kill").args([&format!("-{signal}"), pid.trim()]).status().unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let status = loop {
            if let Some(status) = shell.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                panic!("the stub did not stop within 5 s of SIG{signal}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "SIG{signal} at {level}: the stub exits with success");
    }
}

#[tokio::test]
async fn a_stub_keeps_what_it_refused_with_its_status() {
    let stubs = Stubs::start().await;
    let oa = stubs.get(qiao::config::SystemKind::Oa);
    let r = post_json(&format!("{}/my/new/endpoint", oa.url()), br#"{"a":1}"#.to_vec()).await;
    assert_eq!(r.status, 404);
    assert!(oa.state.received().is_empty(), "received() lists what the stub took");
    let all = oa.state.all_requests();
    assert_eq!((all.len(), all[0].status, all[0].path.as_str()), (1, 404, "/my/new/endpoint"));
    let listed = get(&format!("{}/_stub/requests", oa.url())).await.unwrap().json();
    assert_eq!(listed[0]["status"], 404, "{listed}");
    let taken = get(&format!("{}/_stub/requests?taken=true", oa.url())).await.unwrap().json();
    assert_eq!(taken, serde_json::json!([]));
}
