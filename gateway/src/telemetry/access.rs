//! The end of one message, whatever way it came in: its metrics, the end of its span and its
//! access line (target `qiao::access`), written here and nowhere else. The fields the two
//! ingresses share have the same names; each adds what is its own.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;

use super::{metrics, trace};
use crate::error::Failure;

/// How the message came in, and what only that way in knows of its end.
pub enum Way<'a> {
    Http {
        method: &'a str,
        path: &'a str,
        /// The answer's status (0: none was written).
        status: u16,
        /// Formatted only when the line is written: an address formatted for every request
        /// cost 2% of a proxied request's instructions with the access line off.
        client: Option<&'a dyn std::fmt::Display>,
        /// The authenticated client's name (routes with `auth:`); `client` is its address.
        client_name: Option<&'a str>,
        /// The connection failed under the request (pingora's error), if it did.
        transport_error: Option<&'a dyn std::fmt::Display>,
    },
    Amqp {
        queue: &'a str,
        /// `delivered`, `retried`, `dead_lettered` or `requeued`.
        fate: &'a str,
        attempt: u32,
    },
}

/// One finished message.
pub struct Finished<'a> {
    pub way: Way<'a>,
    /// `-` before a route was found.
    pub route: &'a str,
    pub message_id: &'a str,
    /// What went wrong (its kind and detail, already redacted), for the line and the
    /// metrics.
    pub failure: Option<(&'a str, &'a str)>,
    /// The error status of the message's span: set for a 5xx, a broken connection, a
    /// message not delivered; not for the sender's own mistakes.
    pub span_error: Option<(&'a str, &'a str)>,
    pub elapsed: Duration,
}

/// A failure's kind and detail.
pub fn failure_of(f: Option<&Failure>) -> Option<(&str, &str)> {
    f.map(|f| (f.kind.slug(), f.detail.as_str()))
}

/// Counts the message, ends its span `cx` and writes its access line in `log_span`.
pub fn finish(f: Finished<'_>, cx: &opentelemetry::Context, log_span: &tracing::Span) {
    let m = metrics::get();
    let (error_kind, detail) = f.failure.unwrap_or(("-", "-"));
    if f.failure.is_some() {
        m.errors.with_label_values(&[f.route, error_kind]).inc();
    }
    let span = cx.span();
    match &f.way {
        Way::Http { status, .. } => {
            let code = http::StatusCode::from_u16(*status).ok();
            m.requests.with_label_values(&[f.route, code.as_ref().map_or("0", http::StatusCode::as_str)]).inc();
            m.request_seconds.with_label_values(&[f.route]).observe(f.elapsed.as_secs_f64());
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(*status)));
        }
        Way::Amqp { fate, .. } => {
            m.amqp_messages.with_label_values(&[f.route, fate]).inc();
            m.phase_seconds.with_label_values(&[f.route, "process"]).observe(f.elapsed.as_secs_f64());
            span.set_attribute(KeyValue::new("qiao.fate", fate.to_string()));
        }
    }
    trace::end(cx, f.span_error);

    let duration_ms = f.elapsed.as_micros() as f64 / 1000.0;
    let _in_message = log_span.enter();
    match f.way {
        Way::Http { method, path, status, client, client_name, transport_error } => tracing::info!(
            target: "qiao::access",
            transport = "http",
            method,
            path,
            route = f.route,
            status,
            error_kind,
            detail,
            message_id = f.message_id,
            duration_ms,
            client = client.map(tracing::field::display),
            client_name,
            transport_error = transport_error.map(tracing::field::display),
            "request"
        ),
        Way::Amqp { queue, fate, attempt } => tracing::info!(
            target: "qiao::access",
            transport = "amqp",
            queue,
            fate,
            attempt,
            error_kind,
            detail,
            duration_ms,
            "message"
        ),
    }
}

/// A connection the edge refused before pingora handed a request to Qiao (a header too
/// slow or too large, a request pingora could not parse): counted and logged like a
/// request, with no route, no message id and no span.
pub fn refused_connection(failure: &Failure, client: &str) {
    let m = metrics::get();
    let status = failure.kind.status();
    m.errors.with_label_values(&["-", failure.kind.slug()]).inc();
    m.requests.with_label_values(&["-", &status.to_string()]).inc();
    tracing::info!(
        target: "qiao::access",
        transport = "http",
        method = "-",
        path = "-",
        route = "-",
        status,
        error_kind = failure.kind.slug(),
        detail = failure.detail.as_str(),
        message_id = "-",
        client,
        "request refused before it was read"
    );
}
