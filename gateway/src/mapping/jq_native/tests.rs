//! The native evaluator against jaq, on the same expressions and messages.

use super::*;
use crate::mapping::jq::JqProgram;
use serde_json::json;

fn docs() -> Vec<Value> {
    vec![
        json!({"records": [{"OrderItems": {"records": [
            {"Quantity": 20, "UnitPrice": 4520.0}, {"Quantity": 40, "UnitPrice": 85.0}]}}]}),
        json!({"records": [{"OrderItems": {"records": [
            {"Quantity": 2000, "UnitPrice": 4520.5}, {"Quantity": 1, "UnitPrice": 1}]}}]}),
        json!({"records": [{"OrderItems": {"records": []}}]}),
        json!({"records": [{"OrderItems": {"records": [{"Quantity": "ab", "UnitPrice": 3}]}}]}),
        json!({"records": [{"OrderItems": {"records": [{"Quantity": null, "UnitPrice": 3}]}}]}),
        json!({"records": [{"OrderItems": {"records": [{"Quantity": i64::MAX, "UnitPrice": 2}]}}]}),
        json!({"records": [{"OrderItems": null}]}),
        json!({"records": "x"}),
        json!({"status": "approved", "amount": 120000, "lines": [{"qty": 600}, {"qty": 3}], "neg": -0.0}),
        json!({"status": "已批准", "amount": 99999.5, "lines": [], "flag": false, "big": u64::MAX}),
        json!({"status": null, "amount": "100000", "lines": {"a": 1}, "flag": true}),
        json!([1, 2.5, "x", null, true, [1], {"a": 1}]),
        json!({"nums": [0.30000000000000004, 1e17, 123456789.125, -0.0, 3.0, 1e-7, i64::MIN, u64::MAX]}),
        json!(null),
        json!(0),
    ]
}

const EXPRS: &[&str] = &[
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add <= 100000",
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add > 100000",
    "[.records[0].OrderItems.records[] | .Quantity] | add",
    ".records[0].OrderItems.records | length > 1",
    ".status == \"approved\"",
    ".status != \"approved\" and .amount >= 100000",
    ".status == \"已批准\" or .flag",
    ".amount > 100000 | not",
    ".amount - 1 < 99999 or .amount / 2 > 1",
    "-.amount < -5",
    ".flag == false",
    ".status == null",
    ".status < \"b\"",
    ".neg == 0",
    ".big > 1",
    ".lines | length",
    "[.lines[] | .qty > 500] | length == 1",
    ".[2] == \"x\"",
    ".[0] + .[1] > 3",
    ".[6].a == 1",
    "$root.amount > 1",
    "$params.id == \"801J\"",
    "$meta.route == \"r\" and $headers.x == null",
    "[.[] | . == 1] | length",
    "true and (false or .amount == 120000)",
    "1.5 * 2 == 3",
    "10 / 4 == 2.5",
    "null + 1 == 1",
    "[] | add",
    "(.amount) > (.amount - 1)",
    "\"a\\u0041\" == \"aA\"",
];

/// Expressions whose value matters (jq fields of maps), beside the conditions above.
const VALUES: &[&str] = &[
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add | tostring",
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add",
    ".amount * 1.1",
    ".amount / 3 | tostring",
    ".big | tostring",
    ".big",
    ".neg | tostring",
    "[.lines[] | .qty]",
    "[.lines[] | .qty * 2 | tostring]",
    ".lines",
    ".status | tostring",
    ".flag | tostring",
    "[.[] | tostring]",
    "$meta.route",
    "0.1 + 0.2 | tostring",
    "1e3 | tostring",
    "-2.5e-3 | tostring",
    "-1.50 | tostring",
    "1.50 | length",
    "[.nums[] | tostring]",
    "[.nums[] | . * 3]",
    ".nums",
];

