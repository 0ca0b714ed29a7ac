//! Message routes: read the whole body, run the pipeline, deliver, answer.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;
use qiao_connectors::{Message, MessageId, TraceContext};
use serde_json::{Value, json};

use super::{Ctx, answer};
use crate::config::{Route, Via};
use crate::error::{ErrorKind, Failure};
use crate::pipeline::{self, Delivered, Inbound, Live, Run};
use crate::runtime::Runtime;

/// The message id: the sender's `Idempotency-Key` when it sent a usable one, so that a
/// retried request keeps its identity end to end; a fresh UUIDv7 otherwise.
pub fn message_id(session: &Session) -> MessageId {
    session
        .req_header()
        .headers
        .get(crate::headers::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(MessageId::from_sender)
        .unwrap_or_else(MessageId::generate)
}

enum BodyError {
    TooLarge,
    Late,
    Read(Box<Error>),
}

/// Reads the whole request body, refusing more than `limit` bytes and a body not complete
/// by `deadline`.
async fn read_body(
    session: &mut Session,
    limit: u64,
    deadline: std::time::Instant,
) -> std::result::Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total: u64 = 0;
    loop {
        if !super::conn::arm_body_read(session, deadline) {
            return Err(BodyError::Late);
        }
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) if e.etype() == &ErrorType::ReadTimedout => return Err(BodyError::Late),
            Err(e) => return Err(BodyError::Read(e)),
        };
        total += chunk.len() as u64;
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        // Most bodies arrive in one chunk: keep it without copying.
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity((total as usize).max(f.len() * 2));
                buf.extend_from_slice(f);
                buf.extend_from_slice(&chunk);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

pub async fn handle(
    session: &mut Session,
    ctx: &mut Ctx,
    runtime: &Runtime,
    route: &Route,
    params: &[(String, String)],
) -> Result<()> {
    let header = session.req_header();
    let content_type = header.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !pipeline::is_json_content_type(content_type) {
        let detail = if content_type.is_empty() {
            "Content-Type is missing; send the body as application/json".to_string()
        } else {
            format!("Content-Type `{content_type}` is not JSON; send the body as application/json")
        };
        answer::discard_body(session, route.max_body_bytes, ctx.body_deadline).await;
        return answer::problem(session, ctx, &Failure::new(ErrorKind::UnsupportedMediaType, detail)).await;
    }
    let declared: Option<u64> =
        header.headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let too_large = |size: Option<u64>| {
        let detail = match size {
            Some(s) => format!("the body has {s} bytes; this route accepts at most {}", route.max_body_bytes),
            None => format!("the body exceeds the {} bytes this route accepts", route.max_body_bytes),
        };
        Failure::new(ErrorKind::PayloadTooLarge, detail).with_max_body_bytes(route.max_body_bytes)
    };
    if let Some(size) = declared.filter(|s| *s > route.max_body_bytes) {
        // Draining a body much larger than the limit costs more than a new connection.
        answer::discard_body(session, route.max_body_bytes.saturating_mul(2), ctx.body_deadline).await;
        return answer::problem(session, ctx, &too_large(Some(size))).await;
    }
    let body = match read_body(session, route.max_body_bytes, ctx.body_deadline).await {
        Ok(b) => crate::json::strip_bom(b),
        Err(BodyError::TooLarge) => {
            session.set_keepalive(None);
            return answer::problem(session, ctx, &too_large(declared)).await;
        }
        Err(BodyError::Late) => {
            session.set_keepalive(None);
            let f = super::body_timeout(ctx);
            return answer::problem(session, ctx, &f).await;
        }
        Err(BodyError::Read(e)) => {
            let f = Failure::new(ErrorKind::BadRequest, format!("the request body could not be read: {e}"));
            session.set_keepalive(None);
            return answer::problem(session, ctx, &f).await;
        }
    };

    let header = session.req_header();
    if tracing::enabled!(tracing::Level::DEBUG) {
        let shown: Vec<String> = header
            .headers
            .iter()
            .map(|(k, v)| {
                let v =
                    if crate::redact::header_is_secret(k.as_str()) { "***" } else { v.to_str().unwrap_or("(binary)") };
                format!("{k}: {v}")
            })
            .collect();
        tracing::debug!(headers = ?shown, body_bytes = body.len(), "request received");
    }
    let message = Message {
        id: ctx.message_id.clone().unwrap_or_else(MessageId::generate),
        headers: if route.uses.headers { lowercase_headers(&header.headers) } else { Vec::new() },
        body,
        trace: TraceContext {
            traceparent: header.headers.get("traceparent").and_then(|v| v.to_str().ok()).map(String::from),
            tracestate: header.headers.get("tracestate").and_then(|v| v.to_str().ok()).map(String::from),
        },
        received_at: SystemTime::now(),
    };

    let trace = ctx.otel.clone();
    let inbound = Inbound { message: &message, params, done: &[], pii_tokens: false };
    let run = pipeline::drive(route, inbound, &Live { runtime, turn: pipeline::Turn::Bounded }, &trace).await;
    if let Some(disk) = crate::journal::wants(route)
        && let Some(mut scrub) = crate::journal::scrub()
    {
        let req = session.req_header();
        let source = crate::journal::record::Source::Http {
            method: req.method.to_string(),
            path: req.uri.path_and_query().map_or_else(|| req.uri.path().to_string(), |p| p.to_string()),
            params: params.to_vec(),
        };
        ctx.journal =
            Some((crate::journal::Pending::from_run(route, &message, &run, &mut scrub).with_source(source), disk));
    }
    match outcome(route, run) {
        Ok(Outcome::Relay(d)) => {
            if let Some(f) = &d.failure {
                ctx.error = Some(f.kind);
                ctx.error_detail = Some(f.detail.clone());
                tracing::warn!(route = %route.name, message_id = %message.id, error_kind = %f.kind, "{}", f.detail);
            }
            let Some(reply) = d.reply else {
                // Only an HTTP destination is relayed; an AMQP-only route answers 202.
                let f = Failure::new(ErrorKind::Internal, "no answer to relay");
                return answer::problem(session, ctx, &f).await;
            };
            let ct = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            answer::write(session, ctx, reply.status.as_u16(), ct.as_deref(), reply.body, &[]).await
        }
        Ok(Outcome::Accepted) => {
            let body = accepted(message.id.as_str(), &route.name);
            answer::write(session, ctx, 202, Some("application/json"), body, &[]).await
        }
        Ok(Outcome::FanOut(results)) => fan_out_answer(session, ctx, &message, results).await,
        Err(f) => {
            if f.kind.status() >= 500 {
                tracing::warn!(route = %route.name, message_id = %message.id, error_kind = %f.kind, "{}", f.detail);
            }
            answer::problem(session, ctx, &f).await
        }
    }
}

