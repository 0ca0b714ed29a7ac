//! A native evaluator for the part of jq that routing conditions are mostly written in.
//!
//! `when: { jq: '[.lines[] | .qty * .price] | add > 100000' }` is the usual shape: paths,
//! arithmetic, a sum and a comparison. jaq first converts the whole message into its own
//! values and then interprets boxed iterators, ~6 µs for that expression on a 1 KB order;
//! walking the serde_json tree in place costs a fraction of that. So a jq program is also
//! compiled here, from jaq's own parse tree, when every part of it is in the subset below,
//! and conditions and jq fields of maps are evaluated here first.
//!
//! The result is always jaq's. Evaluation answers [`Fallback`] wherever jaq's semantics
//! would need more than this module knows: a string, array or object operand of `+ - * /`,
//! an integer overflow (jaq goes on with big integers), a non-finite float, anything jq
//! reports as an error (iterating over a number, indexing a string, …), an ordering between
//! values of different types, or more than one output where one is expected. The caller then
//! runs jaq, which gives the value or the error. The `jq_native` fuzz target and the tests
//! below compare the two on the same inputs.
//!
//! The subset: `.`, paths of literal keys and non-negative indices and `[]` over arrays,
//! `$root`, `$params`, `$headers` and `$meta`, number, string, boolean and null literals,
//! `+ - * /`, the six comparisons, `and`, `or`, `not`, `|`, `[ f ]`, `add`, `length`,
//! `tostring`, unary minus and parentheses. Values leave through jaq's own conversions
//! (`mapping::jq_value::{to_val, from_val}`), so a number prints exactly as jaq prints it.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;
use std::sync::Arc;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use serde_json::Value;

use super::jq_value::{from_val, to_val};

/// jaq must decide: the expression left the subset at run time.
#[derive(Debug, PartialEq, Eq)]
pub struct Fallback;

type R<T> = Result<T, Fallback>;

/// A compiled expression of the subset.
#[derive(Debug)]
pub enum Expr {
    Id,
    /// `$root`, `$params`, `$headers`, `$meta`, by position in [`VARS`].
    Var(usize),
    Lit(Value),
    /// A number literal that is not an integer, kept as written: jaq prints it so
    /// (`1e3 | tostring` is `"1e3"`) and computes with it as a float.
    Dec(String),
    Path(Box<Expr>, Vec<Step>),
    Neg(Box<Expr>),
    Math(Box<Expr>, Math, Box<Expr>),
    Cmp(Box<Expr>, Cmp, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Pipe(Box<Expr>, Box<Expr>),
    Collect(Box<Expr>),
    Add,
    Length,
    Not,
    ToString,
}

/// One step of a path.
#[derive(Debug)]
pub enum Step {
    Key(String),
    Index(usize),
    Each,
}

/// The global variables, in the order `Expr::Var` numbers them.
pub const VARS: [&str; 4] = ["$root", "$params", "$headers", "$meta"];

impl Expr {
    /// The expression, when all of it is in the subset.
    pub fn compile(code: &str) -> Option<Self> {
        let term = jaq_core::load::parse(code, |p| p.term())?;
        from_term(&term)
    }

    /// jq's `test`: whether the only output is truthy (no output is `false`).
    pub fn test(&self, input: &Value, root: &Value, vars: &Value) -> R<bool> {
        Ok(self.only(input, root, vars)?.is_some_and(|v| truthy(&v)))
    }

    /// The output, as `JqProgram::run` gives it: `None` when there is none.
    pub fn run(&self, input: &Value, root: &Value, vars: &Value) -> R<Option<Value>> {
        Ok(self.only(input, root, vars)?.map(to_value))
    }

    /// The only output, if any; more than one is jaq's error to report.
    fn only<'a>(&'a self, input: &'a Value, root: &'a Value, vars: &'a Value) -> R<Option<V<'a>>> {
        let env = Env { vars: [Some(root), vars.get("params"), vars.get("headers"), vars.get("meta")] };
        self.single_or_none(V::Json(input), &env)
    }

