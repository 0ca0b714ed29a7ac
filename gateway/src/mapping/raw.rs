//! Maps and lookup tables as written in YAML: serde structs that deny unknown keys. The
//! compiler beside them (`mapping::compile`) turns them into operations.

use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

type Text = Spanned<String>;

/// A lookup table: translates values of one system into the codes of another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    /// Source value → target value. Keys are compared as text (`1` and `"1"` match).
    pub values: IndexMap<String, serde_json::Value>,
    /// Value for a source value the table does not list. Without it, an unlisted value is
    /// a mapping error.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<serde_json::Value>,
}

/// Target field → how to compute it. Dotted target names build nested objects.
pub type RawMap = IndexMap<Text, Spanned<RawFieldSpec>>;

/// How one target field is computed: a source path written as a plain string, or a map of
/// the operations described in docs/mapping.md.
#[derive(Debug)]
pub enum RawFieldSpec {
    Path(String),
    Full(Box<RawFieldOps>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldOps {
    /// Source path: `a.b[0].c`, a JSON Pointer `/a/b/0/c`, or a `$params.`, `$headers.`,
    /// `$meta.`, `$root.` path.
    pub from: Option<Text>,
    /// A constant value of any JSON type.
    #[serde(rename = "const", default, deserialize_with = "present")]
    pub constant: Option<serde_json::Value>,
    /// A string built from source paths: `"CRM订单 {OrderNumber} / {PoNumber?}"`.
    pub template: Option<Text>,
    /// A jq expression (jaq), for what the declarative form cannot say:
    /// `[.lines[] | .qty * .price] | add`. `.` is the value in scope.
    pub jq: Option<Text>,
    /// Used when the source is absent or null.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<serde_json::Value>,
    /// Type coercion: `string`, `number`, `integer`, `boolean`, `date`, `datetime`,
    /// `epoch_ms`, `epoch_s`.
    #[serde(rename = "as")]
    pub coerce: Option<Text>,
    /// Output format of `date`/`datetime` (strftime), e.g. `%Y-%m-%d %H:%M:%S`.
    pub format: Option<Text>,
    /// Input format of date strings (strftime), or `epoch_ms` / `epoch_s`.
    pub parse: Option<Text>,
    /// UTC offset used for naive inputs and for the output, e.g. `+08:00`. Default UTC.
    pub timezone: Option<Text>,
    /// Translate the value through a lookup table: a table's name, or an inline table.
    pub lookup: Option<Spanned<RawLookupRef>>,
    /// When true, a value that is still absent or null after `default` is a mapping error.
    pub required: Option<bool>,
    /// When true, a null result leaves the field out instead of writing `null` (for
    /// receivers that refuse nulls).
    pub omit_null: Option<bool>,
    /// Build an object with its own field map (relative to `from` when given).
    pub map: Option<RawMap>,
    /// Build an array: one element per element of this source array.
    pub each: Option<Text>,
    /// With `each`: how one element is computed when it is not an object (`map`).
    pub item: Option<Box<Spanned<RawFieldSpec>>>,
    /// Build an array from a list of field specs, in order; absent values are left out.
    pub list: Option<Vec<Spanned<RawFieldSpec>>>,
}

#[derive(Debug)]
pub enum RawLookupRef {
    Named(String),
    Inline(RawLookup),
}

/// Keeps an explicit `null` (`Some(Value::Null)`) apart from an absent key (`None`).
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl<'de> Deserialize<'de> for RawFieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A string is a source path; a map is the full form. Spelled out (rather than an
        // untagged enum) so that a typo inside the map keeps its precise error and place.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFieldSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a source path or a map of mapping operations (from, const, template, ...)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawFieldSpec::Path(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let ops = RawFieldOps::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawFieldSpec::Full(Box::new(ops)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawLookupRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLookupRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the name of a lookup table, or an inline table with `values`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawLookupRef::Named(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawLookup::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawLookupRef::Inline)
            }
        }
        d.deserialize_any(V)
    }
}
