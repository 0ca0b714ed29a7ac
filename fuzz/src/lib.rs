//! Shared pieces of Qiao's fuzz targets: the repository's shipped files, a bounded JSON
//! generator driven by `arbitrary`, and the checks every target runs on its results.

use std::path::{Path, PathBuf};

use arbitrary::{Result, Unstructured};
use qiao::config::Diagnostic;
use serde_json::{Map, Number, Value};

/// The repository root (the fuzz crate lives in `<root>/fuzz`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped example messages, `routes/examples/*.json`, in name order.
pub fn examples() -> Vec<Value> {
    let dir = repo().join("routes/examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| serde_json::from_slice(&std::fs::read(p).expect("example")).expect("example JSON")).collect()
}

/// Renders every diagnostic, as `qiao check` and startup do: formatting must not panic.
pub fn render(diags: &[Diagnostic]) {
    for d in diags {
        let text = d.to_string();
        assert!(!text.is_empty());
    }
}

/// What a mapped message becomes on the wire: serializing it must not fail.
pub fn serialize(value: &Value) {
    serde_json::to_vec(value).expect("a mapped value serializes");
}

/// The `vars` the pipeline passes to `Mapping::apply`.
pub fn default_vars() -> Value {
    serde_json::json!({
        "params": {"order_id": "801J000000Fuzz", "id": "1"},
        "headers": {"x-tenant": "hz", "content-type": "application/json"},
        "meta": {"message_id": "0192f0c1-7d7a-7000-8000-000000000001", "route": "fuzz", "received_at": "2025-03-18T05:00:00Z"}
    })
}

/// Strings that reach the interesting branches: dates in every accepted shape and some
/// that are almost dates, numbers as text, booleans as text, codes the shipped lookup
/// tables know, and values at the edges of the integer and date ranges.
pub const STRINGS: &[&str] = &[
    "",
    " ",
    "0",
    "1",
    "-1",
    " 20 ",
    "4520.00",
    "96.5",
    "1e308",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551616",
    "9.0e18",
    "9.3e18",
    "2025-03-18",
    "2025/03/18",
    "20250318",
    "2025-02-30",
    "2025-13-45",
    "0000-01-01",
    "9999-12-31",
    "+262142-12-31",
    "-262143-01-01",
    "2025-03-20 14:32:10",
    "2025-03-20 14:32:10.123456789",
    "2025-03-20T14:32:10",
    "2025/03/20 14:32:10",
    "2025-03-20 14:32",
    "2025-03-25T08:00:00+08:00",
    "2025-03-25T08:00:00Z",
    "2025-03-25T08:00:60Z",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00+23:59",
    "1742274000",
    "1742274000000",
    "9999999999",
    "9999999999999",
    "0000000000",
    "/Date(1744243200000)/",
    "/Date(1744243200000+0800)/",
    "/Date(-1744243200000)/",
    "/Date(99999999999999999)/",
    "/Date()/",
    "/Date(-)/",
    "true",
    "false",
    "yes",
    "N",
    "on",
    "是",
    "否",
    "wangq",
    "lina",
    "LINE-01",
    "LINE-03",
    "WH-HZ-01",
    "Produced",
    "Consumed",
    "PCS",
    "供应商编码",
    "数量",
    "+08:00",
    "-05:30",
    "UTC",
];

pub const KEYS: &[&str] = &[
    "records",
    "Account",
    "AccountNumber",
    "OrderItems",
    "Quantity",
    "UnitPrice",
    "EffectiveDate",
    "ServiceDate",
    "Product2",
    "ProductCode",
    "Owner",
    "Alias",
    "ProductionPerformance",
    "ProductionResponse",
    "SegmentResponse",
    "MaterialActual",
    "MaterialUse",
    "QuantityString",
    "EndTime",
    "Location",
    "EquipmentID",
    "name",
    "value",
    "formComponentValues",
    "",
    "a.b",
    "0",
];

/// A JSON number, often at an edge.
pub fn number(u: &mut Unstructured<'_>) -> Result<Number> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Number::from(u.arbitrary::<i64>()?),
        1 => Number::from(u.arbitrary::<u64>()?),
        2 => Number::from(*u.choose(&[i64::MIN, i64::MAX, 0, -1, 1, 20, 1_742_274_000, 1_742_274_000_000])?),
        3 => Number::from(u64::MAX),
        4 => Number::from_f64(*u.choose(&[
            0.0, -0.0, 0.5, 20.0, 96.5, 1e15, 9.0e15, 9.0e18, 9.3e18, -9.3e18, 1e308, -1e308, 8.64e15, 8.64e18, 5e-324,
        ])?)
        .expect("finite"),
        5..=6 => {
            let f = u.arbitrary::<f64>()?;
            Number::from_f64(f).unwrap_or_else(|| Number::from(0))
        }
        _ => Number::from(u.int_in_range(-100i64..=100)?),
    })
}

