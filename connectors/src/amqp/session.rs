//! A plain, unsupervised session on a broker for command-line tools (`qiao dlq`): read a
//! queue without taking its messages, take them one at a time, republish with confirms.
//!
//! Reading uses `basic.get` without acknowledging: every message read stays unacked on
//! the reading channel, so the next get returns the next message (never the same one
//! again, as get + requeue would), and an empty get says the queue's end was reached.
//! Closing the channel (or losing the connection, or the process) hands every unacked
//! message back to the queue; RabbitMQ puts requeued messages of a classic queue back at
//! their old position, with the `redelivered` flag set.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

/// A connection with a channel to read on and a confirm-mode channel to publish on.
pub struct QueueSession {
    connection: Connection,
    publisher: Channel,
}

/// A reading channel on one queue: what it got stays unacked until acknowledged with
/// [`Reader::take`] or handed back, in order, by [`Reader::close`] (or by dropping it, or
/// by the process dying).
pub struct Reader {
    channel: Channel,
    queue: String,
}

impl QueueSession {
    /// Connects; `name` shows as the connection's name in the broker's management tools.
    pub async fn connect(url: &str, name: &str) -> Result<QueueSession, String> {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect(url, props)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", super::redact_url(url)))?;
        let publisher = connection.create_channel().await.map_err(|e| e.to_string())?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
        Ok(QueueSession { connection, publisher })
    }

    /// The messages ready in `queue` (unacked ones not counted); `None` when there is no
    /// such queue.
    pub async fn message_count(&self, queue: &str) -> Result<Option<u32>, String> {
        // A missing queue is a channel error that closes the channel: a channel of its own.
        let channel = self.connection.create_channel().await.map_err(|e| e.to_string())?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        match channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
            Ok(q) => {
                let _ = channel.close(200, "counted".into()).await;
                Ok(Some(q.message_count()))
            }
            Err(e) if e.to_string().contains("NOT_FOUND") => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A reader of `queue` on a channel of its own.
    pub async fn reader(&self, queue: &str) -> Result<Reader, String> {
        let channel = self.connection.create_channel().await.map_err(|e| e.to_string())?;
        Ok(Reader { channel, queue: queue.to_string() })
    }

    /// Publishes the messages to one routing key, `mandatory`, all at once, and waits for
    /// the broker's confirms: `Ok` only when the broker took every one and a queue holds
    /// each. A returned message names no delivery tag (lapin pairs it with whichever
    /// confirm of the channel completes next), so one return fails the whole batch: some
    /// of it may be published, none of it counts as done.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: Vec<(&[u8], BasicProperties)>,
        timeout: Duration,
    ) -> Result<(), String> {
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirms = tokio::time::timeout(timeout, async {
            let mut pending = Vec::with_capacity(messages.len());
            for (body, properties) in messages {
                pending.push(
                    self.publisher
                        .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
                        .await?,
                );
            }
            let mut out = Vec::with_capacity(pending.len());
            for p in pending {
                out.push(p.await?);
            }
            Ok::<_, lapin::Error>(out)
        })
        .await;
        let confirms = match confirms {
            Err(_) => return Err(format!("the broker did not confirm within {} ms", timeout.as_millis())),
            Ok(Err(e)) => return Err(format!("publishing failed: {e}")),
            Ok(Ok(c)) => c,
        };
        for c in confirms {
            match c {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(format!(
                        "no queue takes routing key `{routing_key}` on exchange `{exchange}`; the broker returned a message"
                    ));
                }
                Confirmation::Nack(_) => return Err("the broker refused a message (nack)".to_string()),
            }
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

impl Reader {
    /// The next message of the queue, left unacked; `None` at the queue's end.
    pub async fn next(&self) -> Result<Option<Delivery>, String> {
        let got = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| format!("reading `{}`: {e}", self.queue))?;
        Ok(got.map(|m| m.delivery))
    }

    /// Removes `delivery` from the queue for good (basic.ack). `Ok` once the ack is written
    /// to the connection.
    pub async fn take(&self, delivery: &Delivery) -> Result<(), String> {
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the reading channel is closed; the message stays in the queue".to_string()),
            Err(e) => Err(format!("ack failed: {e}; the message stays in the queue")),
        }
    }

    /// Hands every message read and not taken back to the queue, at its old position.
    pub async fn close(self) {
        let _ = self.channel.close(200, "done reading".into()).await;
    }
}
