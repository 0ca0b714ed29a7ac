//! Parsing inbound bodies into `serde_json::Value`, refusing duplicate object keys; and
//! reading only the parts of a receiver's answer that a success rule looks at ([`project`]).
//!
//! serde_json keeps the last of two equal keys; other parsers keep the first or fail. A
//! body with duplicates would then mean one thing to Qiao's schema and another to the
//! receiver (a known way around validation), and a map-less route could not forward the
//! bytes it validated. So a duplicate key is malformed JSON here, as I-JSON (RFC 7493)
//! says. Arrays and objects may nest [`MAX_DEPTH`] deep: business messages nest a few
//! levels, and every later step (schema, map, jq, the receiver's own parser) walks the tree
//! recursively. One key, [`RESERVED_KEY`], is refused because serde_json gives it a meaning
//! of its own. Otherwise this builds exactly the `Value` serde_json's own impl builds.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// How deep arrays and objects may nest in a message (`{"a": [1]}` is 2 deep).
pub const MAX_DEPTH: usize = 64;

/// The object key serde_json (with its `raw_value` feature, which the journal uses to write
/// bodies as they came) reads as "this object is raw JSON held in a string": as the first
/// key of an object it makes serde_json refuse the document or read it as another one
/// (`{KEY: "[1]"}` as `[1]`). A body with it would be written to the journal and read back
/// as something else, so it is refused wherever it appears.
pub const RESERVED_KEY: &str = "$serde_json::private::RawValue";

/// Parses `bytes` as one JSON document without duplicate keys, nested at most
/// [`MAX_DEPTH`] deep. Errors carry serde_json's line and column; for a duplicate, just
/// after the repeated key; for nesting, at the first character inside the level too deep.
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The body without a leading UTF-8 byte order mark. RFC 8259 forbids sending one but lets
/// parsers ignore it, and Windows-born senders (.NET's default UTF-8 encoder, Excel
/// exports) often add it: ignoring it is friendlier than refusing the message, and what is
/// forwarded must then lack it too, so that the receiver gets what was validated.
pub fn strip_bom(body: bytes::Bytes) -> bytes::Bytes {
    if body.starts_with(b"\xEF\xBB\xBF") { body.slice(3..) } else { body }
}

/// A value at `depth` arrays and objects down.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    /// The seed of what is inside the array or object being entered.
    fn inside<E: de::Error>(&self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!("arrays and objects nest deeper than {MAX_DEPTH} levels")));
        }
        Ok(Strict { depth: self.depth + 1 })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json: the parser never hands over a non-finite float.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inside = self.inside()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(inside)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inside = self.inside()?;
        // Room for 8 keys: with 4, the objects of 5–9 keys grow and copy, and a publish of
        // the 1.4 KB B2MML example costs 0.7% more instructions (bench/instructions.sh).
        let mut map = Map::with_capacity(8);
        while let Some(key) = access.next_key::<String>()? {
            // Checked before the value is read, so that the error points at the key.
            if key == RESERVED_KEY {
                return Err(de::Error::custom(format_args!(
                    "the key `{RESERVED_KEY}` is reserved (serde_json reads an object with it as raw JSON)"
                )));
            }
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(access.next_value_seed(inside)?);
                }
                Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key `{}` in an object (each name may appear once)",
                        slot.key()
                    )));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

/// Which parts of a document [`project`] builds.
#[derive(Debug)]
pub enum Projection {
    /// The value here, whole.
    Whole,
    /// Only these keys of the object here, each projected in turn; anything other than an
    /// object here is read as `null`.
    Keys(&'static [(&'static str, Projection)]),
}

/// Parses `bytes` as serde_json does, but builds only what `projection` names: a receiver's
/// answer is read for two or three fields (a success rule), and building the whole tree
/// for that allocated every key and string of it. What is not built is still read through
/// serde_json's own checks (UTF-8, escapes, numbers, nesting), so a document is refused
/// exactly when parsing it whole would refuse it (the tests compare the two); a repeated key
/// keeps its last value, as in serde_json's own `Value`.
pub fn project(bytes: &[u8], projection: &Projection) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Project(projection).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct Project<'p>(&'p Projection);

