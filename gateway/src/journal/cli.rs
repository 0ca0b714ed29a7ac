//! `qiao journal ls | show` and `qiao tap`: the journal and the live tap in a terminal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::read::{self, Filter};
use super::record::{Body, Record, Source, Verdict};

/// Where `qiao journal` reads when `--dir` is not given.
pub const DIR_ENV: &str = "QIAO_JOURNAL_DIR";

/// What `qiao journal ls` and `show` read.
#[derive(Clone, Debug)]
pub struct Query {
    /// Files or directories; the journal directory (`QIAO_JOURNAL_DIR`) when empty.
    pub paths: Vec<PathBuf>,
    pub window: read::Window,
    pub outcome: Option<Verdict>,
}

impl Query {
    fn filter(&self, ids: Vec<String>) -> Result<Filter, String> {
        Ok(Filter { outcome: self.outcome, ..self.window.filter(ids)? })
    }

    fn paths(&self) -> Result<Vec<PathBuf>, String> {
        if !self.paths.is_empty() {
            return Ok(self.paths.clone());
        }
        match std::env::var(DIR_ENV) {
            Ok(d) if !d.trim().is_empty() => Ok(vec![PathBuf::from(d)]),
            _ => Err(format!("which journal? give --dir DIR (or set {DIR_ENV})")),
        }
    }

    /// The matching records, oldest first; lines that are not records are reported on stderr.
    fn load(&self, ids: Vec<String>) -> Result<Vec<Record>, String> {
        let filter = self.filter(ids)?;
        let paths = self.paths()?;
        let records = read::records(&paths, filter).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for r in records {
            match r {
                Ok(r) => out.push(r),
                Err(bad) => eprintln!("qiao: skipped {bad}"),
            }
        }
        // Several processes write side by side: one timeline by time of receipt.
        out.sort_by(|a, b| a.received_at.cmp(&b.received_at));
        Ok(out)
    }
}

