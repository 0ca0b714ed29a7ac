//! Source paths: where a mapping reads a value.
//!
//! Three spellings, one meaning:
//! - dotted: `OrderItems.records[0].Product2.ProductCode`, `lines[-1]`, `a["key.with.dots"]`,
//!   and `[field=value]` to pick the first array element whose `field` equals `value`:
//!   `formComponentValues[name=供应商编码].value` (DingTalk and Feishu forms are lists of
//!   name/value pairs)
//! - JSON Pointer: `/OrderItems/records/0/Product2/ProductCode`
//! - rooted: `$params.order_id`, `$headers.x-tenant`, `$meta.message_id`, `$root.PoNumber`
//!   (`$body` is another name for `$root`)
//!
//! A plain path reads the current value: the message body, or the element of the array an
//! `each` walks over. `$root` always reads the whole message body.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// The value in scope: the body, or the current `each` element.
    Current,
    /// `$root`: the whole message body.
    Document,
    /// `$params`: path parameters of the HTTP route.
    Params,
    /// `$headers`: inbound headers, names lowercase.
    Headers,
    /// `$meta`: `message_id`, `route`, `received_at`.
    Meta,
}

impl Root {
    pub const NAMES: [&'static str; 5] = ["$root", "$body", "$params", "$headers", "$meta"];
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub key: Box<str>,
    /// The key read as an array index, when it is one (negative counts from the end).
    pub index: Option<i64>,
    /// `[field=value]`: the first element of an array whose `field` equals `value`.
    pub filter: Option<(Box<str>, Box<str>)>,
}

impl Step {
    fn new(key: &str) -> Self {
        Self { key: key.into(), index: key.parse().ok(), filter: None }
    }
}

/// Whether a JSON scalar equals the text of a `[field=value]` selector.
fn scalar_is(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => s == text,
        Value::Number(n) => n.to_string() == text || n.as_f64().is_some_and(|f| text.parse::<f64>().ok() == Some(f)),
        Value::Bool(b) => b.to_string() == text,
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePath {
    pub root: Root,
    pub steps: Vec<Step>,
    /// The path as written, for error messages.
    pub text: Box<str>,
}

/// What a path reads from.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub current: &'a Value,
    pub document: &'a Value,
    /// `{"params": {...}, "headers": {...}, "meta": {...}}`; `Null` when the mapping uses
    /// none of them.
    pub vars: &'a Value,
}

impl SourcePath {
    /// The value in scope itself.
    pub fn current() -> Self {
        Self { root: Root::Current, steps: Vec::new(), text: ".".into() }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with_bare_root(text, Root::Current)
    }

    /// Parses with `bare` as the root of paths that do not name one (destination
    /// templates read path parameters by bare name).
    pub fn parse_with_bare_root(text: &str, bare: Root) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "." {
            return Ok(Self { root: bare, steps: Vec::new(), text: text.into() });
        }
        if let Some(pointer) = trimmed.strip_prefix('/') {
            let steps = pointer.split('/').map(|t| Step::new(&t.replace("~1", "/").replace("~0", "~"))).collect();
            return Ok(Self { root: bare, steps, text: text.into() });
        }
        let (root, rest) = if let Some(after) = trimmed.strip_prefix('$') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let root = match &after[..end] {
                // `$body` reads the same as `$root`: in a map, the inbound body; in a
                // destination template, the body being sent.
                "root" | "body" => Root::Document,
                "params" => Root::Params,
                "headers" => Root::Headers,
                "meta" => Root::Meta,
                other => {
                    let hint = crate::diag::suggest(&format!("${other}"), Root::NAMES);
                    return Err(format!("unknown root `${other}` ({hint})"));
                }
            };
            let rest = &after[end..];
            (root, rest.strip_prefix('.').unwrap_or(rest))
        } else {
            (bare, trimmed)
        };
        let steps = parse_dotted(rest)?;
        if matches!(root, Root::Params | Root::Headers | Root::Meta) && steps.is_empty() {
            return Err(format!("`{trimmed}` needs a name after it, e.g. `{trimmed}.name`"));
        }
        Ok(Self { root, steps, text: text.into() })
    }

    /// The value at this path, if there is one.
    pub fn resolve<'a>(&self, scope: &Scope<'a>) -> Option<&'a Value> {
        let start = match self.root {
            Root::Current => scope.current,
            Root::Document => scope.document,
            Root::Params => scope.vars.get("params")?,
            Root::Headers => scope.vars.get("headers")?,
            Root::Meta => scope.vars.get("meta")?,
        };
        self.steps.iter().try_fold(start, |value, step| match value {
            Value::Array(items) if step.filter.is_some() => {
                let (field, wanted) = step.filter.as_ref().expect("checked");
                items
                    .iter()
                    .find(|item| item.as_object().and_then(|m| m.get(&**field)).is_some_and(|v| scalar_is(v, wanted)))
            }
            _ if step.filter.is_some() => None,
            Value::Object(map) => map.get(&*step.key),
            Value::Array(items) => {
                let i = step.index?;
                let i = if i < 0 { items.len() as i64 + i } else { i };
                usize::try_from(i).ok().and_then(|i| items.get(i))
            }
            _ => None,
        })
    }
}