/// What jaq says, as a condition.
fn jaq(code: &str, doc: &Value, vars: &Value) -> Result<bool, String> {
    JqProgram::compile(code).unwrap().test_with_jaq(doc, vars)
}

#[test]
fn agrees_with_jaq_wherever_it_answers() {
    let vars = json!({"params": {"id": "801J"}, "headers": {}, "meta": {"route": "r"}});
    let (mut answered, mut fell_back) = (0, 0);
    for code in EXPRS {
        let native = Expr::compile(code).unwrap_or_else(|| panic!("not in the subset: {code}"));
        for doc in docs() {
            match native.test(&doc, &doc, &vars) {
                Ok(b) => {
                    answered += 1;
                    assert_eq!(Ok(b), jaq(code, &doc, &vars), "{code} on {doc}");
                }
                Err(Fallback) => fell_back += 1,
            }
        }
    }
    // Both paths are exercised: most pairs are answered natively, the odd ones by jaq.
    assert!(answered > 200, "answered {answered}");
    assert!(fell_back > 50, "fell back {fell_back}");
}

#[test]
fn values_are_jaqs_wherever_it_answers() {
    let vars = json!({"params": {"id": "801J"}, "headers": {}, "meta": {"route": "r"}});
    let (mut answered, mut fell_back) = (0, 0);
    for code in EXPRS.iter().chain(VALUES) {
        let Some(native) = Expr::compile(code) else { panic!("not in the subset: {code}") };
        let program = JqProgram::compile(code).unwrap();
        for doc in docs() {
            match native.run(&doc, &doc, &vars) {
                Ok(out) => {
                    answered += 1;
                    let jaq = program.run_with_jaq(&doc, &doc, &vars);
                    assert_eq!(Ok(out.clone()), jaq, "{code} on {doc}");
                    // the same bytes on the wire, too
                    let bytes = |v: &Option<Value>| serde_json::to_string(v).unwrap();
                    assert_eq!(bytes(&out), bytes(jaq.as_ref().unwrap()), "{code} on {doc}");
                }
                Err(Fallback) => fell_back += 1,
            }
        }
    }
    assert!(answered > 300, "answered {answered}");
    assert!(fell_back > 50, "fell back {fell_back}");
}

#[test]
fn numbers_print_as_jaq_prints_them() {
    let doc = json!({"a": 93800.0, "b": 20, "c": 0.30000000000000004, "d": 1e17});
    let text = |code: &str| Expr::compile(code).unwrap().run(&doc, &doc, &Value::Null).unwrap();
    assert_eq!(text(".a | tostring"), Some(json!("93800.0")));
    assert_eq!(text(".b | tostring"), Some(json!("20")));
    assert_eq!(text(".c | tostring"), Some(json!("0.30000000000000004")));
    assert_eq!(text(".d | tostring"), Some(json!("1e17")));
    assert_eq!(text(".b * .a | tostring"), Some(json!("1876000.0")));
    // Found by the `jq_native` fuzz target: jaq keeps a decimal literal as written.
    assert_eq!(text("1e3 | tostring"), Some(json!("1e3")));
    assert_eq!(text("1.50 | tostring"), Some(json!("1.50")));
    assert_eq!(text("1.50"), Some(json!(1.5)));
    assert_eq!(text("1e3 + 0 | tostring"), Some(json!("1000.0")));
    assert_eq!(text("[1e3] | add | tostring"), Some(json!("1e3")));
    assert_eq!(text("-2.5e-3 | tostring"), Some(json!("-2.5e-3")));
    assert_eq!(text("-(-2.5) | tostring"), Some(json!("2.5")));
}

#[test]
fn the_shipped_conditions_are_answered_natively() {
    let order: Value = serde_json::from_str(include_str!("../../../../routes/examples/crm-order.json")).unwrap();
    for code in &EXPRS[..2] {
        let native = Expr::compile(code).unwrap();
        assert_eq!(native.test(&order, &order, &Value::Null).map(Some), Ok(jaq(code, &order, &Value::Null).ok()));
    }
    assert_eq!(Expr::compile(EXPRS[0]).unwrap().test(&order, &order, &Value::Null), Ok(true));
}

