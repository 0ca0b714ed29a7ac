//! `qiao replay`: recorded messages run again through a configuration, offline, by the one
//! driver ([`pipeline::drive`]) on the [`Capture`] seam, and compared with what was recorded:
//! a field diff per destination, and outcome changes (now rejected, now accepted, other
//! destinations). `--send` re-delivers them live instead ([`send`]); `qiao journal to-test`
//! turns one into a `qiao test` case ([`to_test`]). docs/replay.md walks through them.

pub mod cli;
pub mod diff;
pub mod report;
pub mod send;
pub mod to_test;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::FutureExt;
use qiao_connectors::{Message, MessageId, TraceContext};
use serde::Serialize;

use crate::config::{Config, Route, RouteKind};
use crate::journal::record::{Body, Record, Source, Verdict};
use crate::pipeline::{self, Capture, Inbound, Run};
use diff::{FieldChange, Ignore};

/// Refusals that happen in the driver; the others (404, 413, 415, 429, ...) happen at the
/// edge before it runs, so replaying their message says nothing about the configuration.
const DRIVER_REFUSALS: [&str; 6] = [
    "malformed-json",
    "schema-violation",
    "mapping-failed",
    "no-matching-destination",
    "output-schema-violation",
    "internal",
];

/// The kind of a recorded failure as [`crate::error::ErrorKind::slug`] spells it.
fn slug(kind: &str) -> String {
    kind.replace('_', "-")
}

/// The message a record received, rebuilt to be driven again: its headers, its body (JSON
/// as kept, PII tokens and all), its id and receipt time, and its path parameters. `Err`
/// says why it cannot be (the body was not kept).
pub fn recorded_message(record: &Record) -> Result<(Message, Vec<(String, String)>), String> {
    let body = match &record.body {
        Some(Body::Json(v)) => Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?),
        Some(Body::Raw(r)) => r.bytes().clone(),
        Some(Body::Text(t)) => Bytes::from(t.clone().into_bytes()),
        Some(Body::Omitted(why)) => return Err(format!("its body was not kept: {why}")),
        None => return Err("its body was not kept (the route journals no bodies)".into()),
    };
    let params = match &record.source {
        Source::Http { params, .. } => params.clone(),
        Source::Amqp { .. } => Vec::new(),
    };
    let received_at = chrono::DateTime::parse_from_rfc3339(&record.received_at)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    let message = Message {
        id: MessageId::from_sender(&record.id),
        headers: record.headers.clone(),
        body,
        trace: TraceContext::default(),
        received_at,
    };
    Ok((message, params))
}

/// What replaying one message found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unchanged,
    Changed,
    NowRejected,
    NowAccepted,
    Skipped,
}

/// One destination whose output differs.
#[derive(Clone, Debug, Serialize)]
pub struct DestinationDiff {
    pub index: usize,
    pub system: String,
    /// `changed` (the fields below), `now_chosen` (not sent before, sent now) or
    /// `no_longer_chosen`.
    pub change: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// One message replayed.
#[derive(Clone, Debug, Serialize)]
pub struct Replayed {
    pub id: String,
    pub route: String,
    pub received_at: String,
    pub status: Status,
    /// The outcome before and after, in words, when it changed (or why it was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationDiff>,
    /// Pointers that differed between two runs of the same message (`--detect-noise`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub noise: Vec<String>,
}

/// What to compare, and how.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--ignore`, added to each route's `replay.ignore`.
    pub ignore: Ignore,
    pub detect_noise: bool,
}

/// Replays records one at a time against one configuration.
pub struct Replayer<'a> {
    config: &'a Config,
    options: Options,
    /// Per route: `--ignore` and its `replay.ignore` together.
    ignores: HashMap<String, Ignore>,
    /// An AMQP message retried makes a record per pass: the first is replayed. By route and
    /// id: one message may pass through two routes under its id (the MES intake publishes
    /// what the fan-out route consumes), and each is a journey of its own.
    seen: HashSet<(String, String)>,
    /// Noise found, by pointer pattern: in how many messages.
    pub noise: BTreeMap<String, usize>,
}

