//! The SMS channel's [`Courier`]: one short text per delivery, sent through Twilio.
//!
//! The policies follow from what an SMS is. A phone shows every text, so a stale one is noise
//! and is superseded by a newer one to the same person. Twilio's Messages API has no
//! idempotency key, so an attempt whose answer was lost is never resent blindly: it is
//! recorded as unknown and the status callback, which carries the delivery key, settles it
//! (see [`crate::callbacks`]).

use tocsin_core::{Channel, RetryPolicy, SendOutcome};
use tocsin_delivery::{ChannelPolicy, Courier, Message, UnknownPolicy};
use tracing::{error, instrument};

use crate::templates::Templates;
use crate::twilio::TwilioClient;

/// Renders a notice into at most `max_segments` segments and hands it to Twilio.
#[derive(Debug)]
pub struct SmsCourier {
    client: TwilioClient,
    templates: Templates,
    max_segments: usize,
    retry: RetryPolicy,
}

impl SmsCourier {
    /// `max_segments` is the budget per message (at least 1); `retry` the schedule for
    /// transient failures such as Twilio's 20429.
    pub fn new(
        client: TwilioClient,
        templates: Templates,
        max_segments: usize,
        retry: RetryPolicy,
    ) -> SmsCourier {
        SmsCourier {
            client,
            templates,
            max_segments: max_segments.max(1),
            retry,
        }
    }
}

impl Courier for SmsCourier {
    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn policy(&self) -> ChannelPolicy {
        ChannelPolicy {
            unknown: UnknownPolicy::Reconcile,
            supersede_stale: true,
            retry: self.retry,
        }
    }

    #[instrument(skip_all, fields(delivery_key = %message.key, attempt = message.attempt))]
    async fn send(&self, message: &Message) -> SendOutcome {
        let Some(phone) = message.subscriber.contacts.phone.as_deref() else {
            // The resolver only plans SMS for subscribers with a number; one removed since
            // then will not come back by retrying.
            return SendOutcome::Permanent {
                reason: "the subscriber has no phone number".into(),
            };
        };
        let body = match self.templates.render(&message.notice, self.max_segments) {
            Ok(fitted) => fitted.text,
            Err(e) => {
                // A template that does not render for this notice will not render on retry
                // either; an operator must fix the override.
                error!(error = %e, "the SMS template failed to render");
                return SendOutcome::Permanent {
                    reason: format!("rendering the SMS: {e}"),
                };
            }
        };
        self.client.send(phone, &body, message.key.as_str()).await
    }
}
