use super::*;
use serde_json::json;

fn lookups() -> HashMap<String, Arc<Lookup>> {
    let raw: RawLookup = crate::yaml::parse_yaml("values: { wangq: YG0007, lina: YG0012 }\n").unwrap();
    let strict = Arc::new(Lookup::from_raw("salers", &raw));
    let raw: RawLookup = crate::yaml::parse_yaml("values: { WH-HZ-01: CK001 }\ndefault: CK999\n").unwrap();
    let lenient = Arc::new(Lookup::from_raw("stocks", &raw));
    HashMap::from([("salers".to_string(), strict), ("stocks".to_string(), lenient)])
}

fn try_compile(yaml: &str) -> Result<Mapping, Vec<Diagnostic>> {
    let raw: RawMap = crate::yaml::parse_yaml(yaml).expect("test YAML parses");
    let lookups = lookups();
    let env = CompileEnv { file: Path::new("route.yaml"), lookups: &lookups };
    let mut diags = Vec::new();
    compile(&raw, &env, &mut diags).ok_or(diags)
}

fn compile_ok(yaml: &str) -> Mapping {
    try_compile(yaml).unwrap_or_else(|d| panic!("compile failed: {d:#?}"))
}

fn errors(yaml: &str) -> Vec<String> {
    try_compile(yaml).expect_err("expected compile errors").iter().map(|d| d.to_string()).collect()
}

fn run(yaml: &str, input: Value) -> Result<Value, MapError> {
    compile_ok(yaml).apply(&input, &Value::Null)
}

#[test]
fn copies_from_paths_with_the_short_form() {
    let out = run("a: x.y\nb: /list/1\n", json!({"x": {"y": 1}, "list": ["p", "q"]})).unwrap();
    assert_eq!(out, json!({"a": 1, "b": "q"}));
}

#[test]
fn absent_sources_leave_the_field_out_and_nulls_are_copied() {
    let out = run("a: missing\nb: n\n", json!({"n": null})).unwrap();
    assert_eq!(out, json!({"b": null}));
}

#[test]
fn constants_of_every_type() {
    let out = run(
        "s: { const: SAL_SaleOrder }\nn: { const: 0 }\nb: { const: true }\nz: { const: null }\no: { const: { FNumber: PRE001 } }\n",
        json!({}),
    )
    .unwrap();
    assert_eq!(out, json!({"s": "SAL_SaleOrder", "n": 0, "b": true, "z": null, "o": {"FNumber": "PRE001"}}));
}

#[test]
fn defaults_apply_when_absent_or_null() {
    let yaml = "a: { from: x, default: 1 }\nb: { from: y, default: 2 }\nc: { from: z, default: 3 }\n";
    assert_eq!(run(yaml, json!({"y": null, "z": 9})).unwrap(), json!({"a": 1, "b": 2, "c": 9}));
}

#[test]
fn dotted_targets_build_nested_objects_in_order() {
    let yaml = "formid: { const: SAL_SaleOrder }\ndata.Model.FID: { const: 0 }\ndata.Model.FCustId.FNumber: cust\ndata.IsAutoSubmitAndAudit: { const: true }\n";
    let out = run(yaml, json!({"cust": "CUST0042"})).unwrap();
    assert_eq!(
        serde_json::to_string(&out).unwrap(),
        r#"{"formid":"SAL_SaleOrder","data":{"Model":{"FID":0,"FCustId":{"FNumber":"CUST0042"}},"IsAutoSubmitAndAudit":true}}"#
    );
}

#[test]
fn nested_map_blocks_merge_with_dotted_siblings() {
    let yaml = "data:\n  map:\n    a: x\ndata.b: { const: 2 }\n";
    assert_eq!(run(yaml, json!({"x": 1})).unwrap(), json!({"data": {"a": 1, "b": 2}}));
}

#[test]
fn nested_map_with_from_reads_relative_to_it() {
    let yaml = "acct:\n  from: Account\n  map:\n    code: AccountNumber\n    name: Name\n";
    let out = run(yaml, json!({"Account": {"AccountNumber": "C1", "Name": "杭州恒泽"}})).unwrap();
    assert_eq!(out, json!({"acct": {"code": "C1", "name": "杭州恒泽"}}));
    assert_eq!(run(yaml, json!({})).unwrap(), json!({}), "absent context leaves the object out");
}

