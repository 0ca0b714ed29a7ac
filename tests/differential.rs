//! `qiao test` and `qiao run` must do the same thing with the same message: both run the one
//! driver, offline on the capture seam, live through the runtime's clients. For every case in
//! the shipped `routes/tests/`, the bytes `qiao test` computes for each destination are
//! compared with the bytes that arrive at the stub systems (HTTP) or on the broker (AMQP)
//! through the real binary, and every rejection with the answer or the dead letter: same
//! error kind, same JSON pointers. A change to either path alone fails it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use qiao::config::{Overlay, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qiao_test_and_qiao_run_deliver_the_same_bytes_and_refuse_alike() {
    let prefix = unique_prefix("diff");
    let stubs = Stubs::start().await;
    let env = shipped_env(&stubs, &prefix);
    // The config both sides run: the shipped routes with this test's stubs and broker names.
    let config = qiao::config::load(&routes_dir(), &Overlay(env.clone())).expect("the shipped routes load");
    let cases = qiao::testing::prepared_cases(&routes_dir(), &config).expect("the route tests load");
    assert!(cases.len() >= 18, "expected the shipped cases, found {}", cases.len());

    let qiao = Qiao::run(&routes_dir(), &env).await;
    let amqp = Amqp::connect(AMQP_URL).await;
    let mut tap = EventsTap::open(&amqp, &prefix).await;

    let mut compared = 0;
    for (i, case) in cases.into_iter().enumerate() {
        let mut case = case.unwrap_or_else(|e| panic!("case {i}: {e}"));
        let id = format!("diff-{i}-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        case.input.message_id = Some(id.clone());
        let route = config.route(&case.route).expect("the case's route").clone();
        let offline = qiao::simulate::run(&route, &case.input);
        let what = format!("case `{}` (route {})", case.name, case.route);
        let reply = send_case(&qiao, &amqp, &route, &case.input, &id).await;

        match offline {
            Ok(captured) => {
                if let Some(reply) = &reply {
                    assert!(
                        reply.status < 300,
                        "{what}: qiao test delivered, qiao run answered {}: {}",
                        reply.status,
                        text(reply)
                    );
                }
                for c in &captured {
                    let arrived = arrived(&stubs, &amqp, &mut tap, &id, c).await;
                    assert_eq!(
                        String::from_utf8_lossy(&arrived),
                        String::from_utf8_lossy(&c.bytes),
                        "{what}: the bytes {} received differ from what qiao test computed",
                        c.system
                    );
                    compared += 1;
                }
            }
            Err(f) => {
                let want_pointers: BTreeSet<String> = f.violations.iter().map(|v| v.pointer.clone()).collect();
                match &reply {
                    Some(reply) => {
                        assert_eq!(reply.status, f.kind.status(), "{what}: {}", text(reply));
                        let problem = reply.json();
                        assert_eq!(problem["error_kind"], f.kind.slug(), "{what}");
                        let got: BTreeSet<String> = problem["errors"]
                            .as_array()
                            .map(|e| e.iter().filter_map(|v| v["pointer"].as_str().map(String::from)).collect())
                            .unwrap_or_default();
                        assert_eq!(got, want_pointers, "{what}: the violations' pointers differ");
                    }
                    None => {
                        let Source::Amqp(src) = &route.source else { unreachable!() };
                        let dead = dead_letter(&amqp, &src.dead_letter_queue, &id).await;
                        assert_eq!(
                            amqp_header(&dead.delivery.properties, "x-qiao-error-kind").as_deref(),
                            Some(f.kind.slug()),
                            "{what}"
                        );
                        let got: BTreeSet<String> = amqp_header(&dead.delivery.properties, "x-qiao-error-pointers")
                            .map(|p| p.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                            .unwrap_or_default();
                        assert_eq!(got, want_pointers, "{what}: the dead letter's pointers differ");
                    }
                }
                compared += 1;
            }
        }
    }
    assert!(compared >= 18, "only {compared} deliveries and rejections compared");

    drop(qiao); // before deleting: a running Qiao would declare its queues again
    cleanup_shipped(&amqp, &config, tap).await;
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The offline side opens nothing: `qiao check`, `qiao test` and `qiao map` pass with no
/// broker where the config says (a port nobody listens on) and every system's `base_url` on
/// a host that does not resolve (`.invalid` never does, RFC 6761).
#[test]
fn the_offline_tools_need_no_broker_and_no_receiver() {
    let no_broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let mut env: Vec<(String, String)> = ["ERP", "CRM", "OA", "WMS", "MES"]
        .iter()
        .map(|s| (format!("{s}_URL"), format!("http://{}.qiao-test.invalid:9", s.to_lowercase())))
        .collect();
    env.push(("AMQP_URL".into(), no_broker));
    let run = |args: &[&str]| {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qiao"))
            .args(args)
            .current_dir(repo())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "qiao {args:?} failed:\n{text}");
        assert!(started.elapsed() < Duration::from_secs(20), "qiao {args:?} took {:?}", started.elapsed());
        text
    };
    assert!(run(&["check", "routes"]).contains("7 routes OK"));
    let tests = run(&["test", "routes"]);
    assert!(tests.contains("18 passed, 0 failed"), "{tests}");
    let mapped = run(&[
        "map",
        "--route",
        "crm-order-to-erp",
        "--param",
        "order_id=801J000000k3QpRIAU",
        "routes/examples/crm-order.json",
    ]);
    assert!(mapped.contains("SAL_SaleOrder"), "{mapped}");
}