/// The 202 body of a message the broker holds, `{"message_id":…,"route":…,"status":"accepted"}`,
/// written straight to bytes: building it as a `Value` first cost every publish a small tree.
fn accepted(message_id: &str, route: &str) -> Bytes {
    let mut out = Vec::with_capacity(64 + message_id.len() + route.len());
    out.extend_from_slice(b"{\"message_id\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, message_id);
    out.extend_from_slice(b",\"route\":");
    let _ = serde_json::to_writer(&mut out, route);
    out.extend_from_slice(b",\"status\":\"accepted\"}");
    Bytes::from(out)
}

fn lowercase_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect()
}

enum Outcome {
    /// One HTTP destination: its answer goes back to the sender as it is.
    Relay(Box<Delivered>),
    /// Only AMQP destinations, and the broker confirmed every publish.
    Accepted,
    /// Several destinations: each one's result.
    FanOut(Vec<(String, std::result::Result<Delivered, Failure>)>),
}

/// What the sender is told, from every phase's outcome.
fn outcome(route: &Route, run: Run) -> std::result::Result<Outcome, Failure> {
    if let Some(f) = run.refused {
        return Err(f);
    }
    let mut attempts = run.attempts;
    if attempts.iter().all(|a| matches!(route.destinations[a.index].via, Via::Amqp { .. })) {
        // 202 only for what the broker holds: any publish that is not confirmed fails the request.
        for a in attempts {
            a.result?;
        }
        return Ok(Outcome::Accepted);
    }
    if attempts.len() == 1 {
        let only = attempts.pop().expect("one attempt");
        return only.result.map(|d| Outcome::Relay(Box::new(d)));
    }
    // Destinations were delivered to at once, so the answer waited for the slowest
    // receiver, not for the sum of them.
    let results = attempts.into_iter().map(|a| (route.destinations[a.index].system.name.clone(), a.result)).collect();
    Ok(Outcome::FanOut(results))
}

/// Several destinations: 200 with each receiver's answer when all took the message;
/// otherwise a problem (the first failure's kind) that lists every destination, so the
/// sender can retry with the same `Idempotency-Key` and receivers deduplicate.
async fn fan_out_answer(
    session: &mut Session,
    ctx: &mut Ctx,
    message: &Message,
    results: Vec<(String, std::result::Result<Delivered, Failure>)>,
) -> Result<()> {
    let mut first_failure: Option<Failure> = None;
    let mut deliveries = Vec::with_capacity(results.len());
    for (system, result) in results {
        match result {
            Ok(d) => {
                let ok = d.failure.is_none();
                deliveries.push(match &d.reply {
                    Some(reply) => {
                        let body: Value = serde_json::from_slice(&reply.body)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.body).into_owned()));
                        json!({"system": system, "ok": ok, "status": reply.status.as_u16(), "body": body})
                    }
                    None => json!({"system": system, "ok": ok, "published": true}),
                });
                if let (None, Some(f)) = (&first_failure, d.failure) {
                    first_failure = Some(f);
                }
            }
            Err(f) => {
                deliveries
                    .push(json!({"system": system, "ok": false, "error_kind": f.kind.slug(), "detail": f.detail}));
                if first_failure.is_none() {
                    first_failure = Some(f);
                }
            }
        }
    }
    match first_failure {
        None => {
            let doc = json!({"message_id": message.id.as_str(), "deliveries": deliveries});
            let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            answer::write(session, ctx, 200, Some("application/json"), body, &[]).await
        }
        Some(f) => {
            let failed = deliveries.iter().filter(|d| d["ok"] == false).count();
            let detail = format!("{failed} of {} deliveries failed; the first: {}", deliveries.len(), f.detail);
            let mut f = f;
            f.detail = detail;
            f.deliveries = Some(deliveries);
            answer::problem(session, ctx, &f).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_body_is_what_serde_json_writes_for_the_document() {
        for (id, route) in [
            ("0193a5c2-7b1e-7c3d-9f00-1a2b3c4d5e6f", "crm-to-erp"),
            ("say \"hi\" \\ back", "审批-to-erp"),
            ("tab\there\u{1}", "r"),
            ("", ""),
        ] {
            let doc = json!({"message_id": id, "route": route, "status": "accepted"});
            assert_eq!(accepted(id, route), serde_json::to_vec(&doc).unwrap(), "{id:?} {route:?}");
        }
    }
}
