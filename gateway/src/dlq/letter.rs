//! One dead letter as read from a dead-letter queue: why it failed (the `x-qiao-*` headers
//! the AMQP ingress wrote), and the copy a re-drive publishes.

use qiao_connectors::amqp::{AMQPValue, BasicProperties, Delivery, FieldTable, FieldTableExt, header_str};

use crate::headers::{
    ATTEMPTS, ERROR_DETAIL, ERROR_KIND, ERROR_POINTERS, FAILED_AT, LAST_ERROR, LAST_ERROR_KIND, ORIGINAL_QUEUE,
    ORIGINAL_ROUTING_KEY, REDRIVEN_AT, REDRIVEN_FROM,
};

/// What `ls` and `show` tell of a dead letter.
#[derive(Clone, Debug, PartialEq)]
pub struct Letter {
    /// `message_id`; `-` when the message has none.
    pub id: String,
    pub failed_at: Option<String>,
    pub kind: Option<String>,
    pub detail: Option<String>,
    pub attempts: Option<String>,
    pub routing_key: Option<String>,
    pub trace_id: Option<String>,
    /// Set when someone read the message before without taking it (a browse by `qiao dlq`,
    /// a requeue).
    pub redelivered: bool,
}

impl Letter {
    pub fn of(delivery: &Delivery) -> Letter {
        let h = delivery.properties.headers().as_ref();
        let get = |name: &str| header_str(h, name).filter(|s| !s.is_empty());
        Letter {
            id: message_id(delivery).unwrap_or_else(|| "-".into()),
            failed_at: get(FAILED_AT),
            kind: get(ERROR_KIND),
            detail: get(ERROR_DETAIL),
            attempts: get(ATTEMPTS),
            routing_key: get(ORIGINAL_ROUTING_KEY),
            trace_id: get("traceparent")
                .and_then(|t| crate::telemetry::w3c::parse_traceparent(&t))
                .map(|p| p.trace_id.to_string()),
            redelivered: delivery.redelivered,
        }
    }
}

pub fn message_id(delivery: &Delivery) -> Option<String> {
    delivery.properties.message_id().as_ref().map(|s| s.as_str().to_string())
}

/// Headers that say why a message failed, or are RabbitMQ's record of earlier dead
/// lettering: a re-driven message starts over without them, so it gets every attempt of
/// the route again and is not mistaken for a dead letter.
fn is_failure_header(name: &str) -> bool {
    [ATTEMPTS, ERROR_KIND, ERROR_DETAIL, ERROR_POINTERS, FAILED_AT, ORIGINAL_QUEUE, LAST_ERROR_KIND, LAST_ERROR]
        .contains(&name)
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// The properties of the copy a re-drive publishes into the route's queue: the dead
/// letter's own (message id, content type, `traceparent`, `x-qiao-delivered` and
/// `x-qiao-route`, so destinations that took the message before are skipped), persistent,
/// without expiration, without the failure headers, with `x-qiao-redriven-at` and
/// `x-qiao-redriven-from`.
pub fn redrive_properties(p: &BasicProperties, dead_letter_queue: &str, now: &str) -> BasicProperties {
    let kept: std::collections::BTreeMap<_, AMQPValue> = p
        .headers()
        .as_ref()
        .map(|h| h.inner().iter().filter(|(k, _)| !is_failure_header(k.as_str())).map(|(k, v)| (k.clone(), v.clone())))
        .into_iter()
        .flatten()
        .collect();
    let mut headers = FieldTable::from(kept);
    headers.put_str(REDRIVEN_AT, now);
    headers.put_str(REDRIVEN_FROM, dead_letter_queue);
    crate::ingress::amqp::strip_expiration(p.clone()).with_delivery_mode(2).with_headers(headers)
}

/// The headers `show` prints: every one that reads as text, in name order.
pub fn header_lines(p: &BasicProperties) -> Vec<(String, String)> {
    let h = p.headers().as_ref();
    let mut out: Vec<(String, String)> = h
        .map(|t| {
            t.inner()
                .keys()
                .map(|k| {
                    let v = header_str(h, k.as_str()).unwrap_or_else(|| "(a table or list)".to_string());
                    (k.as_str().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{DELIVERED, ROUTE};

    #[test]
    fn a_redriven_copy_starts_over_but_keeps_its_id_trace_and_progress() {
        let mut h = FieldTable::default();
        for (k, v) in [
            (ATTEMPTS, "3"),
            (ERROR_KIND, "receiver-failed"),
            (ERROR_DETAIL, "erp answered 503"),
            (FAILED_AT, "2026-01-01T00:00:00.000Z"),
            (ORIGINAL_QUEUE, "q"),
            (LAST_ERROR, "x"),
            (LAST_ERROR_KIND, "receiver-failed"),
            ("x-first-death-queue", "q.retry.1"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            (DELIVERED, "wms"),
            (ROUTE, "fan-out"),
            (ORIGINAL_ROUTING_KEY, "mes.x"),
        ] {
            h.put_str(k, v);
        }
        h.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let p = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_expiration("100".into())
            .with_content_type("application/json".into())
            .with_headers(h);
        let q = redrive_properties(&p, "q.dlq", "2026-01-02T00:00:00.000Z");
        assert!(q.expiration().is_none());
        assert_eq!(*q.delivery_mode(), Some(2));
        assert_eq!(q.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        let names: Vec<String> = q.headers().as_ref().unwrap().inner().keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(
            names,
            ["traceparent", DELIVERED, ORIGINAL_ROUTING_KEY, REDRIVEN_AT, REDRIVEN_FROM, ROUTE],
            "failure headers dropped, the rest kept"
        );
    }
}