/// A string, usually one of [`STRINGS`].
pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(if u.ratio(3u8, 4u8)? { (*u.choose(STRINGS)?).to_string() } else { u.arbitrary::<String>()? })
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(if u.ratio(3u8, 4u8)? { (*u.choose(KEYS)?).to_string() } else { u.arbitrary::<String>()? })
}

/// Any JSON value, nested at most `depth` levels.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let top = if depth == 0 { 3 } else { 5 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(number(u)?),
        3 => Value::String(string(u)?),
        4 => {
            let n = u.int_in_range(0..=4usize)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4usize)?;
            let mut map = Map::new();
            for _ in 0..n {
                map.insert(key(u)?, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// Changes `doc` in a few places: replaces a value somewhere inside it, or adds or
/// removes a key or an element, so that a real message's shape mostly survives and the
/// mappings written for it reach their coercions, lookups and selectors.
pub fn mutate(u: &mut Unstructured<'_>, doc: &mut Value) -> Result<()> {
    // Walk down a random distance.
    if u.ratio(4u8, 5u8)? {
        match doc {
            Value::Object(map) if !map.is_empty() => {
                let i = u.choose_index(map.len())?;
                return mutate(u, map.values_mut().nth(i).expect("in range"));
            }
            Value::Array(items) if !items.is_empty() => {
                let i = u.choose_index(items.len())?;
                return mutate(u, &mut items[i]);
            }
            _ => {}
        }
    }
    match (u.int_in_range(0..=3u8)?, &mut *doc) {
        (1, Value::Object(map)) => {
            let k = key(u)?;
            let v = value(u, 2)?;
            map.insert(k, v);
        }
        (2, Value::Object(map)) if !map.is_empty() => {
            let i = u.choose_index(map.len())?;
            let k = map.keys().nth(i).expect("in range").clone();
            map.remove(&k);
        }
        (1, Value::Array(items)) => {
            let v = value(u, 2)?;
            items.push(v);
        }
        (2, Value::Array(items)) if !items.is_empty() => {
            let i = u.choose_index(items.len())?;
            items.remove(i);
        }
        _ => *doc = value(u, 2)?,
    }
    Ok(())
}

/// `vars` as the pipeline builds them, with fuzzed values (sometimes of the wrong type).
pub fn vars(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut vars = default_vars();
    let obj = vars.as_object_mut().expect("object");
    for name in ["params", "headers", "meta"] {
        match u.int_in_range(0..=5u8)? {
            0 => {
                obj.remove(name);
            }
            1 => {
                obj.insert(name.to_string(), value(u, 2)?);
            }
            2 | 3 => {
                let inner = obj.get_mut(name).and_then(Value::as_object_mut).expect("object");
                for v in inner.values_mut() {
                    *v = Value::String(string(u)?);
                }
            }
            _ => {}
        }
    }
    Ok(vars)
}

/// libfuzzer-sys installs a panic hook that aborts at once, even for a panic that Qiao
/// catches on purpose (`JqProgram` turns a panic inside jaq into an error of the message).
/// This hook only prints: a panic that escapes the target still aborts, in libfuzzer-sys's
/// own `catch_unwind` around every input, and the input is saved as a crash.
pub fn allow_caught_panics() {
    std::panic::set_hook(Box::new(|info| eprintln!("panic (caught or not): {info}")));
}
