//! Conditions on messages, for content-based routing: a destination with `when:` gets the
//! message only when its condition holds.
//!
//! ```yaml
//! when: { path: amount, gt: 100000 }                      # a comparison
//! when: { jq: '.lines | any(.qty > 500)' }                 # a jq predicate
//! when: { all: [ { path: type, equals: finish }, { not: { path: result, equals: refuse } } ] }
//! ```

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use serde_saphyr::Spanned;

use serde::Deserialize;

use crate::diag::{Diagnostic, Place};
use crate::mapping::jq::{JqDoc, JqProgram};
use crate::mapping::raw::present;
use crate::mapping::{Scope, SourcePath, Uses, compile_jq};

/// A condition on a message. Exactly one form: a comparison on `path`, `jq`, or a
/// combination (`all`, `any`, `not`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    /// The value compared: a source path, as in maps.
    pub path: Option<Spanned<String>>,
    /// Equal to this value (numbers compare by value: 1 equals 1.0).
    #[serde(default, deserialize_with = "present")]
    pub equals: Option<serde_json::Value>,
    /// Not equal to this value (true when the path is absent).
    #[serde(default, deserialize_with = "present")]
    pub not_equals: Option<serde_json::Value>,
    /// Equal to one of these values.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Equal to none of these values.
    pub not_in: Option<Vec<serde_json::Value>>,
    /// `true`: the path has a value (not null); `false`: it has none.
    pub exists: Option<bool>,
    /// Greater than (numbers, or text that reads as a number).
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
    /// A jq predicate: true unless it yields `false`, `null` or nothing.
    pub jq: Option<Spanned<String>>,
    /// Every condition holds.
    pub all: Option<Vec<Spanned<RawCondition>>>,
    /// At least one condition holds.
    pub any: Option<Vec<Spanned<RawCondition>>>,
    /// The condition does not hold.
    pub not: Option<Box<Spanned<RawCondition>>>,
}