#[test]
fn falls_back_where_jaq_would_do_more() {
    let fb = |code: &str, doc: Value| Expr::compile(code).unwrap().test(&doc, &doc, &Value::Null);
    // string repetition, integer overflow (jaq goes on with big integers), errors
    assert_eq!(fb(".a * 3 == \"xxx\"", json!({"a": "x"})), Err(Fallback));
    assert_eq!(fb(".a * 2 > 0", json!({"a": i64::MAX})), Err(Fallback));
    assert_eq!(fb(".a.b", json!({"a": 5})), Err(Fallback));
    assert_eq!(fb(".[]", json!({"a": 1})), Err(Fallback));
    assert_eq!(fb(".a < \"x\"", json!({"a": 1})), Err(Fallback));
    assert_eq!(fb(".a / 0 > 1", json!({"a": 1})), Err(Fallback));
    // more than one output is jaq's error to report
    assert_eq!(fb(".[] > 1", json!([1, 2])), Err(Fallback));
    assert_eq!(fb(".[] > 1", json!([2])), Ok(true));
    // no output is false, as in jaq; an operand without output is left to jaq
    assert_eq!(fb(".[]", json!([])), Ok(false));
    assert_eq!(fb(".[] > 1", json!([])), Err(Fallback));
}

#[test]
fn compiles_only_the_subset() {
    for code in [
        "..",
        ".a?",
        ".[1:]",
        ".[-1]",
        "map(.a)",
        "def f: 1; f",
        ". as $x | $x",
        ".a // 1",
        "\"\\(.a)\"",
        ".a % 2",
        "1, 2",
        "$x",
        "@base64",
        "tojson",
        "1e1000",
        "9223372036854775808 > 1",
    ] {
        assert!(Expr::compile(code).is_none(), "{code}");
    }
    for code in EXPRS {
        assert!(Expr::compile(code).is_some(), "{code}");
    }
}

/// Conditions that share a left side, as the destinations of one route do.
const SHARED: &[&str] = &[
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add <= 100000",
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add > 100000",
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add == 93800",
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add != null",
    "[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add < 1.5e4",
    ".amount > 100000",
    ".amount <= 100000",
    ".amount == \"100000\"",
    ".status == \"approved\"",
    ".status != \"approved\"",
    ".flag == true",
    ".flag != false",
    ".records[0].OrderItems.records[] | .Quantity > 30",
    ".records[0].OrderItems.records[] | .Quantity <= 30",
    "[.lines[] | .qty] | length > 1",
    "[.lines[] | .qty] | length <= 1",
    ".lines[] | .qty > 500",
    ".lines[] | .qty <= 500",
    "$params.id == \"801J\"",
    "$params.id != \"801J\"",
    ".big > 1",
    ".big <= 1",
];

