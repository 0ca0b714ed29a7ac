//! Making a record: from the driver's [`Run`] (what every phase did) and what the ingress
//! knows (how the message came in and how it ended), redacted on the way.
//!
//! Built only for a message the journal keeps (its route journals and it was sampled) or
//! while someone taps: the cost of a message nobody records is one check.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qiao_connectors::Message;
use serde_json::Value;

use super::record::{self, Attempt, Body, Outcome, Output, RawJson, Record, Request, Source, Validation, Verdict};
use super::redact::Scrub;
use crate::config::Route;
use crate::error::{ErrorKind, Failure};
use crate::pipeline::{Outbound, Run};

/// What the ingress adds once the message has ended.
#[derive(Debug)]
pub struct End<'a> {
    /// How the message came in; `None` keeps what [`Pending::with_source`] set.
    pub source: Option<Source>,
    /// The headers as received, names lowercased.
    pub headers: Vec<(String, String)>,
    pub trace_id: String,
    pub config: &'a str,
    /// The answer's status (HTTP).
    pub status: Option<u16>,
    /// What the AMQP consumer did with the message.
    pub fate: Option<&'a str>,
    /// What went wrong, as the ingress saw it, already redacted (kind, detail).
    pub failure: Option<(&'a str, &'a str)>,
    pub elapsed: Duration,
    /// The authenticated client's name (HTTP routes with `auth:`).
    pub client: Option<&'a str>,
}

/// A record being made: everything the run told, the ingress's part still to come.
#[derive(Debug)]
pub struct Pending {
    record: Record,
    /// The PII values found in the received body, to replace in headers and details.
    found: Vec<String>,
    /// Whether the run got as far as an outcome of its own.
    ran: bool,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn validation_of(f: &Failure) -> Validation {
    Validation {
        ok: false,
        kind: Some(f.kind.slug().to_string()),
        detail: Some(f.detail.clone()),
        violations: f
            .violations
            .iter()
            .map(|v| record::Violation {
                pointer: v.pointer.clone(),
                keyword: v.keyword.clone(),
                message: v.message.clone(),
            })
            .collect(),
    }
}

/// A body as kept: JSON with PII as tokens (as the bytes it came in when the route has no
/// PII: they parsed); text when it is not JSON (unless the route has PII rules, which
/// cannot be applied to what did not parse).
fn body_of(bytes: &Bytes, parsed: Option<&Arc<Value>>, route: &Route, scrub: &mut Scrub<'_>) -> Body {
    if let Some(v) = parsed {
        if route.redactor.is_empty() {
            return Body::Raw(RawJson::new(bytes));
        }
        return Body::Json(scrub.input(v, &route.redactor));
    }
    if !route.redactor.is_empty() {
        return Body::Omitted("the body is not JSON and the route has PII fields, which cannot be found in it".into());
    }
    match std::str::from_utf8(bytes) {
        Ok(t) => Body::Text(t.to_string()),
        Err(_) => Body::Omitted("not UTF-8".into()),
    }
}

/// A receiver's answer as kept: its bytes when they are JSON with nothing to replace.
fn derived_of(bytes: &Bytes, scrub: &Scrub<'_>, rules: Option<&crate::redact::Redactor>) -> Body {
    if scrub.leaves_alone(rules)
        && let Some(raw) = RawJson::checked(bytes)
    {
        return Body::Raw(raw);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Body::Json(Arc::new(scrub.derived(&v, rules))),
        Err(_) => match std::str::from_utf8(bytes) {
            Ok(t) => Body::Text(scrub.text(t)),
            Err(_) => Body::Omitted("not UTF-8".into()),
        },
    }
}

fn request_of(route: &Route, index: usize, out: &Outbound, scrub: &Scrub<'_>) -> Request {
    let dest = &route.destinations[index];
    match out {
        Outbound::Http(r) => {
            let url = dest.system.http.as_ref().map(|h| h.url_for(&r.path)).unwrap_or_else(|| r.path.clone());
            Request::Http {
                method: r.method.to_string(),
                url: scrub.text(&url),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), scrub.header(k.as_str(), v.to_str().unwrap_or("(binary)"))))
                    .collect(),
            }
        }
        Outbound::Amqp { exchange, routing_key, headers, .. } => Request::Amqp {
            exchange: exchange
                .clone()
                .or_else(|| dest.system.amqp.as_ref().map(|a| a.exchange.clone()))
                .unwrap_or_default(),
            routing_key: scrub.text(routing_key),
            headers: headers.iter().map(|(k, v)| (k.clone(), scrub.header(k, v))).collect(),
        },
    }
}