#[derive(Clone, Debug)]
pub enum Condition {
    /// `place`: where the path is written, for the static checks' findings.
    Compare {
        path: SourcePath,
        op: Op,
        place: Place,
    },
    Jq(Arc<JqProgram>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

#[derive(Clone, Debug)]
pub enum Op {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists(bool),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A number, or text that reads as one (enterprise systems often send amounts as text).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Condition {
    /// Whether the condition holds for the message in `scope`. A jq error is returned: the
    /// message then fails (`mapping-failed`) rather than take or skip a destination by
    /// accident.
    pub fn holds(&self, scope: &Scope<'_>) -> Result<bool, String> {
        self.holds_with(scope, &JqDoc::new(scope.current))
    }

    /// Like [`Condition::holds`], sharing one jq view of the document between conditions.
    pub fn holds_with(&self, scope: &Scope<'_>, doc: &JqDoc<'_>) -> Result<bool, String> {
        Ok(match self {
            Condition::Compare { path, op, .. } => {
                let v = path.resolve(scope).filter(|v| !v.is_null());
                match op {
                    Op::Equals(x) => v.is_some_and(|v| same(v, x)),
                    Op::NotEquals(x) => !v.is_some_and(|v| same(v, x)),
                    Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| same(v, x))),
                    Op::NotIn(xs) => !v.is_some_and(|v| xs.iter().any(|x| same(v, x))),
                    Op::Exists(want) => v.is_some() == *want,
                    Op::Gt(x) => v.and_then(number).is_some_and(|n| n > *x),
                    Op::Gte(x) => v.and_then(number).is_some_and(|n| n >= *x),
                    Op::Lt(x) => v.and_then(number).is_some_and(|n| n < *x),
                    Op::Lte(x) => v.and_then(number).is_some_and(|n| n <= *x),
                }
            }
            Condition::Jq(p) => p.test_doc(doc, scope.vars)?,
            Condition::All(cs) => {
                for c in cs {
                    if !c.holds_with(scope, doc)? {
                        return Ok(false);
                    }
                }
                true
            }
            Condition::Any(cs) => {
                for c in cs {
                    if c.holds_with(scope, doc)? {
                        return Ok(true);
                    }
                }
                false
            }
            Condition::Not(c) => !c.holds_with(scope, doc)?,
        })
    }
}

const FORMS: &str = "path with equals, not_equals, in, not_in, exists, gt, gte, lt or lte; jq; all; any; not";

pub fn compile(
    raw: &Spanned<RawCondition>,
    file: &Path,
    diags: &mut Vec<Diagnostic>,
    uses: &mut Uses,
) -> Option<Condition> {
    let place = Place::at(file, &raw.referenced);
    let c = &raw.value;
    let mut ops: Vec<Op> = Vec::new();
    // A null counts as no value, so these could never (or would always) hold.
    for (v, key, instead) in [(&c.equals, "equals", "exists: false"), (&c.not_equals, "not_equals", "exists: true")] {
        if v.as_ref().is_some_and(Value::is_null) {
            diags.push(
                Diagnostic::error(
                    place.clone(),
                    format!("`{key}: null` compares with no value: a null counts as absent"),
                )
                .hint(format!("write `{instead}`; see docs/routing.md")),
            );
            return None;
        }
    }
    if let Some(v) = &c.equals {
        ops.push(Op::Equals(v.clone()));
    }
    if let Some(v) = &c.not_equals {
        ops.push(Op::NotEquals(v.clone()));
    }
    if let Some(v) = &c.one_of {
        ops.push(Op::In(v.clone()));
    }
    if let Some(v) = &c.not_in {
        ops.push(Op::NotIn(v.clone()));
    }
    if let Some(v) = c.exists {
        ops.push(Op::Exists(v));
    }
    for (v, f) in [(c.gt, Op::Gt as fn(f64) -> Op), (c.gte, Op::Gte), (c.lt, Op::Lt), (c.lte, Op::Lte)] {
        if let Some(v) = v {
            ops.push(f(v));
        }
    }
    if !ops.is_empty() && c.path.is_none() {
        diags.push(Diagnostic::error(place, "comparisons need a `path` to compare").hint(FORMS));
        return None;
    }
    let forms = [c.path.is_some(), c.jq.is_some(), c.all.is_some(), c.any.is_some(), c.not.is_some()];
    if forms.iter().filter(|f| **f).count() != 1 {
        diags.push(
            Diagnostic::error(place, "a condition takes exactly one form")
                .hint(format!("{FORMS}; see docs/routing.md")),
        );
        return None;
    }
    if let Some(path) = &c.path {
        let parsed = match SourcePath::parse(&path.value) {
            Ok(p) => p,
            Err(e) => {
                diags.push(Diagnostic::error(
                    Place::at(file, &path.referenced),
                    format!("bad path `{}`: {e}", path.value),
                ));
                return None;
            }
        };
        uses.note(&parsed);
        let path_place = Place::at(file, &path.referenced);
        // Several comparisons on one path all have to hold (`gte: 10, lt: 100`).
        return match ops.len() {
            0 => {
                diags.push(
                    Diagnostic::error(place, format!("the condition on `{}` compares nothing", path.value))
                        .hint("add equals, not_equals, in, not_in, exists, gt, gte, lt or lte"),
                );
                None
            }
            1 => Some(Condition::Compare { path: parsed, op: ops.remove(0), place: path_place }),
            _ => Some(Condition::All(
                ops.into_iter()
                    .map(|op| Condition::Compare { path: parsed.clone(), op, place: path_place.clone() })
                    .collect(),
            )),
        };
    }
    if let Some(code) = &c.jq {
        return compile_jq(code, file, diags, uses).map(Condition::Jq);
    }
    if let Some(not) = &c.not {
        return compile(not, file, diags, uses).map(|c| Condition::Not(Box::new(c)));
    }
    let (list, all) = match (&c.all, &c.any) {
        (Some(l), _) => (l, true),
        (_, Some(l)) => (l, false),
        _ => unreachable!("one form is set"),
    };
    if list.is_empty() {
        diags.push(Diagnostic::error(
            place,
            format!("`{}` needs at least one condition", if all { "all" } else { "any" }),
        ));
        return None;
    }
    let compiled: Option<Vec<Condition>> = list.iter().map(|c| compile(c, file, diags, uses)).collect();
    compiled.map(|cs| if all { Condition::All(cs) } else { Condition::Any(cs) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(yaml: &str) -> Result<Condition, Vec<Diagnostic>> {
        let raw: Spanned<RawCondition> = crate::yaml::parse_yaml(yaml).unwrap();
        let mut diags = Vec::new();
        let mut uses = Uses::default();
        compile(&raw, Path::new("r.yaml"), &mut diags, &mut uses).ok_or(diags)
    }

    fn holds(yaml: &str, doc: Value) -> bool {
        cond(yaml).unwrap().holds(&Scope { current: &doc, document: &doc, vars: &Value::Null }).unwrap()
    }

    #[test]
    fn comparisons() {
        let order = json!({"amount": 150000, "text_amount": "99.5", "type": "finish", "tags": null});
        assert!(holds("{ path: amount, gt: 100000 }", order.clone()));
        assert!(!holds("{ path: amount, lte: 100000 }", order.clone()));
        assert!(holds("{ path: amount, equals: 150000.0 }", order.clone()), "numbers compare by value");
        assert!(holds("{ path: text_amount, lt: 100 }", order.clone()), "numeric text compares as a number");
        assert!(holds("{ path: type, in: [start, finish] }", order.clone()));
        assert!(holds("{ path: type, not_in: [terminate] }", order.clone()));
        assert!(holds("{ path: missing, not_equals: x }", order.clone()));
        assert!(holds("{ path: tags, exists: false }", order.clone()), "null does not exist");
        assert!(holds("{ path: amount, gte: 100000, lt: 200000 }", order.clone()), "a range");
        assert!(!holds("{ path: missing, gt: 1 }", order));
    }

    #[test]
    fn comparing_with_null_is_refused_with_the_form_that_works() {
        let e = cond("{ path: tags, equals: null }").unwrap_err();
        assert!(e[0].message.contains("`equals: null`"), "{}", e[0].message);
        assert!(e[0].hint.as_deref().unwrap().contains("exists: false"));
        let e = cond("{ path: tags, not_equals: null }").unwrap_err();
        assert!(e[0].hint.as_deref().unwrap().contains("exists: true"));
    }

    #[test]
    fn combinations_and_jq() {
        let ev = json!({"type": "finish", "result": "agree", "lines": [{"qty": 600}]});
        assert!(holds(
            "{ all: [ { path: type, equals: finish }, { not: { path: result, equals: refuse } } ] }",
            ev.clone()
        ));
        assert!(holds("{ any: [ { path: type, equals: start }, { jq: '.lines | any(.qty > 500)' } ] }", ev.clone()));
        assert!(!holds("{ jq: '.lines | length > 3' }", ev));
    }

    #[test]
    fn malformed_conditions_are_refused() {
        assert!(cond("{ path: a }").unwrap_err()[0].message.contains("compares nothing"));
        assert!(cond("{ equals: 1 }").unwrap_err()[0].message.contains("need a `path`"));
        assert!(cond("{ path: a, equals: 1, jq: '.a' }").unwrap_err()[0].message.contains("exactly one form"));
        assert!(cond("{ all: [] }").unwrap_err()[0].message.contains("at least one"));
        assert!(cond("{ jq: '.a |' }").unwrap_err()[0].message.contains("jq error"));
        assert!(crate::yaml::parse_yaml::<Spanned<RawCondition>>("{ path: a, greater: 1 }").is_err());
    }
}