impl<'de> DeserializeSeed<'de> for Project<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Projection::Whole => Value::deserialize(d),
            Projection::Keys(keys) => d.deserialize_any(ProjectKeys(keys)),
        }
    }
}

struct ProjectKeys(&'static [(&'static str, Projection)]);

impl<'de> Visitor<'de> for ProjectKeys {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(wanted) = access.next_key_seed(WantedKey(self.0))? {
            match wanted {
                Some((key, inner)) => {
                    map.insert((*key).to_string(), access.next_value_seed(Project(inner))?);
                }
                None => access.next_value_seed(Discard)?,
            }
        }
        Ok(Value::Object(map))
    }

    // Anything else is read through, checked as serde_json checks it, and is null here.
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        Discard.visit_seq(seq).map(|()| Value::Null)
    }
}

/// An object key: the wanted one it is, with its projection, or `None`.
struct WantedKey(&'static [(&'static str, Projection)]);

impl<'de> DeserializeSeed<'de> for WantedKey {
    type Value = Option<&'static (&'static str, Projection)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for WantedKey {
    type Value = Option<&'static (&'static str, Projection)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(k, _)| *k == key))
    }
}

/// A value read through the same paths as a whole parse, so that it is refused exactly
/// when serde_json refuses it (unlike `IgnoredAny`, which skips UTF-8 and number checks
/// and the nesting limit), and kept nowhere.
struct Discard;

impl<'de> DeserializeSeed<'de> for Discard {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Discard)
    }
}