#[test]
fn each_builds_arrays_of_objects_with_the_root_in_reach() {
    let yaml = "lines:\n  each: items\n  map:\n    FMaterialId.FNumber: Product2.ProductCode\n    FQty: { from: Quantity, as: number }\n    FNote: { template: \"{$root.po}#{Product2.ProductCode}\" }\n";
    let input = json!({"po": "PO-1", "items": [
        {"Product2": {"ProductCode": "FG-BJ-3000"}, "Quantity": "20"},
        {"Product2": {"ProductCode": "SP-FLT-08"}, "Quantity": 40}
    ]});
    let out = run(yaml, input).unwrap();
    assert_eq!(
        out,
        json!({"lines": [
            {"FMaterialId": {"FNumber": "FG-BJ-3000"}, "FQty": 20, "FNote": "PO-1#FG-BJ-3000"},
            {"FMaterialId": {"FNumber": "SP-FLT-08"}, "FQty": 40, "FNote": "PO-1#SP-FLT-08"}
        ]})
    );
}

#[test]
fn each_with_item_builds_arrays_of_values() {
    let yaml = "Numbers:\n  each: bills\n  item: { from: no, as: string }\n";
    assert_eq!(run(yaml, json!({"bills": [{"no": 517}, {"no": "518"}]})).unwrap(), json!({"Numbers": ["517", "518"]}));
    let yaml = "codes: { each: list, item: . }\n";
    assert_eq!(run(yaml, json!({"list": ["a", "b"]})).unwrap(), json!({"codes": ["a", "b"]}));
}

#[test]
fn each_over_a_non_array_is_a_named_error() {
    let yaml = "lines:\n  each: items\n  map:\n    a: x\n";
    let err = run(yaml, json!({"items": {"x": 1}})).unwrap_err();
    assert_eq!(err.target, "lines");
    assert_eq!(err.source, "items");
    assert!(err.reason.contains("an object"), "{err}");
}

#[test]
fn errors_inside_arrays_name_the_element() {
    let yaml =
        "data.Model.FSaleOrderEntry:\n  each: OrderItems.records\n  map:\n    FQty: { from: Quantity, as: number }\n";
    let input = json!({"OrderItems": {"records": [{"Quantity": 1}, {"Quantity": "twenty"}]}});
    let err = run(yaml, input).unwrap_err();
    assert_eq!(err.target, "data.Model.FSaleOrderEntry[1].FQty");
    assert_eq!(err.source, "Quantity");
    assert!(err.reason.contains("\"twenty\""), "{err}");
}

#[test]
fn lookups_translate_with_or_without_default() {
    let yaml = "saler: { from: owner, lookup: salers }\nstock: { from: wh, lookup: stocks }\n";
    assert_eq!(
        run(yaml, json!({"owner": "wangq", "wh": "WH-X"})).unwrap(),
        json!({"saler": "YG0007", "stock": "CK999"})
    );
    let err = run(yaml, json!({"owner": "nobody", "wh": "WH-HZ-01"})).unwrap_err();
    assert_eq!(err.target, "saler");
    assert!(err.reason.contains("no entry for \"nobody\""), "{err}");
}

#[test]
fn inline_lookups_and_number_keys() {
    let yaml = "status:\n  from: code\n  lookup:\n    values: { \"1\": open, \"2\": closed }\n";
    assert_eq!(run(yaml, json!({"code": 2})).unwrap(), json!({"status": "closed"}));
    let yaml = "paid:\n  from: flag\n  lookup:\n    values: { \"true\": Y, \"false\": N }\n";
    assert_eq!(run(yaml, json!({"flag": false})).unwrap(), json!({"paid": "N"}));
    assert_eq!(run(yaml, json!({"flag": true})).unwrap(), json!({"paid": "Y"}));
}

