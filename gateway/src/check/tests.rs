use std::path::Path;

use crate::config::{self, Diagnostic, Overlay};

/// Loads a config made of `files` (name → text) in a temporary directory.
fn load(files: &[(&str, &str)]) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(
        dir.path().join("systems.yaml"),
        "systems:\n  erp: { kind: erp, http: { base_url: \"http://127.0.0.1:9\" } }\n",
    )
    .unwrap();
    config::load(dir.path(), &Overlay::default()).map(|c| c.warnings)
}

fn messages(d: &[Diagnostic]) -> Vec<String> {
    d.iter().map(|d| format!("{}: {}", if d.is_error() { "error" } else { "warning" }, d.message)).collect()
}

const SOURCE: &str = r#"{
  "type": "object", "additionalProperties": false, "required": ["order"],
  "properties": {
    "order": { "type": "object", "properties": {
      "no": { "type": "string" }, "qty": { "type": "string" }, "amount": { "type": "number" },
      "status": { "enum": ["open", "closed", "held"] },
      "customer": { "type": "string" },
      "lines": { "type": "array", "items": { "type": "object", "additionalProperties": false,
                 "properties": { "code": { "type": "string" }, "n": { "type": "integer" } } } }
    } }
  }
}"#;

const RECEIVER: &str = r#"{
  "type": "object", "required": ["FBillNo", "FQty", "FCustId"], "additionalProperties": false,
  "properties": {
    "FBillNo": { "type": "string" }, "FQty": { "type": "number" }, "FCustId": { "type": "string" },
    "FStatus": { "type": "string" },
    "FEntry": { "type": "array", "items": { "type": "object", "required": ["FMaterial"],
                "properties": { "FMaterial": { "type": "string" }, "FN": { "type": "number" } } } }
  }
}"#;

fn route(map: &str) -> String {
    format!(
        "routes:\n  r:\n    from: {{ http: {{ path: /r }} }}\n    schema: schemas/source.json\n    to:\n      system: erp\n      schema: schemas/receiver.json\n    map:\n{map}"
    )
}

fn check(map: &str) -> Result<Vec<String>, Vec<String>> {
    let r = route(map);
    load(&[("r.yaml", &r), ("schemas/source.json", SOURCE), ("schemas/receiver.json", RECEIVER)])
        .map(|w| messages(&w))
        .map_err(|e| messages(&e))
}

#[test]
fn a_clean_map_passes_silently() {
    let ok = check(
        "      FBillNo: order.no\n      FQty: { from: order.qty, as: number }\n      FCustId: order.customer\n      FEntry:\n        each: order.lines\n        map:\n          FMaterial: code\n          FN: n\n",
    );
    assert_eq!(ok, Ok(vec![]));
}

