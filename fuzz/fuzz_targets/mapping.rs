//! Messages through the shipped maps: the config directory `routes/` is loaded once and
//! every route map and destination map in it is applied to fuzzed messages. An input that
//! is JSON is used as the message itself (the corpus starts from `routes/examples/*.json`);
//! any other input drives `arbitrary` to take one of the examples and change it in a few
//! places (values of other types, dates at the edges of the calendar, missing keys), and
//! to fuzz the `params`/`headers`/`meta` vars too. The destinations' `when:` conditions
//! are evaluated on the same messages. Errors are expected; a panic is a bug.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use qiao::condition::Condition;
use qiao::config::Overlay;
use qiao::mapping::{Mapping, Scope};
use serde_json::Value;

struct Fixture {
    maps: Vec<(String, Mapping)>,
    /// The `when:` conditions of the shipped destinations (content-based routing).
    conditions: Vec<Condition>,
    examples: Vec<Value>,
    vars: Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        qiao_fuzz::allow_caught_panics();
        let dir = qiao_fuzz::repo().join("routes");
        let config = qiao::config::load(&dir, &Overlay(vec![])).unwrap_or_else(|diags| {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("routes/ does not load:\n{}", text.join("\n"))
        });
        let mut maps = Vec::new();
        let mut conditions = Vec::new();
        for route in &config.routes {
            conditions.extend(route.destinations.iter().filter_map(|d| d.when.clone()));
            if let Some(m) = &route.mapping {
                maps.push((route.name.to_string(), m.clone()));
            }
            for (i, dest) in route.destinations.iter().enumerate() {
                if let Some(m) = &dest.mapping {
                    maps.push((format!("{}#to[{i}]", route.name), m.clone()));
                }
            }
        }
        assert!(maps.len() >= 5, "expected the shipped maps, found {}", maps.len());
        Fixture { maps, conditions, examples: qiao_fuzz::examples(), vars: qiao_fuzz::default_vars() }
    })
}

fn run(f: &Fixture, input: &Value, vars: &Value) {
    let scope = Scope { current: input, document: input, vars };
    for c in &f.conditions {
        let _ = c.holds(&scope);
    }
    for (_name, map) in &f.maps {
        match map.apply(input, vars) {
            Ok(out) => qiao_fuzz::serialize(&out),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(input) = serde_json::from_slice::<Value>(data) {
        run(f, &input, &f.vars);
        return;
    }
    let mut u = Unstructured::new(data);
    let build = |u: &mut Unstructured<'_>| -> arbitrary::Result<(Value, Value)> {
        let mut doc = if u.ratio(7u8, 8u8)? { u.choose(&f.examples)?.clone() } else { qiao_fuzz::value(u, 5)? };
        for _ in 0..u.int_in_range(1..=6u8)? {
            qiao_fuzz::mutate(u, &mut doc)?;
        }
        let vars = if u.ratio(1u8, 2u8)? { f.vars.clone() } else { qiao_fuzz::vars(u)? };
        Ok((doc, vars))
    };
    if let Ok((doc, vars)) = build(&mut u) {
        run(f, &doc, &vars);
    }
});
