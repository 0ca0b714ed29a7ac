//! Reading a JSON Schema as a description of data, for static checks: what properties an
//! object has, whether it is closed, what type a value has, which values an enum allows.
//! Conservative by design: when the schema does not say, the answer is "unknown", and the
//! checks stay silent rather than guess.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every schema document a root schema reaches through `$ref`, loaded up front.
#[derive(Debug, Default)]
pub struct Docs {
    docs: HashMap<PathBuf, Value>,
}

/// A schema node and the file it lives in (for resolving its `$ref`s).
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub schema: &'a Value,
    pub file: &'a Path,
}

/// JSON types, as `type` names them (`integer` is a kind of `number`).
pub type Types = BTreeSet<&'static str>;

const TYPE_NAMES: [&str; 7] = ["null", "boolean", "object", "array", "number", "integer", "string"];

pub fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
    }
}

/// Whether a value of type `have` can be where `want` is expected.
pub fn compatible(have: &str, want: &str) -> bool {
    have == want || (have == "integer" && want == "number") || (have == "number" && want == "integer")
}

impl Docs {
    /// Loads `root` and, transitively, every file its `$ref`s name.
    pub fn load(root: &Path, document: &Value) -> Docs {
        let mut docs = Docs::default();
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        docs.docs.insert(root.clone(), document.clone());
        let mut pending = vec![root];
        while let Some(file) = pending.pop() {
            let mut refs = Vec::new();
            collect_refs(&docs.docs[&file], &mut refs);
            for r in refs {
                let Some(target) = ref_file(&file, &r) else { continue };
                if docs.docs.contains_key(&target) {
                    continue;
                }
                if let Ok(doc) = crate::schema::read_document(&target) {
                    docs.docs.insert(target.clone(), doc);
                    pending.push(target);
                }
            }
        }
        docs
    }

