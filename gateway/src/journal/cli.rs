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
    pub route: Option<String>,
    pub outcome: Option<Verdict>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Query {
    fn filter(&self, ids: Vec<String>) -> Result<Filter, String> {
        let now = chrono::Utc::now();
        Ok(Filter {
            route: self.route.clone(),
            outcome: self.outcome,
            since: self.since.as_deref().map(|s| read::parse_time(s, now)).transpose()?,
            until: self.until.as_deref().map(|s| read::parse_time(s, now)).transpose()?,
            ids,
        })
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

/// `qiao tap`: follows a route's live messages from the admin listener.
pub fn tap(admin: &str, route: &str, json: bool, sample: f64) -> ExitCode {
    let _ = (admin, route, json, sample);
    eprintln!("qiao: tap is not built yet");
    ExitCode::FAILURE
}
