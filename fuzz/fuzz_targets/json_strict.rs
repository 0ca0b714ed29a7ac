//! Qiao's inbound JSON parser (`qiao::json`, which refuses duplicate keys) against
//! serde_json's own `Value`: whatever serde_json accepts without a repeated key, Qiao
//! accepts and builds the same tree (same key order too); whatever serde_json refuses, Qiao
//! refuses with the same message; the only extra refusals are a duplicate key, and then the
//! document really has one, and nesting deeper than `qiao::json::MAX_DEPTH`, and then the
//! document really is that deep.
//!
//! Input: the bytes are the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Does any object in `text` (valid JSON) repeat a key? Checked with serde_json's
/// streaming `Map` building, independently of `qiao::json`.
fn has_duplicate(text: &[u8]) -> bool {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Dup(bool);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut dup = false;
            while let Some(Dup(d)) = seq.next_element()? {
                dup |= d;
            }
            Ok(dup)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            let mut dup = false;
            while let Some(k) = map.next_key::<String>()? {
                dup |= !seen.insert(k);
                let Dup(d) = map.next_value()?;
                dup |= d;
            }
            Ok(dup)
        }
    }
    impl<'de> Deserialize<'de> for Dup {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(V).map(Dup)
        }
    }
    serde_json::from_slice::<Dup>(text).map(|d| d.0).unwrap_or(false)
}

/// How deep arrays and objects nest in `v` (a scalar is 0 deep).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let ours = qiao::json::from_slice(data);
    let theirs = serde_json::from_slice::<Value>(data);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
            assert!(!has_duplicate(data), "a duplicate key was accepted");
        }
        // Qiao may stop at a duplicate key, or at a level too deep, before serde_json reaches
        // a later syntax error (or its own recursion limit).
        (Err(a), Err(b)) => {
            let (a, b) = (a.to_string(), b.to_string());
            assert!(a == b || a.contains("duplicate key") || a.contains("nest deeper than"), "{a} / {b}");
        }
        (Err(a), Ok(v)) if a.to_string().contains("nest deeper than") => {
            assert!(depth(&v) > qiao::json::MAX_DEPTH, "refused as too deep at depth {}: {a}", depth(&v));
        }
        (Err(a), Ok(_)) => {
            assert!(a.to_string().contains("duplicate key"), "refused only by Qiao: {a}");
            assert!(has_duplicate(data), "refused for a duplicate that is not there: {a}");
        }
        (Ok(_), Err(b)) => panic!("accepted by Qiao, refused by serde_json: {b}"),
    }
});