    pub fn root(&self, file: &Path) -> Option<Node<'_>> {
        let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        let (path, schema) = self.docs.get_key_value(&file)?;
        Some(Node { schema, file: path })
    }

    /// The node itself with its `$ref` followed (also chains), or `None` when a reference
    /// cannot be resolved (remote, missing): unknown.
    fn deref<'a>(&'a self, mut node: Node<'a>) -> Option<Node<'a>> {
        for _ in 0..32 {
            let Some(r) = node.schema.get("$ref").and_then(Value::as_str) else { return Some(node) };
            let (file_part, pointer) = r.split_once('#').unwrap_or((r, ""));
            let file = if file_part.is_empty() { node.file.to_path_buf() } else { ref_file(node.file, r)? };
            let (path, doc) = self.docs.get_key_value(&file)?;
            let target = if pointer.is_empty() { doc } else { doc.pointer(pointer)? };
            node = Node { schema: target, file: path };
        }
        None
    }

    /// The alternatives a node stands for: itself (dereferenced) with its `allOf`
    /// members, and each branch of `anyOf` / `oneOf`. Each inner list holds schemas that
    /// all apply at once. `None`: unknown.
    pub fn alternatives<'a>(&'a self, node: Node<'a>) -> Option<Vec<Vec<Node<'a>>>> {
        let node = self.deref(node)?;
        let mut base = vec![node];
        if let Some(all) = node.schema.get("allOf").and_then(Value::as_array) {
            for member in all {
                let m = self.deref(Node { schema: member, file: node.file })?;
                base.push(m);
            }
        }
        let branches = node.schema.get("anyOf").or_else(|| node.schema.get("oneOf")).and_then(Value::as_array);
        match branches {
            None => Some(vec![base]),
            Some(list) => {
                let mut out = Vec::new();
                for b in list {
                    for alt in self.alternatives(Node { schema: b, file: node.file })? {
                        let mut joined = base.clone();
                        joined.extend(alt);
                        out.push(joined);
                    }
                }
                Some(out)
            }
        }
    }

    /// The types a node allows, or `None` when it does not constrain them.
    pub fn types(&self, node: Node<'_>) -> Option<Types> {
        let mut union = Types::new();
        for alt in self.alternatives(node)? {
            let mut alt_types: Option<Types> = None;
            for n in alt {
                let t = own_types(n.schema);
                alt_types = match (alt_types, t) {
                    (None, t) => t,
                    (Some(a), None) => Some(a),
                    (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
                };
            }
            union.extend(alt_types?);
        }
        Some(union)
    }

    /// The values an `enum` (or `const`) allows, when the node has one in every branch.
    pub fn enum_values(&self, node: Node<'_>) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        for alt in self.alternatives(node)? {
            let values = alt.iter().find_map(|n| {
                n.schema
                    .get("enum")
                    .and_then(Value::as_array)
                    .cloned()
                    .or_else(|| n.schema.get("const").map(|c| vec![c.clone()]))
            })?;
            out.extend(values);
        }
        Some(out)
    }

    /// What a property of an object node is: its schema nodes, nothing the schema says
    /// (`Unknown`), or certainly absent (`Absent`: declared nowhere, object closed).
    pub fn property<'a>(&'a self, node: Node<'a>, key: &str) -> Lookup<'a> {
        let Some(alts) = self.alternatives(node) else { return Lookup::Unknown };
        let mut found = Vec::new();
        let mut all_closed = true;
        for alt in &alts {
            let mut here = false;
            let mut closed = false;
            for n in alt {
                if let Some(p) = n.schema.get("properties").and_then(|p| p.get(key)) {
                    found.push(Node { schema: p, file: n.file });
                    here = true;
                }
                if n.schema.get("patternProperties").is_some() {
                    return Lookup::Unknown;
                }
                match n.schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => closed = true,
                    Some(extra @ Value::Object(_)) if !here => found.push(Node { schema: extra, file: n.file }),
                    _ => {}
                }
                if n.schema.get("unevaluatedProperties") == Some(&Value::Bool(false)) {
                    closed = true;
                }
            }
            if !here {
                all_closed &= closed;
            }
        }
        if !found.is_empty() {
            Lookup::Found(found)
        } else if all_closed {
            Lookup::Absent { closed: true }
        } else if alts.iter().flatten().any(|n| n.schema.get("properties").is_some()) {
            Lookup::Absent { closed: false }
        } else {
            Lookup::Unknown
        }
    }

    /// The property names an object node declares, in all its alternatives: for hints.
    pub fn declared<'a>(&'a self, node: Node<'a>) -> Vec<&'a str> {
        let Some(alts) = self.alternatives(node) else { return Vec::new() };
        let mut names: Vec<&'a str> = alts
            .iter()
            .flatten()
            .filter_map(|n| n.schema.get("properties").and_then(Value::as_object))
            .flat_map(|p| p.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The schema of an array's elements.
    pub fn items<'a>(&'a self, node: Node<'a>) -> Lookup<'a> {
        let Some(alts) = self.alternatives(node) else { return Lookup::Unknown };
        let found: Vec<Node<'a>> = alts
            .iter()
            .flatten()
            .filter_map(|n| match n.schema.get("items") {
                Some(i @ Value::Object(_)) => Some(Node { schema: i, file: n.file }),
                _ => None,
            })
            .collect();
        if found.is_empty() { Lookup::Unknown } else { Lookup::Found(found) }
    }

    /// Properties every instance must have (from the node and its `allOf`; of `anyOf`
    /// branches, only those all branches require).
    pub fn required(&self, node: Node<'_>) -> Vec<String> {
        let Some(alts) = self.alternatives(node) else { return Vec::new() };
        let per_alt: Vec<BTreeSet<String>> = alts
            .iter()
            .map(|alt| {
                alt.iter()
                    .flat_map(|n| n.schema.get("required").and_then(Value::as_array).into_iter().flatten())
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .collect();
        let mut iter = per_alt.into_iter();
        let first = iter.next().unwrap_or_default();
        iter.fold(first, |acc, s| acc.intersection(&s).cloned().collect()).into_iter().collect()
    }
}

/// The outcome of looking up a property or the items of an array.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(Vec<Node<'a>>),
    /// Not declared; `closed`: the object allows no other properties.
    Absent {
        closed: bool,
    },
    /// The schema does not say.
    Unknown,
}

fn own_types(schema: &Value) -> Option<Types> {
    if let Some(t) = schema.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let set: Types = TYPE_NAMES.iter().copied().filter(|n| names.contains(n)).collect();
        return Some(set);
    }
    if let Some(c) = schema.get("const") {
        return Some(Types::from([type_of(c)]));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return Some(e.iter().map(type_of).collect());
    }
    None
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// The file a `$ref` names, relative to the file it is written in.
fn ref_file(from: &Path, r: &str) -> Option<PathBuf> {
    let file_part = r.split('#').next()?;
    if file_part.is_empty() || file_part.contains("://") {
        return if file_part.is_empty() { Some(from.to_path_buf()) } else { None };
    }
    let p = from.parent()?.join(file_part);
    Some(p.canonicalize().unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(dir: &Path, main: &Value) -> (Docs, PathBuf) {
        let f = dir.join("main.json");
        std::fs::write(&f, main.to_string()).unwrap();
        (Docs::load(&f, main), f)
    }

    #[test]
    fn properties_types_and_refs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("common.json"), r#"{"$defs":{"code":{"type":"string","enum":["A","B"]}}}"#)
            .unwrap();
        let main = json!({
            "type": "object", "required": ["a"], "additionalProperties": false,
            "properties": {
                "a": {"$ref": "common.json#/$defs/code"},
                "n": {"type": ["number", "null"]},
                "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}
            },
            "$defs": {"line": {"type": "object", "properties": {"qty": {"type": "integer"}}}}
        });
        let (d, f) = docs(dir.path(), &main);
        let root = d.root(&f).unwrap();
        let Lookup::Found(a) = d.property(root, "a") else { panic!() };
        assert_eq!(d.types(a[0]), Some(Types::from(["string"])));
        assert_eq!(d.enum_values(a[0]), Some(vec![json!("A"), json!("B")]));
        assert!(matches!(d.property(root, "zzz"), Lookup::Absent { closed: true }));
        let Lookup::Found(lines) = d.property(root, "lines") else { panic!() };
        let Lookup::Found(line) = d.items(lines[0]) else { panic!() };
        assert!(matches!(d.property(line[0], "price"), Lookup::Absent { closed: false }));
        assert_eq!(d.required(root), vec!["a".to_string()]);
    }

    #[test]
    fn any_of_branches_union_and_unknowns_stay_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let main =
            json!({"anyOf": [{"properties": {"x": {"type": "string"}}}, {"properties": {"y": {"type": "integer"}}}]});
        let (d, f) = docs(dir.path(), &main);
        let root = d.root(&f).unwrap();
        assert!(matches!(d.property(root, "x"), Lookup::Found(_)));
        assert!(matches!(d.property(root, "y"), Lookup::Found(_)));
        let open = json!({});
        let (d, f) = docs(dir.path(), &open);
        assert!(matches!(d.property(d.root(&f).unwrap(), "anything"), Lookup::Unknown));
    }
}
