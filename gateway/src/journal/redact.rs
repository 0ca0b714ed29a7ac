//! Redaction before disk: sensitive values become stable tokens, `pii:` + the first 16
//! bytes of HMAC-SHA256(key, value) in hex. The same value gives the same token in every
//! record made with the same key (`QIAO_JOURNAL_KEY`), so a field copied verbatim lines up
//! between a recording and its replay, and diffs still work; the clear value never reaches
//! a file.

use std::collections::BTreeSet;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::redact::{Redactor, header_is_secret};

/// The environment variable that holds the token key.
pub const KEY_ENV: &str = "QIAO_JOURNAL_KEY";

pub use crate::redact::{PREFIX, is_token};

/// Makes tokens with one key.
#[derive(Clone)]
pub struct Tokens {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    pub fn new(key: &[u8]) -> Tokens {
        Tokens { mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length") }
    }

    /// With the key from `QIAO_JOURNAL_KEY`; `false` when it is unset and a random key was
    /// made for this process (its tokens match no other process's).
    pub fn from_env() -> (Tokens, bool) {
        match std::env::var(KEY_ENV) {
            Ok(k) if !k.is_empty() => (Tokens::new(k.as_bytes()), true),
            _ => (Tokens::new(&random_key()), false),
        }
    }

    pub fn token(&self, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{PREFIX}{}", hex::encode(&digest[..16]))
    }
}

/// 32 bytes nobody can guess: the random bits of a few UUIDv7s (from a CSPRNG), hashed
/// with the process's id and the time.
fn random_key() -> Vec<u8> {
    use sha2::Digest;
    let mut h = Sha256::new();
    for _ in 0..4 {
        h.update(uuid::Uuid::now_v7().as_bytes());
    }
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    h.finalize().to_vec()
}

/// The redaction of one message: the route's rules, the receivers' rules, and the clear
/// PII values found in the received body, which are replaced wherever they show up again
/// (mapped bodies, answers, headers, error details).
pub struct Scrub<'a> {
    tokens: &'a Tokens,
    /// Clear values, longest first, so that a value inside another is replaced after it.
    found: Vec<String>,
}

impl std::fmt::Debug for Scrub<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrub").field("found", &self.found.len()).finish()
    }
}

/// A PII value shorter than this (in characters) is replaced only where a whole value
/// equals it, not inside longer text: one letter would shred every string.
const MIN_INSIDE: usize = 2;

/// Escapes a key for a JSON Pointer (RFC 6901).
fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) { key.replace('~', "~0").replace('/', "~1").into() } else { key.into() }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(_) | Value::Null => None,
        _ => None,
    }
}

impl<'a> Scrub<'a> {
    pub fn new(tokens: &'a Tokens) -> Scrub<'a> {
        Scrub { tokens, found: Vec::new() }
    }

    pub fn token(&self, value: &str) -> String {
        self.tokens.token(value)
    }

    /// The clear PII values found so far.
    pub fn found(&self) -> &[String] {
        &self.found
    }

    /// Takes PII values found earlier in the same message.
    pub fn remember(&mut self, found: Vec<String>) {
        self.found.extend(found);
        self.sort();
    }

    fn sort(&mut self) {
        self.found.sort_by(|a, b| b.chars().count().cmp(&a.chars().count()).then_with(|| a.cmp(b)));
        self.found.dedup();
    }

    /// The received body with every value `rules` covers as a token; the clear values are
    /// remembered for what follows.
    pub fn input(&mut self, body: &Arc<Value>, rules: &Redactor) -> Arc<Value> {
        if rules.is_empty() {
            return body.clone();
        }
        let mut seen = BTreeSet::new();
        let out = self.covered(body, rules, &mut String::new(), &mut seen);
        self.found.extend(seen);
        self.sort();
        Arc::new(out)
    }

    /// Whether [`Scrub::derived`] would give back what it is given: no PII was found in
    /// the received body and `rules` cover nothing. Then a body is kept as its bytes.
    pub fn leaves_alone(&self, rules: Option<&Redactor>) -> bool {
        self.found.is_empty() && rules.is_none_or(Redactor::is_empty)
    }

    fn covered(&self, v: &Value, rules: &Redactor, at: &mut String, seen: &mut BTreeSet<String>) -> Value {
        if rules.covers(at) {
            return self.all(v, seen);
        }
        each_child(v, at, |child, at| self.covered(child, rules, at, seen)).unwrap_or_else(|| v.clone())
    }

    /// Every scalar inside `v` as a token.
    fn all(&self, v: &Value, seen: &mut BTreeSet<String>) -> Value {
        match v {
            Value::Object(m) => Value::Object(m.iter().map(|(k, c)| (k.clone(), self.all(c, seen))).collect()),
            Value::Array(a) => Value::Array(a.iter().map(|c| self.all(c, seen)).collect()),
            other => match scalar_text(other) {
                Some(t) => {
                    let token = self.tokens.token(&t);
                    if !t.is_empty() {
                        seen.insert(t);
                    }
                    Value::String(token)
                }
                None => other.clone(),
            },
        }
    }

    /// A body made from the received one (mapped, or a receiver's answer): what `rules`
    /// (the receiver's schema) covers as tokens, and every value found in the received
    /// body replaced by its token wherever it appears.
    pub fn derived(&self, v: &Value, rules: Option<&Redactor>) -> Value {
        let mut sink = BTreeSet::new();
        self.derived_at(v, rules.filter(|r| !r.is_empty()), &mut String::new(), &mut sink)
    }

    fn derived_at(&self, v: &Value, rules: Option<&Redactor>, at: &mut String, sink: &mut BTreeSet<String>) -> Value {
        if let Some(r) = rules
            && r.covers(at)
        {
            return self.all(v, sink);
        }
        if let Some(out) = each_child(v, at, |child, at| self.derived_at(child, rules, at, sink)) {
            return out;
        }
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Number(n) if !self.found.is_empty() => {
                let t = n.to_string();
                if self.found.contains(&t) { Value::String(self.tokens.token(&t)) } else { v.clone() }
            }
            other => other.clone(),
        }
    }

