//! `qiao test`: route tests declared in YAML beside the routes (`<config>/tests/*.yaml`),
//! run offline — every delivery is captured in process, nothing is sent.
//!
//! ```yaml
//! tests:
//!   - name: a won order becomes a sales order
//!     route: crm-order-to-erp
//!     input:
//!       body_file: ../examples/crm-order.json
//!       params: { order_id: 801J000000k3QpRIAU }
//!     expect:
//!       - system: erp
//!         contains: { formid: SAL_SaleOrder, data: { Model: { FDate: "2025-03-18" } } }
//!   - name: an order without an account is refused
//!     route: crm-order-to-erp
//!     input: { body: { totalSize: 1, records: [ {} ] } }
//!     reject: { status: 422, error_kind: schema-violation, pointer: /records/0/Account }
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::config::{self, Config, Diagnostic, Place, Route};
use crate::simulate::{self, Captured, Input};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestFile {
    tests: Vec<Spanned<RawTestCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestCase {
    /// What the case shows.
    name: String,
    /// The route under test.
    route: Spanned<String>,
    input: RawInput,
    /// Every delivery the message makes, in the route's order. A destination the message
    /// reaches but that is not listed fails the case.
    expect: Option<Vec<RawExpect>>,
    /// The message is refused (or, from a queue, dead-lettered).
    reject: Option<RawReject>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    /// HTTP method; default POST.
    method: Option<String>,
    /// The inbound path (and query), for HTTP routes: path parameters are taken from it
    /// by the route table, which must lead it to the case's route.
    path: Option<String>,
    /// The body as YAML/JSON.
    body: Option<Value>,
    /// The body from a file, relative to the test file.
    body_file: Option<String>,
    /// The body as raw text (for malformed JSON).
    body_text: Option<String>,
    #[serde(default)]
    params: IndexMap<String, String>,
    #[serde(default)]
    headers: IndexMap<String, String>,
    message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    system: String,
    method: Option<String>,
    /// HTTP: path and query; AMQP: the exchange.
    path: Option<String>,
    routing_key: Option<String>,
    /// Headers that must be there with these values (others may be too).
    #[serde(default)]
    headers: IndexMap<String, String>,
    /// The whole body, exactly.
    body: Option<Value>,
    /// A subset of the body: listed keys must match; arrays match element by element.
    contains: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReject {
    status: Option<u16>,
    error_kind: Option<String>,
    /// A schema violation at this JSON Pointer is among the errors.
    pointer: Option<String>,
    /// For mapping failures: the target field named.
    target: Option<String>,
    detail_contains: Option<String>,
}

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub route: String,
    pub place: Place,
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Loads the config offline and runs every test file in `<dir>/tests`.
pub fn run_dir(dir: &Path, filter: Option<&str>) -> Result<Vec<CaseResult>, Vec<Diagnostic>> {
    let config = config::load(dir, &config::OfflineEnv)?;
    let mut results = Vec::new();
    for (file, case) in read_cases(dir)? {
        if filter.is_some_and(|f| !case.value.name.contains(f) && !case.value.route.value.contains(f)) {
            continue;
        }
        results.push(run_case(&config, &file, &case));
    }
    Ok(results)
}

/// One case, ready to run: the route it names and the message it sends.
#[derive(Debug)]
pub struct PreparedCase {
    pub name: String,
    pub route: String,
    pub input: Input,
}

/// Every case of `<dir>/tests` with its input as `qiao test` sends it (path parameters
/// found by the route table, the body read), for tools that send the same messages
/// elsewhere: the differential test sends them through a live `qiao run`.
pub fn prepared_cases(dir: &Path, config: &Config) -> Result<Vec<Result<PreparedCase, String>>, Vec<Diagnostic>> {
    Ok(read_cases(dir)?
        .into_iter()
        .map(|(file, case)| {
            let c = &case.value;
            let route = config.route(&c.route.value).ok_or_else(|| format!("no route `{}`", c.route.value))?;
            Ok(PreparedCase {
                name: c.name.clone(),
                route: c.route.value.clone(),
                input: prepare(config, &file, c, route)?,
            })
        })
        .collect())
}

fn read_cases(dir: &Path) -> Result<Vec<(PathBuf, Spanned<RawTestCase>)>, Vec<Diagnostic>> {
    let tests_dir = dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut diags = Vec::new();
    let mut cases = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::error(Place::file(&file), format!("cannot read: {e}")));
                continue;
            }
        };
        let raw: RawTestFile = match config::parse_yaml(&text) {
            Ok(r) => r,
            Err(e) => {
                diags.push(crate::config::load::parse_error(&file, &e, "docs/testing.md"));
                continue;
            }
        };
        cases.extend(raw.tests.into_iter().map(|c| (file.clone(), c)));
    }
    if diags.is_empty() { Ok(cases) } else { Err(diags) }
}

