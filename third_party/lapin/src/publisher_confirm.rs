use crate::{
    ErrorKind, Promise, Result, message::BasicReturnMessage, returned_messages::ReturnedMessages,
};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tracing::trace;

/// A future that resolves to the broker's acknowledgement of a published message.
///
/// Returned by [`Channel::basic_publish`]. If publisher confirms are not
/// enabled (via [`Channel::confirm_select`]) the future resolves immediately
/// with [`Confirmation::NotRequested`].
///
/// Dropping an unresolved `PublisherConfirm` without awaiting it registers it
/// with [`Channel::wait_for_confirms`] so that confirms are not silently lost.
///
/// [`Channel::basic_publish`]: crate::Channel::basic_publish
/// [`Channel::confirm_select`]: crate::Channel::confirm_select
/// [`Channel::wait_for_confirms`]: crate::Channel::wait_for_confirms
pub struct PublisherConfirm {
    inner: Option<Promise<Confirmation>>,
    /// The publish's frames being written, when they were not yet (qiao patch): read
    /// without waiting on it, so that only the confirm wakes the task.
    written: Option<Promise<()>>,
    returned_messages: ReturnedMessages,
}

/// The broker's response to a published message.
#[derive(Debug, PartialEq)]
pub enum Confirmation {
    /// The broker acknowledged the message. The inner value carries the
    /// returned message if the publish was mandatory/immediate and unroutable.
    Ack(Option<BasicReturnMessage>),
    /// The broker negatively acknowledged the message (could not route or
    /// store it). The inner value carries the returned message if available.
    Nack(Option<BasicReturnMessage>),
    /// Publisher confirms were not enabled; the broker did not confirm.
    NotRequested,
}

impl Confirmation {
    /// Extract the returned message, if any.
    ///
    /// Returns `Some` only when the message was unroutable and returned by the
    /// broker (mandatory or immediate publish with no matching route).
    #[must_use]
    pub fn take_message(self) -> Option<BasicReturnMessage> {
        if let Confirmation::Ack(msg) | Confirmation::Nack(msg) = self {
            msg
        } else {
            None
        }
    }

    /// Returns `true` if the broker acknowledged the message.
    #[must_use]
    pub fn is_ack(&self) -> bool {
        matches!(self, Confirmation::Ack(_))
    }

    /// Returns `true` if the broker negatively acknowledged the message.
    #[must_use]
    pub fn is_nack(&self) -> bool {
        matches!(self, Confirmation::Nack(_))
    }
}

impl PublisherConfirm {
    pub(crate) fn new(inner: Promise<Confirmation>, returned_messages: ReturnedMessages) -> Self {
        Self {
            inner: Some(inner),
            written: None,
            returned_messages,
        }
    }

    /// This confirm, for a publish whose frames `written` resolves once they are written
    /// (qiao patch).
    pub(crate) fn after_write(mut self, written: Promise<()>) -> Self {
        self.written = Some(written);
        self
    }

    pub(crate) fn not_requested(returned_messages: ReturnedMessages) -> Self {
        Self {
            inner: Some(Promise::new_with_data(
                "publisher-confirms.not-requested",
                Ok(Confirmation::NotRequested),
            )),
            written: None,
            returned_messages,
        }
    }
}

impl fmt::Debug for PublisherConfirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherConfirm").finish()
    }
}

impl Future for PublisherConfirm {
    type Output = Result<Confirmation>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.as_mut();
        if this.inner.is_none() {
            return Poll::Ready(Err(ErrorKind::FutureCompleted.into()));
        }
        // qiao patch: frames that could not be written fail the publish as they did when
        // `basic_publish` waited for them. Left unresolved in `inner`, the confirm is handed
        // to `wait_for_confirms` on drop, as it was then.
        if let Some(written) = this.written.as_ref() {
            match written.try_wait() {
                Some(Err(err)) => {
                    this.written = None;
                    return Poll::Ready(Err(err));
                }
                Some(Ok(())) => this.written = None,
                None => {}
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(ErrorKind::FutureCompleted.into()));
        };
        let res = Pin::new(inner).poll(cx);
        if res.is_ready() {
            this.inner.take();
        }
        res
    }
}

impl Drop for PublisherConfirm {
    fn drop(&mut self) {
        if let Some(promise) = self.inner.take() {
            trace!("PublisherConfirm dropped without use, registering it for wait_for_confirms");
            self.returned_messages.register_dropped_confirm(promise);
        }
    }
}

#[cfg(test)]
mod qiao_patch_tests {
    use super::*;
    use crate::{acknowledgement::Acknowledgements, error::Error};
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(confirm: &mut PublisherConfirm, wakes: &Arc<Wakes>) -> Poll<Result<Confirmation>> {
        let waker = Waker::from(wakes.clone());
        Pin::new(confirm).poll(&mut Context::from_waker(&waker))
    }

    fn io_error() -> Error {
        std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()
    }

    #[test]
    fn writing_the_frames_does_not_wake_the_publisher_and_its_confirm_does() {
        let acks = Acknowledgements::new(1, ReturnedMessages::default());
        let (written, writer) = Promise::new("frames");
        let mut confirm = acks.register_pending(None).after_write(written);
        let wakes = Arc::new(Wakes::default());
        assert!(poll(&mut confirm, &wakes).is_pending());
        writer.resolve(());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "the write woke the publisher");
        acks.ack(1).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the confirm did not wake the publisher");
        assert!(matches!(poll(&mut confirm, &wakes), Poll::Ready(Ok(Confirmation::Ack(None)))));
    }

    #[test]
    fn frames_that_could_not_be_written_fail_the_publish_at_its_next_poll() {
        let acks = Acknowledgements::new(1, ReturnedMessages::default());
        let (written, writer) = Promise::new("frames");
        let mut confirm = acks.register_pending(None).after_write(written);
        let wakes = Arc::new(Wakes::default());
        assert!(poll(&mut confirm, &wakes).is_pending());
        writer.reject(io_error());
        // The channel's error fails its confirms, which wakes the publisher: it reads the
        // write's own error first.
        acks.on_channel_error(io_error());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        match poll(&mut confirm, &wakes) {
            Poll::Ready(Err(err)) => assert!(err.is_io_error(), "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_write_already_failed_fails_the_first_poll_without_waiting_for_the_confirm() {
        let acks = Acknowledgements::new(1, ReturnedMessages::default());
        let (written, writer) = Promise::new("frames");
        writer.reject(io_error());
        let mut confirm = acks.register_pending(None).after_write(written);
        let wakes = Arc::new(Wakes::default());
        assert!(matches!(poll(&mut confirm, &wakes), Poll::Ready(Err(_))));
    }
}