impl Pending {
    /// From a run of the driver.
    pub fn from_run(route: &Route, message: &Message, run: &Run, scrub: &mut Scrub<'_>) -> Box<Pending> {
        let keep = route.journal;
        let parsed = run.parsed.as_ref();
        // Always scanned, so that a route that keeps no bodies still finds the PII values
        // its headers and details may repeat.
        let body = body_of(&message.body, parsed, route, scrub);
        let validation = match &run.refused {
            Some(f) if parsed.is_none() || f.kind == ErrorKind::SchemaViolation => validation_of(f),
            _ => Validation { ok: true, ..Validation::default() },
        };
        let chosen: Vec<usize> = run.chosen.iter().enumerate().filter(|(_, c)| **c).map(|(i, _)| i).collect();
        let outputs = run
            .outgoing
            .iter()
            .enumerate()
            .filter_map(|(index, o)| {
                let o = o.as_ref()?;
                let dest = &route.destinations[index];
                let body = if keep.bodies && scrub.leaves_alone(Some(&dest.redactor)) {
                    Body::Raw(RawJson::new(&o.bytes))
                } else if keep.bodies {
                    Body::Json(Arc::new(scrub.derived(&o.value, Some(&dest.redactor))))
                } else {
                    Body::Omitted("bodies: false".into())
                };
                Some(Output { index, system: dest.system.name.clone(), body })
            })
            .collect();
        let attempts = run
            .attempts
            .iter()
            .map(|a| {
                let dest = &route.destinations[a.index];
                let (status, tries, failure, reply) = match &a.result {
                    Ok(d) => (
                        d.reply.as_ref().map(|r| r.status.as_u16()),
                        d.reply.as_ref().map_or(1, |r| r.attempts),
                        d.failure.as_ref(),
                        d.reply.as_ref(),
                    ),
                    Err(f) => (f.receiver_status, f.attempts.unwrap_or(1), Some(f), None),
                };
                let answer = match reply {
                    Some(r) if keep.answers => Some(derived_of(&r.body, scrub, Some(&dest.redactor))),
                    Some(_) => Some(Body::Omitted("answers: false".into())),
                    None => None,
                };
                Attempt {
                    index: a.index,
                    system: dest.system.name.clone(),
                    request: request_of(route, a.index, &a.request, scrub),
                    status,
                    latency_ms: a.latency.as_micros() as f64 / 1000.0,
                    tries,
                    error_kind: failure.map(|f| f.kind.slug().to_string()),
                    error: failure.map(|f| scrub.text(&f.detail)),
                    answer,
                }
            })
            .collect::<Vec<_>>();
        let failed = attempts.iter().filter(|a| a.error_kind.is_some()).count();
        let first_failure = run.refused.as_ref().or_else(|| run.failures().next().map(|(_, f)| f));
        let result = if run.refused.is_some() {
            Verdict::Rejected
        } else if failed == 0 {
            Verdict::Delivered
        } else if failed == attempts.len() {
            Verdict::Failed
        } else {
            Verdict::Partial
        };
        let outcome = Outcome {
            result,
            kind: first_failure.map(|f| f.kind.slug().to_string()),
            detail: first_failure.map(|f| scrub.text(&f.detail)),
            status: None,
            fate: None,
        };
        let record = Record {
            v: record::VERSION,
            id: message.id.to_string(),
            trace_id: String::new(),
            route: route.name.to_string(),
            config: String::new(),
            received_at: rfc3339(message.received_at),
            duration_ms: 0.0,
            source: Source::Amqp { queue: String::new(), attempt: 1 },
            client: None,
            replay_of: None,
            headers: Vec::new(),
            body: Some(if keep.bodies { body } else { Body::Omitted("bodies: false".into()) }),
            validation,
            chosen,
            outputs,
            attempts,
            outcome,
        };
        Box::new(Pending { record, found: scrub.found().to_vec(), ran: true })
    }

    /// Sets how the message came in, where the ingress knows more than at its end.
    pub fn with_source(mut self: Box<Pending>, source: Source) -> Box<Pending> {
        self.record.source = source;
        self
    }

    /// A message refused before the driver ran (too large, not JSON by its type, rate
    /// limited): no body was read, or none is kept.
    pub fn refused_early(route: &Route, id: &str, received_at: std::time::SystemTime) -> Box<Pending> {
        let record = Record {
            v: record::VERSION,
            id: id.to_string(),
            trace_id: String::new(),
            route: route.name.to_string(),
            config: String::new(),
            received_at: rfc3339(received_at),
            duration_ms: 0.0,
            source: Source::Amqp { queue: String::new(), attempt: 1 },
            client: None,
            replay_of: None,
            headers: Vec::new(),
            body: Some(Body::Omitted("refused before the body was read".into())),
            validation: Validation { ok: false, ..Validation::default() },
            chosen: Vec::new(),
            outputs: Vec::new(),
            attempts: Vec::new(),
            outcome: Outcome { result: Verdict::Rejected, kind: None, detail: None, status: None, fate: None },
        };
        Box::new(Pending { record, found: Vec::new(), ran: false })
    }

    /// The record, with what the ingress knows of the message's end.
    pub fn finish(self: Box<Pending>, end: End<'_>, scrub: &mut Scrub<'_>) -> Record {
        let Pending { mut record, found, ran } = *self;
        scrub.remember(found);
        if let Some(source) = end.source {
            record.source = source;
        }
        record.headers = end.headers.iter().map(|(k, v)| (k.clone(), scrub.header(k, v))).collect();
        record.trace_id = end.trace_id;
        record.client = end.client.map(str::to_string);
        record.config = end.config.to_string();
        record.duration_ms = end.elapsed.as_micros() as f64 / 1000.0;
        record.outcome.status = end.status;
        record.outcome.fate = end.fate.map(str::to_string);
        if !ran {
            // Only the ingress knows why: the sender's fault (4xx) or not.
            if let Some((kind, detail)) = end.failure {
                record.validation.kind = Some(kind.to_string());
                record.validation.detail = Some(scrub.text(detail));
                record.outcome.kind = Some(kind.to_string());
                record.outcome.detail = Some(scrub.text(detail));
            }
            if end.status.is_some_and(|s| s >= 500) {
                record.outcome.result = Verdict::Failed;
            }
        } else if record.outcome.kind.is_none()
            && let Some((kind, detail)) = end.failure
        {
            // The run went well but the answer did not (a relay that failed).
            record.outcome.kind = Some(kind.to_string());
            record.outcome.detail = Some(scrub.text(detail));
        }
        record
    }
}
