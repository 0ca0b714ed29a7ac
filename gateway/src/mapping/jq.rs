//! jq expressions (through jaq) where a declarative map cannot say it:
//! `amount: { jq: '[.lines[] | .qty * .price] | add' }`.
//!
//! Compiled once at load; a syntax error or an unknown function is a config error with its
//! position. At run time `.` is the value in scope (the body, or the current `each`
//! element) and `$root`, `$params`, `$headers`, `$meta` are bound as in paths.

use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

use super::jq_native;
use super::jq_value::{from_val, to_val};

type D = data::JustLut<Val>;

/// A compiled jq program.
pub struct JqProgram {
    filter: jaq_core::compile::Filter<Native<D>>,
    /// The same program for the native evaluator, when it is in its subset: conditions try
    /// it first and fall back to jaq (see `jq_native`).
    native: Option<jq_native::Expr>,
    /// The native expression's [`jq_native::Expr::shared_key`]: conditions with the same
    /// key compute their left side once per message (in [`JqDoc`]).
    shared: Option<Arc<str>>,
    pub text: Box<str>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqProgram({})", self.text)
    }
}

/// Why an expression did not compile: the message and its byte offset in the expression.
#[derive(Debug, PartialEq, Eq)]
pub struct JqError {
    pub offset: usize,
    pub message: String,
}

const VARS: [&str; 4] = jq_native::VARS;

/// The byte offset of `part` inside `whole`, when it is a slice of it.
fn offset_in(whole: &str, part: &str) -> usize {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    if p >= w && p <= w + whole.len() { p - w } else { 0 }
}

impl JqProgram {
    pub fn compile(code: &str) -> Result<Self, JqError> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            let mut first = JqError { offset: 0, message: "invalid jq".into() };
            if let Some((_, err)) = errs.into_iter().next() {
                first = match err {
                    jaq_core::load::Error::Lex(errs) => errs
                        .into_iter()
                        .next()
                        .map(|(expect, found)| JqError {
                            offset: offset_in(code, found),
                            message: format!("expected {}", expect.as_str()),
                        })
                        .unwrap_or(first),
                    jaq_core::load::Error::Parse(errs) => errs
                        .into_iter()
                        .next()
                        .map(|(expect, found)| JqError {
                            offset: offset_in(code, found),
                            message: if found.is_empty() {
                                format!("expected {} at the end", expect.as_str())
                            } else {
                                format!(
                                    "expected {} before `{}`",
                                    expect.as_str(),
                                    found.chars().take(20).collect::<String>()
                                )
                            },
                        })
                        .unwrap_or(first),
                    jaq_core::load::Error::Io(errs) => JqError {
                        offset: 0,
                        message: errs
                            .into_iter()
                            .map(|(path, e)| format!("{path}: {e}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                    },
                };
            }
            first
        })?;
        let filter = Compiler::default().with_funs(funs).with_global_vars(VARS).compile(modules).map_err(|errs| {
            errs.into_iter()
                .next()
                .and_then(|(_, errs)| errs.into_iter().next())
                .map(|(name, undefined)| JqError {
                    offset: offset_in(code, name),
                    message: format!("undefined {} `{name}`", undefined.as_str()),
                })
                .unwrap_or(JqError { offset: 0, message: "invalid jq".into() })
        })?;
        let native = jq_native::Expr::compile(code);
        let shared = native.as_ref().and_then(jq_native::Expr::shared_key).map(Arc::from);
        Ok(Self { filter, native, shared, text: code.into() })
    }

    /// Runs on `input`: no output is `None`; one output its value; more than one an error.
    pub fn run(&self, input: &Value, root: &Value, vars: &Value) -> Result<Option<Value>, String> {
        if let Some(out) = self.native.as_ref().and_then(|n| n.run(input, root, vars).ok()) {
            return Ok(out);
        }
        self.run_with_jaq(input, root, vars)
    }

    /// [`JqProgram::run`] by jaq alone: what the native evaluator is checked against.
    #[doc(hidden)]
    pub fn run_with_jaq(&self, input: &Value, root: &Value, vars: &Value) -> Result<Option<Value>, String> {
        let input_val = to_val(input);
        // Most expressions run on the document itself: convert it once, not twice.
        let root_val = if std::ptr::eq(input, root) { input_val.clone() } else { to_val(root) };
        self.run_vals(input_val, root_val, vars)
    }

