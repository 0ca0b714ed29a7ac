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
        let (raw, mut found) = parse_file(&path, &text);
        diags.append(&mut found);
        if let Some(raw) = raw {
            files.push((path, raw));
        }
    }
    (files, diags)
}

/// Unknown keys reported in one file before the rest of it is given up.
const MAX_UNKNOWN_KEYS: usize = 100;

/// Parses one config file. An unknown key is reported and left out, and the file is parsed
/// again without it, so that one typo does not hide the rest of the file: the file is then
/// compiled as if the key were not there (its errors still make the config fail). Any other
/// problem, or a file that is not YAML at all, leaves the file unparsed.
fn parse_file(path: &Path, text: &str) -> (Option<RawFile>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut text = text.to_string();
    loop {
        let e = match super::parse_yaml::<RawFile>(&text) {
            Ok(raw) => return (Some(raw), diags),
            Err(e) => e,
        };
        diags.push(parse_error(path, &e, "docs/configuration.md"));
        let unknown = e.without_snippet().to_string().starts_with("unknown field `");
        let range = unknown.then(|| e.location()).flatten().and_then(|loc| key_and_value(&text, &loc));
        match range {
            Some(range) if diags.len() < MAX_UNKNOWN_KEYS => blank_entry(&mut text, range),
            _ => return (None, diags),
        }
    }
}

/// The byte range of the mapping entry whose key starts at `loc`: the key, its `:` and its
/// value (a scalar or a whole block or flow collection).
fn key_and_value(text: &str, loc: &serde_saphyr::Location) -> Option<std::ops::Range<usize>> {
    use serde_saphyr::granit_parser::{Event, Parser, StructureStyle};
    let mut events = Parser::new_from_str(text);
    // Whether the next node of each open collection is a mapping key.
    let mut expect_key: Vec<Option<bool>> = Vec::new();
    let start = loop {
        let (event, span) = events.next()?.ok()?;
        let is_key = expect_key.last().copied().flatten() == Some(true);
        let complete = match event {
            Event::Scalar(..) | Event::Alias(_) => {
                let at = (span.start.line() as u64, span.start.col() as u64 + 1);
                if is_key && at == (loc.line(), loc.column()) {
                    break span;
                }
                true
            }
            Event::MappingStart(..) => {
                expect_key.push(Some(true));
                false
            }
            Event::SequenceStart(..) => {
                expect_key.push(None);
                false
            }
            Event::MappingEnd | Event::SequenceEnd => {
                expect_key.pop();
                true
            }
            Event::StreamEnd => return None,
            _ => false,
        };
        if complete && let Some(Some(k)) = expect_key.last_mut() {
            *k = !*k;
        }
    };
    let from = start.start.byte_offset()?;
    let mut end = start.end.byte_offset()?;
    // The value: one node, however deep. A block collection ends where its last content
    // ends; a flow collection at its closing bracket.
    let mut depth = 0usize;
    let mut flow = Vec::new();
    loop {
        let (event, span) = events.next()?.ok()?;
        match event {
            Event::Scalar(..) | Event::Alias(_) => end = end.max(span.end.byte_offset()?),
            Event::MappingStart(style, ..) | Event::SequenceStart(style, ..) => {
                depth += 1;
                flow.push(style == StructureStyle::Flow);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.checked_sub(1)?;
                if flow.pop() == Some(true) {
                    end = end.max(span.end.byte_offset()?);
                }
            }
            Event::StreamEnd => return None,
            _ => continue,
        }
        if depth == 0 {
            break;
        }
    }
    // An empty value (`pth:`) may end before its key's `:`.
    let rest = &text[end..];
    let gap = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    if rest[gap..].starts_with(':') {
        end += gap + 1;
    }
    Some(from..end)
}

