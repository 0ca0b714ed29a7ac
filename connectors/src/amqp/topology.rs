//! The exchanges, queues and bindings a configuration needs, declared at connect time.
//!
//! Declaration is idempotent (declaring what exists with the same arguments is a no-op).
//! Items marked `passive` are only verified: a missing one is an error, and nothing is
//! created — for brokers whose topology is owned by someone else (`declare: false`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
    pub bindings: Vec<Binding>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Exchange {
    pub name: String,
    /// `topic`, `direct`, `fanout` or `headers`.
    pub kind: String,
    pub passive: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Queue {
    pub name: String,
    /// Where expired or rejected messages go: (exchange, routing key). Retry queues send
    /// their messages back to the source queue this way.
    pub dead_letter_to: Option<(String, String)>,
    pub passive: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub passive: bool,
}

impl Topology {
    /// Adds what is not there yet (the same queue may be needed by several routes).
    pub fn merge(&mut self, other: Topology) {
        for e in other.exchanges {
            if !self.exchanges.iter().any(|x| x.name == e.name) {
                self.exchanges.push(e);
            }
        }
        for q in other.queues {
            if !self.queues.iter().any(|x| x.name == q.name) {
                self.queues.push(q);
            }
        }
        for b in other.bindings {
            if !self.bindings.contains(&b) {
                self.bindings.push(b);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.queues.is_empty() && self.bindings.is_empty()
    }

    /// Declares or verifies everything. A failed declaration closes its channel, so each
    /// step gets a fresh one when needed and the error names the item.
    pub async fn apply(&self, connection: &Connection) -> Result<(), String> {
        let mut channel = fresh(connection).await?;
        for e in &self.exchanges {
            let kind = match e.kind.as_str() {
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "headers" => ExchangeKind::Headers,
                _ => ExchangeKind::Topic,
            };
            let options = ExchangeDeclareOptions { durable: true, passive: e.passive, ..Default::default() };
            if let Err(err) =
                channel.exchange_declare(e.name.as_str().into(), kind, options, FieldTable::default()).await
            {
                return Err(format!("{} exchange `{}`: {err}", verb(e.passive), e.name));
            }
        }
        for q in &self.queues {
            let mut args = FieldTable::default();
            if let Some((exchange, key)) = &q.dead_letter_to {
                args.insert(
                    ShortString::from("x-dead-letter-exchange"),
                    AMQPValue::LongString(LongString::from(exchange.as_bytes().to_vec())),
                );
                args.insert(
                    ShortString::from("x-dead-letter-routing-key"),
                    AMQPValue::LongString(LongString::from(key.as_bytes().to_vec())),
                );
            }
            let options = QueueDeclareOptions { durable: true, passive: q.passive, ..Default::default() };
            if let Err(err) = channel
                .queue_declare(q.name.as_str().into(), options, if q.passive { FieldTable::default() } else { args })
                .await
            {
                return Err(format!("{} queue `{}`: {err}", verb(q.passive), q.name));
            }
        }
        for b in &self.bindings {
            if b.passive {
                // AMQP 0.9.1 cannot check a binding; checking the queue and exchange is all
                // that can be done, and both were checked above.
                continue;
            }
            if let Err(err) = channel
                .queue_bind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
            {
                return Err(format!("binding `{}` to `{}` with `{}`: {err}", b.queue, b.exchange, b.routing_key));
            }
            channel = ensure_open(connection, channel).await?;
        }
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }
}

fn verb(passive: bool) -> &'static str {
    if passive { "verifying" } else { "declaring" }
}

async fn fresh(connection: &Connection) -> Result<Channel, String> {
    connection.create_channel().await.map_err(|e| format!("opening a channel: {e}"))
}

async fn ensure_open(connection: &Connection, channel: Channel) -> Result<Channel, String> {
    if channel.status().connected() { Ok(channel) } else { fresh(connection).await }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_one_of_each() {
        let q = |n: &str| Queue { name: n.into(), dead_letter_to: None, passive: false };
        let mut a = Topology { queues: vec![q("a")], ..Default::default() };
        a.merge(Topology { queues: vec![q("a"), q("b")], ..Default::default() });
        assert_eq!(a.queues.len(), 2);
        assert!(!a.is_empty());
    }
}