    fn run_vals(&self, input: Val, root: Val, vars: &Value) -> Result<Option<Value>, String> {
        // jaq can panic on values a sender controls: `"ab" * 9223372036854775807` (jq's
        // string repetition) overflows the capacity in jaq-json 2.0.3 (found by the
        // `mapping` fuzz target). A message must fail, not take the worker with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_unguarded(input, root, vars))).unwrap_or_else(
            |panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(format!("jq: evaluation failed ({why})"))
            },
        )
    }

    fn run_unguarded(&self, input: Val, root: Val, vars: &Value) -> Result<Option<Value>, String> {
        let get = |name: &str| vars.get(name).map_or(Val::Null, to_val);
        let bound = Vars::new([root, get("params"), get("headers"), get("meta")]);
        let ctx = Ctx::<D>::new(&self.filter.lut, bound);
        let mut out = self.filter.id.run((ctx, input)).map(unwrap_valr);
        let first = match out.next() {
            None => return Ok(None),
            Some(r) => r.map_err(|e| format!("jq: {e}"))?,
        };
        if out.next().is_some() {
            return Err("jq produced more than one value; collect them with [ ... ]".into());
        }
        Ok(Some(from_val(&first)))
    }

    /// Whether the expression's output is truthy (jq: anything but `false` and `null`).
    pub fn test(&self, input: &Value, vars: &Value) -> Result<bool, String> {
        if let Some(holds) = self.test_native(input, vars) {
            return Ok(holds);
        }
        self.test_with_jaq(input, vars)
    }

    /// Like [`JqProgram::test`], on a document converted once for all the conditions of a
    /// message.
    pub fn test_doc(&self, doc: &JqDoc<'_>, vars: &Value) -> Result<bool, String> {
        let native = self.native.as_ref().and_then(|n| match &self.shared {
            Some(key) => n.test_shared(doc.value, vars, key, &doc.memo).ok(),
            None => n.test(doc.value, doc.value, vars).ok(),
        });
        match native {
            Some(holds) => Ok(holds),
            None => self.test_doc_with_jaq(doc, vars),
        }
    }

    /// [`JqProgram::test_doc`] by jaq alone (for benchmarks).
    #[doc(hidden)]
    pub fn test_doc_with_jaq(&self, doc: &JqDoc<'_>, vars: &Value) -> Result<bool, String> {
        let v = doc.get();
        Ok(self.run_vals(v.clone(), v, vars)?.is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))))
    }

    /// Whether the program is in the native evaluator's subset.
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    fn test_native(&self, input: &Value, vars: &Value) -> Option<bool> {
        self.native.as_ref()?.test(input, input, vars).ok()
    }

    /// [`JqProgram::test`] by jaq alone: what the native evaluator is checked against.
    #[doc(hidden)]
    pub fn test_with_jaq(&self, input: &Value, vars: &Value) -> Result<bool, String> {
        Ok(self.run_with_jaq(input, input, vars)?.is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))))
    }
}

/// A message body as jq sees it, converted on first use and shared by every jq condition
/// of the message (the conversion costs more than most expressions).
pub struct JqDoc<'a> {
    value: &'a Value,
    val: std::cell::OnceCell<Val>,
    /// The left side of a comparison that conditions share (`… | add <= 100000` and
    /// `… | add > 100000`), computed by the first of them. It is keyed by the expression
    /// alone, so every condition tested on one `JqDoc` must get the same `vars` (one
    /// message's, as `pipeline::select` passes them).
    memo: jq_native::Memo,
}

impl<'a> JqDoc<'a> {
    pub fn new(value: &'a Value) -> Self {
        Self { value, val: std::cell::OnceCell::new(), memo: jq_native::Memo::default() }
    }

    fn get(&self) -> Val {
        self.val.get_or_init(|| to_val(self.value)).clone()
    }
}