/// Replaces an entry with spaces, keeping line breaks, so that every other line and column
/// of the file stays where it was; in a flow mapping, the comma that follows it goes too.
fn blank_entry(text: &mut String, range: std::ops::Range<usize>) {
    let mut end = range.end;
    let rest = &text[end..];
    let gap = rest.len() - rest.trim_start().len();
    if rest[gap..].starts_with(',') {
        end += gap + 1;
    }
    let blanked: String =
        text[range.start..end].chars().map(|c| if c == '\n' || c == '\r' { c } else { ' ' }).collect();
    text.replace_range(range.start..end, &blanked);
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

/// A digest of every file under `dir` (path and contents, in path order): what `/readyz`
/// shows as the configuration's hash, and what `--watch` compares. Route tests and examples
/// count too: cheap, and a change there is worth a reload's log line.
pub fn hash_dir(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(dir).unwrap_or(&f).to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&f).unwrap_or_default());
        h.update([0]);
    }
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_contents_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1\n").unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(dir.path().join("schemas/s.json"), "{}").unwrap();
        let first = hash_dir(dir.path());
        assert_eq!(first.len(), 16);
        assert_eq!(first, hash_dir(dir.path()), "stable");
        std::fs::write(dir.path().join("schemas/s.json"), "{ }").unwrap();
        let second = hash_dir(dir.path());
        assert_ne!(first, second, "a schema's contents count");
        std::fs::rename(dir.path().join("a.yaml"), dir.path().join("b.yaml")).unwrap();
        assert_ne!(second, hash_dir(dir.path()), "names count");
    }

    #[test]
    fn unknown_keys_get_the_nearest_valid_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yaml"),
            "routes:\n  a:\n    from: { http: { path: /a } }\n    to:\n      - system: erp\n        pth: /x\n",
        )
        .unwrap();
        let (files, diags) = load_dir(dir.path());
        assert_eq!(files.len(), 1, "the rest of the file is read");
        assert_eq!(diags.len(), 1);
        let d = diags[0].to_string();
        assert!(d.contains("r.yaml:6:9: error: unknown field `pth`"), "{d}");
        assert!(d.contains("did you mean `path`?"), "{d}");
    }

    /// Parses `text` as a config file: the names of its routes and what was said.
    fn parse(text: &str) -> (Option<Vec<String>>, Vec<String>) {
        let (raw, diags) = parse_file(Path::new("r.yaml"), text);
        let routes = raw.map(|r| r.routes.keys().map(|k| k.value.clone()).collect());
        (routes, diags.iter().map(|d| format!("{}:{} {}", d.place.line, d.place.column, d.message)).collect())
    }

    #[test]
    fn every_unknown_key_is_reported_and_the_rest_is_read() {
        let text = "\
routes:
  a:
    from: { pth: /a, http: { path: /a, methds: [POST] } }
    descripton: |
      several
      lines
    to:
      - system: erp
        headerz:
          X-A: b
        path: /x
      - { system: crm, timeout: 5, }
      - { timeout: 5, system: wms }
    map:
      FBillNo: { form: order.no }
      FQty: { from: order.qty, as: number, reqired: }
  b:
    from: { http: { path: /b } }
    to: { system: erp }
";
        let (routes, diags) = parse(text);
        assert_eq!(
            diags.iter().map(|d| d.split(" expected").next().unwrap()).collect::<Vec<_>>(),
            [
                "3:13 unknown field `pth`,",
                "3:40 unknown field `methds`,",
                "4:5 unknown field `descripton`,",
                "9:9 unknown field `headerz`,",
                "12:24 unknown field `timeout`,",
                "13:11 unknown field `timeout`,",
                "15:18 unknown field `form`,",
                "16:44 unknown field `reqired`,",
            ]
        );
        assert_eq!(routes, Some(vec!["a".to_string(), "b".to_string()]), "both routes are read");
    }

    #[test]
    fn unknown_keys_are_found_in_every_kind_of_section() {
        let text = "\
server: { listn: x }
systems:
  erp:
    kind: erp
    http: { base_url: x, retry: { max_attemps: 3 } }
lookups:
  t: { valuez: { a: b }, values: {} }
routes:
  a:
    from: { http: { path: /a } }
    map:
      x: { from: a, lookup: { values: { a: b }, defualt: c } }
      y: { list: [ { cnst: 1 } ] }
    to: { system: erp, pth: /x, when: { path: a, eqals: 1 } }
";
        let (routes, diags) = parse(text);
        assert_eq!(
            diags.iter().map(|d| d.split(',').next().unwrap()).collect::<Vec<_>>(),
            [
                "1:11 unknown field `listn`",
                "5:35 unknown field `max_attemps`",
                "7:8 unknown field `valuez`",
                "12:49 unknown field `defualt`",
                "13:22 unknown field `cnst`",
                "14:24 unknown field `pth`",
                "14:50 unknown field `eqals`",
            ]
        );
        assert_eq!(routes, Some(vec!["a".to_string()]));
    }

    #[test]
    fn a_file_that_is_not_yaml_stays_unparsed() {
        let (routes, diags) = parse("routes:\n  a:\n    frm: x\n    to: [\n");
        assert_eq!(routes, None);
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags[0].starts_with("3:5 unknown field `frm`"), "{diags:?}");
        // A mistake other than an unknown key ends the reading of the file, as before.
        let (routes, diags) = parse("routes:\n  a:\n    from: 3\n    tox: x\n");
        assert_eq!(routes, None);
        assert_eq!(diags.len(), 1, "{diags:?}");
        // A misspelt key that must be there: without it, the key is missing.
        let (routes, diags) = parse("routes:\n  a:\n    form: { http: { path: /a } }\n    to: { system: erp }\n");
        assert_eq!(routes, None);
        assert!(diags[0].starts_with("3:5 unknown field `form`"), "{diags:?}");
        assert!(diags[1].contains("missing field `from`"), "{diags:?}");
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
        assert_eq!(files.len(), 2, "the empty file loads, and the one with an unknown key");
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