    fn eval<'a>(&'a self, input: V<'a>, env: &Env<'a>, out: &mut dyn FnMut(V<'a>) -> R<()>) -> R<()> {
        match self {
            Expr::Id => out(input),
            Expr::Var(i) => out(env.vars[*i].map_or(V::Null, V::Json)),
            Expr::Lit(v) => out(V::Json(v)),
            Expr::Dec(text) => out(V::Dec(Cow::Borrowed(text))),
            Expr::Path(base, steps) => base.eval(input, env, &mut |v| walk(v, steps, out)),
            Expr::Neg(x) => match x.single(input, env)? {
                // jaq negates a decimal literal in its text
                V::Dec(text) => out(V::Dec(match text.strip_prefix('-') {
                    Some(positive) => Cow::Owned(positive.to_string()),
                    None => Cow::Owned(format!("-{text}")),
                })),
                v => match num(&v)? {
                    N::Int(i) => out(V::Int(i.checked_neg().ok_or(Fallback)?)),
                    N::Float(f) => out(V::Float(-f)),
                },
            },
            Expr::Math(l, op, r) => {
                let (a, b) = (l.single(input.clone(), env)?, r.single(input, env)?);
                out(math(a, *op, b)?)
            }
            Expr::Cmp(l, op, r) => {
                let (a, b) = (l.single(input.clone(), env)?, r.single(input, env)?);
                out(V::Bool(compare(&a, *op, &b)?))
            }
            Expr::And(l, r) => {
                let holds = truthy(&l.single(input.clone(), env)?) && truthy(&r.single(input, env)?);
                out(V::Bool(holds))
            }
            Expr::Or(l, r) => {
                let holds = truthy(&l.single(input.clone(), env)?) || truthy(&r.single(input, env)?);
                out(V::Bool(holds))
            }
            Expr::Pipe(l, r) => l.eval(input, env, &mut |v| r.eval(v, env, out)),
            Expr::Collect(x) => {
                let mut items = Vec::new();
                x.eval(input, env, &mut |v| {
                    items.push(v);
                    Ok(())
                })?;
                out(V::Arr(Rc::new(items)))
            }
            // jq: `def add: reduce .[] as $x (null; . + $x)`, over arrays here.
            Expr::Add => {
                let mut sum = V::Null;
                match input {
                    V::Json(Value::Array(items)) => {
                        for x in items {
                            sum = math(sum, Math::Add, V::Json(x))?;
                        }
                    }
                    V::Arr(items) => {
                        for x in items.iter() {
                            sum = math(sum, Math::Add, x.clone())?;
                        }
                    }
                    _ => return Err(Fallback),
                }
                out(sum)
            }
            Expr::Length => out(match input {
                V::Null | V::Json(Value::Null) => V::Int(0),
                V::Json(Value::Array(a)) => V::Int(a.len().try_into().map_err(|_| Fallback)?),
                V::Arr(a) => V::Int(a.len().try_into().map_err(|_| Fallback)?),
                V::Json(Value::Object(m)) => V::Int(m.len().try_into().map_err(|_| Fallback)?),
                // numbers: the absolute value; strings (characters) are left to jaq
                other => match num(&other)? {
                    N::Int(i) => V::Int(i.checked_abs().ok_or(Fallback)?),
                    N::Float(f) => V::Float(f.abs()),
                },
            }),
            Expr::Not => out(V::Bool(!truthy(&input))),
            Expr::ToString => out(match input {
                V::Json(Value::String(_)) | V::Str(_) => input,
                V::Json(Value::Array(_) | Value::Object(_)) | V::Arr(_) => return Err(Fallback),
                // jaq's own text for numbers, booleans and null
                other => match from_val(&jaq_core::ValT::into_string(jaq_val(&other))) {
                    Value::String(s) => V::Str(s),
                    _ => return Err(Fallback),
                },
            }),
        }
    }