/// serde_json → jaq, directly (going through serde's visitor costs twice as much).
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Result<Option<Value>, String> {
        JqProgram::compile(code).unwrap().run(&input, &input, &Value::Null)
    }

    #[test]
    fn sums_and_builds_values() {
        let order = json!({"lines": [{"qty": 20, "price": 4520.0}, {"qty": 40, "price": 85.0}]});
        assert_eq!(run("[.lines[] | .qty * .price] | add", order.clone()).unwrap(), Some(json!(93800.0)));
        assert_eq!(run("[.lines[] | select(.qty > 30)] | length", order.clone()).unwrap(), Some(json!(1)));
        assert_eq!(
            run(r#"{n: (.lines | length), first: .lines[0].qty}"#, order).unwrap(),
            Some(json!({"n": 2, "first": 20}))
        );
        assert_eq!(run(r#""CRM-" + (.id | tostring)"#, json!({"id": 105})).unwrap(), Some(json!("CRM-105")));
    }

    #[test]
    fn empty_output_is_absent_and_several_outputs_are_an_error() {
        assert_eq!(run("empty", json!({})).unwrap(), None);
        assert!(run(".[]", json!([1, 2])).unwrap_err().contains("more than one"));
        assert!(run("error(\"boom\")", json!(1)).unwrap_err().contains("boom"));
    }

    #[test]
    fn string_repetition_is_bounded_and_fails_the_message() {
        // Found by the `mapping` fuzz target: a string where the shipped route multiplies
        // quantity by price, and a price that makes jq's string repetition huge. The first
        // overflowed (a panic), the second asked for 8.8 TB (an abort) before the patch in
        // third_party/jaq-json.
        for price in [9223372036854775807_i64, 4_400_000_000_000] {
            let line = json!({"Quantity": "ab", "UnitPrice": price});
            let err = run(".Quantity * .UnitPrice", line).unwrap_err();
            assert!(err.starts_with("jq: ") && err.contains("string repetition too long"), "{err}");
        }
        let limit = jaq_json::MAX_REPEAT_BYTES;
        let err = run(".s * .n", json!({"s": "a", "n": limit + 1})).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(err.contains(&(limit + 1).to_string()), "{err}");
        let at_limit = run(".s * .n | length", json!({"s": "a", "n": limit})).unwrap();
        assert_eq!(at_limit, Some(json!(limit)));
        // jq's string repetition itself still works, and keeps jq's edge cases.
        assert_eq!(run(".s * 3", json!({"s": "ab"})).unwrap(), Some(json!("ababab")));
        assert_eq!(run(".s * 7", json!({"s": "桥ab"})).unwrap(), Some(json!("桥ab".repeat(7))));
        assert_eq!(run("3 * .s", json!({"s": "xyz"})).unwrap(), Some(json!("xyzxyzxyz")));
        assert_eq!(run(".s * .n", json!({"s": "", "n": i64::MAX})).unwrap(), Some(json!("")));
        assert_eq!(run(".s * 0", json!({"s": "ab"})).unwrap(), Some(Value::Null));
        assert_eq!(run(".s * -2", json!({"s": "ab"})).unwrap(), Some(Value::Null));
    }

    #[test]
    #[cfg(debug_assertions)]
    fn a_panic_inside_jaq_is_an_error_of_the_message() {
        // jaq-json 2.0.3 takes `length` of a number with `isize::abs`, which overflows on
        // the smallest integer; debug builds check overflow and panic. The catch in
        // `run_vals` turns any such panic into an error of the message.
        let err = run(".n | length", json!({"n": i64::MIN})).unwrap_err();
        assert!(err.starts_with("jq: evaluation failed"), "{err}");
        assert!(err.contains("overflow"), "{err}");
    }

    #[test]
    fn conditions_in_the_native_subset_do_not_convert_the_message() {
        let order = json!({"lines": [{"qty": 20, "price": 4520.0}, {"qty": 40, "price": 85.0}]});
        let vars = Value::Null;
        let sum = JqProgram::compile("[.lines[] | .qty * .price] | add > 90000").unwrap();
        assert!(sum.is_native());
        let doc = JqDoc::new(&order);
        assert_eq!(sum.test_doc(&doc, &vars), Ok(true));
        assert!(doc.val.get().is_none(), "the native evaluator answered without jaq's values");
        // Outside the subset, jaq answers, on the converted document.
        let any = JqProgram::compile(".lines | any(.qty > 30)").unwrap();
        assert!(!any.is_native());
        assert_eq!(any.test_doc(&doc, &vars), Ok(true));
        assert!(doc.val.get().is_some());
    }

    #[test]
    fn variables_are_bound() {
        let p = JqProgram::compile("[$root.po, $params.id, $meta.route]").unwrap();
        let vars = json!({"params": {"id": "801J"}, "meta": {"route": "r"}});
        let root = json!({"po": "PO-1"});
        assert_eq!(p.run(&json!({}), &root, &vars).unwrap(), Some(json!(["PO-1", "801J", "r"])));
    }

    #[test]
    fn syntax_errors_and_unknown_functions_have_offsets() {
        let e = JqProgram::compile(".a | map(.b").unwrap_err();
        assert!(e.message.contains("expected"), "{e:?}");
        let e = JqProgram::compile(".a | nosuchfn").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.message.contains("nosuchfn"), "{e:?}");
    }

    #[test]
    fn predicates() {
        let p = JqProgram::compile(".amount > 100000").unwrap();
        assert!(p.test(&json!({"amount": 150000}), &Value::Null).unwrap());
        assert!(!p.test(&json!({"amount": 99}), &Value::Null).unwrap());
        assert!(!JqProgram::compile(".missing").unwrap().test(&json!({}), &Value::Null).unwrap());
    }
}
