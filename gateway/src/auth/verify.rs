//! The live side of authentication: decoding keys and validation rules built from the
//! compiled [`Settings`], and the check of one request's credentials.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use subtle::ConstantTimeEq;

use super::{KeyDigest, Mode, Settings};

/// Why a request is refused: 401 (no valid credentials) or 403 (a known client, out of
/// scope). The detail says which check failed, never the credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// `true`: 403; `false`: 401.
    pub forbidden: bool,
    /// For the `WWW-Authenticate` challenge of a 401: `error="invalid_token"` when credentials
    /// were sent but do not hold (RFC 6750 section 3.1); none when nothing was sent.
    pub invalid_token: bool,
    pub detail: String,
}

impl Denied {
    fn unauthenticated(detail: impl Into<String>) -> Denied {
        Denied { forbidden: false, invalid_token: true, detail: detail.into() }
    }

    /// The `WWW-Authenticate` value of a 401. The description is one of Qiao's own
    /// sentences (no quote or backslash), never a value the client sent.
    pub fn challenge(&self) -> String {
        if self.invalid_token {
            format!("Bearer realm=\"qiao\", error=\"invalid_token\", error_description=\"{}\"", self.detail)
        } else {
            "Bearer realm=\"qiao\", ApiKey realm=\"qiao\"".to_string()
        }
    }
}

struct Jwt {
    /// Keys of the JWKS by `kid`, with the algorithm each is for.
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    /// Keys of the JWKS without a `kid`.
    unnamed: Vec<(DecodingKey, Algorithm)>,
    hs256: Option<DecodingKey>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway_s: u64,
}

/// Checks credentials against the clients of one config.
pub struct Verifier {
    settings: Arc<Settings>,
    /// Client index by token subject.
    subjects: HashMap<String, usize>,
    jwt: Option<Jwt>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("clients", &self.settings.clients.len()).finish()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

/// The algorithm a JWK is for: its `alg`, or what its key type implies.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    match jwk.common.key_algorithm {
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::HS256) => Some(Algorithm::HS256),
        Some(_) => None,
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
            _ => None,
        },
    }
}

