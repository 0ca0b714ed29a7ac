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

    /// What the template renders to when it has no placeholder.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The text with every placeholder filled, values as they are.
    pub fn render(&self, scope: &Scope<'_>) -> Result<String, RenderError> {
        self.render_as(scope, false)
    }

    /// A destination's path and query, with every value percent-encoded so that it stays
    /// one value: `../admin?x=1#f` becomes `..%2Fadmin%3Fx%3D1%23f`, not another path, a
    /// query and a fragment. Everything but the unreserved characters (`A-Z a-z 0-9 - . _
    /// ~`) is encoded, UTF-8 byte by byte. Path parameters (`{name}`, `$params.name`) are
    /// the exception: they are still percent-encoded as they came in the URL, so they are
    /// kept as they are, a catch-all's `/` included; only what a URL path cannot hold is
    /// encoded (and, after the template's `?`, the `&`, `=` and `+` that would split a
    /// query parameter).
    pub fn render_uri(&self, scope: &Scope<'_>) -> Result<String, RenderError> {
        self.render_as(scope, true)
    }

    fn render_as(&self, scope: &Scope<'_>, uri: bool) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut in_query = false;
        for part in &self.parts {
            match part {
                Part::Lit(s) => {
                    out.push_str(s);
                    in_query |= s.contains('?');
                }
                Part::Field { path, optional } => {
                    let text = match path.resolve(scope) {
                        Some(Value::Null) | None if *optional => continue,
                        Some(Value::Null) | None => {
                            return Err(RenderError {
                                path: path.to_string(),
                                reason: "the template needs it but the message has no value there (write `{path?}` to allow that)".into(),
                            });
                        }
                        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
                        Some(other) => std::borrow::Cow::Owned(other.to_string()),
                    };
                    match (uri, path.root) {
                        (false, _) => out.push_str(&text),
                        (true, Root::Params) => keep_encoded(&mut out, &text, in_query),
                        (true, _) => out.extend(percent_encoding::utf8_percent_encode(&text, VALUE)),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a value in a URL keeps as it is: the unreserved characters of RFC 3986.
const VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A path parameter, percent-encoded as it came: its `%XX` escapes and the characters a
/// path segment may hold (`/` too) are kept; anything else, a lone `%` included, is
/// encoded. In a query, `&`, `=` and `+` are encoded too.
fn keep_encoded(out: &mut String, raw: &str, in_query: bool) {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
            out.push_str(&raw[i..i + 3]);
            i += 3;
            continue;
        }
        let path_char = c.is_ascii_alphanumeric() || b"-._~!$'()*,;:@/".contains(&c);
        if path_char || (!in_query && b"&=+".contains(&c)) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
        i += 1;
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
    fn values_in_a_uri_are_percent_encoded_and_path_parameters_kept() {
        let t = Template::parse("/k3cloud/{op}/x/{$headers.x-op}?q={$body.q}&p={op}", Root::Params).unwrap();
        let vars = json!({"params": {"op": "a/b%20c;v=1&w"}, "headers": {"x-op": "../admin?x=1#f"}});
        let body = json!({"q": "a&b=c d+é"});
        let scope = Scope { current: &body, document: &body, vars: &vars };
        assert_eq!(
            t.render_uri(&scope).unwrap(),
            "/k3cloud/a/b%20c;v=1&w/x/..%2Fadmin%3Fx%3D1%23f?q=a%26b%3Dc%20d%2B%C3%A9&p=a/b%20c;v%3D1%26w"
        );
        // What a URL path cannot hold is encoded even in a parameter: a lone `%`, a space.
        let vars = json!({"params": {"op": "50%-off x\"y"}});
        let t = Template::parse("/{op}", Root::Params).unwrap();
        let scope = Scope { current: &Value::Null, document: &Value::Null, vars: &vars };
        assert_eq!(t.render_uri(&scope).unwrap(), "/50%25-off%20x%22y");
        // Numbers and the unreserved characters go as they are; `render` never encodes.
        let t = Template::parse("/{$body.n}/{$body.s}", Root::Params).unwrap();
        let body = json!({"n": 12.5, "s": "A-z_0.~ /"});
        let scope = Scope { current: &body, document: &body, vars: &Value::Null };
        assert_eq!(t.render_uri(&scope).unwrap(), "/12.5/A-z_0.~%20%2F");
        assert_eq!(t.render(&scope).unwrap(), "/12.5/A-z_0.~ /");
    }

    #[test]
    fn bare_names_can_mean_path_parameters() {
        let t = Template::parse("/sobjects/Order/{order_id}?id={$meta.message_id}", Root::Params).unwrap();
        let vars = json!({"params": {"order_id": "801J"}, "meta": {"message_id": "m-1"}});
        let out = t.render(&Scope { current: &Value::Null, document: &Value::Null, vars: &vars }).unwrap();
        assert_eq!(out, "/sobjects/Order/801J?id=m-1");
        assert_eq!(t.literal(), None);
        assert_eq!(Template::parse("/orders?q={{x}}", Root::Params).unwrap().literal(), Some("/orders?q={x}"));
        assert_eq!(t.paths().count(), 2);
    }
}
