//! Redaction of sensitive values: fields marked `x-pii: true` in a route's schema, or listed
//! in its `redact:` (JSON Pointers, `*` for any array index or key). Failures are redacted
//! where they are made, so logs, traces, dead-letter headers and answers never carry the
//! value. Credentials in headers (`authorization`, cookies, API keys) are never logged.

use std::collections::HashSet;

use serde_json::Value;

use crate::check::Docs;
use crate::error::{Failure, Violation};
use crate::schema::Schema;

/// The prefix of the journal's PII tokens (`journal::redact` makes them; a replay must
/// recognise them wherever a recorded body is checked).
pub const PREFIX: &str = "pii:";

/// Whether `s` is a token as `journal::redact::Tokens::token` makes them: `pii:` and 32 lowercase hex
/// digits.
pub fn is_token(s: &str) -> bool {
    s.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Any,
}

/// What to hide for one route.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    patterns: Vec<Vec<Seg>>,
    /// Last keys of the patterns: a mapping error knows only the source path as written
    /// (relative inside `each`), so it is redacted when that path ends in one of them.
    keys: HashSet<String>,
}

/// Header names whose values never appear in logs or traces.
pub const SECRET_HEADERS: [&str; 6] =
    ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-kdapi-appsec"];

pub fn header_is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&n.as_str()) || n.contains("token") || n.contains("secret") || n.contains("password")
}

impl Redactor {
    /// From the route's schema (`x-pii: true`) and its `redact:` pointers.
    pub fn new(schema: Option<&Schema>, pointers: &[String]) -> Self {
        let mut r = Redactor::default();
        if let Some(s) = schema {
            let docs = Docs::load(&s.file, &s.document);
            if let Some(root) = docs.root(&s.file) {
                let mut seen = HashSet::new();
                walk(&docs, root, &mut Vec::new(), &mut r.patterns, &mut seen, 0);
            }
        }
        for p in pointers {
            r.patterns.push(parse_pointer(p));
        }
        r.keys = r
            .patterns
            .iter()
            .filter_map(|p| match p.last() {
                Some(Seg::Key(k)) => Some(k.clone()),
                _ => None,
            })
            .collect();
        r
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the value at `pointer` (or an object it sits in) is sensitive.
    pub fn covers(&self, pointer: &str) -> bool {
        let segs: Vec<String> = pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
        self.patterns.iter().any(|p| {
            p.len() <= segs.len()
                && p.iter().zip(&segs).all(|(pat, seg)| match pat {
                    Seg::Any => true,
                    Seg::Key(k) => k == seg,
                })
        })
    }

    /// Hides what a failure would tell about sensitive values.
    pub fn apply(&self, f: &mut Failure) {
        if self.is_empty() {
            return;
        }
        let mut changed = false;
        for v in &mut f.violations {
            if self.covers(&v.pointer) {
                v.message = format!("{} check failed (value redacted)", v.keyword);
                changed = true;
            }
        }
        if changed {
            f.detail = Violation::summary(&f.violations);
        }
        if let Some(source) = f.source_path.clone() {
            let last = source.rsplit(['.', '/']).next().unwrap_or(&source).trim_end_matches(']');
            if self.keys.contains(last) {
                f.detail = format!("{} (the value is sensitive and was redacted)", redact_quoted(&f.detail));
            }
        }
    }
}

/// Replaces every double-quoted part of `text` with `"***"`.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push_str("***\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

fn parse_pointer(p: &str) -> Vec<Seg> {
    p.split('/')
        .skip(1)
        .map(|s| if s == "*" { Seg::Any } else { Seg::Key(s.replace("~1", "/").replace("~0", "~")) })
        .collect()
}

fn walk<'a>(
    docs: &'a Docs,
    node: crate::check::SchemaNode<'a>,
    at: &mut Vec<Seg>,
    out: &mut Vec<Vec<Seg>>,
    seen: &mut HashSet<(usize, usize)>,
    depth: usize,
) {
    if depth > 32 || !seen.insert((node.schema as *const Value as usize, at.len())) {
        return;
    }
    let Some(alts) = docs.alternatives(node) else { return };
    for n in alts.into_iter().flatten() {
        if n.schema.get("x-pii") == Some(&Value::Bool(true)) && !out.contains(at) {
            out.push(at.clone());
        }
        if let Some(Value::Object(props)) = n.schema.get("properties") {
            for (k, child) in props {
                at.push(Seg::Key(k.clone()));
                walk(docs, crate::check::SchemaNode { schema: child, file: n.file }, at, out, seen, depth + 1);
                at.pop();
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child @ Value::Object(_)) = n.schema.get(key) {
                at.push(Seg::Any);
                walk(docs, crate::check::SchemaNode { schema: child, file: n.file }, at, out, seen, depth + 1);
                at.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn redactor(schema: Value, pointers: &[&str]) -> Redactor {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(&f, schema.to_string()).unwrap();
        let s = Schema::load(&f, dir.path(), true).unwrap();
        Redactor::new(Some(&s), &pointers.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn x_pii_fields_and_listed_pointers_are_covered() {
        let r = redactor(
            json!({"properties": {
                "FLinkPhone": {"type": "string", "x-pii": true},
                "lines": {"items": {"properties": {"idCard": {"x-pii": true}}}},
                "contact": {"x-pii": true, "properties": {"name": {}}}
            }}),
            &["/records/*/Owner/Alias"],
        );
        assert!(r.covers("/FLinkPhone"));
        assert!(r.covers("/lines/3/idCard"));
        assert!(r.covers("/contact/name"), "inside a sensitive object");
        assert!(r.covers("/records/0/Owner/Alias"));
        assert!(!r.covers("/lines/3/code"));
        assert!(!r.covers("/FBillNo"));
    }

    #[test]
    fn failures_lose_the_values() {
        let r = redactor(json!({"properties": {"FLinkPhone": {"x-pii": true}}}), &[]);
        let mut f = Failure::new(ErrorKind::SchemaViolation, "x");
        f.violations.push(Violation {
            pointer: "/FLinkPhone".into(),
            keyword: "pattern".into(),
            message: "\"13800138000\" does not match \"^0\"".into(),
        });
        r.apply(&mut f);
        assert!(!f.detail.contains("13800138000") && !f.violations[0].message.contains("13800138000"), "{f:?}");
        let mut f = Failure::new(
            ErrorKind::MappingFailed,
            "route r: target `phone` (from `FLinkPhone`): cannot coerce \"13800138000x\" to a number",
        );
        f.source_path = Some("FLinkPhone".into());
        r.apply(&mut f);
        assert!(!f.detail.contains("13800138000x"), "{}", f.detail);
        assert!(f.detail.contains("redacted"));
    }

    #[test]
    fn credentials_in_headers_are_known() {
        for h in ["Authorization", "cookie", "X-Api-Key", "x-access-token", "client_secret"] {
            assert!(header_is_secret(h), "{h}");
        }
        assert!(!header_is_secret("content-type"));
    }
}
