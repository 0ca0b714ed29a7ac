use crate::{
    Error, Promise, PromiseResolver,
    id_sequence::IdSequence,
    message::BasicReturnMessage,
    protocol::{AMQPError, AMQPSoftError},
    publisher_confirm::{Confirmation, PublisherConfirm},
    returned_messages::ReturnedMessages,
    shared::SharedMutex,
    types::{DeliveryTag, ShortString},
};
use std::{collections::HashMap, fmt, sync::MutexGuard};
use tracing::trace;

#[derive(Clone)]
pub(crate) struct Acknowledgements(SharedMutex<Inner>);

type AMQPResult = Result<(), AMQPError>;

impl Acknowledgements {
    pub(crate) fn new(channel_id: u16, returned_messages: ReturnedMessages) -> Self {
        Self(SharedMutex::new(Inner::new(channel_id, returned_messages)))
    }

    pub(crate) fn register_pending(&self, key: Option<ReturnKey>) -> PublisherConfirm {
        self.lock_inner().register_pending(key)
    }

    /// Pairs the returned messages received so far with the publishes they belong to
    /// (qiao patch, third_party/README.md).
    pub(crate) fn claim_returns(&self) {
        self.lock_inner().claim_returns();
    }

    pub(crate) fn get_last_pending(&self) -> Option<Promise<()>> {
        self.lock_inner().last.take()
    }

    pub(crate) fn ack(&self, delivery_tag: DeliveryTag) -> AMQPResult {
        self.lock_inner().drop_pending(delivery_tag, true)
    }

    pub(crate) fn nack(&self, delivery_tag: DeliveryTag) -> AMQPResult {
        self.lock_inner().drop_pending(delivery_tag, false)
    }

    pub(crate) fn ack_all_pending(&self) {
        self.lock_inner().drop_all(true);
    }

    pub(crate) fn nack_all_pending(&self) {
        self.lock_inner().drop_all(false);
    }

    pub(crate) fn ack_all_before(&self, delivery_tag: DeliveryTag) -> AMQPResult {
        self.lock_inner()
            .complete_pending_before(delivery_tag, true)
    }

    pub(crate) fn nack_all_before(&self, delivery_tag: DeliveryTag) -> AMQPResult {
        self.lock_inner()
            .complete_pending_before(delivery_tag, false)
    }

    pub(crate) fn on_channel_error(&self, error: Error) {
        self.lock_inner().on_channel_error(error);
    }

    pub(crate) fn reset(&self, error: Error) {
        self.lock_inner().reset(error);
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.0.lock()
    }
}

impl fmt::Debug for Acknowledgements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Acknowledgements");
        if let Some(inner) = self.0.try_lock() {
            debug
                .field("delivery_tag", &inner.delivery_tag)
                .field("returned_messages", &inner.returned_messages)
                .field("pending", &inner.pending.keys());
        }
        debug.finish()
    }
}

/// What a mandatory publish was sent to and as, to pair a `basic.return` with it: a return
/// names no delivery tag (qiao patch, third_party/README.md).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReturnKey {
    exchange: ShortString,
    routing_key: ShortString,
    message_id: Option<ShortString>,
    correlation_id: Option<ShortString>,
}

impl ReturnKey {
    pub(crate) fn new(
        exchange: &ShortString,
        routing_key: &ShortString,
        message_id: Option<&ShortString>,
        correlation_id: Option<&ShortString>,
    ) -> Self {
        Self {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            message_id: message_id.cloned(),
            correlation_id: correlation_id.cloned(),
        }
    }

    fn of(message: &BasicReturnMessage) -> Self {
        let props = &message.delivery.properties;
        Self::new(
            &message.delivery.exchange,
            &message.delivery.routing_key,
            props.message_id().as_ref(),
            props.correlation_id().as_ref(),
        )
    }
}

struct Pending {
    resolvers: (PromiseResolver<Confirmation>, PromiseResolver<()>),
    key: Option<ReturnKey>,
}

