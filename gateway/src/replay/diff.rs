//! A field-level diff of two JSON documents: every leaf that was added, removed or changed,
//! named by its JSON Pointer (RFC 6901). `qiao replay` shows it between a recorded mapped
//! output and today's; `qiao dlq replay --preview` between a dead letter and what it would
//! become. Objects are compared key by key, arrays index by index (an element inserted at
//! the front shows as every later index changed: what the receiver sees, position by
//! position). Noise is left out by [`Ignore`] patterns over the pointers.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// What happened to one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

/// One difference: where, what kind, the value before and after.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// RFC 6901: `/data/Model/FEntity/0/FQty`, `~1` for `/` and `~0` for `~` in keys.
    pub pointer: String,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// Pointers to leave out of a diff, as glob patterns over JSON Pointers: `/data/Model/FDate`
/// exactly, `*` for one segment (`/items/*/ts`), `**` for any number of segments
/// (`/**/timestamp`), and `*` inside a segment for any characters (`/data/F*Time`). Patterns
/// are written with the pointer's own escaping (`~1`, `~0`). A matching pointer is left out
/// with everything under it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ignore {
    patterns: Vec<Vec<String>>,
}

impl Ignore {
    /// Patterns must start with `/` (a JSON Pointer); `""` is the whole document.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Ignore, String> {
        let mut ignore = Ignore::default();
        for p in patterns {
            ignore.add(p.as_ref())?;
        }
        Ok(ignore)
    }

    pub fn add(&mut self, pattern: &str) -> Result<(), String> {
        if !pattern.is_empty() && !pattern.starts_with('/') {
            return Err(format!("`{pattern}` is not a JSON Pointer pattern: it must start with `/`"));
        }
        let segments = split(pattern);
        if !self.patterns.contains(&segments) {
            self.patterns.push(segments);
        }
        Ok(())
    }

    /// This set and `other`'s patterns together.
    pub fn with(&self, other: &Ignore) -> Ignore {
        let mut all = self.clone();
        for p in &other.patterns {
            if !all.patterns.contains(p) {
                all.patterns.push(p.clone());
            }
        }
        all
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `pointer` (escaped, as in [`FieldChange::pointer`]) is left out: it, or a
    /// pointer above it, matches.
    pub fn matches(&self, pointer: &str) -> bool {
        let segments = split(pointer);
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        (0..=segments.len()).any(|n| self.matches_segments(&segments[..n]))
    }

    fn matches_segments(&self, segments: &[&str]) -> bool {
        self.patterns.iter().any(|p| glob(p, segments))
    }
}

/// The escaped segments of a pointer (`/a~1b/0` → `["a~1b", "0"]`).
fn split(pointer: &str) -> Vec<String> {
    if pointer.is_empty() { Vec::new() } else { pointer[1..].split('/').map(str::to_string).collect() }
}

fn glob(pattern: &[String], segments: &[&str]) -> bool {
    match pattern.split_first() {
        None => segments.is_empty(),
        Some((p, rest)) if p == "**" => (0..=segments.len()).any(|skip| glob(rest, &segments[skip..])),
        Some((p, rest)) => match segments.split_first() {
            Some((s, more)) => segment_glob(p, s) && glob(rest, more),
            None => false,
        },
    }
}

/// One segment against a pattern where `*` is any run of characters.
fn segment_glob(pattern: &str, segment: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == segment;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !segment.starts_with(first) || segment.len() < first.len() + last.len() || !segment.ends_with(last) {
        return false;
    }
    let mut rest = &segment[first.len()..segment.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// RFC 6901 escaping of one key.
pub fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) { key.replace('~', "~0").replace('/', "~1").into() } else { key.into() }
}

/// Every field that differs between `old` and `new`, in document order (`old`'s keys first,
/// then keys only `new` has), except those `ignore` leaves out.
pub fn diff(old: &Value, new: &Value, ignore: &Ignore) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    walk(old, new, ignore, &mut path, &mut out);
    out
}

fn pointer(path: &[String]) -> String {
    let mut s = String::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for p in path {
        s.push('/');
        s.push_str(p);
    }
    s
}

fn ignored(ignore: &Ignore, path: &[String]) -> bool {
    if ignore.is_empty() {
        return false;
    }
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    ignore.matches_segments(&segments)
}

fn walk(old: &Value, new: &Value, ignore: &Ignore, path: &mut Vec<String>, out: &mut Vec<FieldChange>) {
    if old == new || ignored(ignore, path) {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                path.push(escape(k).into_owned());
                match b.get(k) {
                    Some(vb) => walk(va, vb, ignore, path, out),
                    None => leaf(Kind::Removed, Some(va), None, ignore, path, out),
                }
                path.pop();
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                path.push(escape(k).into_owned());
                leaf(Kind::Added, None, Some(vb), ignore, path, out);
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                path.push(i.to_string());
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, ignore, path, out),
                    (Some(va), None) => leaf(Kind::Removed, Some(va), None, ignore, path, out),
                    (None, Some(vb)) => leaf(Kind::Added, None, Some(vb), ignore, path, out),
                    (None, None) => {}
                }
                path.pop();
            }
        }
        _ => out.push(FieldChange {
            pointer: pointer(path),
            kind: Kind::Changed,
            old: Some(old.clone()),
            new: Some(new.clone()),
        }),
    }
}

