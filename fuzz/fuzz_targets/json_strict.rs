//! Qiao's inbound JSON parser (`qiao::json`, which refuses duplicate keys) against
//! serde_json's own `Value`: whatever serde_json accepts without a repeated key, Qiao
//! accepts and builds the same tree (same key order too); whatever serde_json refuses, Qiao
//! refuses with the same message; the only extra refusals are a duplicate key, and then the
//! document really has one, nesting deeper than `qiao::json::MAX_DEPTH`, and then the
//! document really is that deep, and `qiao::json::RESERVED_KEY`, and then the document
//! really has it.
//!
//! Input: the bytes are the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Does an object in `text` use `qiao::json::RESERVED_KEY` before anything makes `text`
/// invalid JSON? (Qiao refuses at the key, and serde_json may refuse at a later syntax
/// error, so keys read before an error count.)
fn has_reserved_key(text: &[u8]) -> bool {
    RESERVED_SEEN.with(|seen| seen.set(false));
    let _ = scan_keys(text);
    RESERVED_SEEN.with(std::cell::Cell::get)
}

thread_local! {
    /// Set by `scan_keys` as soon as it reads the reserved key.
    static RESERVED_SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Does any object in `text` (valid JSON) repeat a key?
fn has_duplicate(text: &[u8]) -> bool {
    scan_keys(text).duplicate
}

/// What the keys of the objects in `text` show. Read with serde_json's streaming reading of
/// keys (decoded, escapes and all), independently of `qiao::json`; `false` when `text` is
/// not JSON.
#[derive(Default)]
struct Keys {
    duplicate: bool,
}

fn scan_keys(text: &[u8]) -> Keys {
    serde_json::from_slice::<Keys>(text).unwrap_or_default()
}

impl Keys {
    fn add(&mut self, other: Keys) {
        self.duplicate |= other.duplicate;
    }
}

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> serde::de::Visitor<'de> for KeysVisitor {
    type Value = Keys;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("json")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
        Ok(Keys::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
        Ok(Keys::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
        Ok(Keys::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
        Ok(Keys::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
        Ok(Keys::default())
    }
    fn visit_unit<E>(self) -> Result<Keys, E> {
        Ok(Keys::default())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
        let mut found = Keys::default();
        while let Some(inner) = seq.next_element::<Keys>()? {
            found.add(inner);
        }
        Ok(found)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        let mut found = Keys::default();
        while let Some(k) = map.next_key::<String>()? {
            if k == qiao::json::RESERVED_KEY {
                RESERVED_SEEN.with(|seen| seen.set(true));
            }
            found.duplicate |= !seen.insert(k);
            found.add(map.next_value::<Keys>()?);
        }
        Ok(found)
    }
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
        // The reserved key: serde_json refuses the document, reads it as another one, or
        // (not the first key of its object) reads it as a plain key; Qiao always refuses.
        (Err(a), _) if a.to_string().contains("is reserved") => {
            assert!(has_reserved_key(data), "refused for a reserved key that is not there: {a}");
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
