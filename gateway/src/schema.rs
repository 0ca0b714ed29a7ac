//! JSON Schema validation, compiled once when the config loads.
//!
//! Drafts 4, 6, 7, 2019-09 and 2020-12 (from `$schema`; 2020-12 when absent). `$ref`s may point
//! to sibling files in the config directory; a schema is never fetched over the network,
//! whatever its `$ref` says: a gateway must not reach out because a file told it to.

use std::path::{Path, PathBuf};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Retrieve, Uri};
use serde_json::Value;

use crate::error::Violation;

pub struct Schema {
    pub file: PathBuf,
    /// The schema document, for static checks of mappings.
    pub document: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("file", &self.file).finish()
    }
}

/// Serves `$ref`s from files under the config directory and refuses everything else.
struct ConfigDirRetriever {
    root: PathBuf,
}

impl Retrieve for ConfigDirRetriever {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.scheme().as_str() != "file" {
            return Err(format!(
                "remote $ref `{uri}` refused: Qiao never fetches schemas over the network; \
                 save it next to the schema and refer to it by file name"
            )
            .into());
        }
        let url = url::Url::parse(uri.as_str()).map_err(|e| format!("bad $ref `{uri}`: {e}"))?;
        let path = url.to_file_path().map_err(|_| format!("bad file $ref `{uri}`"))?;
        let canonical = path.canonicalize().map_err(|e| format!("$ref `{}`: {e}", path.display()))?;
        if !canonical.starts_with(&self.root) {
            return Err(format!("$ref `{}` is outside the config directory", path.display()).into());
        }
        Ok(read_document(&canonical)?)
    }
}

/// Reads a JSON (or YAML) schema file; errors carry the line and column.
pub fn read_document(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    if is_yaml {
        crate::yaml::parse_yaml(&text).map_err(|e| format!("{}: {}", path.display(), e.without_snippet()))
    } else {
        serde_json::from_str(&text)
            .map_err(|e| format!("{}:{}:{}: invalid JSON: {e}", path.display(), e.line(), e.column()))
    }
}

impl Schema {
    /// Loads and compiles the schema at `file`. `config_dir` bounds where `$ref`s may point.
    pub fn load(file: &Path, config_dir: &Path, validate_formats: bool) -> Result<Self, String> {
        let canonical = file.canonicalize().map_err(|e| format!("cannot open {}: {e}", file.display()))?;
        let root = config_dir.canonicalize().map_err(|e| format!("cannot open {}: {e}", config_dir.display()))?;
        let document = read_document(&canonical)?;
        let base =
            url::Url::from_file_path(&canonical).map_err(|_| format!("bad schema path {}", canonical.display()))?;
        let validator = jsonschema::options()
            .with_base_uri(base.to_string())
            .with_retriever(ConfigDirRetriever { root })
            .should_validate_formats(validate_formats)
            .build(&document)
            .map_err(|e| format!("{} is not a valid JSON Schema: {e}", file.display()))?;
        Ok(Self { file: file.to_path_buf(), document, validator })
    }

    /// Every violation, each with the JSON Pointer of the field at fault.
    pub fn check(&self, instance: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(instance) {
            return Ok(());
        }
        let mut out = Vec::new();
        for error in self.validator.iter_errors(instance) {
            let at = error.instance_path().as_str().to_string();
            let keyword = error.kind().keyword().to_string();
            let message = error.to_string();
            match error.kind() {
                // Point at the missing or unexpected field itself, not at its parent.
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().map(str::to_string).unwrap_or_else(|| property.to_string());
                    out.push(Violation { pointer: child(&at, &name), keyword, message });
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        out.push(Violation {
                            pointer: child(&at, name),
                            keyword: keyword.clone(),
                            message: format!("additional property `{name}` is not allowed"),
                        });
                    }
                }
                _ => out.push(Violation { pointer: at, keyword, message }),
            }
        }
        Err(out)
    }
}

