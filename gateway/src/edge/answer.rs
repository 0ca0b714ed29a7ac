//! Writing answers: the receiver's relayed answer, or a problem+json document.
//!
//! Answers are written as header + body with an exact `Content-Length`, never through
//! `respond_error` (which closes the connection): an error keeps the connection alive.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::Ctx;
use crate::error::Failure;

pub const MESSAGE_ID: &str = "x-qiao-message-id";
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
    header.insert_header("content-length", body.len().to_string())?;
    if let Some(id) = &ctx.message_id {
        header.insert_header(MESSAGE_ID, id.as_str())?;
    }
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    ctx.status = status;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(header), head_only || body.is_empty()).await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Answers with the problem+json document of `failure`.
pub async fn problem(session: &mut Session, ctx: &mut Ctx, failure: &Failure) -> Result<()> {
    ctx.error = Some(failure.kind);
    let route = ctx.route.as_ref().map(|r| r.name.to_string());
    let id = ctx.message_id.as_ref().map(|m| m.as_str().to_string());
    let instance = session.req_header().uri.path().to_string();
    let doc = failure.problem(route.as_deref(), id.as_deref(), Some(&instance));
    let body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let mut extra = Vec::new();
    if !failure.allow.is_empty() {
        extra.push(("allow", failure.allow.join(", ")));
    }
    write(session, ctx, failure.kind.status(), Some(PROBLEM_JSON), body, &extra).await
}
