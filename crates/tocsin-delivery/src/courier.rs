//! What a channel implements: how to hand one message to its provider, and its policies.

use std::future::Future;

use time::OffsetDateTime;

use tocsin_core::{
    Channel, DeliveryKey, Incident, Notice, RecordedEvent, RetryPolicy, SendOutcome, Subscriber,
};

/// What a channel does when an attempt's outcome is unknown (the provider may have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownPolicy {
    /// Retry like a transient failure: the receiver deduplicates on our id (webhooks).
    Resend,
    /// Retry once, with the same identity (email: the same Message-ID); a second unknown is
    /// final.
    ResendOnce,
    /// Never resend blindly. The provider's callback settles it when it comes (SMS: Twilio's
    /// status callback carries the delivery key); meanwhile the worker asks the provider, on
    /// the retry schedule, whether it has the message ([`Courier::reconcile`]): found, its
    /// status settles the delivery; not found, nothing went out and it is sent.
    Reconcile,
}

/// How the runtime treats a channel's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct ChannelPolicy {
    pub unknown: UnknownPolicy,
    /// Supersede older unsent messages to the same recipient (channels read by people).
    pub supersede_stale: bool,
    pub retry: RetryPolicy,
}

/// Everything a channel needs to send one delivery.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: DeliveryKey,
    /// This attempt's number, 1 for the first.
    pub attempt: u32,
    pub notice: Notice,
    /// The incident as it stood right after the event.
    pub incident: Incident,
    pub event: RecordedEvent,
    /// The delivery key of the first message about this incident that went out to this
    /// reader on this channel: email threads every later one under it. `None` when this is
    /// the first.
    pub thread_root: Option<String>,
    pub subscriber: Subscriber,
    /// The subscriber's webhook signing secret, for the webhook channel.
    pub webhook_secret: Option<String>,
}

/// One delivery channel: email, SMS or webhook. Implementations are thin: build the
/// provider's request from the [`Message`], send it, and say what the answer means.
pub trait Courier: Send + Sync + 'static {
    fn channel(&self) -> Channel;

    fn policy(&self) -> ChannelPolicy;

    /// Sends one message. Never panics on a provider's answer: every answer maps to a
    /// [`SendOutcome`].
    fn send(&self, message: &Message) -> impl Future<Output = SendOutcome> + Send;

    /// Where `message` goes, when subscribers may share it and one such place must not take
    /// every send slot ([`WorkerConfig::per_destination`](crate::WorkerConfig) bounds each):
    /// a webhook endpoint. `None` (the default): one provider for all, bounded as a whole.
    fn destination(&self, message: &Message) -> Option<String> {
        let _ = message;
        None
    }

    /// For [`UnknownPolicy::Reconcile`]: how long after an attempt began the provider may be
    /// asked about it. A request still being processed at the provider when asked would be
    /// missed, and the message sent a second time; so this is more than the client's own
    /// timeout, plus a margin for a provider slower than it.
    fn reconcile_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }

    /// For [`UnknownPolicy::Reconcile`]: whether the provider got `message` from an attempt
    /// that began at `since` (or later) and whose answer was lost. Channels without a way to
    /// ask keep the outcome unknown.
    fn reconcile(
        &self,
        message: &Message,
        since: OffsetDateTime,
    ) -> impl Future<Output = Reconciled> + Send {
        let _ = (message, since);
        async { Reconciled::Unsure("this channel cannot ask its provider".into()) }
    }
}

/// What a provider said about an earlier attempt whose outcome was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// It has the message: this outcome settles the delivery (delivered, or failed).
    Found(SendOutcome),
    /// It never got the message: sending now cannot make a second copy.
    NotFound,
    /// It could not be asked (unreachable, an error): ask again later.
    Unsure(String),
}