impl std::fmt::Display for SourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text.trim())
    }
}

fn parse_dotted(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut key = String::new();
    let mut after_bracket = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '.' => {
                if key.is_empty() && !after_bracket {
                    return Err(format!("empty name before the `.` at position {} in `{text}`", i + 1));
                }
                if !key.is_empty() {
                    steps.push(Step::new(&key));
                    key.clear();
                }
                after_bracket = false;
                if chars.peek().is_none() {
                    return Err(format!("`{text}` ends with a `.`"));
                }
            }
            '[' => {
                if !key.is_empty() {
                    steps.push(Step::new(&key));
                    key.clear();
                }
                let quote = match chars.peek() {
                    Some((_, q @ ('"' | '\''))) => Some(*q),
                    _ => None,
                };
                let mut inner = String::new();
                if let Some(q) = quote {
                    chars.next();
                    loop {
                        match chars.next() {
                            Some((_, c)) if c == q => break,
                            Some((_, c)) => inner.push(c),
                            None => return Err(format!("unclosed quote in `{text}`")),
                        }
                    }
                    match chars.next() {
                        Some((_, ']')) => {}
                        _ => return Err(format!("expected `]` after the quoted name in `{text}`")),
                    }
                    steps.push(Step { key: inner.into(), index: None, filter: None });
                } else {
                    loop {
                        match chars.next() {
                            Some((_, ']')) => break,
                            Some((_, c)) => inner.push(c),
                            None => return Err(format!("unclosed `[` in `{text}`")),
                        }
                    }
                    if let Some((field, wanted)) = inner.split_once('=') {
                        let field = field.trim();
                        let wanted = wanted.trim().trim_matches(|c| c == '"' || c == '\'');
                        if field.is_empty() {
                            return Err(format!("`[{inner}]` in `{text}` needs a field name before `=`"));
                        }
                        steps.push(Step {
                            key: inner.clone().into(),
                            index: None,
                            filter: Some((field.into(), wanted.into())),
                        });
                    } else {
                        let index: i64 = inner.trim().parse().map_err(|_| {
                            format!("`[{inner}]` in `{text}` is not an index; quote a name: `[\"{inner}\"]`, or select: `[field=value]`")
                        })?;
                        steps.push(Step { key: index.to_string().into(), index: Some(index), filter: None });
                    }
                }
                after_bracket = true;
            }
            ']' => return Err(format!("unexpected `]` in `{text}`")),
            c => {
                if after_bracket {
                    return Err(format!("expected `.` or `[` after `]` in `{text}`"));
                }
                key.push(c);
            }
        }
    }
    if !key.is_empty() {
        steps.push(Step::new(&key));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get<'a>(path: &str, doc: &'a Value) -> Option<&'a Value> {
        let p = SourcePath::parse(path).unwrap();
        p.resolve(&Scope { current: doc, document: doc, vars: &Value::Null })
    }

    #[test]
    fn dotted_bracketed_and_pointer_paths_agree() {
        let doc = json!({"records":[{"Account":{"AccountNumber":"CUST0042"}}]});
        for p in
            ["records[0].Account.AccountNumber", "records.0.Account.AccountNumber", "/records/0/Account/AccountNumber"]
        {
            assert_eq!(get(p, &doc), Some(&json!("CUST0042")), "{p}");
        }
    }

    #[test]
    fn negative_indexes_count_from_the_end() {
        let doc = json!({"lines":[1,2,3]});
        assert_eq!(get("lines[-1]", &doc), Some(&json!(3)));
        assert_eq!(get("lines[-4]", &doc), None);
        assert_eq!(get("lines[3]", &doc), None);
    }

    #[test]
    fn quoted_names_and_unicode_keys() {
        let doc = json!({"a.b": {"c": 1}, "表单": {"供应商编码": "SUP-001"}});
        assert_eq!(get(r#"["a.b"].c"#, &doc), Some(&json!(1)));
        assert_eq!(get("表单.供应商编码", &doc), Some(&json!("SUP-001")));
        assert_eq!(get("/a.b/c", &doc), Some(&json!(1)));
    }

    #[test]
    fn pointer_escapes_are_decoded() {
        let doc = json!({"a/b": {"m~n": 7}});
        assert_eq!(get("/a~1b/m~0n", &doc), Some(&json!(7)));
    }

    #[test]
    fn roots_read_vars_and_the_document() {
        let doc = json!({"PoNumber": "HZ-PO-2025-088", "lines": [{"q": 1}]});
        let vars = json!({"params": {"order_id": "801J"}, "headers": {"x-tenant": "hz"}, "meta": {"message_id": "m1"}});
        let line = &doc["lines"][0];
        let scope = Scope { current: line, document: &doc, vars: &vars };
        let read = |p: &str| SourcePath::parse(p).unwrap().resolve(&scope).cloned();
        assert_eq!(read("q"), Some(json!(1)));
        assert_eq!(read("$root.PoNumber"), Some(json!("HZ-PO-2025-088")));
        assert_eq!(read("$params.order_id"), Some(json!("801J")));
        assert_eq!(read("$headers.x-tenant"), Some(json!("hz")));
        assert_eq!(read("$meta.message_id"), Some(json!("m1")));
        assert_eq!(read("."), Some(json!({"q": 1})));
    }

    #[test]
    fn bad_paths_are_explained() {
        assert!(SourcePath::parse("a..b").unwrap_err().contains("empty name"));
        assert!(SourcePath::parse("a.").unwrap_err().contains("ends with"));
        assert!(SourcePath::parse("a[x]").unwrap_err().contains("not an index"));
        assert!(SourcePath::parse("a[0").unwrap_err().contains("unclosed"));
        assert!(SourcePath::parse("$parms.id").unwrap_err().contains("did you mean `$params`"));
        assert!(SourcePath::parse("$params").unwrap_err().contains("needs a name"));
        assert!(SourcePath::parse("a[0]b").unwrap_err().contains("after `]`"));
    }

    #[test]
    fn selectors_pick_the_first_matching_element() {
        let doc = json!({"form": [
            {"name": "供应商编码", "value": "SUP-0107"},
            {"name": "数量", "value": 500},
            {"name": "数量", "value": 7}
        ], "orders": [{"type": "MO", "code": 1}, {"type": "PO", "code": 2}]});
        assert_eq!(get("form[name=供应商编码].value", &doc), Some(&json!("SUP-0107")));
        assert_eq!(get("form[name='数量'].value", &doc), Some(&json!(500)));
        assert_eq!(get("form[value=500].name", &doc), Some(&json!("数量")));
        assert_eq!(get("orders[type=PO].code", &doc), Some(&json!(2)));
        assert_eq!(get("orders[type=XX].code", &doc), None);
        assert_eq!(get("form[0][name=x]", &doc), None, "a selector on an object finds nothing");
        assert!(SourcePath::parse("a[=x]").unwrap_err().contains("field name"));
    }

    #[test]
    fn scalars_have_no_children() {
        let doc = json!({"a": "text"});
        assert_eq!(get("a.b", &doc), None);
        assert_eq!(get("a[0]", &doc), None);
    }
}
