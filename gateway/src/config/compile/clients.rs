//! The `auth:` and `clients:` sections → [`crate::auth::Settings`]: secrets read from the
//! environment and from files, API keys kept only as digests, the JWKS file parsed, each
//! client's route patterns resolved against the routes of this config.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::raw::{RawFile, RawIngressAuth};
use super::{Ctx, Place, check_name};
use crate::auth::{Client, JwkSet, JwtSettings, KeyDigest, Secret, Settings, glob_matches, parse_algorithm};
use crate::config::model::Route;

pub(super) fn compile_auth(cx: &mut Ctx<'_>, files: &[(PathBuf, RawFile)], routes: &[Arc<Route>]) -> Settings {
    let mut settings = Settings::default();
    let mut seen: Option<Place> = None;
    for (file, raw) in files {
        let Some(auth) = &raw.auth else { continue };
        let place = Place::at(file, &auth.referenced);
        if let Some(first) = &seen {
            cx.error(
                place,
                "the `auth` section appears in more than one file",
                Some(format!("it is already in {first}")),
            );
            continue;
        }
        seen = Some(place.clone());
        settings.jwt = compile_jwt(cx, file, &place, &auth.value);
    }

    let mut subjects: HashSet<String> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    for (file, raw) in files {
        for (name, c) in &raw.clients {
            let place = Place::at(file, &name.referenced);
            if !names.insert(name.value.clone()) {
                cx.error(place.clone(), format!("client `{}` is defined twice", name.value), None);
                continue;
            }
            check_name(cx, &place, "client", &name.value);
            let mut key_digests = Vec::new();
            for k in c.api_key.iter().chain(&c.api_keys) {
                if let Some(key) = cx.env_value(file, k) {
                    push_key(cx, &place, &name.value, &key, &mut key_digests);
                }
            }
            if let Some(f) = &c.api_key_file
                && let Some(path) = cx.env_value(file, f)
            {
                let path = cx.dir.join(path);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                            push_key(cx, &place, &name.value, line, &mut key_digests);
                        }
                    }
                    Err(e) => cx.error(
                        Place::at(file, &f.referenced),
                        format!("client `{}`: cannot read `api_key_file` {}: {e}", name.value, path.display()),
                        None,
                    ),
                }
            }
            let subject = c.jwt.as_ref().map(|j| j.subject.value.clone());
            if let Some(s) = &subject {
                if settings.jwt.is_none() {
                    cx.error(
                        place.clone(),
                        format!(
                            "client `{}` names a token subject, but no `auth:` section says how tokens are checked",
                            name.value
                        ),
                        Some(
                            "add `auth: { jwks_file: ... }` or `auth: { hs256_secret: ${...} }`; see docs/security.md"
                                .into(),
                        ),
                    );
                }
                if !subjects.insert(s.clone()) {
                    cx.error(place.clone(), format!("token subject `{s}` belongs to more than one client"), None);
                }
            }
            if key_digests.is_empty() && subject.is_none() {
                cx.error(
                    place.clone(),
                    format!("client `{}` has no credentials", name.value),
                    Some("give it `api_key`, `api_keys`, `api_key_file` or `jwt: { subject: ... }`".into()),
                );
            }
            let mut allowed = HashSet::new();
            for pattern in &c.routes {
                let matched: Vec<Arc<str>> =
                    routes.iter().filter(|r| glob_matches(&pattern.value, &r.name)).map(|r| r.name.clone()).collect();
                if matched.is_empty() {
                    cx.warning(
                        Place::at(file, &pattern.referenced),
                        format!("client `{}`: `{}` matches no route", name.value, pattern.value),
                        Some(crate::config::suggest(&pattern.value, routes.iter().map(|r| &*r.name))),
                    );
                }
                allowed.extend(matched);
            }
            settings.clients.push(Client {
                name: Arc::from(name.value.as_str()),
                key_digests,
                subject,
                routes: allowed,
            });
        }
    }
    settings
}

fn push_key(cx: &mut Ctx<'_>, place: &Place, client: &str, key: &str, out: &mut Vec<KeyDigest>) {
    // A short key can be guessed; an empty one is an unset variable with an empty default.
    if key.len() < 16 {
        cx.error(
            place.clone(),
            format!("client `{client}`: an API key is shorter than 16 characters"),
            Some("use a random key, e.g. `openssl rand -hex 32`".into()),
        );
        return;
    }
    out.push(KeyDigest::of(key));
}