#[test]
fn lookup_then_coercion_in_that_order() {
    let yaml = "flag:\n  from: s\n  lookup: { values: { agree: \"1\", refuse: \"0\" } }\n  as: boolean\n";
    assert_eq!(run(yaml, json!({"s": "agree"})).unwrap(), json!({"flag": true}));
}

#[test]
fn templates_fill_in_and_fail_clearly() {
    let yaml = "FNote: { template: \"CRM订单 {OrderNumber} / 客户PO {PoNumber?}\" }\n";
    assert_eq!(run(yaml, json!({"OrderNumber": "00000105"})).unwrap(), json!({"FNote": "CRM订单 00000105 / 客户PO "}));
    let yaml = "FNote: { template: \"{OrderNumber}\" }\n";
    let err = run(yaml, json!({})).unwrap_err();
    assert_eq!((err.target.as_str(), err.source.as_str()), ("FNote", "OrderNumber"));
}

#[test]
fn required_fields_fail_when_missing() {
    let yaml = "cust: { from: Account.AccountNumber, required: true }\n";
    let err = run(yaml, json!({"Account": {}})).unwrap_err();
    assert_eq!(err.target, "cust");
    assert_eq!(err.source, "Account.AccountNumber");
    assert!(err.reason.contains("required"));
    let yaml = "cust: { from: x, required: true, default: C0 }\n";
    assert_eq!(run(yaml, json!({})).unwrap(), json!({"cust": "C0"}));
}

#[test]
fn coercions_and_dates_in_a_map() {
    let yaml = "FDate: { from: createTime, as: date, timezone: \"+08:00\" }\nFQty: { from: q, as: integer }\nok: { from: b, as: boolean }\nts: { from: d, as: epoch_ms }\n";
    let out = run(yaml, json!({"createTime": 1742274000000_i64, "q": "20", "b": "yes", "d": "2025-03-18"})).unwrap();
    assert_eq!(out, json!({"FDate": "2025-03-18", "FQty": 20, "ok": true, "ts": 1742256000000_i64}));
}

#[test]
fn vars_are_read_and_recorded_in_uses() {
    let m = compile_ok("id: $params.order_id\nm: $meta.message_id\n");
    assert!(m.uses.params && m.uses.meta && !m.uses.headers);
    let vars = json!({"params": {"order_id": "801J"}, "meta": {"message_id": "mid"}});
    assert_eq!(m.apply(&json!({}), &vars).unwrap(), json!({"id": "801J", "m": "mid"}));
    let m = compile_ok("t: { template: \"{$headers.x-tenant}\" }\n");
    assert!(m.uses.headers);
    assert!(!compile_ok("a: b\n").uses.any());
}

#[test]
fn compile_errors_name_their_place_and_hint() {
    let errs =
        errors("a: x..y\nb: { from: q, as: numbr }\nc: { from: q, lookup: salerz }\nd: { template: \"{oops\" }\n");
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("route.yaml:1:4: error: bad source path `x..y`"), "{}", errs[0]);
    assert!(errs[1].contains("unknown type `numbr`") && errs[1].contains("did you mean `number`?"), "{}", errs[1]);
    assert!(
        errs[2].contains("unknown lookup table `salerz`") && errs[2].contains("did you mean `salers`?"),
        "{}",
        errs[2]
    );
    assert!(errs[3].contains("without a closing"), "{}", errs[3]);
}

#[test]
fn conflicting_or_incomplete_fields_are_refused() {
    assert!(errors("a: { from: x, const: 1 }\n")[0].contains("one source, this one has from and const"));
    assert!(errors("a: { as: number }\n")[0].contains("no source"));
    assert!(errors("a: x\na.b: y\n")[0].contains("set more than once"));
    assert!(errors("a: { each: xs }\n")[0].contains("exactly one of `map`"));
    assert!(errors("a: { from: x, item: y }\n")[0].contains("`item` only makes sense"));
    assert!(errors("a: { map: { b: x }, item: y }\n")[0].contains("`item` only makes sense"));
    assert!(errors("a: { from: x, as: date, timezone: Asia/Shanghai }\n")[0].contains("not a UTC offset"));
    assert!(errors("a: { from: x, as: date, format: \"%Q\" }\n")[0].contains("not a valid format"));
    assert!(errors("a..b: x\n")[0].contains("empty name"));
}

