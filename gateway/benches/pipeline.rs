//! The JSON work of one message on the shipped route `crm-order-to-erp`, as
//! `edge::message::run` does it before delivering: parse → validate → vars → select (the
//! destinations' `when` conditions) → map (field map, serialization, the receiver's schema).
//!
//! Both inputs go to the ERP destination (order total ≤ ¥100,000; larger orders go to the
//! DingTalk approval instead), so both measure the Kingdee sales-order map.
//!
//! Groups (throughput is always the size of the inbound body, so rows compare):
//! - `pipeline/{1KB,100KB}`: the whole chain, for the 887-byte example order
//!   (routes/examples/crm-order.json) and a generated order with 500 order lines.
//! - `phase_1KB/{parse,validate,vars,select,map,serialize,check_out}`: each step alone on
//!   the 1 KB order, to say where the time goes. `select_jaq` is `select`'s two jq
//!   conditions evaluated by jaq alone, without the native evaluator. `map` is the route's field map alone
//!   (`Mapping::apply`), `serialize` is `serde_json::to_vec` of its result and `check_out`
//!   the ERP destination's schema on it: together, `pipeline::map`.
//!
//! Run: `cargo bench -p qiao --bench pipeline`. Numbers and the machine: docs/performance.md.
//!
//! `QIAO_BENCH_CLOCK=cpu` measures the benchmark thread's CPU time instead of wall time
//! (the scheduler's account in /proc/thread-self/schedstat, 1 ms granularity, so samples
//! are made long: flat sampling, 50 samples of about 100 ms): on a shared machine, time
//! spent preempted by a neighbour is then not counted. Its groups are named `cpu_pipeline`
//! and `cpu_phase_1KB`, so that criterion does not compare them with wall-time results.

// The same allocator as the `qiao` binary, so that the numbers match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/cpu_clock.rs"]
mod cpu_clock;

#[path = "support/order.rs"]
mod order;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use cpu_clock::ThreadCpuTime;
use criterion::measurement::{Measurement, WallTime};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use qiao::condition::Condition;
use qiao::config::{self, ProcessEnv, Route};
use qiao::mapping::jq::{JqDoc, JqProgram};
use qiao::pipeline;
use qiao_connectors::{Message, MessageId, TraceContext};
use serde_json::{Value, json};

const ROUTES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../routes");
const ROUTE: &str = "crm-order-to-erp";
const ORDER_ID: &str = "801J000000k3QpRIAU";
/// Order lines of the large order: about 100 KB of JSON.
const LARGE_LINES: usize = 500;

fn route() -> Arc<Route> {
    let config = match config::load(Path::new(ROUTES), &ProcessEnv) {
        Ok(c) => c,
        Err(diags) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("the shipped routes do not load:\n{}", text.join("\n"));
        }
    };
    let route = config.routes.iter().find(|r| &*r.name == ROUTE).cloned();
    let route = route.unwrap_or_else(|| panic!("route {ROUTE} is not in {ROUTES}"));
    assert!(route.uses.params, "{ROUTE} reads $params.order_id; the bench builds $params for it");
    route
}

fn message(body: &[u8]) -> Message {
    Message {
        id: MessageId::generate(),
        headers: Vec::new(),
        body: Bytes::copy_from_slice(body),
        trace: TraceContext::default(),
        received_at: SystemTime::now(),
    }
}