pub fn ls(q: &Query, json: bool) -> ExitCode {
    let records = match q.load(Vec::new()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qiao: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for r in &records {
        let line = if json { serde_json::to_string(r).unwrap_or_default() } else { summary_line(r) };
        // A closed pipe (`| head`) ends the listing, not with a panic.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

pub fn show(q: &Query, id: &str, json: bool) -> ExitCode {
    let records = match q.load(vec![id.to_string()]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qiao: {e}");
            return ExitCode::FAILURE;
        }
    };
    if records.is_empty() {
        eprintln!("qiao: no message with id or trace id `{id}` in the journal");
        return ExitCode::FAILURE;
    }
    let text = if json {
        records.iter().map(|r| serde_json::to_string_pretty(r).unwrap_or_default() + "\n").collect()
    } else {
        timeline(&records)
    };
    let _ = write!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Delivered => "delivered",
        Verdict::Rejected => "rejected",
        Verdict::Failed => "failed",
        Verdict::Partial => "partial",
    }
}

fn source_text(s: &Source) -> String {
    match s {
        Source::Http { method, path, .. } => format!("http {method} {path}"),
        Source::Amqp { queue, attempt } => format!("amqp {queue} #{attempt}"),
    }
}

/// One line per record: time, id, route, source, outcome, status or fate, duration.
pub fn summary_line(r: &Record) -> String {
    let end = match (&r.outcome.status, &r.outcome.fate) {
        (Some(s), _) => s.to_string(),
        (None, Some(f)) => f.clone(),
        (None, None) => "-".into(),
    };
    let kind = r.outcome.kind.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
    format!(
        "{}  {}  {}  {}  {}{}  {}  {:.1} ms",
        r.received_at,
        r.id,
        r.route,
        source_text(&r.source),
        verdict(r.outcome.result),
        kind,
        end,
        r.duration_ms
    )
}

fn body_text(b: &Body, max: usize) -> String {
    let s = match b {
        Body::Json(v) => serde_json::to_string(v).unwrap_or_default(),
        Body::Raw(r) => String::from_utf8_lossy(r.bytes()).into_owned(),
        Body::Text(t) => format!("(text) {t}"),
        Body::Omitted(why) => format!("(omitted: {why})"),
    };
    if s.chars().count() > max { s.chars().take(max).collect::<String>() + " …" } else { s }
}

/// One message's journey: every pass, in order, phase by phase.
pub fn timeline(records: &[Record]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let first = &records[0];
    let _ = writeln!(o, "message {}  route {}", first.id, first.route);
    if !first.trace_id.is_empty() {
        let _ = writeln!(o, "trace   {}", first.trace_id);
    }
    for (n, r) in records.iter().enumerate() {
        let _ = writeln!(o, "\npass {}  {}  config {}  {:.1} ms", n + 1, r.received_at, r.config, r.duration_ms);
        let _ = writeln!(o, "  ├ received    {}", source_text(&r.source));
        if let Some(c) = &r.client {
            let _ = writeln!(o, "  │             client {c}");
        }
        if let Some(of) = &r.replay_of {
            let _ = writeln!(o, "  │             replay of {of}");
        }
        for (k, v) in &r.headers {
            let _ = writeln!(o, "  │             {k}: {v}");
        }
        if let Some(b) = &r.body {
            let _ = writeln!(o, "  │             body {}", body_text(b, 240));
        }
        if r.validation.ok {
            let _ = writeln!(o, "  ├ validation  ok");
        } else {
            let kind = r.validation.kind.as_deref().unwrap_or("-");
            let detail = r.validation.detail.as_deref().unwrap_or("");
            let _ = writeln!(o, "  ├ validation  {kind}: {detail}");
            for v in &r.validation.violations {
                let _ = writeln!(o, "  │             {} ({}): {}", v.pointer, v.keyword, v.message);
            }
        }
        if !r.chosen.is_empty() {
            let systems: Vec<String> = r
                .chosen
                .iter()
                .map(|i| {
                    let name = r.outputs.iter().find(|o| o.index == *i).map_or("?", |o| o.system.as_str());
                    format!("#{i} {name}")
                })
                .collect();
            let _ = writeln!(o, "  ├ chosen      {}", systems.join(", "));
        }
        for out in &r.outputs {
            let _ = writeln!(o, "  ├ mapped      #{} {}: {}", out.index, out.system, body_text(&out.body, 240));
        }
        for a in &r.attempts {
            let target = match &a.request {
                super::record::Request::Http { method, url, .. } => format!("{method} {url}"),
                super::record::Request::Amqp { exchange, routing_key, .. } => {
                    format!("publish {exchange} {routing_key}")
                }
            };
            let status = a.status.map(|s| format!(" → {s}")).unwrap_or_else(|| " → ok".into());
            let status = if a.status.is_none() && a.error_kind.is_some() { " → no answer".into() } else { status };
            let tries = if a.tries > 1 { format!(" ({} tries)", a.tries) } else { String::new() };
            let _ = writeln!(
                o,
                "  ├ attempt     #{} {}  {target}{status}  {:.1} ms{tries}",
                a.index, a.system, a.latency_ms
            );
            if let Some(k) = &a.error_kind {
                let _ = writeln!(o, "  │             {k}: {}", a.error.as_deref().unwrap_or(""));
            }
            if let Some(b) = &a.answer {
                let _ = writeln!(o, "  │             answer {}", body_text(b, 240));
            }
        }
        let mut end = verdict(r.outcome.result).to_string();
        if let Some(s) = r.outcome.status {
            let _ = write!(end, ", answered {s}");
        }
        if let Some(f) = &r.outcome.fate {
            let _ = write!(end, ", {f}");
        }
        let _ = writeln!(o, "  └ outcome     {end}");
        if let Some(k) = &r.outcome.kind {
            let _ = writeln!(o, "                {k}: {}", r.outcome.detail.as_deref().unwrap_or(""));
        }
    }
    o
}

/// One record as `qiao tap` prints it: the `journal ls` line, then each attempt's system
/// and status (or error kind).
pub fn tap_line(r: &Record) -> String {
    let mut line = summary_line(r);
    for a in &r.attempts {
        let status = match (a.status, &a.error_kind) {
            (Some(s), _) => s.to_string(),
            (None, Some(k)) => k.clone(),
            (None, None) => "ok".into(),
        };
        line.push_str(&format!("  → #{} {} {status} {:.1} ms", a.index, a.system, a.latency_ms));
    }
    line
}

/// What one line of the tap stream asks of the terminal.
#[derive(Debug, PartialEq)]
enum Shown {
    /// For stdout.
    Out(String),
    /// For stderr.
    Note(String),
    Nothing,
    /// The gateway ended the stream.
    End(String),
}

fn shown(line: &[u8], json: bool) -> Shown {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Shown::Note(format!("qiao: not a tap line: {}", String::from_utf8_lossy(line)));
    };
    if let Some(kind) = value.get("tap").and_then(|t| t.as_str()) {
        return match kind {
            "open" => Shown::Note(format!(
                "qiao: tapping route {} (sample {}); Ctrl-C stops",
                value["route"].as_str().unwrap_or("?"),
                value["sample"]
            )),
            "lost" => Shown::Note(format!(
                "qiao: this reader fell behind: {} records skipped ({} in all); traffic was not slowed",
                value["records"], value["lost_total"]
            )),
            "end" => Shown::End(format!("qiao: the tap ended: {}", value["reason"].as_str().unwrap_or("?"))),
            _ => Shown::Nothing,
        };
    }
    if json {
        return Shown::Out(String::from_utf8_lossy(line).into_owned());
    }
    match serde_json::from_value::<Record>(value) {
        Ok(r) => Shown::Out(tap_line(&r)),
        Err(e) => Shown::Note(format!("qiao: a record this version cannot read ({e})")),
    }
}