    /// For `X | L op R` and `L op R` where `R` is a literal: `X`, `L`, `op` and `R`.
    fn comparison(&self) -> Option<(Option<&Expr>, &Expr, Cmp, &Expr)> {
        let literal = |r: &Expr| matches!(r, Expr::Lit(_) | Expr::Dec(_));
        match self {
            Expr::Pipe(x, c) => match &**c {
                Expr::Cmp(l, op, r) if literal(r) => Some((Some(&**x), &**l, *op, &**r)),
                _ => None,
            },
            Expr::Cmp(l, op, r) if literal(r) => Some((None, &**l, *op, &**r)),
            _ => None,
        }
    }

    /// For a comparison with a literal (`[.lines[] | .qty * .price] | add > 100000`), a key
    /// that is the same for every expression whose left side (`X | L`) is the same: such
    /// conditions, one per destination, can compute it once ([`Expr::test_shared`]).
    pub fn shared_key(&self) -> Option<String> {
        let (x, l, _, _) = self.comparison()?;
        Some(format!("{x:?} | {l:?}"))
    }

    /// [`Expr::test`] on a message, taking the left side of the comparison from `memo` when
    /// an expression with the same `key` (its [`Expr::shared_key`]) computed it for this
    /// message, and keeping it there otherwise. Only what is neither an error nor a
    /// borrowed value is kept (numbers, booleans, null, no output), so the result is always
    /// the one [`Expr::test`] gives.
    pub fn test_shared(&self, input: &Value, vars: &Value, key: &Arc<str>, memo: &Memo) -> R<bool> {
        let Some((x, l, op, r)) = self.comparison() else {
            return self.test(input, input, vars);
        };
        let env = Env { vars: [Some(input), vars.get("params"), vars.get("headers"), vars.get("meta")] };
        let kept =
            memo.0.borrow().as_ref().filter(|(k, _)| Arc::ptr_eq(k, key) || **k == **key).map(|(_, v)| v.clone());
        let left = match kept {
            Some(left) => left,
            None => {
                // As `only` evaluates `X | (L op R)`: no output of X is no output (false),
                // more than one is jaq's to judge.
                let left = match x {
                    None => Some(l.single(V::Json(input), &env)?),
                    Some(x) => match x.single_or_none(V::Json(input), &env)? {
                        None => None,
                        Some(xv) => Some(l.single(xv, &env)?),
                    },
                };
                let left = match left {
                    None => None,
                    Some(v) => match owned_scalar(v) {
                        Some(v) => Some(v),
                        // not a number, boolean or null: evaluated as `Expr::test` does, not kept
                        None => return self.test(input, input, vars),
                    },
                };
                *memo.0.borrow_mut() = Some((key.clone(), left.clone()));
                left
            }
        };
        match left {
            None => Ok(false),
            Some(a) => compare(&a, op, &r.single(V::Null, &env)?),
        }
    }

    /// The only output, `None` for none; more than one is [`Fallback`].
    fn single_or_none<'a>(&'a self, input: V<'a>, env: &Env<'a>) -> R<Option<V<'a>>> {
        let mut one = None;
        self.eval(input, env, &mut |v| match one {
            Some(_) => Err(Fallback),
            None => {
                one = Some(v);
                Ok(())
            }
        })?;
        Ok(one)
    }

    /// The one output of the expression.
    fn single<'a>(&'a self, input: V<'a>, env: &Env<'a>) -> R<V<'a>> {
        self.single_or_none(input, env)?.ok_or(Fallback)
    }
}

struct Env<'a> {
    vars: [Option<&'a Value>; 4],
}

