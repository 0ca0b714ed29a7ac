//! `GET /admin/tap?route=R[&sample=S]`: a route's live records as chunked NDJSON, one
//! redacted journal record per line (docs/journal.md, "Tap").
//!
//! Besides records, the stream carries lines with a `tap` field (a record never has one):
//! `{"tap":"open",...}` first, `{"tap":"lost","records":N,...}` when this reader fell behind
//! the journal's broadcast, `{"tap":"alive"}` after a quiet while (so that a reader that went
//! away is noticed: its tap would keep every message's record being built), and
//! `{"tap":"end","reason":...}` last.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{Admin, problem};

/// A quiet stream says it is alive this often.
const ALIVE_EVERY: Duration = Duration::from_secs(10);
/// A reader that takes no bytes for this long is dropped: its tap is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the loop looks whether the process drains.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// What the query asks for.
#[derive(Debug)]
struct Ask {
    route: String,
    sample: f64,
}

fn parse_query(query: Option<&str>) -> Result<Ask, String> {
    let mut route = None;
    let mut sample = 1.0;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "route" => route = Some(v.into_owned()),
            "sample" => {
                sample = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=1.0).contains(s))
                    .ok_or_else(|| format!("sample must be a number from 0.0 to 1.0, not `{v}`"))?;
            }
            other => return Err(format!("unknown parameter `{other}`: the tap takes route and sample")),
        }
    }
    let route = route.filter(|r| !r.is_empty()).ok_or("which route? GET /admin/tap?route=NAME[&sample=0.1]")?;
    Ok(Ask { route, sample })
}

/// Answers a refused tap with a whole problem document.
async fn refuse(http: &mut ServerSession, response: http::Response<Vec<u8>>) {
    let (parts, body) = response.into_parts();
    let header: ResponseHeader = parts.into();
    if http.write_response_header(Box::new(header)).await.is_ok() {
        let _ = http.write_response_body(Bytes::from(body), true).await;
    }
}

/// Serves one tap until the reader leaves, the journal stops or the process drains. The
/// connection is not reused afterwards.
pub async fn serve(admin: &Admin, mut http: ServerSession, shutdown: &ShutdownWatch) {
    http.set_keepalive(None);
    if http.req_header().method != http::Method::GET {
        let detail = "GET /admin/tap?route=NAME follows a route's messages".to_string();
        return refuse(&mut http, problem(405, "method-not-allowed", "Method not allowed", detail)).await;
    }
    if admin.token.is_none() {
        // The tap shows message content (redacted, but still content): never without a token.
        let detail = "the tap shows message content; it is served only when QIAO_ADMIN_TOKEN is set".to_string();
        return refuse(&mut http, problem(403, "tap-disabled", "The tap needs an admin token", detail)).await;
    }
    if !admin.authorized(&http) {
        let detail = "send `Authorization: Bearer <QIAO_ADMIN_TOKEN>`".to_string();
        return refuse(&mut http, problem(401, "unauthorized", "The admin token is missing or wrong", detail)).await;
    }
    let ask = match parse_query(http.req_header().uri.query()) {
        Ok(a) => a,
        Err(detail) => return refuse(&mut http, problem(400, "bad-request", "Bad tap request", detail)).await,
    };
    if admin.runtime.load().config.route(&ask.route).is_none() {
        let detail = format!("no route named `{}` in the configuration being served", ask.route);
        return refuse(&mut http, problem(404, "unknown-route", "No such route", detail)).await;
    }
    let Some(journal) = crate::journal::get() else {
        let detail = "the journal is not running in this process".to_string();
        return refuse(&mut http, problem(503, "tap-unavailable", "The tap is not available", detail)).await;
    };
    let (mut records, _guard) = journal.subscribe();

    let mut header = ResponseHeader::build(200, Some(4)).expect("static response parts are valid");
    let _ = header.insert_header("content-type", "application/x-ndjson");
    let _ = header.insert_header("cache-control", "no-store");
    let _ = header.insert_header("transfer-encoding", "chunked");
    // Proxies in front of the admin listener should pass lines on as they come.
    let _ = header.insert_header("x-accel-buffering", "no");
    if http.write_response_header(Box::new(header)).await.is_err() {
        return;
    }
    http.set_write_timeout(Some(WRITE_TIMEOUT));
    let open = json!({"tap": "open", "route": ask.route, "sample": ask.sample});
    if write_line(&mut http, open.to_string()).await.is_err() {
        return;
    }
    tracing::info!(route = %ask.route, sample = ask.sample, "tap: a reader follows the route");

    let mut lost = 0u64;
    let mut last_write = Instant::now();
    let mut check = tokio::time::interval(CHECK_EVERY);
    let reason = loop {
        let line = tokio::select! {
            got = records.recv() => match got {
                Ok(t) if t.route == ask.route && sampled(ask.sample) => t.line.clone(),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    lost += n;
                    json!({"tap": "lost", "records": n, "lost_total": lost,
                           "detail": "this reader fell behind; records of all routes were skipped, traffic was not slowed"})
                    .to_string()
                }
                Err(RecvError::Closed) => break "the journal stopped",
            },
            _ = check.tick() => {
                if crate::ingress::http::draining() || *shutdown.borrow() {
                    break "the gateway is stopping";
                }
                if last_write.elapsed() < ALIVE_EVERY {
                    continue;
                }
                json!({"tap": "alive"}).to_string()
            }
        };
        if write_line(&mut http, line).await.is_err() {
            tracing::info!(route = %ask.route, lost, "tap: the reader left");
            return;
        }
        last_write = Instant::now();
    };
    let end = json!({"tap": "end", "reason": reason, "lost_total": lost});
    if write_line(&mut http, end.to_string()).await.is_ok() {
        let _ = http.finish_body().await;
    }
    tracing::info!(route = %ask.route, lost, reason, "tap: ended");
}

fn sampled(ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

async fn write_line(http: &mut ServerSession, mut line: String) -> pingora::Result<()> {
    line.push('\n');
    http.write_response_body(Bytes::from(line), false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_a_route_and_maybe_a_share() {
        let a = parse_query(Some("route=crm-order-to-erp&sample=0.25")).unwrap();
        assert_eq!((a.route.as_str(), a.sample), ("crm-order-to-erp", 0.25));
        assert_eq!(parse_query(Some("route=a%20b")).unwrap().route, "a b");
        assert!(parse_query(None).unwrap_err().contains("which route"));
        assert!(parse_query(Some("route=r&sample=2")).unwrap_err().contains("0.0 to 1.0"));
        assert!(parse_query(Some("route=r&sample=x")).is_err());
        assert!(parse_query(Some("route=r&limit=3")).unwrap_err().contains("unknown parameter"));
    }
}
