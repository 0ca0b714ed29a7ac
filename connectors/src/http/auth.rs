//! Outbound authentication: what Qiao presents to the receiving system.

use base64::Engine;
use http::{HeaderName, HeaderValue};

/// Credentials sent with every request to a system. The secrets come from `${ENV}`
/// references in the config; they are never logged (`Debug` redacts them).
#[derive(Clone, PartialEq)]
pub enum HttpAuth {
    /// `Authorization: Basic base64(user:password)`.
    Basic { username: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// A static key in a header of the system's choosing, e.g. `X-Api-Key`.
    Header { name: HeaderName, value: String },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}:***)"),
            Self::Bearer { .. } => f.write_str("Bearer(***)"),
            Self::Header { name, .. } => write!(f, "Header({name}: ***)"),
        }
    }
}

impl HttpAuth {
    /// The header to add to each request, computed once when the sink is built.
    pub fn header(&self) -> Result<(HeaderName, HeaderValue), String> {
        let (name, value) = match self {
            Self::Basic { username, password } => {
                let raw = format!("{username}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                (http::header::AUTHORIZATION, format!("Basic {encoded}"))
            }
            Self::Bearer { token } => (http::header::AUTHORIZATION, format!("Bearer {token}")),
            Self::Header { name, value } => (name.clone(), value.clone()),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the credential for header {name} is not a valid header value"))?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64_of_user_and_password() {
        let auth = HttpAuth::Basic { username: "kingdee".into(), password: "s3cret".into() };
        let (name, value) = auth.header().unwrap();
        assert_eq!(name, http::header::AUTHORIZATION);
        assert_eq!(value, "Basic a2luZ2RlZTpzM2NyZXQ=");
        assert!(value.is_sensitive());
    }

    #[test]
    fn bearer_and_header_keys() {
        let (_, v) = HttpAuth::Bearer { token: "t0k".into() }.header().unwrap();
        assert_eq!(v, "Bearer t0k");
        let auth = HttpAuth::Header { name: HeaderName::from_static("x-api-key"), value: "k".into() };
        let (n, v) = auth.header().unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-api-key", "k"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = format!("{:?}", HttpAuth::Basic { username: "u".into(), password: "pw-123".into() });
        assert!(!s.contains("pw-123"));
        let s = format!("{:?}", HttpAuth::Bearer { token: "tok-456".into() });
        assert!(!s.contains("tok-456"));
    }

    #[test]
    fn invalid_header_values_are_refused() {
        assert!(HttpAuth::Bearer { token: "bad\ntoken".into() }.header().is_err());
    }
}