fn compile_jwt(cx: &mut Ctx<'_>, file: &Path, place: &Place, raw: &RawIngressAuth) -> Option<JwtSettings> {
    let issuer = raw.issuer.as_ref().map(|i| i.value.clone());
    let audience = raw.audience.iter().flatten().map(|a| a.value.clone()).collect();
    let hs256_secret = raw.hs256_secret.as_ref().and_then(|s| cx.env_value(file, s)).map(Secret);
    if hs256_secret.as_ref().is_some_and(|s| s.0.len() < 32) {
        cx.error(
            place.clone(),
            "`auth.hs256_secret` is shorter than 32 bytes",
            Some("RFC 7518 section 3.2 asks for at least 256 bits".into()),
        );
    }
    let mut jwks_file = None;
    let mut jwks = None;
    if let Some(f) = &raw.jwks_file
        && let Some(path) = cx.env_value(file, f)
    {
        let path = cx.dir.join(path);
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<JwkSet>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(set) => jwks = Some(set),
            Err(e) => {
                cx.error(Place::at(file, &f.referenced), format!("`auth.jwks_file` {}: {e}", path.display()), None)
            }
        }
        jwks_file = Some(path);
    }
    let algorithms = match &raw.algorithms {
        Some(list) => {
            let mut out = Vec::new();
            for a in list {
                match parse_algorithm(&a.value) {
                    Some(alg) => out.push(alg),
                    None => cx.error(
                        Place::at(file, &a.referenced),
                        format!("unknown token algorithm `{}`", a.value),
                        Some("Qiao checks HS256, RS256 and ES256".into()),
                    ),
                }
            }
            out
        }
        None => {
            use crate::auth::Algorithm;
            let mut out = Vec::new();
            if hs256_secret.is_some() {
                out.push(Algorithm::HS256);
            }
            if jwks.is_some() {
                out.extend([Algorithm::RS256, Algorithm::ES256]);
            }
            out
        }
    };
    if raw.jwks_file.is_none() && raw.hs256_secret.is_none() {
        cx.error(
            place.clone(),
            "the `auth` section has no keys",
            Some("set `jwks_file`, `hs256_secret` or both".into()),
        );
    }
    Some(JwtSettings {
        issuer,
        audience,
        leeway_s: raw.leeway_s.unwrap_or(30),
        algorithms,
        jwks_file,
        jwks,
        hs256_secret,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{OfflineEnv, load};

    fn errors(files: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("systems.yaml"),
            "systems:\n  erp: { kind: erp, http: { base_url: http://127.0.0.1:9 } }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("routes.yaml"),
            "routes:\n  orders:\n    from: { http: { path: /orders } }\n    auth: required\n    to: { system: erp }\n",
        )
        .unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        match load(dir.path(), &OfflineEnv) {
            Ok(c) => format!("OK {:?}", c.auth),
            Err(d) => d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        }
    }

    #[test]
    fn clients_resolve_their_scopes_and_keep_only_digests() {
        let out = errors(&[(
            "clients.yaml",
            "clients:\n  crm:\n    api_key: a-key-of-sixteen-chars\n    routes: [\"ord*\", missing]\n",
        )]);
        assert!(out.starts_with("OK"), "{out}");
        assert!(out.contains("\"orders\"") && !out.contains("a-key-of-sixteen-chars"), "{out}");
    }

    #[test]
    fn broken_clients_and_auth_sections_are_errors_with_their_place() {
        let out = errors(&[(
            "clients.yaml",
            "auth:\n  algorithms: [HS512]\nclients:\n  a:\n    api_key: short\n    routes: [orders]\n  \
             b:\n    routes: [orders]\n  c:\n    jwt: { subject: s }\n    api_key_file: nowhere.keys\n    routes: [orders]\n",
        )]);
        for expected in [
            "unknown token algorithm `HS512`",
            "the `auth` section has no keys",
            "client `a`: an API key is shorter than 16 characters",
            "client `b` has no credentials",
            "cannot read `api_key_file`",
        ] {
            assert!(out.contains(expected), "{expected:?} in:\n{out}");
        }
        assert!(out.contains("clients.yaml:"), "{out}");
        let out = errors(&[(
            "amqp.yaml",
            "systems:\n  mes: { kind: mes, amqp: { url: \"amqp://x\", exchange: e } }\nroutes:\n  intake:\n    \
             from: { amqp: { system: mes, queue: q } }\n    auth: optional\n    to: { system: erp }\n",
        )]);
        assert!(out.contains("`auth` is for HTTP routes"), "{out}");
        let out = errors(&[(
            "x.yaml",
            "routes:\n  other:\n    from: { http: { path: /o } }\n    auth: maybe\n    to: { system: erp }\n",
        )]);
        assert!(out.contains("`auth: maybe`"), "{out}");
    }
}