#[test]
fn unknown_operations_are_caught_by_the_parser_with_their_name() {
    let err = crate::yaml::parse_yaml::<RawMap>("a: { form: x }\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `form`"), "{err}");
}

#[test]
fn options_without_effect_are_warnings_not_errors() {
    let raw: RawMap = crate::yaml::parse_yaml("a: { from: x, format: \"%Y\" }\n").unwrap();
    let lookups = lookups();
    let env = CompileEnv { file: Path::new("r.yaml"), lookups: &lookups };
    let mut diags = Vec::new();
    assert!(compile(&raw, &env, &mut diags).is_some());
    assert_eq!(diags.len(), 1);
    assert!(!diags[0].is_error());
    // On a nested map too: never silently ignored.
    let raw: RawMap = crate::yaml::parse_yaml("a: { map: { b: x }, timezone: \"+08:00\" }\n").unwrap();
    let mut diags = Vec::new();
    assert!(compile(&raw, &env, &mut diags).is_some());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(diags[0].message.contains("`timezone` has no effect without `as`"));
}

#[test]
fn lists_build_arrays_from_specs() {
    let yaml = "Quantity:\n  list:\n    - map:\n        QuantityString: { from: qty, as: string }\n        UnitOfMeasure: { const: KG }\n    - absent\nNumbers: { list: [bill, { const: X }] }\n";
    let out = run(yaml, json!({"qty": 96.5, "bill": "XSDD000517"})).unwrap();
    assert_eq!(
        out,
        json!({"Quantity": [{"QuantityString": "96.5", "UnitOfMeasure": "KG"}], "Numbers": ["XSDD000517", "X"]})
    );
}

#[test]
fn selectors_read_name_value_forms() {
    let yaml = "FSupplierId.FNumber: \"form[name=供应商编码].value\"\n";
    let out =
        run(yaml, json!({"form": [{"name": "采购组织", "value": "100"}, {"name": "供应商编码", "value": "SUP-0107"}]}))
            .unwrap();
    assert_eq!(out, json!({"FSupplierId": {"FNumber": "SUP-0107"}}));
}

#[test]
fn omit_null_leaves_null_results_out() {
    let yaml = "d: { from: day, as: date, omit_null: true }\nkept: { from: day }\n";
    assert_eq!(run(yaml, json!({"day": null})).unwrap(), json!({"kept": null}));
    assert_eq!(run(yaml, json!({"day": "2025-04-10"})).unwrap(), json!({"d": "2025-04-10", "kept": "2025-04-10"}));
}

#[test]
fn jq_fields_compute_what_paths_cannot() {
    let yaml = "amount: { jq: '[.lines[] | .qty * .price] | add' }\nbig: { jq: '[.lines[] | select(.qty > 30) | .code]' }\nnone: { jq: 'empty' }\n";
    let input = json!({"lines": [{"code": "A", "qty": 20, "price": 4520.0}, {"code": "B", "qty": 40, "price": 85.0}]});
    assert_eq!(run(yaml, input).unwrap(), json!({"amount": 93800.0, "big": ["B"]}));
    let err = run("x: { jq: '.a | tonumber' }\n", json!({"a": "abc"})).unwrap_err();
    assert_eq!(err.target, "x");
    assert!(err.source.starts_with("jq `"), "{err}");
    assert!(errors("x: { jq: '.a |' }\n")[0].contains("jq error at column"));
    assert!(errors("x: { jq: '.a', from: b }\n")[0].contains("from and jq"));
}

#[test]
fn parse_only_date_patterns_are_refused_as_output_formats() {
    // Found by fuzzing (fuzz/, target mapping_parts): `%#z` parses as a strftime pattern but
    // chrono cannot write it, and formatting the first date with it panicked.
    assert!(errors("a: { from: x, as: date, format: \"%#z\" }\n")[0].contains("not a valid format"));
    assert!(try_compile("a: { from: x, as: date, parse: \"%Y-%m-%d %#z\" }\n").is_ok(), "fine for parsing");
}