fn small_order() -> Vec<u8> {
    let path = Path::new(ROUTES).join("examples/crm-order.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The example order with `lines` order lines: product codes of the shape the schema
/// asks (`^[A-Z]{2}-[A-Z0-9]+(-[A-Z0-9]+)*$`), all different; laid out like the example,
/// one order line per text line (500 lines: about 100 KB).
fn large_order(lines: usize) -> Vec<u8> {
    const FAMILIES: [(&str, &str, &str); 6] = [
        ("FG", "BJ", "变频空压机"),
        ("SP", "FLT", "空滤滤芯"),
        ("RM", "AL6061", "铝合金棒材 6061-T6"),
        ("SP", "OIL", "螺杆压缩机专用润滑油"),
        ("PK", "CTN", "五层瓦楞纸箱"),
        ("FG", "LY", "永磁变频螺杆机"),
    ];
    let items: Vec<String> = (0..lines)
        .map(|i| {
            let (class, family, name) = FAMILIES[i % FAMILIES.len()];
            let item = json!({
                "Product2": {
                    "ProductCode": format!("{class}-{family}-{:04}-V{}", 1000 + i, i % 7),
                    "Name": format!("{name} {}kW 型号{:04} 380V/50Hz IP54 一级能效 常规库存", 1 + i % 45, i),
                },
                // Small quantities and prices: the total stays under ¥100,000, so the
                // order goes to the ERP (see the module docs).
                "Quantity": 1 + (i * 7) % 4,
                "UnitPrice": ((i * 3137) % 8_000) as f64 / 100.0 + 0.5,
                "ServiceDate": format!("2025-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            });
            serde_json::to_string(&item).expect("serializes")
        })
        .collect();
    order::with_lines(&small_order(), &items)
}

fn params() -> Vec<(String, String)> {
    vec![("order_id".to_string(), ORDER_ID.to_string())]
}

/// The chain `edge::message::run` runs before delivering: the bytes for the ERP.
fn run(route: &Route, message: &Message, params: &[(String, String)]) -> Bytes {
    let value = std::sync::Arc::new(pipeline::parse(&message.body).expect("parses"));
    pipeline::validate(route, &value).expect("valid");
    let vars = pipeline::vars(route, message, params, false);
    let chosen = pipeline::select(route, &value, &vars).expect("a destination takes it");
    let bodies = pipeline::map(route, &chosen, &value, &message.body, &vars).expect("maps");
    let mut taken = route.destinations.iter().zip(bodies).filter_map(|(d, b)| Some((&d.system.name, b?)));
    match (taken.next(), taken.next()) {
        (Some((system, out)), None) if system == "erp" => out.bytes,
        (first, second) => {
            panic!("the order should go to the ERP alone, not {:?}", [first, second].map(|t| t.map(|(s, _)| s)))
        }
    }
}

fn benches<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let route = route();
    let params = params();
    let small = small_order();
    let large = large_order(LARGE_LINES);
    assert!((80_000..=120_000).contains(&large.len()), "the large order has {} bytes, not about 100 KB", large.len());

    // Check once, outside the measurement, that both inputs take the whole path and map
    // to what the ERP expects: a bench of an error path would measure the wrong thing.
    for (name, body, lines) in [("1KB", &small, 2), ("100KB", &large, LARGE_LINES)] {
        let out: Value = serde_json::from_slice(&run(&route, &message(body), &params)).expect("JSON out");
        let entries = out["data"]["Model"]["FSaleOrderEntry"].as_array().map(Vec::len);
        assert_eq!(entries, Some(lines), "{name}: mapped order lines");
        let note = out["data"]["Model"]["FNote"].as_str().unwrap_or_default();
        assert!(note.ends_with(ORDER_ID), "{name}: FNote {note:?}");
        eprintln!("input {name}: {} bytes in, {} order lines", body.len(), lines);
    }

    let mut group = bench_group(c, prefix, "pipeline");
    for (name, body) in [("1KB", &small), ("100KB", &large)] {
        let msg = message(body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| run(&route, black_box(&msg), black_box(&params))));
    }
    group.finish();

    // Each phase alone, on the 1 KB order; each returns what it built, so that its drop
    // is timed too, as in `run`.
    let msg = message(&small);
    let parsed = pipeline::parse(&msg.body).expect("parses");
    let vars = pipeline::vars(&route, &msg, &params, false);
    let mapping = route.mapping.as_ref().expect("the route has a map");
    let mapped = mapping.apply(&parsed, &vars).expect("maps");
    let erp = route.destinations.iter().find(|d| d.system.name == "erp").expect("an ERP destination");
    assert!(erp.mapping.is_none(), "the ERP destination uses the route's map");
    let erp_schema = erp.schema.as_ref().expect("the ERP destination has a schema");
    erp_schema.check(&mapped).expect("the mapped order passes the ERP schema");

    let mut group = bench_group(c, prefix, "phase_1KB");
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("parse", |b| b.iter(|| pipeline::parse(black_box(&msg.body))));
    // serde_json's own `Value` impl, which keeps the last of duplicate keys instead of
    // refusing them: what the duplicate check costs.
    group.bench_function("parse_serde_json", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&msg.body)))
    });
    group.bench_function("validate", |b| b.iter(|| pipeline::validate(&route, black_box(&parsed))));
    group.bench_function("vars", |b| b.iter(|| pipeline::vars(&route, black_box(&msg), black_box(&params), false)));
    group.bench_function("select", |b| b.iter(|| pipeline::select(&route, black_box(&parsed), black_box(&vars))));
    // The same two conditions by jaq alone (one converted document shared by both, as
    // `select` did before the native evaluator).
    let jq: Vec<&JqProgram> = route
        .destinations
        .iter()
        .filter_map(|d| match &d.when {
            Some(Condition::Jq(p)) => Some(&**p),
            _ => None,
        })
        .collect();
    assert!(jq.len() == 2 && jq.iter().all(|p| p.is_native()), "two native jq conditions");
    group.bench_function("select_jaq", |b| {
        b.iter(|| {
            let doc = JqDoc::new(black_box(&parsed));
            jq.iter().map(|p| p.test_doc_with_jaq(&doc, &vars).expect("holds")).filter(|h| *h).count()
        })
    });
    group.bench_function("map", |b| b.iter(|| mapping.apply(black_box(&parsed), black_box(&vars))));
    group.bench_function("serialize", |b| b.iter(|| serde_json::to_vec(black_box(&mapped))));
    group.bench_function("check_out", |b| b.iter(|| erp_schema.check(black_box(&mapped))));
    group.finish();
}

/// A benchmark group; with the CPU clock (`prefix` set), flat sampling with fewer, longer
/// samples (about 100 ms each), so that the clock's 1 ms granularity stays under 1%.
fn bench_group<'c, M: Measurement>(c: &'c mut Criterion<M>, prefix: &str, name: &str) -> BenchmarkGroup<'c, M> {
    let mut group = c.benchmark_group(format!("{prefix}{name}"));
    if !prefix.is_empty() {
        group.sampling_mode(SamplingMode::Flat).sample_size(50);
    }
    group
}

fn main() {
    if std::env::var("QIAO_BENCH_CLOCK").is_ok_and(|v| v == "cpu") {
        let mut c = Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime }).configure_from_args();
        benches(&mut c, "cpu_");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        benches(&mut c, "");
        c.final_summary();
    }
}
