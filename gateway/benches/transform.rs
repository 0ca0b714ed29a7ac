//! The same transform written twice with Qiao's mapping engine: once declaratively (paths,
//! constants, `each` over the order lines with a sub-map, `as: number`, a lookup, a
//! template), once as a single jq expression (`out: { jq: ... }`). The transform is the
//! Kingdee sales-order map of the shipped route `crm-order-to-erp` without its date
//! coercions (jq has no equivalent of `as: date`).
//!
//! Setup checks, outside the measurement, that both produce byte-identical JSON for each
//! input: the 887-byte CRM order (routes/examples/crm-order.json) and the same order with
//! 100 order lines (~16 KB).
//!
//! Groups (throughput is the size of the inbound body):
//! - `transform_1KB/{declarative,jq}`, `transform_100lines/{declarative,jq}`: criterion,
//!   `Mapping::apply` on the parsed order, result dropped inside the measurement.
//! - then (only under `cargo bench`, not `cargo test --benches`) a side-by-side run that
//!   alternates blocks of the two forms on the benchmark thread's CPU time and prints the
//!   median µs per message and the median jq/declarative ratio of the blocks: neighbours'
//!   load moves both forms alike, so the ratio is what to quote. `QIAO_BENCH_RATIO=0`
//!   skips it; `QIAO_BENCH_RATIO_ROUNDS` sets the number of alternations (default 15).
//!
//! Run: `cargo bench -p qiao --bench transform`. `QIAO_BENCH_CLOCK=cpu` measures the
//! criterion groups on thread CPU time (groups `cpu_transform_*`), as in the pipeline
//! bench. Numbers: docs/performance.md.

// The same allocator as the `qiao` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/stats.rs"]
mod stats;
use stats::median;

#[path = "support/cpu_clock.rs"]
mod cpu_clock;

#[path = "support/order.rs"]
mod order;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use cpu_clock::{ThreadCpuTime, thread_cpu_ns};
use criterion::measurement::{Measurement, WallTime};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use qiao::config::raw::{RawLookup, RawMap};
use qiao::mapping::{CompileEnv, Lookup, Mapping};
use serde_json::{Value, json};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../routes/examples/crm-order.json");
const ORDER_ID: &str = "801J000000k3QpRIAU";
/// Order lines of the larger input.
const LINES: usize = 100;

/// The declarative form.
const DECLARATIVE: &str = r#"
formid: { const: SAL_SaleOrder }
data.IsAutoSubmitAndAudit: { const: true }
data.NeedReturnFields: { const: [FBillNo] }
data.Model:
  from: records[0]
  required: true
  map:
    FID: { const: 0 }
    FBillTypeID.FNumber: { const: XSDD01_SYS }
    FDate: EffectiveDate
    FSaleOrgId.FNumber: { const: "100" }
    FCustId.FNumber: { from: Account.AccountNumber, required: true }
    FSalerId.FNumber: { from: Owner.Alias, lookup: salers }
    FNote: { template: "CRM订单 {OrderNumber} / 客户PO {PoNumber?} / {$params.order_id}" }
    FSaleOrderFinance.FSettleCurrId.FNumber: { const: PRE001 }
    FSaleOrderFinance.FIsIncludedTax: { const: true }
    FSaleOrderEntry:
      each: OrderItems.records
      map:
        FMaterialId.FNumber: Product2.ProductCode
        FUnitID.FNumber: { const: Pcs }
        FQty: { from: Quantity, as: number }
        FTaxPrice: { from: UnitPrice, as: number }
        FEntryTaxRate: { const: 13 }
        FEntryNote: Product2.Name
"#;