impl<'a> Replayer<'a> {
    pub fn new(config: &'a Config, options: Options) -> Replayer<'a> {
        Replayer { config, options, ignores: HashMap::new(), seen: HashSet::new(), noise: BTreeMap::new() }
    }

    fn ignore_for(&mut self, route: &Route) -> &Ignore {
        let options = &self.options;
        self.ignores.entry(route.name.to_string()).or_insert_with(|| {
            // Checked when the config was compiled: every pattern starts with `/`.
            let own = Ignore::new(&route.replay_ignore).unwrap_or_default();
            options.ignore.with(&own)
        })
    }

    /// Replays `record`; `None` for a later pass of a message already replayed on its route.
    pub fn replay(&mut self, record: &Record) -> Option<Replayed> {
        if !self.seen.insert((record.route.clone(), record.id.clone())) {
            return None;
        }
        let mut out = Replayed {
            id: record.id.clone(),
            route: record.route.clone(),
            received_at: record.received_at.clone(),
            status: Status::Skipped,
            detail: None,
            destinations: Vec::new(),
            noise: Vec::new(),
        };
        let config = self.config;
        let Some(route) = config.route(&record.route) else {
            out.detail = Some(format!("the configuration has no route `{}`", record.route));
            return Some(out);
        };
        if route.kind == RouteKind::Proxy {
            out.detail = Some("a proxy route: nothing is mapped".into());
            return Some(out);
        }
        let was_rejected = record.outcome.result == Verdict::Rejected;
        let was_kind = record.outcome.kind.as_deref().map(slug);
        if was_rejected && !was_kind.as_deref().is_some_and(|k| DRIVER_REFUSALS.contains(&k)) {
            out.detail = Some(format!(
                "refused at the edge ({}) before the pipeline ran",
                was_kind.as_deref().unwrap_or("no kind recorded")
            ));
            return Some(out);
        }
        let (message, params) = match recorded_message(record) {
            Ok(m) => m,
            Err(why) => {
                out.detail = Some(why);
                return Some(out);
            }
        };
        let run = drive(route, &message, &params);
        if self.options.detect_noise {
            let again = drive(route, &message, &params);
            let mut noise = Vec::new();
            for (a, b) in run.outgoing.iter().zip(&again.outgoing) {
                if let (Some(a), Some(b)) = (a, b) {
                    noise.extend(diff::diff(&a.value, &b.value, &Ignore::default()).into_iter().map(|c| c.pointer));
                }
            }
            // A record made by this very configuration differs from its replay only by noise.
            if record.config == config.hash && !was_rejected && run.refused.is_none() {
                for o in &record.outputs {
                    if let (Body::Json(old), Some(Some(new))) = (&o.body, run.outgoing.get(o.index)) {
                        noise.extend(diff::diff(old, &new.value, &Ignore::default()).into_iter().map(|c| c.pointer));
                    }
                }
            }
            let mut patterns: Vec<String> = noise.iter().map(|p| generalise(p)).collect();
            patterns.sort();
            patterns.dedup();
            for p in &patterns {
                *self.noise.entry(p.clone()).or_default() += 1;
            }
            out.noise = patterns;
        }
        let now_kind = run.refused.as_ref().map(|f| f.kind.slug().to_string());
        match (was_rejected, &run.refused) {
            (false, Some(f)) => {
                out.status = Status::NowRejected;
                out.detail = Some(format!(
                    "was {}, now rejected: {} {} — {}",
                    verdict_word(record.outcome.result),
                    f.kind.status(),
                    f.kind.slug(),
                    f.detail
                ));
            }
            (true, None) => {
                out.status = Status::NowAccepted;
                let to: Vec<&str> = chosen(&run).map(|i| route.destinations[i].system.name.as_str()).collect();
                out.detail = Some(format!(
                    "was rejected ({}), now accepted: to {}",
                    was_kind.unwrap_or_default(),
                    if to.is_empty() { "no destination".into() } else { to.join(", ") }
                ));
            }
            (true, Some(_)) => {
                let was = was_kind.unwrap_or_default();
                let now = now_kind.unwrap_or_default();
                if was == now {
                    out.status = Status::Unchanged;
                } else {
                    out.status = Status::Changed;
                    out.detail = Some(format!("was rejected ({was}), now rejected ({now})"));
                }
            }
            (false, None) => {
                let ignore = self.ignore_for(route).clone();
                out.destinations = compare(route, record, &run, &ignore);
                out.status = if out.destinations.is_empty() { Status::Unchanged } else { Status::Changed };
            }
        }
        Some(out)
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Delivered => "delivered",
        Verdict::Rejected => "rejected",
        Verdict::Failed => "accepted (its delivery failed)",
        Verdict::Partial => "partly delivered",
    }
}

/// A noisy pointer as an `--ignore` pattern: array indexes become `*`, since a field that
/// is noise in one element is noise in all.
fn generalise(pointer: &str) -> String {
    pointer
        .split('/')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "*" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn chosen(run: &Run) -> impl Iterator<Item = usize> + '_ {
    run.chosen.iter().enumerate().filter(|(_, c)| **c).map(|(i, _)| i)
}

/// Runs `route` on a recorded message, capturing every delivery.
pub fn drive(route: &Route, message: &Message, params: &[(String, String)]) -> Run {
    let inbound = Inbound { message, params, done: &[], pii_tokens: true };
    pipeline::drive(route, inbound, &Capture, &opentelemetry::Context::new())
        .now_or_never()
        .expect("a captured run never waits")
}

/// Recorded outputs against the new run's, destination by destination.
fn compare(route: &Route, record: &Record, run: &Run, ignore: &Ignore) -> Vec<DestinationDiff> {
    let mut out = Vec::new();
    let system = |i: usize| route.destinations.get(i).map(|d| d.system.name.clone()).unwrap_or_default();
    let now: Vec<usize> = chosen(run).collect();
    let before: Vec<usize> = if record.chosen.is_empty() && !record.outputs.is_empty() {
        record.outputs.iter().map(|o| o.index).collect()
    } else {
        record.chosen.clone()
    };
    for &i in &before {
        if !now.contains(&i) {
            out.push(DestinationDiff { index: i, system: system(i), change: "no_longer_chosen", fields: Vec::new() });
        }
    }
    for &i in &now {
        if !before.contains(&i) {
            out.push(DestinationDiff { index: i, system: system(i), change: "now_chosen", fields: Vec::new() });
            continue;
        }
        let old = record.outputs.iter().find(|o| o.index == i).map(|o| &o.body);
        let new = run.outgoing.get(i).and_then(Option::as_ref).map(|o| &*o.value);
        let fields = match (old, new) {
            (Some(Body::Json(old)), Some(new)) => diff::diff(old, new, ignore),
            // A recorded output that is not JSON (kept out) cannot be compared field by field.
            _ => Vec::new(),
        };
        if !fields.is_empty() {
            out.push(DestinationDiff { index: i, system: system(i), change: "changed", fields });
        }
    }
    out.sort_by_key(|d| d.index);
    out
}

/// Counts of a replay, as the summary line says them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub unchanged: usize,
    pub changed: usize,
    pub now_rejected: usize,
    pub now_accepted: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn add(&mut self, r: &Replayed) {
        match r.status {
            Status::Unchanged => self.unchanged += 1,
            Status::Changed => self.changed += 1,
            Status::NowRejected => self.now_rejected += 1,
            Status::NowAccepted => self.now_accepted += 1,
            Status::Skipped => self.skipped += 1,
        }
    }

    /// Whether anything changed (`--fail-on-change`).
    pub fn any_change(&self) -> bool {
        self.changed + self.now_rejected + self.now_accepted > 0
    }

    /// `N unchanged, M changed, K now rejected, J now accepted`.
    pub fn line(&self) -> String {
        format!(
            "{} unchanged, {} changed, {} now rejected, {} now accepted",
            self.unchanged, self.changed, self.now_rejected, self.now_accepted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noisy_indexes_become_wildcards() {
        assert_eq!(generalise("/data/Model/FEntity/3/FTime"), "/data/Model/FEntity/*/FTime");
        assert_eq!(generalise("/ts"), "/ts");
        assert_eq!(generalise(""), "");
    }
}