#[test]
fn each_finding_is_reported() {
    let errs = check(
        "      FBillNo: order.numero\n      FQty: order.qty\n      FStatus: { from: order.status, lookup: { values: { open: O, closed: C } } }\n      FExtra: { const: 1 }\n      FEntry:\n        each: order.customer\n        map:\n          FMaterial: code\n",
    )
    .unwrap_err();
    let all = errs.join("\n");
    for expected in [
        "requires `FCustId`, but the map never sets it",
        "source path `order.numero`: `numero` is not in",
        "`FQty` gets a string (from `order.qty`), but erp's schema wants a number — add `as: number`",
        "lookup `inline` has no entry and no default for \"held\"",
        "does not allow `FExtra`",
        "`each: order.customer` walks over an array, but the source schema says it is a string",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
}

#[test]
fn paths_inside_each_and_through_scalars_are_checked() {
    let errs = check(
        "      FBillNo: order.no\n      FQty: { from: order.amount }\n      FCustId: order.customer.name\n      FEntry:\n        each: order.lines\n        map:\n          FMaterial: codes\n",
    )
    .unwrap_err()
    .join("\n");
    assert!(errs.contains("source path `order.customer.name` goes through `order.customer`, which"), "{errs}");
    assert!(errs.contains("source path `codes`: `codes` is not in"), "{errs}");
    assert!(errs.contains("allows no such field"), "the line object is closed: an error:\n{errs}");
}

#[test]
fn open_objects_give_warnings_not_errors() {
    let open = SOURCE.replace(
        r#""type": "object", "additionalProperties": false, "required": ["order"]"#,
        r#""type": "object", "required": ["order"]"#,
    );
    let r = route(
        "      FBillNo: order.no\n      FQty: { from: order.qty, as: number }\n      FCustId: order.customer\n      FStatus: undeclared\n",
    );
    let warnings =
        load(&[("r.yaml", &r), ("schemas/source.json", &open), ("schemas/receiver.json", RECEIVER)]).unwrap();
    let w = messages(&warnings).join("\n");
    assert!(
        w.contains("warning: source path `undeclared`: `undeclared` is not in") && w.contains("does not declare it"),
        "{w}"
    );
}

#[test]
fn a_misspelt_source_field_gets_the_declared_name_as_a_hint() {
    let r =
        route("      FBillNo: order.no\n      FQty: { from: order.qty, as: number }\n      FCustId: order.custmer\n");
    // `order` is open: a warning, with the hint all the same.
    let warnings =
        load(&[("r.yaml", &r), ("schemas/source.json", SOURCE), ("schemas/receiver.json", RECEIVER)]).unwrap();
    let d = warnings.iter().find(|d| d.message.contains("order.custmer")).unwrap_or_else(|| panic!("{warnings:?}"));
    assert_eq!(d.hint.as_deref(), Some("did you mean `customer`? (see docs/checks.md)"), "{d:?}");
}

#[test]
fn unknown_schema_parts_stay_silent() {
    let r = "routes:\n  r:\n    from: { http: { path: /r } }\n    schema: schemas/any.json\n    map:\n      x: whatever.path\n      y: { jq: '.a' }\n    to: { system: erp }\n";
    assert_eq!(load(&[("r.yaml", r), ("schemas/any.json", "{}")]).map(|w| messages(&w)), Ok(vec![]));
    let _ = Path::new("");
}

#[test]
fn a_condition_path_the_schema_cannot_have_is_reported_where_it_is_written() {
    let r = "routes:\n  r:\n    from: { http: { path: /r } }\n    schema: schemas/source.json\n    to:\n      - system: erp\n        when: { path: order.amout, gt: 100 }\n        map: { FBillNo: order.no }\n";
    let warnings = load(&[("r.yaml", r), ("schemas/source.json", SOURCE)]).unwrap();
    let d = warnings.iter().find(|d| d.message.contains("order.amout")).unwrap_or_else(|| panic!("{warnings:?}"));
    assert_eq!((d.place.line, d.place.column), (7, 23), "at the path inside `when`, not at the destination");
}

#[test]
fn an_undeclared_path_on_a_required_field_is_an_error_at_the_path() {
    let r = route(
        "      FBillNo: order.no\n      FQty: { from: order.qty, as: number }\n      FCustId: { from: order.custmer, required: true }\n",
    );
    // `order` is open: a warning without `required`, an error with it.
    let errs =
        load(&[("r.yaml", &r), ("schemas/source.json", SOURCE), ("schemas/receiver.json", RECEIVER)]).unwrap_err();
    let d = errs.iter().find(|d| d.message.contains("order.custmer")).unwrap_or_else(|| panic!("{errs:?}"));
    assert!(d.is_error() && d.message.contains("`required: true`"), "{d:?}");
    assert_eq!(d.hint.as_deref(), Some("did you mean `customer`? (see docs/checks.md)"), "{d:?}");
    assert_eq!((d.place.line, d.place.column), (11, 24), "at `order.custmer`, not at the `{{` of the flow map");

    // A default fills the gap: a warning again.
    let r = route(
        "      FBillNo: order.no\n      FQty: { from: order.qty, as: number }\n      FCustId: { from: order.custmer, required: true, default: C0 }\n",
    );
    let warnings =
        load(&[("r.yaml", &r), ("schemas/source.json", SOURCE), ("schemas/receiver.json", RECEIVER)]).unwrap();
    let w = messages(&warnings);
    assert!(w.len() == 1 && w[0].starts_with("warning: source path `order.custmer`"), "{w:?}");
    assert!(w[0].ends_with("which does not declare it"), "{w:?}");
}

#[test]
fn the_checks_run_beside_the_route_s_other_errors() {
    // An unknown system, a broken jq expression and a broken path: the maps are still held
    // against both schemas, without the fields that did not compile.
    let r = "routes:\n  r:\n    from: { http: { path: /r } }\n    schema: schemas/source.json\n    to:\n      system: erpp\n      schema: schemas/receiver.json\n    map:\n      FBillNo: order.numero\n      FQty: { from: order.qty }\n      FCustId: { jq: '.order | {a: .customer' }\n      FExtra: { jq: '.order | [' }\n      FStatus: 'order..status'\n";
    let errs = load(&[("r.yaml", r), ("schemas/source.json", SOURCE), ("schemas/receiver.json", RECEIVER)])
        .unwrap_err()
        .iter()
        .map(|d| format!("{}:{}: {}", d.place.line, d.place.column, d.message))
        .collect::<Vec<_>>();
    let all = errs.join("\n");
    for expected in [
        "11:22: jq error",
        "12:21: jq error",
        "13:16: bad source path `order..status`",
        "6:15: unknown system `erpp`",
        "9:16: source path `order.numero`: `numero` is not in",
        "12:7: erpp's schema (",
        "does not allow `FExtra`",
        "10:21: `FQty` gets a string (from `order.qty`), but erpp's schema wants a number",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
    assert!(!all.contains("requires `FCustId`"), "a field whose value did not compile is not missing:\n{all}");
    assert!(!all.contains("FStatus"), "nor is a key the receiver allows refused:\n{all}");
    assert_eq!(errs.len(), 7, "each finding once:\n{all}");
}

#[test]
fn edge_limits_out_of_range_are_errors() {
    let errors = |files: &[(&str, &str)]| messages(&load(files).expect_err("refused"));
    let e =
        errors(&[("q.yaml", "server: { header_timeout_ms: 0, max_header_count: 300, max_header_bytes: 2000000 }\n")]);
    assert_eq!(
        e,
        [
            "error: `header_timeout_ms` must be at least 1",
            "error: `max_header_count: 300` is out of range",
            "error: `max_header_bytes: 2000000` is out of range",
        ]
    );
    let e = errors(&[(
        "r.yaml",
        "routes:\n  r:\n    from: { http: { path: /r } }\n    concurrency_limit: 0\n    to: { system: erp, path: /x }\n",
    )]);
    assert_eq!(e, ["error: `concurrency_limit` must be at least 1"]);
    let e = errors(&[
        ("mq.yaml", "systems:\n  mq: { kind: wms, amqp: { url: \"amqp://127.0.0.1:9/%2f\" } }\n"),
        (
            "r.yaml",
            "routes:\n  r:\n    from: { amqp: { system: mq, queue: q } }\n    schema: s.json\n    concurrency_limit: 4\n    to: { system: erp, path: /x }\n",
        ),
        ("s.json", "{}"),
    ]);
    assert_eq!(e, ["error: `concurrency_limit` is for HTTP routes"]);
}
