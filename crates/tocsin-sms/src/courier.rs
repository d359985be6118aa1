//! The SMS channel's [`Courier`]: one short text per delivery, sent through Twilio.
//!
//! The policies follow from what an SMS is. A phone shows every text, so a stale one is noise
//! and is superseded by a newer one to the same person. Twilio's Messages API has no
//! idempotency key, so an attempt whose answer was lost is never resent blindly: it is
//! recorded as unknown; the status callback, which carries the delivery key, settles it (see
//! [`crate::callbacks`]), and until then the worker asks Twilio's Messages list whether the
//! message exists ([`SmsCourier::reconcile`]) and sends again only if it does not.

use time::OffsetDateTime;
use tocsin_core::{Channel, RetryPolicy, SendOutcome};
use tocsin_delivery::{AccountCourier, ChannelPolicy, Courier, Message, Reconciled, UnknownPolicy};
use tocsin_store::Store;
use tracing::{error, instrument};

use crate::status::{MessageStatus, Progress};
use crate::templates::Templates;
use crate::twilio::TwilioClient;

/// Renders a notice into at most `max_segments` segments and hands it to Twilio.
#[derive(Debug)]
pub struct SmsCourier {
    client: TwilioClient,
    templates: Templates,
    max_segments: usize,
    retry: RetryPolicy,
    /// Where a number Twilio reports as opted out (error 21610) is recorded, when set.
    opt_outs: Option<Store>,
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
            opt_outs: None,
        }
    }

    /// Records numbers Twilio refuses as opted out (21610, the reader replied STOP) in
    /// `store`, so that nothing more is planned or sent to them.
    pub fn recording_opt_outs(mut self, store: Store) -> SmsCourier {
        self.opt_outs = Some(store);
        self
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
        let (phone, body) = match self.text(message) {
            Ok(text) => text,
            Err(outcome) => return outcome,
        };
        let outcome = self.client.send(phone, &body, message.key.as_str()).await;
        if let (SendOutcome::Gone { reason }, Some(store)) = (&outcome, &self.opt_outs)
            && reason.contains(&crate::callbacks::UNSUBSCRIBED_RECIPIENT.to_string())
            && let Err(e) = store
                .opt_out_address(Channel::Sms, phone, "carrier_21610")
                .await
        {
            // The delivery fails either way; the next text to the number is refused again
            // and the opt-out recorded then.
            error!(error = %e, "could not record the opt-out Twilio reported");
        }
        outcome
    }

    /// Twilio is asked about an attempt no sooner than the client's timeout and 10 s more
    /// after it began: a POST Twilio was still working on would not be in its list yet.
    fn reconcile_after(&self) -> std::time::Duration {
        self.client.timeout() + std::time::Duration::from_secs(10)
    }

    #[instrument(skip_all, fields(delivery_key = %message.key))]
    async fn reconcile(&self, message: &Message, since: OffsetDateTime) -> Reconciled {
        let (phone, body) = match self.text(message) {
            Ok(text) => text,
            // Nothing could have been sent from a message that cannot be built.
            Err(outcome) => return Reconciled::Found(outcome),
        };
        match self.client.find(phone, &body, since).await {
            Ok(None) => Reconciled::NotFound,
            Ok(Some(found)) => {
                let outcome = match found.status.as_ref().map(MessageStatus::progress) {
                    Some(Progress::Failed) => SendOutcome::Permanent {
                        reason: format!(
                            "Twilio has the message as {}{}",
                            found
                                .status
                                .as_ref()
                                .map_or("failed", MessageStatus::as_str),
                            found
                                .error_code
                                .map(|code| format!(" (error {code})"))
                                .unwrap_or_default()
                        ),
                    },
                    // Delivered, or still on its way: accepted, as a 201 would have said; its
                    // status callback confirms or fails it later.
                    _ => SendOutcome::Delivered {
                        provider_id: Some(found.sid),
                    },
                };
                Reconciled::Found(outcome)
            }
            Err(reason) => Reconciled::Unsure(reason),
        }
    }
}

impl SmsCourier {
    /// The number and the fitted text of `message`, or the outcome that settles a message
    /// that cannot be built.
    fn text<'m>(&self, message: &'m Message) -> Result<(&'m str, String), SendOutcome> {
        let Some(phone) = message.subscriber.contacts.phone.as_deref() else {
            // The resolver only plans SMS for subscribers with a number; one removed since
            // then will not come back by retrying.
            return Err(SendOutcome::Permanent {
                reason: "the subscriber has no phone number".into(),
            });
        };
        match self.templates.render(&message.notice, self.max_segments) {
            Ok(fitted) => Ok((phone, fitted.text)),
            Err(e) => {
                // A template that does not render for this notice will not render on retry
                // either; an operator must fix the override.
                error!(error = %e, "the SMS template failed to render");
                Err(SendOutcome::Permanent {
                    reason: format!("rendering the SMS: {e}"),
                })
            }
        }
    }
}

impl AccountCourier for SmsCourier {
    fn channel(&self) -> Channel {
        Channel::Sms
    }

    async fn send_account(&self, message: &tocsin_store::AccountMessage) -> SendOutcome {
        self.client
            .send_untracked(&message.address, &message.notice.sms_text())
            .await
    }
}