impl<'de> Visitor<'de> for Discard {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Discard)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        while access.next_key_seed(Discard)?.is_some() {
            access.next_value_seed(Discard)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_serde_json_builds() {
        let docs = [
            r#"{"FBillNo":"XSDD000123","qty":-3,"big":18446744073709551615,"price":12.50,"e":1e3,"ok":true,"n":null}"#,
            r#"[1,[2,[3,{"a":{"b":[]}}]],{},"\u4e2d\u6587",-0.0,1.7976931348623157e308]"#,
            r#"  "just a string"  "#,
            "0",
            r#"{"z":1,"a":2,"m":{"y":[{"x":1}],"b":null}}"#,
        ];
        for doc in docs {
            let ours = from_slice(doc.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_slice(doc.as_bytes()).unwrap();
            assert_eq!(ours, theirs, "{doc}");
            // Same key order too (preserve_order), so serializing gives the same text.
            assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&theirs).unwrap());
        }
    }

    #[test]
    fn a_byte_order_mark_is_dropped_and_nothing_else() {
        let with = bytes::Bytes::from_static(b"\xEF\xBB\xBF{\"a\":1}");
        assert_eq!(&strip_bom(with)[..], b"{\"a\":1}");
        assert_eq!(&strip_bom(bytes::Bytes::from_static(b"{}"))[..], b"{}");
        assert_eq!(&strip_bom(bytes::Bytes::from_static(b"\xEF\xBB"))[..], b"\xEF\xBB");
    }

    /// Objects of up to 16 keys have no hash index (third_party/serde_json): a duplicate
    /// is found on both sides of that size.
    #[test]
    fn duplicates_are_found_in_small_and_large_objects() {
        for n in [1, 16, 17, 40] {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\": {i}")).collect();
            let doc = format!("{{{}, \"k{}\": 0}}", keys.join(", "), n / 2);
            let e = from_slice(doc.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(&format!("duplicate key `k{}`", n / 2)), "{n} keys: {e}");
            let fine = format!("{{{}}}", keys.join(", "));
            let map = from_slice(fine.as_bytes()).unwrap();
            for i in 0..n {
                assert_eq!(map.get(format!("k{i}")), Some(&Value::from(i)), "{n} keys");
            }
        }
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_position() {
        let e = from_slice(b"{\n  \"FQty\": 1,\n  \"FQty\": 1000\n}").unwrap_err();
        assert!(e.to_string().contains("duplicate key `FQty`"), "{e}");
        assert_eq!(e.line(), 3, "{e}");
        // Escapes are decoded first: `\u0061` is `a`.
        assert!(from_slice(br#"{"a":1,"\u0061":2}"#).unwrap_err().to_string().contains("duplicate key `a`"));
        // Nested, and inside arrays.
        assert!(from_slice(br#"{"x":[{"k":1,"k":2}]}"#).is_err());
        // Equal keys in different objects are fine.
        assert!(from_slice(br#"{"k":{"k":{"k":1}},"j":[{"k":1},{"k":2}]}"#).is_ok());
    }

    #[test]
    fn errors_and_limits_are_serde_jsons() {
        for bad in [&b""[..], b"{", b"[1,]", b"{\"a\" 1}", b"1e400", b"\"\\ud800\"", b"{} {}"] {
            let ours = from_slice(bad).unwrap_err().to_string();
            let theirs = serde_json::from_slice::<Value>(bad).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_raw_value_key_is_refused_wherever_it_is() {
        // The first two are what serde_json's own `Value` refuses or reads as `[1, 2]`; the
        // last two it reads as ordinary keys, but a journal reader could still meet them first.
        for doc in [
            r#"{"$serde_json::private::RawValue"        :2}"#,
            r#"{"$serde_json::private::RawValue":"[1,2]"}"#,
            r#"{"a":{"b":1,"$serde_json::private::RawValue":"[1]"}}"#,
            r#"[{"\u0024serde_json::private::RawValue":0}]"#,
        ] {
            let e = from_slice(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("is reserved"), "{doc}: {e}");
        }
        assert!(from_slice(br#"{"$serde_json::private::RawValu":1,"RawValue":2}"#).is_ok());
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(from_slice(nested(MAX_DEPTH).as_bytes()).is_ok());
        let e = from_slice(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("arrays and objects nest deeper than 64 levels"), "{e}");
        assert_eq!((e.line(), e.column()), (1, 66), "at the first character inside the level too deep");
        let objects = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert!(from_slice(objects.as_bytes()).unwrap_err().to_string().contains("deeper than 64"));
        // Far deeper than serde_json's own recursion limit (128): the same error, no overflow.
        assert!(from_slice(nested(100_000).as_bytes()).unwrap_err().to_string().contains("deeper than 64"));
    }

    #[test]
    fn a_projection_builds_only_the_keys_it_names() {
        use Projection::{Keys, Whole};
        const P: Projection = Keys(&[("a", Keys(&[("b", Whole)])), ("c", Whole)]);
        let v = |text: &str| project(text.as_bytes(), &P).unwrap();
        let doc = r#"{"a":{"b":[1,{"x":2}],"skip":"s"},"c":"中文","d":{"e":1},"a":{"b":"last"}}"#;
        assert_eq!(v(doc), serde_json::json!({"a": {"b": "last"}, "c": "中文"}), "a repeated key keeps the last");
        assert_eq!(v(r#"{"a":[1,2],"c":null}"#), serde_json::json!({"a": null, "c": null}), "not an object: null");
        assert_eq!(v(r#""text""#), Value::Null);
        assert_eq!(v(r#"{"\u0061":{"b":1}}"#), serde_json::json!({"a": {"b": 1}}), "escaped keys match");
        assert_eq!(project(b"[1, 2]", &Whole).unwrap(), serde_json::json!([1, 2]));
        let broken: [&[u8]; 5] =
            [br#"{"d":1e400}"#, br#"{"d":"\ud800"}"#, b"{\"d\":\"\xff\"}", br#"{"a":{"b":1}} x"#, br#"{"d":[}"#];
        for b in broken {
            assert!(project(b, &P).is_err(), "{}", String::from_utf8_lossy(b));
        }
    }
}