fn run_case(config: &Config, file: &Path, case: &Spanned<RawTestCase>) -> CaseResult {
    let started = Instant::now();
    let c = &case.value;
    let mut result = CaseResult {
        name: c.name.clone(),
        route: c.route.value.clone(),
        place: Place::at(file, &case.referenced),
        failures: Vec::new(),
        seconds: 0.0,
    };
    let fail = |result: &mut CaseResult, msg: String| result.failures.push(msg);
    let Some(route) = config.routes.iter().find(|r| *r.name == c.route.value) else {
        let hint = config::suggest(&c.route.value, config.routes.iter().map(|r| &*r.name));
        fail(&mut result, format!("no route `{}` ({hint})", c.route.value));
        return result;
    };
    if c.expect.is_some() == c.reject.is_some() {
        fail(&mut result, "a case needs exactly one of `expect` and `reject`".into());
        return result;
    }
    let input = match prepare(config, file, c, route) {
        Ok(i) => i,
        Err(e) => {
            fail(&mut result, e);
            return result;
        }
    };
    match (simulate::run(route, &input), &c.expect, &c.reject) {
        (Ok(captured), Some(expect), _) => check_deliveries(&mut result.failures, &captured, expect),
        (Err(f), Some(_), _) => {
            fail(&mut result, format!("the message was refused: {} {} — {}", f.kind.status(), f.kind.slug(), f.detail))
        }
        (Ok(captured), None, Some(_)) => {
            let to: Vec<&str> = captured.iter().map(|c| c.system.as_str()).collect();
            fail(&mut result, format!("expected a rejection, but the message went to {}", to.join(", ")));
        }
        (Err(f), None, Some(r)) => {
            if let Some(s) = r.status
                && s != f.kind.status()
            {
                fail(
                    &mut result,
                    format!("status: expected {s}, got {} ({}: {})", f.kind.status(), f.kind.slug(), f.detail),
                );
            }
            if let Some(k) = &r.error_kind
                && k != f.kind.slug()
            {
                fail(&mut result, format!("error_kind: expected {k}, got {} ({})", f.kind.slug(), f.detail));
            }
            if let Some(p) = &r.pointer
                && !f.violations.iter().any(|v| &v.pointer == p)
            {
                let got: Vec<&str> = f.violations.iter().map(|v| v.pointer.as_str()).collect();
                fail(&mut result, format!("pointer: expected a violation at {p}, got {got:?}"));
            }
            if let Some(t) = &r.target {
                let got = f.target.clone();
                if got.as_deref() != Some(t.as_str()) {
                    fail(&mut result, format!("target: expected {t}, got {}", got.unwrap_or_else(|| "none".into())));
                }
            }
            if let Some(d) = &r.detail_contains
                && !f.detail.contains(d.as_str())
            {
                fail(&mut result, format!("detail: expected it to contain {d:?}, got {:?}", f.detail));
            }
        }
        (_, None, None) => unreachable!("checked above"),
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// The message a case sends: its body, and its path parameters found by the route table.
fn prepare(config: &Config, file: &Path, c: &RawTestCase, route: &Route) -> Result<Input, String> {
    let body = body_of(&c.input, file)?;
    let mut params = c.input.params.clone();
    if let Some(path) = &c.input.path {
        let method = c.input.method.as_deref().unwrap_or("POST");
        let Ok(m) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
            return Err(format!("`{method}` is not an HTTP method"));
        };
        let bare = path.split('?').next().unwrap_or(path);
        match config.router.find(&m, bare) {
            crate::routing::Found::Route { index, params: found } if config.routes[index].name == route.name => {
                params.extend(found);
            }
            crate::routing::Found::Route { index, .. } => {
                return Err(format!("{method} {path} goes to route {}, not {}", config.routes[index].name, route.name));
            }
            _ => return Err(format!("{method} {path} reaches no route")),
        }
    }
    Ok(Input {
        body,
        method: c.input.method.clone(),
        path: c.input.path.clone(),
        params,
        headers: c.input.headers.clone(),
        message_id: c.input.message_id.clone(),
    })
}

fn body_of(input: &RawInput, file: &Path) -> Result<Bytes, String> {
    let given = [input.body.is_some(), input.body_file.is_some(), input.body_text.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err("input takes one of `body`, `body_file` and `body_text`".into());
    }
    if !given.contains(&true) {
        return Ok(Bytes::new());
    }
    if let Some(b) = &input.body {
        return serde_json::to_vec(b).map(Bytes::from).map_err(|e| e.to_string());
    }
    if let Some(t) = &input.body_text {
        return Ok(Bytes::from(t.clone().into_bytes()));
    }
    let path = file.parent().unwrap_or(Path::new(".")).join(input.body_file.as_deref().unwrap_or_default());
    std::fs::read(&path).map(Bytes::from).map_err(|e| format!("body_file {}: {e}", path.display()))
}

fn check_deliveries(failures: &mut Vec<String>, captured: &[Captured], expect: &[RawExpect]) {
    let got: Vec<&str> = captured.iter().map(|c| c.system.as_str()).collect();
    let want: Vec<&str> = expect.iter().map(|e| e.system.as_str()).collect();
    if got != want {
        failures.push(format!("deliveries: expected to {want:?}, got to {got:?}"));
        return;
    }
    for (c, e) in captured.iter().zip(expect) {
        let who = &e.system;
        if let Some(m) = &e.method
            && !m.eq_ignore_ascii_case(&c.method)
        {
            failures.push(format!("{who}: method: expected {m}, got {}", c.method));
        }
        if let Some(p) = &e.path
            && p != &c.path
        {
            failures.push(format!("{who}: path: expected {p}, got {}", c.path));
        }
        if let Some(k) = &e.routing_key
            && Some(k) != c.routing_key.as_ref()
        {
            failures
                .push(format!("{who}: routing_key: expected {k}, got {}", c.routing_key.as_deref().unwrap_or("none")));
        }
        for (name, value) in &e.headers {
            let got = c.headers.get(&name.to_ascii_lowercase());
            if got != Some(value) {
                let got = got.map_or_else(|| "no such header".to_string(), |g| format!("{g:?}"));
                failures.push(format!("{who}: header {name}: expected {value:?}, got {got}"));
            }
        }
        if let Some(body) = &e.body
            && let Some(diff) = first_difference(body, &c.body, "", true)
        {
            failures.push(format!("{who}: body {diff}"));
        }
        if let Some(subset) = &e.contains
            && let Some(diff) = first_difference(subset, &c.body, "", false)
        {
            failures.push(format!("{who}: body {diff}"));
        }
    }
}

/// Where `actual` departs from `expected` (exactly, or as a subset), as a JSON Pointer and
/// both values.
fn first_difference(expected: &Value, actual: &Value, at: &str, exact: bool) -> Option<String> {
    let here = || if at.is_empty() { "/".to_string() } else { at.to_string() };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let child = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match a.get(k) {
                    None => return Some(format!("at {child}: missing (expected {ev})")),
                    Some(av) => {
                        if let Some(d) = first_difference(ev, av, &child, exact) {
                            return Some(d);
                        }
                    }
                }
            }
            if exact && let Some(extra) = a.keys().find(|k| !e.contains_key(*k)) {
                return Some(format!("at {at}/{extra}: not expected (got {})", a[extra]));
            }
            None
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!("at {}: expected {} elements, got {}", here(), e.len(), a.len()));
            }
            e.iter().zip(a).enumerate().find_map(|(i, (ev, av))| first_difference(ev, av, &format!("{at}/{i}"), exact))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        (e, a) if e == a => None,
        (e, a) => Some(format!("at {}: expected {e}, got {a}", here())),
    }
}

