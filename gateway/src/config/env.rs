//! `${NAME}` and `${NAME:-default}` references in config values.
//!
//! Interpolation runs on the parsed string values of the fields that accept it (listen
//! addresses, URLs, credentials, headers), never on the raw file text: a secret that
//! contains `: ` or `#` cannot break the YAML, and the place of an unset variable is known.

/// Where variables come from: the process environment, or an overlay (the demo points the
/// shipped routes at its stub systems this way without touching the real environment).
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;

    /// A value for a variable that is unset and has no default; `None` makes it an error.
    fn missing(&self, _name: &str) -> Option<String> {
        None
    }
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Variables set here win over the process environment.
#[derive(Clone, Debug, Default)]
pub struct Overlay(pub Vec<(String, String)>);

impl EnvSource for Overlay {
    fn var(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| std::env::var(name).ok())
    }
}

/// For offline tools (`qiao test`, `qiao map`): variables that are not set get a
/// placeholder instead of failing the load, since nothing is sent anywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfflineEnv;

impl EnvSource for OfflineEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn missing(&self, name: &str) -> Option<String> {
        let host = format!("{}.unset.invalid", name.to_ascii_lowercase().replace('_', "-"));
        Some(if name.contains("AMQP") { format!("amqp://{host}") } else { format!("http://{host}") })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct EnvError {
    /// Byte offset of the `${` in the value.
    pub offset: usize,
    pub message: String,
    pub hint: &'static str,
}

/// Replaces every `${NAME}` / `${NAME:-default}` in `value`. `$${` writes a literal `${`.
/// A variable that is unset (or empty) takes its default; with no default it is an error.
pub fn interpolate(value: &str, env: &dyn EnvSource) -> Result<String, EnvError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut consumed = 0;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            consumed += pos + 3;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            consumed += pos + 1;
            continue;
        }
        let offset = consumed + pos;
        let Some(end) = after.find('}') else {
            return Err(EnvError {
                offset,
                message: "`${` is not closed by `}`".into(),
                hint: "write `${NAME}` or `${NAME:-default}`; `$${` is a literal `${`",
            });
        };
        let inner = &after[2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(EnvError {
                offset,
                message: format!("`${{{inner}}}` is not a valid variable reference (letters, digits and _ only)"),
                hint: "write `${NAME}` or `${NAME:-default}`, e.g. `${ERP_URL:-http://127.0.0.1:9101}`",
            });
        }
        match (env.var(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) if env.missing(name).is_some() => out.push_str(&env.missing(name).unwrap_or_default()),
            (None, None) => {
                return Err(EnvError {
                    offset,
                    message: format!("environment variable {name} is not set and has no default"),
                    hint: "set the variable, or give a default: `${NAME:-value}`",
                });
            }
        }
        rest = &after[end + 1..];
        consumed += pos + end + 1;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Overlay {
        Overlay(vec![("ERP_URL".into(), "http://erp:8000".into()), ("EMPTY".into(), String::new())])
    }

    #[test]
    fn set_variables_are_replaced() {
        assert_eq!(interpolate("${ERP_URL}/k3cloud", &env()).unwrap(), "http://erp:8000/k3cloud");
        assert_eq!(interpolate("${ERP_URL:-http://x}", &env()).unwrap(), "http://erp:8000");
    }

    #[test]
    fn unset_or_empty_variables_take_the_default() {
        assert_eq!(
            interpolate("${QIAO_TEST_UNSET_1:-http://127.0.0.1:9101}", &env()).unwrap(),
            "http://127.0.0.1:9101"
        );
        assert_eq!(interpolate("${EMPTY:-d}", &env()).unwrap(), "d");
        assert_eq!(interpolate("${QIAO_TEST_UNSET_1:-}", &env()).unwrap(), "");
    }

    #[test]
    fn unset_without_default_is_an_error_with_its_offset() {
        let err = interpolate("Bearer ${QIAO_TEST_UNSET_TOKEN}", &env()).unwrap_err();
        assert_eq!(err.offset, 7);
        assert!(err.message.contains("QIAO_TEST_UNSET_TOKEN"), "{}", err.message);
    }

    #[test]
    fn escapes_and_plain_dollars_are_kept() {
        assert_eq!(interpolate("price $5 and $${HOME}", &env()).unwrap(), "price $5 and ${HOME}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(interpolate("${ERP_URL", &env()).is_err());
        assert!(interpolate("${ERP URL}", &env()).is_err());
        assert!(interpolate("${}", &env()).is_err());
    }
}