impl Verifier {
    /// Builds the keys; a JWKS key that cannot be used is an error (the reload is refused).
    pub fn new(settings: Arc<Settings>) -> Result<Verifier, String> {
        let subjects = settings
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.subject.as_ref().map(|s| (s.clone(), i)))
            .collect();
        let jwt = match &settings.jwt {
            None => None,
            Some(j) => {
                let (mut by_kid, mut unnamed) = (HashMap::new(), Vec::new());
                for (n, jwk) in j.jwks.iter().flat_map(|s| s.keys.iter()).enumerate() {
                    let what = || {
                        let file = j.jwks_file.as_ref().map_or("-".into(), |p| p.display().to_string());
                        format!("{file}: key {n} ({})", jwk.common.key_id.as_deref().unwrap_or("no kid"))
                    };
                    let alg = jwk_algorithm(jwk)
                        .ok_or_else(|| format!("{}: only RS256, ES256 (P-256) and HS256 keys are supported", what()))?;
                    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: {e}", what()))?;
                    match &jwk.common.key_id {
                        Some(kid) => {
                            by_kid.insert(kid.clone(), (key, alg));
                        }
                        None => unnamed.push((key, alg)),
                    }
                }
                Some(Jwt {
                    by_kid,
                    unnamed,
                    hs256: j.hs256_secret.as_ref().map(|s| DecodingKey::from_secret(s.0.as_bytes())),
                    algorithms: j.algorithms.clone(),
                    issuer: j.issuer.clone(),
                    audience: j.audience.clone(),
                    leeway_s: j.leeway_s,
                })
            }
        };
        Ok(Verifier { settings, subjects, jwt })
    }

    /// Who is calling `route` (a client's name; `None`: anonymous, where `mode` allows it),
    /// or why not.
    pub fn admit(&self, headers: &HeaderMap, route: &str, mode: Mode) -> Result<Option<Arc<str>>, Denied> {
        if mode == Mode::None {
            return Ok(None);
        }
        let index = match credential(headers)? {
            None if mode == Mode::Optional => return Ok(None),
            None => {
                return Err(Denied {
                    forbidden: false,
                    invalid_token: false,
                    detail: "this route needs credentials: an API key (X-Api-Key) or a bearer token".into(),
                });
            }
            Some(Credential::ApiKey(key)) => self.client_of_key(key)?,
            Some(Credential::Bearer(token)) => self.client_of_token(token)?,
        };
        let client = &self.settings.clients[index];
        if client.routes.contains(route) {
            Ok(Some(client.name.clone()))
        } else {
            Err(Denied {
                forbidden: true,
                invalid_token: false,
                detail: format!("client `{}` may not call route `{route}`", client.name),
            })
        }
    }

    fn client_of_key(&self, key: &str) -> Result<usize, Denied> {
        let given = KeyDigest::of(key);
        // Every digest is compared, whatever matched first, in constant time each.
        let mut found = None;
        for (i, client) in self.settings.clients.iter().enumerate() {
            for d in &client.key_digests {
                if bool::from(d.0.ct_eq(&given.0)) {
                    found = Some(i);
                }
            }
        }
        found.ok_or_else(|| Denied::unauthenticated("the API key is not known"))
    }

    fn client_of_token(&self, token: &str) -> Result<usize, Denied> {
        let Some(jwt) = &self.jwt else {
            return Err(Denied::unauthenticated("this gateway takes no bearer tokens (no `auth:` section)"));
        };
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Denied::unauthenticated("the bearer token is not a JWT"))?;
        if !jwt.algorithms.contains(&header.alg) {
            return Err(Denied::unauthenticated(format!("the token's algorithm {:?} is not accepted", header.alg)));
        }
        let key = match &header.kid {
            Some(kid) => match jwt.by_kid.get(kid) {
                Some((key, alg)) if *alg == header.alg => key,
                Some(_) => return Err(Denied::unauthenticated("the token's key is for another algorithm")),
                None => return Err(Denied::unauthenticated("the token's key id is not in the key set")),
            },
            None if header.alg == Algorithm::HS256 && jwt.hs256.is_some() => jwt.hs256.as_ref().expect("checked"),
            None => match jwt.unnamed.iter().find(|(_, alg)| *alg == header.alg) {
                Some((key, _)) => key,
                None => return Err(Denied::unauthenticated("no key checks tokens of this algorithm without a key id")),
            },
        };
        let mut v = Validation::new(header.alg);
        v.leeway = jwt.leeway_s;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &jwt.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        if jwt.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&jwt.audience);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            Denied::unauthenticated(match e.kind() {
                K::ExpiredSignature => "the token expired".to_string(),
                K::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                K::InvalidIssuer => "the token's issuer is not accepted".to_string(),
                K::InvalidAudience => "the token's audience is not accepted".to_string(),
                K::InvalidSignature => "the token's signature does not verify".to_string(),
                K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                _ => "the token is malformed".to_string(),
            })
        })?;
        self.subjects.get(&data.claims.sub).copied().ok_or_else(|| Denied {
            forbidden: true,
            invalid_token: false,
            detail: "the token is valid but its subject is no client of this gateway".into(),
        })
    }
}