/// Prints results the way `cargo test` does; the last line is `N passed, M failed`.
pub fn report(results: &[CaseResult], dir: &Path) -> String {
    let mut out = format!(
        "\nrunning {} test{} from {}\n",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        dir.join("tests").display()
    );
    for r in results {
        out.push_str(&format!("test {} › {} ... {}\n", r.route, r.name, if r.passed() { "ok" } else { "FAILED" }));
    }
    let failed: Vec<&CaseResult> = results.iter().filter(|r| !r.passed()).collect();
    if !failed.is_empty() {
        out.push_str("\nfailures:\n");
        for r in &failed {
            out.push_str(&format!("\n---- {} › {} ({}) ----\n", r.route, r.name, r.place));
            for f in &r.failures {
                out.push_str(&format!("  {f}\n"));
            }
        }
    }
    let passed = results.len() - failed.len();
    out.push_str(&format!(
        "\ntest result: {}. {passed} passed; {} failed\n{passed} passed, {} failed\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        failed.len()
    ));
    out
}

/// JUnit XML, for CI systems that show test reports.
pub fn junit(results: &[CaseResult]) -> String {
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    }
    let failures = results.iter().filter(|r| !r.passed()).count();
    let time: f64 = results.iter().map(|r| r.seconds).sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">\n  <testsuite name=\"qiao route tests\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">\n",
        results.len(),
        results.len()
    );
    for r in results {
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            esc(&r.route),
            esc(&r.name),
            esc(&r.place.to_string()),
            r.seconds
        ));
        if r.passed() {
            out.push_str("/>\n");
        } else {
            let msg = r.failures.first().map(String::as_str).unwrap_or_default();
            out.push_str(&format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                esc(msg),
                esc(&r.failures.join("\n"))
            ));
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_and_exact_differences_name_the_place() {
        let actual = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        assert_eq!(first_difference(&json!({"a": {"b": 1.0}}), &actual, "", false), None);
        assert_eq!(
            first_difference(&json!({"a": {"b": 2}}), &actual, "", false).unwrap(),
            "at /a/b: expected 2, got 1"
        );
        assert!(first_difference(&json!({"a": {"z": 1}}), &actual, "", false).unwrap().contains("/a/z: missing"));
        assert!(
            first_difference(&json!({"a": {"c": [1]}}), &actual, "", false)
                .unwrap()
                .contains("expected 1 elements, got 2")
        );
        assert!(
            first_difference(&json!({"a": {"b": 1, "c": [1, 2]}}), &actual, "", true)
                .unwrap()
                .contains("/d: not expected")
        );
        assert_eq!(first_difference(&actual, &actual, "", true), None);
    }

    #[test]
    fn junit_escapes_and_counts() {
        let r = vec![
            CaseResult {
                name: "ok <1>".into(),
                route: "r".into(),
                place: Place::default(),
                failures: vec![],
                seconds: 0.0,
            },
            CaseResult {
                name: "bad".into(),
                route: "r".into(),
                place: Place::default(),
                failures: vec!["x & y".into()],
                seconds: 0.0,
            },
        ];
        let x = junit(&r);
        assert!(x.contains("tests=\"2\" failures=\"1\""));
        assert!(x.contains("ok &lt;1&gt;"));
        assert!(x.contains("<failure message=\"x &amp; y\">"));
    }
}
