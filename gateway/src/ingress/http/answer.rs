//! Writing answers: the receiver's relayed answer, or a problem+json document.
//!
//! Answers are written as header + body with an exact `Content-Length`, never through
//! `respond_error` (which closes the connection): an error keeps the connection alive.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::Ctx;
use crate::error::Failure;
use crate::headers::MESSAGE_ID;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Writes a complete answer.
pub async fn write(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: Option<&str>,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    if let Some(ct) = content_type {
        header.insert_header("content-type", ct)?;
    }
    // 204 and 304 carry no body and, per RFC 9110, no Content-Length either.
    if !matches!(status, 204 | 304) {
        header.insert_header("content-length", body.len().to_string())?;
    }
    if let Some(id) = &ctx.message_id {
        header.insert_header(MESSAGE_ID, id.as_str())?;
    }
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    if let Some(fields) = &ctx.rate_fields {
        for (name, value) in fields.iter() {
            header.insert_header(*name, value.as_str())?;
        }
    }
    if super::draining() {
        header.insert_header(http::header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    ctx.status = status;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(header), head_only || body.is_empty()).await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Reads and drops what is left of the request body, up to `limit` bytes, so that an
/// early answer (404, 405, 415, 413) can keep the connection: pingora closes a connection
/// whose request body was not read to the end. Past the limit, or past `deadline` (the
/// body's time, `server.body_timeout_ms`), it gives up and the connection closes after the
/// answer — cheaper than draining a huge or slow upload.
pub async fn discard_body(session: &mut Session, limit: u64, deadline: std::time::Instant) {
    let declared: Option<u64> =
        session.req_header().headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > limit) {
        session.set_keepalive(None);
        return;
    }
    let mut seen = 0u64;
    loop {
        if !super::conn::arm_body_read(session, deadline) {
            session.set_keepalive(None);
            return;
        }
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                seen += chunk.len() as u64;
                if seen > limit {
                    session.set_keepalive(None);
                    return;
                }
            }
            Ok(None) => return,
            Err(_) => {
                session.set_keepalive(None);
                return;
            }
        }
    }
}

/// Answers with the problem+json document of `failure`.
pub async fn problem(session: &mut Session, ctx: &mut Ctx, failure: &Failure) -> Result<()> {
    ctx.error = Some(failure.kind);
    ctx.error_detail = Some(failure.detail.clone());
    let route = ctx.route.as_ref().map(|r| r.name.to_string());
    let id = ctx.message_id.as_ref().map(|m| m.as_str().to_string());
    let instance = session.req_header().uri.path().to_string();
    let doc = failure.problem(route.as_deref(), id.as_deref(), Some(&instance));
    let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let mut extra = Vec::new();
    if !failure.allow.is_empty() {
        extra.push(("allow", failure.allow.join(", ")));
    }
    if let Some(challenge) = &failure.www_authenticate {
        extra.push(("www-authenticate", challenge.clone()));
    }
    if let Some(wait) = failure.retry_after {
        extra.push(("retry-after", crate::error::whole_seconds(wait).to_string()));
    }
    write(session, ctx, failure.kind.status(), Some(PROBLEM_JSON), body, &extra).await
}