enum Credential<'a> {
    ApiKey(&'a str),
    Bearer(&'a str),
}

/// The credential a request carries. Several, or one that cannot be read, is a 401: a
/// request must not be judged by whichever of two headers is looked at first.
fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, Denied> {
    let mut found = None;
    let mut count = 0;
    for v in headers.get_all("x-api-key") {
        count += 1;
        let key = v.to_str().map_err(|_| Denied::unauthenticated("the API key is not readable text"))?;
        found = Some(Credential::ApiKey(key.trim()));
    }
    for v in headers.get_all(http::header::AUTHORIZATION) {
        count += 1;
        let v = v.to_str().map_err(|_| Denied::unauthenticated("the Authorization header is not readable text"))?;
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
        found = Some(if scheme.eq_ignore_ascii_case("bearer") {
            Credential::Bearer(rest.trim())
        } else if scheme.eq_ignore_ascii_case("apikey") {
            Credential::ApiKey(rest.trim())
        } else {
            return Err(Denied::unauthenticated("the Authorization scheme is neither Bearer nor ApiKey"));
        });
    }
    if count > 1 {
        return Err(Denied::unauthenticated("the request carries more than one credential"));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Client, JwtSettings, Secret};

    fn verifier() -> Verifier {
        let client = |name: &str, key: &str, sub: &str, routes: &[&str]| Client {
            name: name.into(),
            key_digests: vec![KeyDigest::of(key)],
            subject: Some(sub.into()),
            routes: routes.iter().map(|r| Arc::from(*r)).collect(),
        };
        let settings = Settings {
            jwt: Some(JwtSettings {
                issuer: Some("https://id.test".into()),
                audience: vec!["qiao".into()],
                leeway_s: 30,
                algorithms: vec![Algorithm::HS256],
                jwks_file: None,
                jwks: None,
                hs256_secret: Some(Secret("s3cret-s3cret-s3cret-s3cret-s3cret".into())),
            }),
            clients: vec![
                client("crm", "k-crm", "crm-svc", &["orders"]),
                client("oa", "k-oa", "oa-svc", &["approvals"]),
            ],
        };
        Verifier::new(Arc::new(settings)).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn token(claims: serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(b"s3cret-s3cret-s3cret-s3cret-s3cret");
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn keys_name_their_client_and_scope_decides_403() {
        let v = verifier();
        let ok = v.admit(&headers(&[("x-api-key", "k-crm")]), "orders", Mode::Required);
        assert_eq!(ok.unwrap().as_deref(), Some("crm"));
        let ok = v.admit(&headers(&[("authorization", "ApiKey k-oa")]), "approvals", Mode::Required);
        assert_eq!(ok.unwrap().as_deref(), Some("oa"));
        let e = v.admit(&headers(&[("x-api-key", "k-oa")]), "orders", Mode::Required).unwrap_err();
        assert!(e.forbidden && e.detail.contains("`oa` may not call route `orders`"), "{e:?}");
        let e = v.admit(&headers(&[("x-api-key", "k-nope")]), "orders", Mode::Required).unwrap_err();
        assert!(!e.forbidden && e.invalid_token && !e.detail.contains("k-nope"), "{e:?}");
    }

    #[test]
    fn missing_credentials_pass_only_where_optional_and_none_looks_at_nothing() {
        let v = verifier();
        let e = v.admit(&HeaderMap::new(), "orders", Mode::Required).unwrap_err();
        assert!(!e.forbidden && !e.invalid_token);
        assert!(e.challenge().starts_with("Bearer realm=\"qiao\""));
        assert_eq!(v.admit(&HeaderMap::new(), "orders", Mode::Optional), Ok(None));
        let bad = headers(&[("x-api-key", "k-nope")]);
        assert!(v.admit(&bad, "orders", Mode::Optional).is_err(), "credentials sent must hold");
        assert_eq!(v.admit(&bad, "orders", Mode::None), Ok(None));
        let two = headers(&[("x-api-key", "k-crm"), ("authorization", "ApiKey k-crm")]);
        assert!(v.admit(&two, "orders", Mode::Required).is_err());
    }

    #[test]
    fn tokens_are_checked_for_expiry_issuer_audience_and_subject() {
        let v = verifier();
        let claims = |exp: u64, iss: &str, aud: &str, sub: &str| serde_json::json!({"exp": exp, "iss": iss, "aud": aud, "sub": sub});
        let bearer = |t: String| headers(&[("authorization", Box::leak(format!("Bearer {t}").into_boxed_str()))]);
        let t = token(claims(now() + 60, "https://id.test", "qiao", "crm-svc"));
        assert_eq!(v.admit(&bearer(t), "orders", Mode::Required).unwrap().as_deref(), Some("crm"));
        let t = token(claims(now() - 10, "https://id.test", "qiao", "crm-svc"));
        assert!(v.admit(&bearer(t), "orders", Mode::Required).is_ok(), "within the leeway");
        let t = token(claims(now() - 100, "https://id.test", "qiao", "crm-svc"));
        assert_eq!(v.admit(&bearer(t), "orders", Mode::Required).unwrap_err().detail, "the token expired");
        let t = token(claims(now() + 60, "https://other", "qiao", "crm-svc"));
        assert!(v.admit(&bearer(t), "orders", Mode::Required).unwrap_err().detail.contains("issuer"));
        let t = token(claims(now() + 60, "https://id.test", "other", "crm-svc"));
        assert!(v.admit(&bearer(t), "orders", Mode::Required).unwrap_err().detail.contains("audience"));
        let t = token(claims(now() + 60, "https://id.test", "qiao", "stranger"));
        assert!(v.admit(&bearer(t), "orders", Mode::Required).unwrap_err().forbidden);
        let e = v.admit(&bearer("not.a.jwt".into()), "orders", Mode::Required).unwrap_err();
        assert!(!e.forbidden && e.challenge().contains("error=\"invalid_token\""), "{e:?}");
    }
}