/// The same transform as one jq expression; `required` becomes `// error(...)`, the lookup
/// an object literal with `//` for its default, `as: number` `tonumber`.
const JQ: &str = r#"
out:
  jq: |
    (.records[0] // error("data.Model: required")) as $o
    | {
        formid: "SAL_SaleOrder",
        data: {
          IsAutoSubmitAndAudit: true,
          NeedReturnFields: ["FBillNo"],
          Model: {
            FID: 0,
            FBillTypeID: { FNumber: "XSDD01_SYS" },
            FDate: $o.EffectiveDate,
            FSaleOrgId: { FNumber: "100" },
            FCustId: { FNumber: ($o.Account.AccountNumber // error("FCustId.FNumber: required")) },
            FSalerId: { FNumber: ({ wangq: "YG0007", lina: "YG0012", zhangwei: "YG0003" }[$o.Owner.Alias] // "YG0001") },
            FNote: "CRM订单 \($o.OrderNumber) / 客户PO \($o.PoNumber // "") / \($params.order_id)",
            FSaleOrderFinance: { FSettleCurrId: { FNumber: "PRE001" }, FIsIncludedTax: true },
            FSaleOrderEntry: [
              $o.OrderItems.records[]
              | {
                  FMaterialId: { FNumber: .Product2.ProductCode },
                  FUnitID: { FNumber: "Pcs" },
                  FQty: (.Quantity | tonumber),
                  FTaxPrice: (.UnitPrice | tonumber),
                  FEntryTaxRate: 13,
                  FEntryNote: .Product2.Name
                }
            ]
          }
        }
      }
"#;

/// The route's lookup table.
const SALERS: &str = "values: { wangq: YG0007, lina: YG0012, zhangwei: YG0003 }\ndefault: YG0001\n";

fn compile(yaml: &str) -> Mapping {
    let raw: RawMap = qiao::config::parse_yaml(yaml).expect("the bench's map YAML parses");
    let table: RawLookup = qiao::config::parse_yaml(SALERS).expect("the lookup parses");
    let lookups = HashMap::from([("salers".to_string(), Arc::new(Lookup::from_raw("salers", &table)))]);
    let env = CompileEnv { file: Path::new("bench.yaml"), lookups: &lookups };
    let mut diags = Vec::new();
    match qiao::mapping::compile(&raw, &env, &mut diags) {
        Some(m) => m,
        None => panic!(
            "the bench's map does not compile:\n{}",
            diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        ),
    }
}

/// The two forms, and what each returns as the receiver's document.
struct Forms {
    declarative: Mapping,
    jq: Mapping,
    vars: Value,
}

impl Forms {
    fn new() -> Self {
        let declarative = compile(DECLARATIVE);
        let jq = compile(JQ);
        assert!(declarative.uses.params && jq.uses.params, "both forms read $params.order_id");
        Self { declarative, jq, vars: json!({ "params": { "order_id": ORDER_ID } }) }
    }

    fn declarative(&self, input: &Value) -> Value {
        self.declarative.apply(input, &self.vars).expect("the declarative form maps")
    }

    fn jq(&self, input: &Value) -> Value {
        let mut out = self.jq.apply(input, &self.vars).expect("the jq form maps");
        out.get_mut("out").map(Value::take).expect("the jq form has an output")
    }
}

fn small_order() -> Vec<u8> {
    std::fs::read(EXAMPLE).unwrap_or_else(|e| panic!("cannot read {EXAMPLE}: {e}"))
}

/// The example order with `lines` order lines, each like the example's (integer
/// quantities, fractional prices), laid out one line per text line.
fn order_with_lines(lines: usize) -> Vec<u8> {
    const NAMES: [&str; 4] = ["变频空压机", "空滤滤芯", "铝合金棒材 6061-T6", "螺杆压缩机专用润滑油"];
    let items: Vec<String> = (0..lines)
        .map(|i| {
            let item = json!({
                "Product2": {
                    "ProductCode": format!("FG-BJ-{:04}-V{}", 1000 + i, i % 7),
                    "Name": format!("{} {}kW", NAMES[i % NAMES.len()], 1 + i % 45),
                },
                "Quantity": 1 + (i * 7) % 40,
                "UnitPrice": ((i * 3137) % 800_000) as f64 / 100.0 + 0.5,
                "ServiceDate": format!("2025-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            });
            serde_json::to_string(&item).expect("serializes")
        })
        .collect();
    order::with_lines(&small_order(), &items)
}

/// The inputs, parsed, after checking that both forms give byte-identical JSON for them.
fn inputs(forms: &Forms) -> Vec<(&'static str, usize, Value)> {
    let mut out = Vec::new();
    for (name, body, lines) in [("1KB", small_order(), 2), ("100lines", order_with_lines(LINES), LINES)] {
        let input: Value = serde_json::from_slice(&body).expect("the order is JSON");
        let d = serde_json::to_string(&forms.declarative(&input)).expect("serializes");
        let j = serde_json::to_string(&forms.jq(&input)).expect("serializes");
        assert_eq!(d, j, "{name}: the declarative and the jq form differ");
        let parsed: Value = serde_json::from_str(&d).expect("JSON");
        let entries = parsed["data"]["Model"]["FSaleOrderEntry"].as_array().map(Vec::len);
        assert_eq!(entries, Some(lines), "{name}: mapped order lines");
        assert_eq!(parsed["data"]["Model"]["FSalerId"]["FNumber"], "YG0007", "{name}: the lookup");
        eprintln!(
            "input {name}: {} bytes in, {} bytes out, {lines} order lines; both forms identical",
            body.len(),
            d.len()
        );
        out.push((name, body.len(), input));
    }
    out
}

fn benches<M: Measurement>(c: &mut Criterion<M>, prefix: &str, forms: &Forms, inputs: &[(&str, usize, Value)]) {
    for (name, size, input) in inputs {
        let mut group = c.benchmark_group(format!("{prefix}transform_{name}"));
        if !prefix.is_empty() {
            flat(&mut group);
        }
        group.throughput(Throughput::Bytes(*size as u64));
        group.bench_function("declarative", |b| b.iter(|| forms.declarative.apply(black_box(input), &forms.vars)));
        group.bench_function("jq", |b| b.iter(|| forms.jq.apply(black_box(input), &forms.vars)));
        group.finish();
    }
}

/// With the CPU clock: flat sampling with fewer, longer samples (about 100 ms each), so
/// that the clock's 1 ms granularity stays under 1%.
fn flat<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group.sampling_mode(SamplingMode::Flat).sample_size(50);
}

/// Alternates blocks of the two forms on each input and prints medians and the ratio.
fn side_by_side(forms: &Forms, inputs: &[(&str, usize, Value)], rounds: usize) {
    /// Calibration time; a measured block runs three times as many iterations (~150 ms
    /// of CPU), long enough for the clock's granularity.
    const CALIBRATE_NS: u64 = 50_000_000;
    println!();
    println!("side by side: thread CPU time, {rounds} alternating rounds of ~150 ms blocks per form");
    println!("{:<10} {:>16} {:>10} {:>16} {:>13}", "input", "declarative µs", "jq µs", "jq/declarative", "(min-max)");
    for (name, _, input) in inputs {
        // Calibrate: iterations for one block of the slower form.
        let iters = |f: &dyn Fn()| {
            let (t0, mut n) = (thread_cpu_ns(), 0u64);
            while thread_cpu_ns() - t0 < CALIBRATE_NS {
                f();
                n += 1;
            }
            n
        };
        let run_d = || drop(black_box(forms.declarative.apply(black_box(input), &forms.vars)));
        let run_j = || drop(black_box(forms.jq.apply(black_box(input), &forms.vars)));
        let n_d = (iters(&run_d) * 3).max(1);
        let n_j = (iters(&run_j) * 3).max(1);
        let timed = |f: &dyn Fn(), n: u64| {
            let t0 = thread_cpu_ns();
            for _ in 0..n {
                f();
            }
            (thread_cpu_ns() - t0) as f64 / n as f64 / 1000.0
        };
        let (mut ds, mut js, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            // Alternate which goes first, so that neither always follows the other.
            let (d, j) = if r % 2 == 0 {
                let d = timed(&run_d, n_d);
                (d, timed(&run_j, n_j))
            } else {
                let j = timed(&run_j, n_j);
                (timed(&run_d, n_d), j)
            };
            ds.push(d);
            js.push(j);
            ratios.push(j / d);
        }
        let (lo, hi) = (ratios.iter().cloned().fold(f64::MAX, f64::min), ratios.iter().cloned().fold(0.0, f64::max));
        println!(
            "{:<10} {:>16.2} {:>10.2} {:>15.2}x {:>13}",
            name,
            median(ds),
            median(js),
            median(ratios),
            format!("{lo:.2}-{hi:.2}")
        );
    }
}

fn main() {
    let forms = Forms::new();
    let inputs = inputs(&forms);
    if std::env::var("QIAO_BENCH_CLOCK").is_ok_and(|v| v == "cpu") {
        let mut c = Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime }).configure_from_args();
        benches(&mut c, "cpu_", &forms, &inputs);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        benches(&mut c, "", &forms, &inputs);
        c.final_summary();
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not (one quick pass only).
    let benching = std::env::args().any(|a| a == "--bench");
    if benching && std::env::var("QIAO_BENCH_RATIO").map_or(true, |v| v != "0") {
        let rounds = std::env::var("QIAO_BENCH_RATIO_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
        side_by_side(&forms, &inputs, rounds);
    }
}