/// The left side of a comparison computed for one message, under its [`Expr::shared_key`]:
/// `None` when its `X` had no output. One slot: the conditions that share a left side are
/// the destinations of one route, evaluated one after another.
#[derive(Default)]
pub struct Memo(std::cell::RefCell<Option<(Arc<str>, Option<V<'static>>)>>);

/// A number, boolean or null as a value of its own (borrowing neither the message nor the
/// expression), which [`compare`] treats as it treats the original; `None` for anything else.
fn owned_scalar(v: V<'_>) -> Option<V<'static>> {
    Some(match v {
        V::Int(i) => V::Int(i),
        V::Float(f) => V::Float(f),
        V::Bool(b) => V::Bool(b),
        V::Json(Value::Bool(b)) => V::Bool(*b),
        V::Null | V::Json(Value::Null) => V::Null,
        V::Json(n @ Value::Number(_)) => match num(&V::Json(n)).ok()? {
            N::Int(i) => V::Int(i),
            N::Float(f) => V::Float(f),
        },
        _ => return None,
    })
}

/// A value during evaluation: the message's own values are borrowed, computed ones owned.
#[derive(Clone, Debug)]
enum V<'a> {
    Json(&'a Value),
    Int(isize),
    Float(f64),
    Bool(bool),
    Null,
    Str(String),
    Dec(Cow<'a, str>),
    /// Shared, so that an operator reading its input twice does not copy an array.
    Arr(Rc<Vec<V<'a>>>),
}

/// A scalar as jaq holds it.
fn jaq_val(v: &V<'_>) -> jaq_json::Val {
    match v {
        V::Json(j) => to_val(j),
        V::Int(i) => jaq_json::Val::from(*i),
        V::Float(f) => jaq_json::Val::from(*f),
        V::Bool(b) => jaq_json::Val::from(*b),
        V::Null => jaq_json::Val::Null,
        V::Str(s) => jaq_json::Val::utf8_str(s.clone()),
        V::Dec(text) => jaq_json::Val::Num(jaq_json::Num::Dec(jaq_json::Rc::new(text.to_string()))),
        V::Arr(items) => items.iter().map(jaq_val).collect(),
    }
}

/// A result as jaq's `run` gives it: through jaq's values, except where that changes nothing.
fn to_value(v: V<'_>) -> Value {
    match v {
        V::Json(j @ (Value::String(_) | Value::Bool(_) | Value::Null)) => j.clone(),
        V::Str(s) => Value::String(s),
        V::Bool(b) => Value::Bool(b),
        V::Null => Value::Null,
        V::Arr(items) => Value::Array(Rc::unwrap_or_clone(items).into_iter().map(to_value).collect()),
        other => from_val(&jaq_val(&other)),
    }
}

/// A number as jaq holds it (Qiao converts JSON integers that fit to `Int`, others to
/// `Float`, in `mapping::jq_value::to_val`).
#[derive(Clone, Copy, Debug)]
enum N {
    Int(isize),
    Float(f64),
}

fn num(v: &V<'_>) -> R<N> {
    match v {
        V::Int(i) => Ok(N::Int(*i)),
        V::Float(f) => Ok(N::Float(*f)),
        // jaq: `Num::from_dec_str`; literals are checked to be finite when compiled
        V::Dec(text) => text.parse().map(N::Float).map_err(|_| Fallback),
        V::Json(Value::Number(n)) => match n.as_i64().and_then(|i| isize::try_from(i).ok()) {
            Some(i) => Ok(N::Int(i)),
            None => n.as_f64().map(N::Float).ok_or(Fallback),
        },
        _ => Err(Fallback),
    }
}

fn is_null(v: &V<'_>) -> bool {
    matches!(v, V::Null | V::Json(Value::Null))
}

fn truthy(v: &V<'_>) -> bool {
    !matches!(v, V::Null | V::Bool(false) | V::Json(Value::Null | Value::Bool(false)))
}

fn walk<'a>(v: V<'a>, steps: &'a [Step], out: &mut dyn FnMut(V<'a>) -> R<()>) -> R<()> {
    let Some((step, rest)) = steps.split_first() else { return out(v) };
    match (step, v) {
        (Step::Key(k), V::Json(Value::Object(m))) => walk(m.get(k.as_str()).map_or(V::Null, V::Json), rest, out),
        (Step::Index(i), V::Json(Value::Array(a))) => walk(a.get(*i).map_or(V::Null, V::Json), rest, out),
        (Step::Index(i), V::Arr(a)) => walk(a.get(*i).cloned().unwrap_or(V::Null), rest, out),
        (Step::Key(_) | Step::Index(_), V::Null | V::Json(Value::Null)) => walk(V::Null, rest, out),
        (Step::Each, V::Json(Value::Array(a))) => a.iter().try_for_each(|x| walk(V::Json(x), rest, out)),
        (Step::Each, V::Arr(a)) => a.iter().try_for_each(|x| walk(x.clone(), rest, out)),
        // objects are iterated by jaq (its key order is not checked here), the rest is an error
        _ => Err(Fallback),
    }
}

fn finite(f: f64) -> R<V<'static>> {
    if f.is_finite() { Ok(V::Float(f)) } else { Err(Fallback) }
}

fn math<'a>(a: V<'a>, op: Math, b: V<'a>) -> R<V<'a>> {
    // jq: `null` is the neutral element of addition, for any other operand
    if op == Math::Add {
        if is_null(&a) {
            return Ok(b);
        }
        if is_null(&b) {
            return Ok(a);
        }
    }
    let (x, y) = (num(&a)?, num(&b)?);
    match (x, y) {
        (N::Int(x), N::Int(y)) => match op {
            Math::Add => x.checked_add(y).map(V::Int).ok_or(Fallback),
            Math::Sub => x.checked_sub(y).map(V::Int).ok_or(Fallback),
            Math::Mul => x.checked_mul(y).map(V::Int).ok_or(Fallback),
            Math::Div => finite(x as f64 / y as f64),
            Math::Rem => Err(Fallback),
        },
        (N::Int(i), N::Float(f)) => float_math(i as f64, op, f),
        (N::Float(f), N::Int(i)) => float_math(f, op, i as f64),
        (N::Float(x), N::Float(y)) => float_math(x, op, y),
    }
}

fn float_math(x: f64, op: Math, y: f64) -> R<V<'static>> {
    finite(match op {
        Math::Add => x + y,
        Math::Sub => x - y,
        Math::Mul => x * y,
        Math::Div => x / y,
        Math::Rem => return Err(Fallback),
    })
}

/// The rank of a scalar's type in jq's order (null < booleans < numbers < strings);
/// arrays and objects are left to jaq.
fn kind(v: &V<'_>) -> R<u8> {
    Ok(match v {
        V::Null | V::Json(Value::Null) => 0,
        V::Bool(_) | V::Json(Value::Bool(_)) => 1,
        V::Int(_) | V::Float(_) | V::Dec(_) | V::Json(Value::Number(_)) => 2,
        V::Json(Value::String(_)) | V::Str(_) => 3,
        V::Arr(_) | V::Json(Value::Array(_) | Value::Object(_)) => return Err(Fallback),
    })
}

fn compare(a: &V<'_>, op: Cmp, b: &V<'_>) -> R<bool> {
    let (ka, kb) = (kind(a)?, kind(b)?);
    let ord = if ka != kb {
        match op {
            Cmp::Eq => return Ok(false),
            Cmp::Ne => return Ok(true),
            _ => return Err(Fallback),
        }
    } else {
        match ka {
            0 => Ordering::Equal,
            1 => bool_of(a).cmp(&bool_of(b)),
            2 => match (num(a)?, num(b)?) {
                (N::Int(x), N::Int(y)) => x.cmp(&y),
                (N::Int(x), N::Float(y)) => float_cmp(x as f64, y),
                (N::Float(x), N::Int(y)) => float_cmp(x, y as f64),
                (N::Float(x), N::Float(y)) => float_cmp(x, y),
            },
            _ => str_of(a).cmp(str_of(b)),
        }
    };
    Ok(match op {
        Cmp::Lt => ord.is_lt(),
        Cmp::Le => ord.is_le(),
        Cmp::Gt => ord.is_gt(),
        Cmp::Ge => ord.is_ge(),
        Cmp::Eq => ord.is_eq(),
        Cmp::Ne => ord.is_ne(),
    })
}

/// Finite floats only reach here; jaq also counts -0 and 0 as equal.
fn float_cmp(x: f64, y: f64) -> Ordering {
    x.partial_cmp(&y).unwrap_or(Ordering::Equal)
}

fn bool_of(v: &V<'_>) -> bool {
    matches!(v, V::Bool(true) | V::Json(Value::Bool(true)))
}

fn str_of<'b>(v: &'b V<'_>) -> &'b str {
    match v {
        V::Json(Value::String(s)) => s,
        V::Str(s) => s,
        _ => "",
    }
}

fn from_term(t: &Term<&str>) -> Option<Expr> {
    let sub = |t: &Term<&str>| from_term(t).map(Box::new);
    Some(match t {
        Term::Id => Expr::Id,
        Term::Num(n) => number(n)?,
        Term::Str(None, parts) => Expr::Lit(Value::String(literal(parts)?)),
        Term::Arr(None) => Expr::Lit(Value::Array(Vec::new())),
        Term::Arr(Some(x)) => Expr::Collect(sub(x)?),
        Term::Neg(x) => Expr::Neg(sub(x)?),
        Term::Var(name) => Expr::Var(VARS.iter().position(|v| v == name)?),
        Term::Call(name, args) if args.is_empty() => match *name {
            "add" => Expr::Add,
            "length" => Expr::Length,
            "not" => Expr::Not,
            "tostring" => Expr::ToString,
            "true" => Expr::Lit(Value::Bool(true)),
            "false" => Expr::Lit(Value::Bool(false)),
            "null" => Expr::Lit(Value::Null),
            _ => return None,
        },
        Term::BinOp(l, op, r) => {
            let (l, r) = (sub(l)?, sub(r)?);
            match op {
                BinaryOp::Pipe(None) => Expr::Pipe(l, r),
                BinaryOp::And => Expr::And(l, r),
                BinaryOp::Or => Expr::Or(l, r),
                BinaryOp::Math(m) if *m != Math::Rem => Expr::Math(l, *m, r),
                BinaryOp::Cmp(c) => Expr::Cmp(l, *c, r),
                _ => return None,
            }
        }
        Term::Path(base, path) => {
            let steps = path.0.iter().map(|(part, opt)| step(part, *opt)).collect::<Option<Vec<_>>>()?;
            Expr::Path(sub(base)?, steps)
        }
        _ => return None,
    })
}

fn step(part: &Part<Term<&str>>, opt: Opt) -> Option<Step> {
    if !matches!(opt, Opt::Essential) {
        return None;
    }
    match part {
        Part::Index(Term::Str(None, parts)) => Some(Step::Key(literal(parts)?)),
        Part::Index(Term::Num(n)) => n.parse().ok().map(Step::Index),
        Part::Range(None, None) => Some(Step::Each),
        _ => None,
    }
}

/// A number literal as jaq reads it: an integer when it fits in `isize`, a big integer
/// when it is all digits (left to jaq), else a decimal kept as written.
fn number(n: &str) -> Option<Expr> {
    if let Ok(i) = n.parse::<isize>() {
        return Some(Expr::Lit(Value::from(i64::try_from(i).ok()?)));
    }
    if n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse::<f64>().ok().filter(|f| f.is_finite()).map(|_| Expr::Dec(n.to_string()))
}

/// A string literal without interpolation.
fn literal(parts: &[StrPart<&str, Term<&str>>]) -> Option<String> {
    let mut s = String::new();
    for part in parts {
        match part {
            StrPart::Str(text) => s.push_str(text),
            StrPart::Char(c) => s.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests;