fn child(parent: &str, name: &str) -> String {
    format!("{parent}/{}", name.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    fn dir() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    #[test]
    fn violations_list_every_field_with_pointers() {
        let d = dir();
        let f = d.write(
            "order.json",
            r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object",
               "required":["OrderNumber","lines"],"additionalProperties":false,
               "properties":{"OrderNumber":{"type":"string"},"EffectiveDate":{"type":"string","format":"date"},
               "lines":{"type":"array","items":{"type":"object","required":["qty"],"properties":{"qty":{"type":"number"}}}}}}"#,
        );
        let s = Schema::load(&f, d.path(), true).unwrap();
        assert!(s.check(&json!({"OrderNumber":"1","lines":[{"qty":1}]})).is_ok());
        let v = s.check(&json!({"EffectiveDate":"2025-13-45","lines":[{"qty":"x"},{}],"extra":1})).unwrap_err();
        let pointers: Vec<(&str, &str)> = v.iter().map(|v| (v.pointer.as_str(), v.keyword.as_str())).collect();
        for expected in [
            ("/OrderNumber", "required"),
            ("/extra", "additionalProperties"),
            ("/EffectiveDate", "format"),
            ("/lines/0/qty", "type"),
            ("/lines/1/qty", "required"),
        ] {
            assert!(pointers.contains(&expected), "{expected:?} not in {pointers:?}");
        }
    }

    #[test]
    fn international_hostnames_and_emails_are_checked() {
        // jsonschema's `idna` feature: without it these formats pass anything.
        let d = dir();
        let f = d.write(
            "s.json",
            r#"{"type":"object","properties":{"mail":{"format":"idn-email"},"host":{"format":"idn-hostname"}}}"#,
        );
        let s = Schema::load(&f, d.path(), true).unwrap();
        assert!(s.check(&json!({"mail": "用户@例子.公司", "host": "例子.公司"})).is_ok());
        let bad = s.check(&json!({"mail": "用户@@例子.公司"})).unwrap_err();
        assert_eq!((bad[0].pointer.as_str(), bad[0].keyword.as_str()), ("/mail", "format"), "{bad:?}");
        let bad = s.check(&json!({"host": "例子..公司"})).unwrap_err();
        assert_eq!(bad[0].pointer, "/host", "{bad:?}");
    }

    #[test]
    fn formats_are_annotations_when_turned_off() {
        let d = dir();
        let f = d.write("s.json", r#"{"type":"string","format":"date"}"#);
        assert!(Schema::load(&f, d.path(), false).unwrap().check(&json!("2025-13-45")).is_ok());
        assert!(Schema::load(&f, d.path(), true).unwrap().check(&json!("2025-13-45")).is_err());
    }

    #[test]
    fn sibling_refs_resolve_and_draft7_works() {
        let d = dir();
        d.write("common.json", r#"{"$defs":{"code":{"type":"string","pattern":"^[A-Z]{2}-"}}}"#);
        let f = d.write(
            "main.json",
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","properties":{"c":{"$ref":"common.json#/$defs/code"}}}"#,
        );
        let s = Schema::load(&f, d.path(), true).unwrap();
        assert!(s.check(&json!({"c":"FG-1"})).is_ok());
        assert_eq!(s.check(&json!({"c":"x"})).unwrap_err()[0].pointer, "/c");
    }

    #[test]
    fn remote_refs_are_refused_with_a_reason() {
        let d = dir();
        let f = d.write("r.json", r#"{"properties":{"a":{"$ref":"https://example.com/schemas/a.json"}}}"#);
        let err = Schema::load(&f, d.path(), true).unwrap_err();
        assert!(err.contains("never fetches schemas over the network"), "{err}");
    }

    #[test]
    fn broken_json_is_reported_with_line_and_column() {
        let d = dir();
        let f = d.write("bad.json", "{\n  \"type\": \"object\",\n  oops\n}");
        let err = Schema::load(&f, d.path(), true).unwrap_err();
        assert!(err.contains("bad.json:3:3"), "{err}");
    }

    #[test]
    fn invalid_schemas_are_refused() {
        let d = dir();
        let f = d.write("bad.json", r#"{"type": "objekt"}"#);
        assert!(Schema::load(&f, d.path(), true).is_err());
    }
}