fn leaf(
    kind: Kind,
    old: Option<&Value>,
    new: Option<&Value>,
    ignore: &Ignore,
    path: &[String],
    out: &mut Vec<FieldChange>,
) {
    if !ignored(ignore, path) {
        out.push(FieldChange { pointer: pointer(path), kind, old: old.cloned(), new: new.cloned() });
    }
}

/// How a change is shown to a person: `~ /a/b: 1 → 2`, `+ /c: "x"`, `- /d: true`, one a
/// line, each line starting with `indent`; in colour when `colour` (a terminal).
pub fn render(changes: &[FieldChange], indent: &str, colour: bool) -> String {
    let mut s = String::new();
    for c in changes {
        let (mark, paint) = match c.kind {
            Kind::Added => ('+', "\x1b[32m"),
            Kind::Removed => ('-', "\x1b[31m"),
            Kind::Changed => ('~', "\x1b[33m"),
        };
        let (on, off) = if colour { (paint, "\x1b[0m") } else { ("", "") };
        let _ = match c.kind {
            Kind::Added => writeln!(s, "{indent}{on}{mark} {}: {}{off}", c.pointer, short(c.new.as_ref())),
            Kind::Removed => writeln!(s, "{indent}{on}{mark} {}: {}{off}", c.pointer, short(c.old.as_ref())),
            Kind::Changed => writeln!(
                s,
                "{indent}{on}{mark} {}: {} → {}{off}",
                c.pointer,
                short(c.old.as_ref()),
                short(c.new.as_ref())
            ),
        };
    }
    s
}

/// A value on one line, cut past 120 characters.
fn short(v: Option<&Value>) -> String {
    let text = v.map(Value::to_string).unwrap_or_default();
    if text.chars().count() <= 120 { text } else { format!("{}…", text.chars().take(119).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointers(changes: &[FieldChange]) -> Vec<(&str, Kind)> {
        changes.iter().map(|c| (c.pointer.as_str(), c.kind)).collect()
    }

    #[test]
    fn added_removed_and_changed_fields_by_pointer() {
        let old = json!({"a": 1, "b": {"c": "x", "d": [1, 2, 3]}, "gone": true, "t": {"x": 1}});
        let new = json!({"a": 1, "b": {"c": "y", "d": [1, 5]}, "t": [1], "e/f~g": null});
        let d = diff(&old, &new, &Ignore::default());
        assert_eq!(
            pointers(&d),
            vec![
                ("/b/c", Kind::Changed),
                ("/b/d/1", Kind::Changed),
                ("/b/d/2", Kind::Removed),
                ("/gone", Kind::Removed),
                ("/t", Kind::Changed),
                ("/e~1f~0g", Kind::Added),
            ]
        );
        assert_eq!(d[0].old, Some(json!("x")));
        assert_eq!(d[0].new, Some(json!("y")));
        assert_eq!(d[2].old, Some(json!(3)));
        assert_eq!(d[2].new, None);
        assert!(diff(&old, &old, &Ignore::default()).is_empty());
        // The whole document replaced: the empty pointer.
        assert_eq!(pointers(&diff(&json!(1), &json!("1"), &Ignore::default())), vec![("", Kind::Changed)]);
    }

    #[test]
    fn ignore_patterns_are_globs_over_segments() {
        let ig = Ignore::new(["/data/Model/FDate", "/**/timestamp", "/items/*/ts", "/x/F*Time"]).unwrap();
        for yes in [
            "/data/Model/FDate",
            "/data/Model/FDate/0",
            "/timestamp",
            "/a/b/c/timestamp",
            "/items/3/ts",
            "/x/FCreateTime",
            "/x/FTime",
        ] {
            assert!(ig.matches(yes), "{yes}");
        }
        for no in ["/data/Model", "/data/Model/FDateX", "/items/ts", "/items/1/2/ts", "/x/FTimeX", "/timestamps"] {
            assert!(!ig.matches(no), "{no}");
        }
        assert!(Ignore::new(["data/x"]).is_err());
        let old = json!({"data": {"Model": {"FDate": "2025-01-01", "FNote": "a"}}, "meta": {"timestamp": 1}});
        let new = json!({"data": {"Model": {"FDate": "2026-01-01", "FNote": "b"}}, "meta": {"timestamp": 2}});
        assert_eq!(pointers(&diff(&old, &new, &ig)), vec![("/data/Model/FNote", Kind::Changed)]);
        // An escaped key is matched escaped.
        let ig = Ignore::new(["/a~1b"]).unwrap();
        assert!(diff(&json!({"a/b": 1}), &json!({"a/b": 2}), &ig).is_empty());
    }

    #[test]
    fn rendering_for_people_and_machines() {
        let d = diff(&json!({"a": 1, "b": "x"}), &json!({"a": 2, "c": [true]}), &Ignore::default());
        assert_eq!(render(&d, "  ", false), "  ~ /a: 1 → 2\n  - /b: \"x\"\n  + /c: [true]\n");
        assert!(render(&d, "", true).contains("\x1b[33m~ /a"));
        assert_eq!(
            serde_json::to_value(&d[0]).unwrap(),
            json!({"pointer": "/a", "kind": "changed", "old": 1, "new": 2})
        );
        assert_eq!(serde_json::to_value(&d[2]).unwrap(), json!({"pointer": "/c", "kind": "added", "new": [true]}));
    }
}
