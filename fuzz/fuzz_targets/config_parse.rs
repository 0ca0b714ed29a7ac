//! A route file as written: arbitrary text → `parse_yaml::<RawFile>`; when it parses, the
//! file is written next to a fixed `systems.yaml` and `schemas/` (`any.json`, `object.json`
//! and the shipped `routes/schemas/*.json`) and the directory
//! is loaded and compiled with `qiao::config::load`, exactly as `qiao check` and startup
//! do. Errors are expected; a panic is a bug. Compiled routes then map the shipped
//! example messages.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qiao::config::raw::RawFile;
use qiao::config::{Overlay, parse_yaml};
use serde_json::Value;

const SYSTEMS: &str = r#"systems:
  erp:
    kind: erp
    http:
      base_url: http://127.0.0.1:9101
      headers: { X-KDApi-LCID: "2052" }
      retry: { max_attempts: 3 }
  crm:
    kind: crm
    http:
      base_url: ${CRM_URL:-http://127.0.0.1:9102}
      auth: { bearer: { token: fuzz } }
  wms:
    kind: wms
    http: { base_url: http://127.0.0.1:9104 }
    amqp:
      url: amqp://guest:guest@127.0.0.1:5672/%2f
      exchange: qiao.events
      queues: [{ name: qiao.wms.stockout, bindings: [wms.stockout.#] }]
  mes:
    kind: mes
    amqp: { url: amqp://guest:guest@127.0.0.1:5672/%2f }
"#;

struct Fixture {
    dir: PathBuf,
    route: PathBuf,
    examples: Vec<Value>,
    vars: Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        qiao_fuzz::allow_caught_panics();
        // One directory for the whole run: only route.yaml changes between inputs.
        let dir = std::env::temp_dir().join(format!("qiao-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("schemas")).expect("temp dir");
        std::fs::write(dir.join("systems.yaml"), SYSTEMS).expect("systems.yaml");
        std::fs::write(dir.join("schemas/any.json"), "{}").expect("any.json");
        std::fs::write(dir.join("schemas/object.json"), r#"{"type": "object", "required": ["id"]}"#)
            .expect("object.json");
        // The shipped schemas too, so that routes naming them reach the static checks of
        // maps against source and receiver schemas.
        let shipped = qiao_fuzz::repo().join("routes/schemas");
        for entry in std::fs::read_dir(&shipped).expect("routes/schemas") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, dir.join("schemas").join(path.file_name().expect("name"))).expect("copy schema");
        }
        let route = dir.join("route.yaml");
        Fixture { dir, route, examples: qiao_fuzz::examples(), vars: qiao_fuzz::default_vars() }
    })
}

/// Schema paths are read from disk: keep them inside the fixture directory, so that an
/// input naming `/proc/kcore` does not make the fuzzer read the machine's memory.
fn schemas_stay_inside(raw: &RawFile) -> bool {
    raw.routes
        .values()
        .all(|r| r.schema.as_ref().is_none_or(|s| !s.value.contains("..") && !Path::new(s.value.trim()).is_absolute()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let f = fixture();
    let raw = match parse_yaml::<RawFile>(text) {
        Ok(raw) => raw,
        Err(e) => {
            let _ = e.location();
            let message = e.without_snippet().to_string();
            // load_dir turns an unknown key or value into a diagnostic with the nearest
            // valid name: only these errors take that path through the whole loader; the
            // rest of the (many) inputs that are not a config file stop here.
            if message.starts_with("unknown ") || message.contains("flow ") {
                std::fs::write(&f.route, text).expect("route.yaml");
                let diags = qiao::config::load(&f.dir, &Overlay(vec![])).expect_err("route.yaml does not parse");
                qiao_fuzz::render(&diags);
            }
            return;
        }
    };
    if !schemas_stay_inside(&raw) {
        return;
    }
    std::fs::write(&f.route, text).expect("route.yaml");
    match qiao::config::load(&f.dir, &Overlay(vec![])) {
        Ok(config) => {
            qiao_fuzz::render(&config.warnings);
            for route in &config.routes {
                let maps = route.mapping.iter().chain(route.destinations.iter().filter_map(|d| d.mapping.as_ref()));
                for map in maps {
                    for input in &f.examples {
                        if let Ok(out) = map.apply(input, &f.vars) {
                            qiao_fuzz::serialize(&out);
                        }
                    }
                }
            }
        }
        Err(diags) => qiao_fuzz::render(&diags),
    }
});
