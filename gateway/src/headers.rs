//! The header names Qiao owns, defined once. HTTP deliveries and answers carry the message
//! id; AMQP messages carry the route, the attempt count and, on retry and dead-letter copies,
//! why. docs/amqp.md and docs/errors.md list them for users.

/// The message id, on every delivery and every answer (receivers deduplicate on it). The
/// HTTP transport sets it, so it is defined there.
pub use qiao_connectors::http::MESSAGE_ID_HEADER as MESSAGE_ID;

/// The sender's key for a request: it becomes the message id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// On every message Qiao publishes, and on retry and dead-letter copies: the route it
/// travelled on.
pub const ROUTE: &str = "x-qiao-route";
/// Attempts made so far; travels with retry copies, so the count survives a restart.
pub const ATTEMPTS: &str = "x-qiao-attempts";
/// The destinations of the route that already took the message, by key (the system's
/// name; `name#2` for its second destination in the same route).
pub const DELIVERED: &str = "x-qiao-delivered";
/// On a retry copy: the last failure's kind and detail.
pub const LAST_ERROR_KIND: &str = "x-qiao-last-error-kind";
pub const LAST_ERROR: &str = "x-qiao-last-error";
/// On a dead letter: why, when, and from which queue.
pub const ERROR_KIND: &str = "x-qiao-error-kind";
pub const ERROR_DETAIL: &str = "x-qiao-error-detail";
pub const ERROR_POINTERS: &str = "x-qiao-error-pointers";
pub const FAILED_AT: &str = "x-qiao-failed-at";
pub const ORIGINAL_QUEUE: &str = "x-qiao-original-queue";
/// On retry and dead-letter copies: the routing key the message first came with (a retry
/// comes back with the queue's name as its routing key, so the first copy keeps it).
pub const ORIGINAL_ROUTING_KEY: &str = "x-qiao-original-routing-key";
/// On a message `qiao dlq replay` re-drove: when, and from which dead-letter queue.
pub const REDRIVEN_AT: &str = "x-qiao-redriven-at";
pub const REDRIVEN_FROM: &str = "x-qiao-redriven-from";
/// On a message `qiao replay --send` re-delivers: the id of the recorded message it repeats.
pub const REPLAY_OF: &str = "x-qiao-replay-of";
