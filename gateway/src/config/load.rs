//! Reading the config directory.

use std::path::{Path, PathBuf};

use super::raw::RawFile;
use super::{Diagnostic, Place};

/// Parses every `*.yaml` / `*.yml` file directly in `dir` (not in subdirectories: those
/// hold schemas and tests), in name order. A file that does not parse is reported and
/// skipped, so that one typo does not hide the problems of the other files.
pub fn load_dir(dir: &Path) -> (Vec<(PathBuf, RawFile)>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(
                Diagnostic::error(Place::file(dir), format!("cannot read the config directory: {e}"))
                    .hint("pass the directory that holds your route files, e.g. `qiao check routes/`"),
            );
            return (Vec::new(), diags);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        diags.push(
            Diagnostic::error(Place::file(dir), "no .yaml files in the config directory")
                .hint("see docs/configuration.md for the layout of a config directory"),
        );
    }
    let mut files = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::error(Place::file(&path), format!("cannot read: {e}")));
                continue;
            }
        };
        if text.trim().is_empty() {
            files.push((path, RawFile::default()));
            continue;
        }
        match super::parse_yaml::<RawFile>(&text) {
            Ok(raw) => files.push((path, raw)),
            Err(e) => diags.push(parse_error(&path, &e, "docs/configuration.md")),
        }
    }
    (files, diags)
}

/// Turns a parse error into a diagnostic, with the nearest valid key for unknown keys;
/// `reference` is the page that lists the valid keys.
pub(crate) fn parse_error(path: &Path, e: &serde_saphyr::Error, reference: &str) -> Diagnostic {
    let place = match e.location() {
        Some(loc) => Place::at(path, &loc),
        None => Place::file(path),
    };
    let text = e.without_snippet().to_string();
    // serde's message: "unknown field `pth`, expected one of `system`, `path`" (or without
    // backticks, depending on the formatter); strip the location suffix serde-saphyr adds.
    let mut message = text.split(" at line ").next().unwrap_or(&text).to_string();
    // The YAML library's advice is for programmers who call it, not for people.
    let duplicate = message.starts_with("duplicate mapping key");
    if duplicate {
        message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    }
    let mut d = Diagnostic::error(place, message.clone());
    if duplicate {
        return d.hint("each key may appear once in a mapping: remove or rename one of them");
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let valid: Vec<String> = expected
                .split_once("expected ")
                .map(|(_, list)| {
                    list.trim_start_matches("one of ")
                        .split(',')
                        .map(|s| s.trim().trim_matches('`').to_string())
                        .collect()
                })
                .unwrap_or_default();
            let hint = super::suggest(field, valid.iter().map(String::as_str));
            d = d.hint(format!("{hint} ({reference} lists every key)"));
        }
    } else if message.contains("flow mapping") || message.contains("flow sequence") {
        d = d.hint("inside `{ ... }` or `[ ... ]`, quote values that contain `{`, `}`, `[`, `]` or `,`, e.g. `{ path: \"/orders/{id}\" }`");
    } else if message.starts_with("unknown variant `") {
        d = d.hint(format!("{reference} lists the accepted values"));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_get_the_nearest_valid_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yaml"),
            "routes:\n  a:\n    from: { http: { path: /a } }\n    to:\n      - system: erp\n        pth: /x\n",
        )
        .unwrap();
        let (files, diags) = load_dir(dir.path());
        assert!(files.is_empty());
        assert_eq!(diags.len(), 1);
        let d = diags[0].to_string();
        assert!(d.contains("r.yaml:6:9: error: unknown field `pth`"), "{d}");
        assert!(d.contains("did you mean `path`?"), "{d}");
    }

    #[test]
    fn duplicate_keys_are_named_without_library_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), "lookups:\n  a: { values: { x: y } }\n  a: { values: { x: z } }\n")
            .unwrap();
        let (_, diags) = load_dir(dir.path());
        let d = diags[0].to_string();
        assert!(d.contains("duplicate mapping key") && d.contains("remove or rename"), "{d}");
        assert!(!d.contains("DuplicateKeyPolicy"), "{d}");
    }

    #[test]
    fn every_broken_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "systemz: {}\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "routes: [\n").unwrap();
        std::fs::write(dir.path().join("c.yaml"), "").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let (files, diags) = load_dir(dir.path());
        assert_eq!(files.len(), 1, "the empty file loads");
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(diags[0].to_string().contains("did you mean `systems`?"), "{}", diags[0]);
        assert!(diags[1].place.file.ends_with("b.yml"));
    }

    #[test]
    fn a_missing_directory_is_one_clear_error() {
        let (_, diags) = load_dir(Path::new("/nonexistent/qiao/routes"));
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("cannot read the config directory"));
    }
}