struct Inner {
    channel_id: u16,
    delivery_tag: IdSequence<DeliveryTag>,
    last: Option<Promise<()>>,
    pending: HashMap<DeliveryTag, Pending>,
    /// Returned messages paired with the publish they belong to.
    returned: HashMap<DeliveryTag, BasicReturnMessage>,
    /// The delivery tag the last paired return belonged to: the broker routes the publishes
    /// of a channel in order, so the next return belongs to a later one.
    last_returned: DeliveryTag,
    returned_messages: ReturnedMessages,
}

impl Inner {
    fn new(channel_id: u16, returned_messages: ReturnedMessages) -> Self {
        Self {
            channel_id,
            delivery_tag: IdSequence::new(false),
            last: None,
            pending: HashMap::default(),
            returned: HashMap::default(),
            last_returned: 0,
            returned_messages,
        }
    }

    fn register_pending(&mut self, key: Option<ReturnKey>) -> PublisherConfirm {
        let delivery_tag = self.delivery_tag.next();
        trace!("Publishing with delivery_tag {}", delivery_tag);
        let (promise, resolver) = Promise::new("acknowledgement");
        let (err_promise, err_resolver) = Promise::new("acknowledgement-error");
        let promise = PublisherConfirm::new(promise, self.returned_messages.clone());
        self.last = Some(err_promise);
        self.pending.insert(
            delivery_tag,
            Pending {
                resolvers: (resolver, err_resolver),
                key,
            },
        );
        promise
    }

    /// Each returned message belongs to the earliest publish in flight after the last paired
    /// one that was sent to the same exchange and routing key with the same message and
    /// correlation ids. The broker sends a return before the confirm of its publish, so
    /// that publish is still pending. A return that matches none stays waiting and goes,
    /// as upstream does, to the next confirm.
    fn claim_returns(&mut self) {
        let mut unmatched = Vec::new();
        while let Some(message) = self.returned_messages.get_waiting_message() {
            let key = ReturnKey::of(&message);
            let owner = self
                .pending
                .iter()
                .filter(|(tag, pending)| {
                    **tag > self.last_returned
                        && pending.key.as_ref() == Some(&key)
                        && !self.returned.contains_key(tag)
                })
                .map(|(tag, _)| *tag)
                .min();
            match owner {
                Some(tag) => {
                    trace!(channel=%self.channel_id, delivery_tag=%tag, "paired a returned message");
                    self.last_returned = tag;
                    self.returned.insert(tag, message);
                }
                None => unmatched.push(message),
            }
        }
        for message in unmatched.into_iter().rev() {
            self.returned_messages.put_back_waiting_message(message);
        }
    }

    fn complete_pending(&mut self, success: bool, delivery_tag: DeliveryTag, pending: Pending) {
        let resolvers = pending.resolvers;
        let returned_message = match self.returned.remove(&delivery_tag) {
            Some(message) => Some(message),
            // A publish that could be paired gets only its own return (qiao patch).
            None if pending.key.is_some() => None,
            None => self.returned_messages.get_waiting_message(),
        };
        resolvers.0.resolve(if success {
            Confirmation::Ack(returned_message)
        } else {
            Confirmation::Nack(returned_message)
        });
        if Some(delivery_tag) == self.delivery_tag.current() {
            resolvers.1.resolve(());
        }
    }

    fn drop_all(&mut self, success: bool) {
        for (delivery_tag, pending) in std::mem::take(&mut self.pending) {
            self.complete_pending(success, delivery_tag, pending);
        }
    }

    fn drop_pending(&mut self, delivery_tag: DeliveryTag, success: bool) -> AMQPResult {
        if let Some(pending) = self.pending.remove(&delivery_tag) {
            self.complete_pending(success, delivery_tag, pending);
            Ok(())
        } else {
            Err(AMQPError::new(
                AMQPSoftError::PRECONDITIONFAILED.into(),
                format!(
                    "invalid {} received for inexistant delivery_tag {} on channel {}, current is {:?}, was expecting one of {:?}",
                    if success { "ack" } else { "nack" },
                    delivery_tag,
                    self.channel_id,
                    self.delivery_tag.current(),
                    self.pending.keys()
                )
                .into(),
            ))
        }
    }