    /// Free text (a header, an error detail, a text answer) with every value found in the
    /// received body replaced by its token.
    pub fn text(&self, s: &str) -> String {
        if self.found.is_empty() {
            return s.to_string();
        }
        if self.found.iter().any(|f| f == s) {
            return self.tokens.token(s);
        }
        let mut out = std::borrow::Cow::Borrowed(s);
        for f in &self.found {
            if f.chars().count() >= MIN_INSIDE && out.contains(f.as_str()) {
                out = out.replace(f.as_str(), &self.tokens.token(f)).into();
            }
        }
        out.into_owned()
    }

    /// A header as kept: a secret value as its token, others with PII replaced.
    pub fn header(&self, name: &str, value: &str) -> String {
        if header_is_secret(name) { self.tokens.token(value) } else { self.text(value) }
    }
}

/// An object's or array's children, each through `f` with `at` (a JSON Pointer) extended to
/// it; `None` for a scalar.
fn each_child(v: &Value, at: &mut String, mut f: impl FnMut(&Value, &mut String) -> Value) -> Option<Value> {
    let len = at.len();
    let mut step = |segment: &str, child: &Value, at: &mut String| {
        at.push('/');
        at.push_str(segment);
        let out = f(child, at);
        at.truncate(len);
        out
    };
    match v {
        Value::Object(m) => Some(Value::Object(m.iter().map(|(k, c)| (k.clone(), step(&escape(k), c, at))).collect())),
        Value::Array(a) => Some(Value::Array(a.iter().enumerate().map(|(i, c)| step(&i.to_string(), c, at)).collect())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(schema: Value, pointers: &[&str]) -> Redactor {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(&f, schema.to_string()).unwrap();
        let s = crate::schema::Schema::load(&f, dir.path(), true).unwrap();
        Redactor::new(Some(&s), &pointers.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn tokens_are_told_from_other_strings() {
        let t = Tokens::new(b"k").token("13800138000");
        assert!(is_token(&t), "{t}");
        assert!(!is_token("pii:"));
        assert!(!is_token(&t[..t.len() - 1]));
        assert!(!is_token(&t.to_uppercase()));
        assert!(!is_token("13800138000"));
    }

    #[test]
    fn tokens_are_stable_per_key_and_differ_across_keys() {
        let a = Tokens::new(b"k1");
        assert_eq!(a.token("张伟"), Tokens::new(b"k1").token("张伟"));
        assert_ne!(a.token("张伟"), Tokens::new(b"k2").token("张伟"));
        assert_ne!(a.token("张伟"), a.token("李娜"));
        assert!(a.token("x").starts_with("pii:") && a.token("x").len() == 4 + 32);
    }

    #[test]
    fn pii_is_tokenised_in_the_input_and_wherever_it_is_copied() {
        let t = Tokens::new(b"k");
        let r = rules(
            json!({"properties": {"name": {"x-pii": true}, "phone": {"x-pii": true}, "city": {}}}),
            &["/contact"],
        );
        let mut s = Scrub::new(&t);
        let input = json!({"name": "李娜", "phone": 13800138000u64, "city": "苏州", "contact": {"a": "x@y.cn"}});
        let kept = s.input(&Arc::new(input.clone()), &r);
        let text = kept.to_string();
        assert!(!text.contains("李娜") && !text.contains("13800138000") && !text.contains("x@y.cn"), "{text}");
        assert_eq!(kept["name"], json!(t.token("李娜")));
        assert_eq!(kept["city"], json!("苏州"));
        let out = s.derived(&json!({"n": "李娜", "note": "客户 李娜 / 13800138000", "p": 13800138000u64}), None);
        assert_eq!(out["n"], json!(t.token("李娜")));
        assert_eq!(out["p"], json!(t.token("13800138000")));
        assert!(!out.to_string().contains("李娜") && !out.to_string().contains("13800138000"), "{out}");
        // The receiver's own PII fields, even with values not seen in the input.
        let recv = rules(json!({"properties": {"secret": {"x-pii": true}}}), &[]);
        assert_eq!(s.derived(&json!({"secret": "s3"}), Some(&recv))["secret"], json!(t.token("s3")));
        assert_eq!(s.header("Authorization", "Bearer abc"), t.token("Bearer abc"));
        assert_eq!(s.header("x-note", "for 李娜"), format!("for {}", t.token("李娜")));
    }
}
