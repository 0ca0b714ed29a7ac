//! Differential: the native jq evaluator (`qiao::mapping::jq_native`) against jaq.
//!
//! `arbitrary` builds a jq expression from the native subset's grammar (with an odd
//! construct outside it now and then) and a small document whose keys the expression's
//! paths use. Wherever the native evaluator answers, its answer must be jaq's, as a condition
//! and as a value; where it falls back, jaq decides anyway, so there is nothing to compare.

#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qiao::mapping::jq::{JqDoc, JqProgram};
use qiao::mapping::jq_native::Expr;
use serde_json::{Map, Value};

const LEAVES: &[&str] = &[
    ".", ".a", ".b", ".a.b", ".b[0]", ".c[]", ".a[1].c", "$root.a", "$params.id", "$meta.route", "$headers.x",
    "0", "1", "2.5", "100000", "9223372036854775807", "1e3", "0.1", "1e308", "\"x\"", "\"\"", "\"已批准\"",
    "\"a\\u0041\"", "true", "false", "null", "[]",
];
const MATH: &[&str] = &["+", "-", "*", "/"];
const CMP: &[&str] = &["<", "<=", ">", ">=", "==", "!="];
const PATHS: &[&str] = &[".a", ".b", "[0]", "[]", ".c", "[1]"];
/// Outside the subset: the native compiler must refuse them (or jaq decides).
const OTHERS: &[&str] = &["%", "//", ","];

fn expr(u: &mut Unstructured<'_>, depth: u32) -> Result<String> {
    if depth == 0 {
        return Ok(u.choose(LEAVES)?.to_string());
    }
    let sub = |u: &mut Unstructured<'_>| expr(u, depth - 1);
    Ok(match u.int_in_range(0..=12u8)? {
        0 => u.choose(LEAVES)?.to_string(),
        1 => format!("({} {} {})", sub(u)?, u.choose(MATH)?, sub(u)?),
        2 => format!("({} {} {})", sub(u)?, u.choose(CMP)?, sub(u)?),
        3 => format!("({} and {})", sub(u)?, sub(u)?),
        4 => format!("({} or {})", sub(u)?, sub(u)?),
        5 => format!("({} | {})", sub(u)?, sub(u)?),
        6 => format!("[{}]", sub(u)?),
        7 => format!("({} | add)", sub(u)?),
        8 => format!("({} | length)", sub(u)?),
        9 => format!("({} | {})", sub(u)?, u.choose(&["not", "tostring"])?),
        10 => format!("(-{})", sub(u)?),
        11 => format!("({}){}", sub(u)?, u.choose(PATHS)?),
        _ => format!("({} {} {})", sub(u)?, u.choose(OTHERS)?, sub(u)?),
    })
}

fn doc(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kind = if depth == 0 { u.int_in_range(0..=4u8)? } else { u.int_in_range(0..=6u8)? };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(qiao_fuzz::number(u)?),
        3 => Value::String(u.choose(&["x", "", "已批准", "aA", "100000", "b"])?.to_string()),
        4 => Value::Number(u.int_in_range(-3i64..=3)?.into()),
        5 => Value::Array((0..u.int_in_range(0..=3)?).map(|_| doc(u, depth - 1)).collect::<Result<_>>()?),
        _ => {
            let mut m = Map::new();
            for key in ["a", "b", "c"] {
                if u.arbitrary()? {
                    m.insert(key.into(), doc(u, depth - 1)?);
                }
            }
            Value::Object(m)
        }
    })
}

fuzz_target!(|data: &[u8]| {
    qiao_fuzz::allow_caught_panics();
    let mut u = Unstructured::new(data);
    let (Ok(code), Ok(input)) = (expr(&mut u, 4), doc(&mut u, 3)) else { return };
    let (Some(native), Ok(program)) = (Expr::compile(&code), JqProgram::compile(&code)) else { return };
    let vars = qiao_fuzz::default_vars();
    if let Ok(holds) = native.test(&input, &input, &vars) {
        let jaq = program.test_with_jaq(&input, &vars);
        assert_eq!(Ok(holds), jaq, "native and jaq differ on `{code}` with {input}");
    }
    if let Ok(out) = native.run(&input, &input, &vars) {
        let jaq = program.run_with_jaq(&input, &input, &vars);
        assert_eq!(Ok(out), jaq, "native and jaq give different values for `{code}` with {input}");
    }
    // The gateway's own entry points give jaq's answers too, whichever evaluator they used.
    assert_eq!(program.test(&input, &vars), program.test_with_jaq(&input, &vars), "`{code}` with {input}");
    assert_eq!(program.run(&input, &input, &vars), program.run_with_jaq(&input, &input, &vars), "`{code}` with {input}");
    // As a route's conditions run: on one document, the second time reading the left side
    // of a comparison that the first kept (`jq_native::Expr::test_shared`).
    let doc = JqDoc::new(&input);
    let jaq = program.test_with_jaq(&input, &vars);
    assert_eq!(program.test_doc(&doc, &vars), jaq, "`{code}` with {input}, first");
    assert_eq!(program.test_doc(&doc, &vars), jaq, "`{code}` with {input}, from what the first kept");
});