    fn complete_pending_before(&mut self, delivery_tag: DeliveryTag, success: bool) -> AMQPResult {
        // Tags are collected from self.pending, so drop_pending should never fail here.
        // Multiple errors are unlikely, and if they occur they are likely identical; callers
        // also handle the underlying acknowledgement state independently, so returning the
        // last error is sufficient.
        let mut res = Ok(());
        for tag in self
            .pending
            .keys()
            .filter(|tag| **tag <= delivery_tag)
            .cloned()
            .collect::<Vec<DeliveryTag>>()
        {
            if let Err(err) = self.drop_pending(tag, success) {
                res = Err(err);
            }
        }
        res
    }

    fn on_channel_error(&mut self, error: Error) {
        for (delivery_tag, pending) in self.pending.drain() {
            pending.resolvers.0.reject(error.clone());
            if Some(delivery_tag) == self.delivery_tag.current() {
                pending.resolvers.1.reject(error.clone());
            }
        }
        self.returned.clear();
        self.returned_messages.clear_dropped_confirms();
    }

    fn reset(&mut self, error: Error) {
        self.delivery_tag = IdSequence::new(false);
        self.last_returned = 0;
        self.on_channel_error(error);
    }
}

/// qiao patch: returns paired with their own publishes.
#[cfg(test)]
mod qiao_patch_tests {
    use super::*;
    use crate::{BasicProperties, error_holder::ErrorHolder};

    fn publish(acks: &Acknowledgements, key: &str, id: &str) -> PublisherConfirm {
        acks.register_pending(Some(ReturnKey::new(
            &"ex".into(),
            &key.into(),
            Some(&id.into()),
            None,
        )))
    }

    fn returned(messages: &ReturnedMessages, acks: &Acknowledgements, key: &str, id: &str) {
        messages.start_new_delivery(BasicReturnMessage::new(
            "ex".into(),
            key.into(),
            312,
            "NO_ROUTE".into(),
            ErrorHolder::default(),
        ));
        messages.handle_content_header_frame(
            0,
            BasicProperties::default().with_message_id(id.into()),
            true,
        );
        acks.claim_returns();
    }

    fn outcomes(confirms: Vec<PublisherConfirm>) -> Vec<Option<String>> {
        confirms
            .into_iter()
            .map(|c| match futures_lite::future::block_on(c).unwrap() {
                Confirmation::Ack(m) => m.map(|m| {
                    m.delivery
                        .properties
                        .message_id()
                        .clone()
                        .unwrap()
                        .to_string()
                }),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_return_goes_to_its_own_publish_in_a_multiple_ack() {
        let messages = ReturnedMessages::default();
        let acks = Acknowledgements::new(1, messages.clone());
        let confirms = (1..=4)
            .map(|i| {
                publish(
                    &acks,
                    if i % 2 == 1 { "nowhere" } else { "erp" },
                    &format!("m{i}"),
                )
            })
            .collect();
        returned(&messages, &acks, "nowhere", "m1");
        returned(&messages, &acks, "nowhere", "m3");
        acks.ack_all_before(4).unwrap();
        assert_eq!(
            outcomes(confirms),
            [Some("m1".into()), None, Some("m3".into()), None]
        );
    }

    #[test]
    fn returns_of_the_same_message_go_in_publish_order_and_acks_out_of_order_keep_them() {
        let messages = ReturnedMessages::default();
        let acks = Acknowledgements::new(1, messages.clone());
        // m1 routed (acked last), then the same m2 sent twice, both returned.
        let confirms = vec![
            publish(&acks, "erp", "m1"),
            publish(&acks, "nowhere", "m2"),
            publish(&acks, "nowhere", "m2"),
        ];
        returned(&messages, &acks, "nowhere", "m2");
        acks.ack(2).unwrap();
        returned(&messages, &acks, "nowhere", "m2");
        acks.ack(3).unwrap();
        acks.ack(1).unwrap();
        assert_eq!(
            outcomes(confirms),
            [None, Some("m2".into()), Some("m2".into())]
        );
    }

    #[test]
    fn a_return_that_matches_no_publish_keeps_upstreams_behaviour() {
        let messages = ReturnedMessages::default();
        let acks = Acknowledgements::new(1, messages.clone());
        let confirms = vec![acks.register_pending(None)];
        returned(&messages, &acks, "nowhere", "m9");
        acks.ack(1).unwrap();
        assert_eq!(outcomes(confirms), [Some("m9".into())]);
    }
}
