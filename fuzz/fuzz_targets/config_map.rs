//! A field map as written: arbitrary text → `parse_yaml::<RawMap>` → `mapping::compile`
//! (with the lookup tables of the shipped routes in scope), then the compiled map is
//! applied to every shipped example message and a few degenerate inputs. Most random
//! bytes are not a route file; this target spends its time in the mapping compiler and
//! the engine instead of in YAML errors.

#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use qiao::config::parse_yaml;
use qiao::config::raw::{RawLookup, RawMap};
use qiao::mapping::{self, CompileEnv, Lookup};
use serde_json::{Value, json};

struct Fixture {
    lookups: HashMap<String, Arc<Lookup>>,
    inputs: Vec<Value>,
    vars: Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        qiao_fuzz::allow_caught_panics();
        let tables = [
            ("salers", "values: { wangq: YG0007, lina: YG0012 }\ndefault: YG0001\n"),
            ("lines", "values: { LINE-01: WH-HZ-01, LINE-03: WH-HZ-02 }\n"),
            ("units", "values: { PCS: Pcs, \"1\": 1, \"true\": yes }\ndefault: null\n"),
        ];
        let lookups = tables
            .iter()
            .map(|(name, yaml)| {
                let raw: RawLookup = parse_yaml(yaml).expect("lookup YAML");
                (name.to_string(), Arc::new(Lookup::from_raw(name, &raw)))
            })
            .collect();
        let mut inputs = qiao_fuzz::examples();
        inputs.extend([json!({}), json!(null), json!([1, "2", null]), json!("2025-03-18"), json!(1742274000000_i64)]);
        Fixture { lookups, inputs, vars: qiao_fuzz::default_vars() }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = parse_yaml::<RawMap>(text) else { return };
    let f = fixture();
    let env = CompileEnv { file: Path::new("routes/fuzz.yaml"), lookups: &f.lookups };
    let mut diags = Vec::new();
    let compiled = mapping::compile(&raw, &env, &mut diags);
    qiao_fuzz::render(&diags);
    let Some(map) = compiled else { return };
    for input in &f.inputs {
        for vars in [&f.vars, &Value::Null] {
            match map.apply(input, vars) {
                Ok(out) => qiao_fuzz::serialize(&out),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
});
