//! The ways a message comes in, side by side: HTTP through pingora, AMQP through a lapin
//! consumer. Each reads its message, hands it to the one driver ([`crate::pipeline::drive`])
//! and keeps only what is its own: writing the answer, or settling the delivery (ack, retry
//! copy, dead letter).

pub mod amqp;
pub mod http;
