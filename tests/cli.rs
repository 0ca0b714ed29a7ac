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
    ];
    for (place, message, hint) in expect {
        let line = err.lines().position(|l| l.contains(place) && l.contains(message));
        let Some(i) = line else { panic!("no `{place} ... {message}` in:\n{err}") };
        let next = err.lines().nth(i + 1).unwrap_or("");
        assert!(next.contains("hint:") && next.contains(hint), "hint `{hint}` missing after line {i}:\n{err}");
    }
    assert!(err.trim_end().ends_with(&format!("7 errors and 0 warnings in {}", dir.display())), "{err}");
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