/// `qiao tap`: follows a route's live messages from the admin listener's `/admin/tap`.
pub fn tap(admin: &str, route: &str, token: Option<&str>, json: bool, sample: f64) -> ExitCode {
    if !(0.0..=1.0).contains(&sample) {
        eprintln!("qiao: --sample must be from 0.0 to 1.0");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qiao: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(follow(admin, route, token, json, sample)) {
        Ok(end) => {
            eprintln!("{end}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qiao: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn follow(admin: &str, route: &str, token: Option<&str>, json: bool, sample: f64) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty};
    let base = admin.trim_end_matches('/');
    let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("route", route)
        .append_pair("sample", &sample.to_string())
        .finish();
    let uri: http::Uri =
        format!("{base}/admin/tap?{query}").parse().map_err(|e| format!("--admin {admin} is not a URL: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let mut request = http::Request::get(uri).header("accept", "application/x-ndjson");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let answer =
        client.request(request).await.map_err(|e| format!("cannot reach the admin listener at {base}: {e}"))?;
    let status = answer.status();
    let mut body = answer.into_body();
    if status != http::StatusCode::OK {
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let detail = match (problem["title"].as_str(), problem["detail"].as_str()) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            _ => String::from_utf8_lossy(&bytes).into_owned(),
        };
        let hint = if status == http::StatusCode::UNAUTHORIZED && token.is_none() {
            " (no token given: set QIAO_ADMIN_TOKEN or name the variable with --token-env)"
        } else {
            ""
        };
        return Err(format!("the tap was refused ({}): {detail}{hint}", status.as_u16()));
    }
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the tap broke off: {e}"))?;
        let Ok(data) = frame.into_data() else { continue };
        pending.extend_from_slice(&data);
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            match shown(&line[..at], json) {
                Shown::Out(s) => {
                    // A closed pipe (`| head`) ends the tap.
                    if writeln!(out, "{s}").and_then(|()| out.flush()).is_err() {
                        return Ok(String::new());
                    }
                }
                Shown::Note(s) => eprintln!("{s}"),
                Shown::Nothing => {}
                Shown::End(s) => return Ok(s),
            }
        }
    }
    Err("the admin listener closed the tap without ending it".into())
}

#[cfg(test)]
mod tap_tests {
    use super::*;

    #[test]
    fn control_lines_are_notes_and_records_lines() {
        assert!(
            matches!(shown(br#"{"tap":"open","route":"r","sample":1.0}"#, false), Shown::Note(n) if n.contains("route r"))
        );
        assert!(
            matches!(shown(br#"{"tap":"lost","records":7,"lost_total":9}"#, true), Shown::Note(n) if n.contains("7 records"))
        );
        assert_eq!(shown(br#"{"tap":"alive"}"#, false), Shown::Nothing);
        assert!(
            matches!(shown(br#"{"tap":"end","reason":"the gateway is stopping"}"#, false), Shown::End(e) if e.contains("stopping"))
        );
        assert!(matches!(shown(b"{\"id\":1}", true), Shown::Out(o) if o == "{\"id\":1}"));
        assert!(matches!(shown(b"{\"id\":1}", false), Shown::Note(_)));
        assert!(matches!(shown(b"nonsense", false), Shown::Note(_)));
    }
}
