//! Conversions between serde_json's values and jaq's, shared by the jaq evaluator
//! (`jq.rs`) and the native one (`jq_native.rs`), so that both print a number exactly as jaq
//! prints it. A module of its own so that neither evaluator depends on the other's code.

use jaq_json::Val;
use serde_json::Value;

pub(super) fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::from(*b),
        Value::Number(n) => match n.as_i64().and_then(|i| isize::try_from(i).ok()) {
            Some(i) => Val::from(i),
            None => n.as_f64().map_or(Val::Null, Val::from),
        },
        Value::String(s) => Val::utf8_str(s.clone()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(m) => Val::obj(m.iter().map(|(k, v)| (Val::utf8_str(k.clone()), to_val(v))).collect()),
    }
}

pub(super) fn from_val(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => serde_json::from_str(&n.to_string()).unwrap_or(Value::Null),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(from_val).collect()),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                        other => from_val(other).to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
    }
}
