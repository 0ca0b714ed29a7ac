//! String templates: literal text with `{path}` placeholders.
//!
//! `{path}` must resolve to a value; `{path?}` renders nothing when it does not. `{{` and
//! `}}` write literal braces. Strings render as they are, numbers and booleans as JSON
//! text, objects and arrays as compact JSON.

use serde_json::Value;

use super::path::{Root, Scope, SourcePath};

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    Field { path: SourcePath, optional: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    pub text: Box<str>,
}

/// A placeholder that could not be rendered.
#[derive(Debug, PartialEq)]
pub struct RenderError {
    pub path: String,
    pub reason: String,
}

impl Template {
    /// Parses `text`; placeholders without a `$` root read from `bare`.
    pub fn parse(text: &str, bare: Root) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => {
                                return Err(format!("`{{` without a closing `}}` in template `{text}`"));
                            }
                        }
                    }
                    let (inner, optional) = match inner.trim().strip_suffix('?') {
                        Some(p) => (p.to_string(), true),
                        None => (inner.trim().to_string(), false),
                    };
                    if inner.is_empty() {
                        return Err(format!(
                            "empty placeholder `{{}}` in template `{text}` (write `{{{{` for a literal brace)"
                        ));
                    }
                    let path = SourcePath::parse_with_bare_root(&inner, bare)
                        .map_err(|e| format!("in placeholder `{{{inner}}}`: {e}"))?;
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field { path, optional });
                }
                '}' => {
                    return Err(format!("lone `}}` in template `{text}` (write `}}}}` for a literal brace)"));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self { parts, text: text.into() })
    }

    /// The paths the placeholders read.
    pub fn paths(&self) -> impl Iterator<Item = &SourcePath> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field { path, .. } => Some(path),
            Part::Lit(_) => None,
        })
    }

    /// True when the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    pub fn render(&self, scope: &Scope<'_>) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Field { path, optional } => match path.resolve(scope) {
                    Some(Value::Null) | None if *optional => {}
                    Some(Value::Null) | None => {
                        return Err(RenderError {
                            path: path.to_string(),
                            reason: "the template needs it but the message has no value there (write `{path?}` to allow that)".into(),
                        });
                    }
                    Some(Value::String(s)) => out.push_str(s),
                    Some(other) => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, doc: &Value) -> Result<String, RenderError> {
        Template::parse(t, Root::Current).unwrap().render(&Scope { current: doc, document: doc, vars: &Value::Null })
    }

    #[test]
    fn placeholders_are_filled() {
        let doc = json!({"OrderNumber": "00000105", "PoNumber": "HZ-PO-2025-088", "qty": 20, "ok": true});
        assert_eq!(
            render("CRM订单 {OrderNumber} / 客户PO {PoNumber}", &doc).unwrap(),
            "CRM订单 00000105 / 客户PO HZ-PO-2025-088"
        );
        assert_eq!(render("{qty} pcs, ok={ok}", &doc).unwrap(), "20 pcs, ok=true");
    }

    #[test]
    fn optional_placeholders_may_be_absent_and_required_ones_may_not() {
        let doc = json!({"a": "x", "n": null});
        assert_eq!(render("[{b?}][{n?}]{a}", &doc).unwrap(), "[][]x");
        let err = render("{b}", &doc).unwrap_err();
        assert_eq!(err.path, "b");
        assert!(render("{n}", &doc).is_err());
    }

    #[test]
    fn braces_can_be_escaped() {
        assert_eq!(render("{{literal}} {a}", &json!({"a": 1})).unwrap(), "{literal} 1");
    }

    #[test]
    fn malformed_templates_are_rejected() {
        assert!(Template::parse("{a", Root::Current).is_err());
        assert!(Template::parse("a}", Root::Current).is_err());
        assert!(Template::parse("{}", Root::Current).is_err());
        assert!(Template::parse("{$nope.x}", Root::Current).is_err());
    }

    #[test]
    fn bare_names_can_mean_path_parameters() {
        let t = Template::parse("/sobjects/Order/{order_id}?id={$meta.message_id}", Root::Params).unwrap();
        let vars = json!({"params": {"order_id": "801J"}, "meta": {"message_id": "m-1"}});
        let out = t.render(&Scope { current: &Value::Null, document: &Value::Null, vars: &vars }).unwrap();
        assert_eq!(out, "/sobjects/Order/801J?id=m-1");
        assert!(!t.is_literal());
        assert_eq!(t.paths().count(), 2);
    }
}
