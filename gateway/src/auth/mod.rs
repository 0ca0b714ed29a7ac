//! Ingress authentication: who a caller of an HTTP route is, and whether it may call it.
//!
//! The compiled config holds plain data ([`Settings`]: the clients, digests of their API keys,
//! the JWT settings and the parsed JWKS); the runtime builds a [`Verifier`] from it (decoding
//! keys, validation rules) on every load and reload. A route's [`Mode`] says whether it asks
//! at all: with `none` (the default) no header is looked at.
//!
//! Credentials: `X-Api-Key: <key>` or `Authorization: ApiKey <key>` for API keys,
//! `Authorization: Bearer <jwt>` for tokens. AMQP sources are not authenticated here: the
//! broker's own users and permissions decide who may publish.

mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

pub use jsonwebtoken::Algorithm;
pub use jsonwebtoken::jwk::JwkSet;
pub use verify::{Denied, Verifier};

/// Whether a route asks its callers who they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Nobody is asked; credentials sent are ignored.
    #[default]
    None,
    /// Anonymous callers pass; credentials sent must be valid and in scope.
    Optional,
    /// Only a known client in whose scope the route is.
    Required,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "none" => Some(Mode::None),
            "optional" => Some(Mode::Optional),
            "required" => Some(Mode::Required),
            _ => None,
        }
    }
}

/// The compiled `auth:` and `clients:` sections.
#[derive(Debug, Default)]
pub struct Settings {
    pub jwt: Option<JwtSettings>,
    pub clients: Vec<Client>,
}

/// How bearer tokens are checked.
#[derive(Debug)]
pub struct JwtSettings {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway_s: u64,
    pub algorithms: Vec<Algorithm>,
    /// Where the JWKS was read from (for messages), and what it held.
    pub jwks_file: Option<PathBuf>,
    pub jwks: Option<JwkSet>,
    pub hs256_secret: Option<Secret>,
}

/// A secret that never shows in `Debug` output (the config is printed by `--print-config`
/// and in test failures).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One client: its name, how it proves it, what it may call.
#[derive(Debug)]
pub struct Client {
    pub name: Arc<str>,
    /// SHA-256 of each API key: the keys themselves are not kept, and comparing digests in
    /// constant time says nothing of a key through the answer's timing.
    pub key_digests: Vec<KeyDigest>,
    /// The `sub` of its bearer tokens.
    pub subject: Option<String>,
    /// The routes it may call, as resolved from its patterns when the config was compiled.
    pub routes: HashSet<Arc<str>>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest(pub [u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:***")
    }
}

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        use sha2::Digest;
        KeyDigest(sha2::Sha256::digest(key.as_bytes()).into())
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (route names
/// are ASCII letters, digits, `-`, `_` and `.`, so nothing else needs a meaning).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Parses an algorithm name the config may use.
pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s {
        "HS256" => Some(Algorithm::HS256),
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("crm-*", "crm-order-to-erp"));
        assert!(glob_matches("*-to-erp", "crm-order-to-erp"));
        assert!(glob_matches("crm-*-erp", "crm-order-to-erp"));
        assert!(glob_matches("*", "x"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c-b"));
        assert!(!glob_matches("crm-*", "erp-crm-x"));
        assert!(!glob_matches("crm", "crm-order"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = format!("{:?} {:?}", Secret("hunter2".into()), KeyDigest::of("hunter2"));
        assert!(!s.contains("hunter2"), "{s}");
    }
}
