//! `qiao journal to-test <id>`: one recorded message becomes a `qiao test` case beside the
//! route (`<config>/tests/`), its input as recorded (PII as the tokens the journal keeps)
//! and its expectation what today's configuration makes of it, so that a production failure
//! becomes a regression test in one command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::config::{Config, Source as RouteSource};
use crate::journal::record::{Body, Record, Source};
use crate::simulate::{self, Input};

/// A YAML scalar or flow collection: JSON is YAML, and JSON strings are valid YAML
/// double-quoted scalars, so every value is written as JSON and reads back the same.
fn yaml(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn quoted(s: &str) -> String {
    yaml(&Value::String(s.to_string()))
}

/// The test file for `record` (written nowhere): its name and text.
pub fn case(config: &Config, config_dir: &Path, record: &Record) -> Result<(PathBuf, String), String> {
    let route = config
        .route(&record.route)
        .ok_or_else(|| format!("the configuration in {} has no route `{}`", config_dir.display(), record.route))?;
    let body = match &record.body {
        Some(Body::Json(v)) => ("body", yaml(v)),
        Some(Body::Raw(r)) => ("body", yaml(&r.value())),
        Some(Body::Text(t)) => ("body_text", quoted(t)),
        Some(Body::Omitted(why)) => return Err(format!("its body was not kept ({why}): there is no input to test")),
        None => return Err("its body was not kept (the route journals no bodies): there is no input to test".into()),
    };
    // Only what the route reads: its mapping and templates see headers only through `$headers`.
    let headers: IndexMap<String, String> = if route.uses.headers {
        record.headers.iter().filter(|(k, _)| !is_transport(k)).cloned().collect()
    } else {
        IndexMap::new()
    };
    let (method, path, params) = match (&record.source, &route.source) {
        (Source::Http { method, path, params }, RouteSource::Http { .. }) => {
            (Some(method.clone()), Some(path.clone()), params.iter().cloned().collect::<IndexMap<_, _>>())
        }
        _ => (None, None, IndexMap::new()),
    };
    let input = Input {
        body: match &record.body {
            Some(Body::Json(v)) => serde_json::to_vec(v).unwrap_or_default().into(),
            Some(Body::Raw(r)) => r.bytes().clone(),
            Some(Body::Text(t)) => t.clone().into_bytes().into(),
            _ => Default::default(),
        },
        method: method.clone(),
        path: path.clone(),
        params,
        headers: headers.clone(),
        message_id: Some(record.id.clone()),
    };
    // Exactly as `qiao test` will run it (its fixed clock included).
    let today = simulate::run(route, &input);

    let mut s = String::new();
    let _ = writeln!(s, "# Written by `qiao journal to-test {}` from the journal.", record.id);
    let _ = writeln!(
        s,
        "# Input: the message received {} on route {} (PII as the journal's tokens).",
        record.received_at, record.route
    );
    let _ = writeln!(
        s,
        "# Expected: what the configuration made of it on {}; edit it to what it should be.",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    s.push_str("tests:\n");
    let _ = writeln!(s, "  - name: {}", quoted(&format!("journal {} ({})", record.id, record.received_at)));
    let _ = writeln!(s, "    route: {}", quoted(&record.route));
    s.push_str("    input:\n");
    if let Some(m) = &method {
        let _ = writeln!(s, "      method: {}", quoted(m));
    }
    if let Some(p) = &path {
        let _ = writeln!(s, "      path: {}", quoted(p));
    }
    let _ = writeln!(s, "      message_id: {}", quoted(&record.id));
    if !headers.is_empty() {
        let _ = writeln!(s, "      headers: {}", yaml(&serde_json::to_value(&headers).unwrap_or_default()));
    }
    let _ = writeln!(s, "      {}: {}", body.0, body.1);
    match today {
        Ok(captured) if captured.is_empty() => s.push_str("    expect: []\n"),
        Ok(captured) => {
            s.push_str("    expect:\n");
            for c in &captured {
                let _ = writeln!(s, "      - system: {}", quoted(&c.system));
                if c.transport == "http" {
                    let _ = writeln!(s, "        method: {}", quoted(&c.method));
                    let _ = writeln!(s, "        path: {}", quoted(&c.path));
                } else if let Some(k) = &c.routing_key {
                    let _ = writeln!(s, "        routing_key: {}", quoted(k));
                }
                let _ = writeln!(s, "        body: {}", yaml(&c.body));
            }
        }
        Err(f) => {
            let _ = writeln!(s, "    reject: {{ status: {}, error_kind: {} }}", f.kind.status(), f.kind.slug());
        }
    }
    // The id's last 12 letters and digits: enough to tell cases apart, short enough to read.
    let alnum: Vec<char> = record.id.chars().filter(char::is_ascii_alphanumeric).collect();
    let short: String = alnum[alnum.len().saturating_sub(12)..].iter().collect();
    let stem = route.file.file_stem().and_then(|s| s.to_str()).unwrap_or(&record.route).to_string();
    let file = config_dir.join("tests").join(format!("{stem}.journal-{short}.yaml"));
    Ok((file, s))
}

/// Headers that describe the connection, not the message.
fn is_transport(name: &str) -> bool {
    matches!(
        name,
        "content-length" | "host" | "connection" | "transfer-encoding" | "keep-alive" | "te" | "upgrade" | "expect"
    )
}
