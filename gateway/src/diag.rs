//! Problems found in the configuration, each with its place and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// Where in which file a config value was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u64,
    pub column: u64,
}

impl Place {
    pub fn file(file: &Path) -> Self {
        Self { file: file.to_path_buf(), line: 0, column: 0 }
    }

    pub fn at(file: &Path, loc: &serde_saphyr::Location) -> Self {
        Self { file: file.to_path_buf(), line: loc.line(), column: loc.column() }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub place: Place,
    pub message: String,
    /// What to do about it: the nearest valid name, the page of the docs, an example.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(place: Place, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, place, message: message.into(), hint: None }
    }

    pub fn warning(place: Place, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, place, message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {sev}: {}", self.place, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `name`, if it is close enough to be a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" when there is a near match, otherwise the list of valid names.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match nearest(name, candidates.clone()) {
        Some(n) => format!("did you mean `{n}`?"),
        None => {
            let all: Vec<&str> = candidates.into_iter().collect();
            if all.is_empty() { "none are defined".to_string() } else { format!("valid: {}", all.join(", ")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested() {
        assert_eq!(nearest("erpp", ["erp", "crm", "wms"]), Some("erp"));
        assert_eq!(
            nearest("request_timout_ms", ["request_timeout_ms", "connect_timeout_ms"]),
            Some("request_timeout_ms")
        );
        assert_eq!(nearest("zzz", ["erp", "crm"]), None);
        assert_eq!(suggest("zzz", ["erp", "crm"]), "valid: erp, crm");
    }

    #[test]
    fn display_has_file_line_column_and_hint() {
        let d = Diagnostic::error(Place { file: "routes/a.yaml".into(), line: 3, column: 9 }, "unknown system `erpp`")
            .hint("did you mean `erp`?");
        assert_eq!(d.to_string(), "routes/a.yaml:3:9: error: unknown system `erpp`\n  hint: did you mean `erp`?");
    }
}