#[test]
fn conditions_sharing_a_left_side_answer_as_jaq_does() {
    let vars = json!({"params": {"id": "801J"}, "headers": {}, "meta": {"route": "r"}});
    let compiled: Vec<(&str, Expr, Option<Arc<str>>)> = SHARED
        .iter()
        .map(|code| {
            let native = Expr::compile(code).unwrap_or_else(|| panic!("not in the subset: {code}"));
            let key = native.shared_key().map(Arc::from);
            (*code, native, key)
        })
        .collect();
    // What jaq says of each condition on each document, computed once.
    let docs = docs();
    let jaq: Vec<Vec<Result<bool, String>>> = SHARED
        .iter()
        .map(|code| {
            let program = JqProgram::compile(code).unwrap();
            docs.iter().map(|doc| program.test_with_jaq(doc, &vars)).collect()
        })
        .collect();
    let (mut answered, mut reused) = (0, 0);
    // Every ordered pair, on every document, through one memo: the second condition of a
    // pair with the same key reads what the first kept.
    for (i, (first, first_native, first_key)) in compiled.iter().enumerate() {
        for (j, (second, second_native, second_key)) in compiled.iter().enumerate() {
            for (d, doc) in docs.iter().enumerate() {
                let memo = Memo::default();
                for (c, code, native, key) in
                    [(i, first, first_native, first_key), (j, second, second_native, second_key)]
                {
                    let key = key.as_ref().unwrap_or_else(|| panic!("no shared key: {code}"));
                    if code == second && first_key == second_key && memo.0.borrow().is_some() {
                        reused += 1;
                    }
                    match native.test_shared(doc, &vars, key, &memo) {
                        Ok(b) => {
                            answered += 1;
                            assert_eq!(Ok(b), jaq[c][d], "{code} after {first} on {doc}");
                            if let Ok(alone) = native.test(doc, doc, &vars) {
                                assert_eq!(b, alone, "{code} after {first} on {doc}");
                            }
                        }
                        Err(Fallback) => assert_eq!(
                            native.test(doc, doc, &vars),
                            Err(Fallback),
                            "{code} after {first} on {doc}: shared, it fell back; alone, it answered"
                        ),
                    }
                }
            }
        }
    }
    assert!(answered > 5_000, "answered {answered}");
    assert!(reused > 300, "reused {reused}");
    // Expressions that are not a comparison with a literal share nothing.
    for code in [".amount > .big", "[.lines[] | .qty] | add", ".flag", "1 < .amount"] {
        assert_eq!(Expr::compile(code).unwrap().shared_key(), None, "{code}");
    }
    assert_eq!(compiled[0].2, compiled[1].2, "the CRM route's two conditions share their sum");
}

#[test]
fn a_shared_left_side_is_read_from_the_memo_not_computed_again() {
    // If the second condition computed the sum again, the saving would be gone without any
    // answer changing: so the memo is filled by hand with a sum the document does not have.
    let vars = json!({});
    let doc = docs().remove(0); // its sum is 93,800
    let le = Expr::compile("[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add <= 100000").unwrap();
    let gt = Expr::compile("[.records[0].OrderItems.records[] | .Quantity * .UnitPrice] | add > 100000").unwrap();
    let key: Arc<str> = le.shared_key().unwrap().into();
    // a key equal by content, not the same Arc: two programs compile their own
    let other: Arc<str> = gt.shared_key().unwrap().into();

    let memo = Memo::default();
    assert_eq!(le.test_shared(&doc, &vars, &key, &memo), Ok(true));
    assert!(matches!(&*memo.0.borrow(), Some((k, Some(V::Float(f)))) if Arc::ptr_eq(k, &key) && *f == 93_800.0));
    assert_eq!(gt.test_shared(&doc, &vars, &other, &memo), Ok(false));

    *memo.0.borrow_mut() = Some((key.clone(), Some(V::Int(250_000))));
    assert_eq!(gt.test_shared(&doc, &vars, &other, &memo), Ok(true), "read from the memo");
    assert_eq!(le.test_shared(&doc, &vars, &key, &memo), Ok(false), "read from the memo");
    // "no output" kept is false for every comparison
    *memo.0.borrow_mut() = Some((key.clone(), None));
    assert_eq!(gt.test_shared(&doc, &vars, &other, &memo), Ok(false));
    // a different left side is computed, and replaces what was kept
    let qty = Expr::compile(".records[0].OrderItems.records[0].Quantity > 10").unwrap();
    let qty_key: Arc<str> = qty.shared_key().unwrap().into();
    assert_eq!(qty.test_shared(&doc, &vars, &qty_key, &memo), Ok(true));
    assert!(matches!(&*memo.0.borrow(), Some((k, Some(V::Int(20)))) if Arc::ptr_eq(k, &qty_key)));
}
