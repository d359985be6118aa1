//! The email channel as the delivery runtime drives it: render the notice, build the email
//! with its deterministic `Message-ID` and threading headers, hand it to the relay.
//!
//! The policies are email's: an unknown outcome is resent once with the same `Message-ID`
//! (see [`crate::smtp`]), and an older message that has not gone out yet is superseded by a
//! newer one to the same person, because nobody needs "we are investigating" after
//! "resolved".

use lettre::message::Mailbox;
use tocsin_core::{Channel, RetryPolicy, SendOutcome};
use tocsin_delivery::{AccountCourier, ChannelPolicy, Courier, Message, UnknownPolicy};
use tracing::instrument;

use crate::error::Error;
use crate::message::{Compose, build, build_account, message_id};
use crate::smtp::SmtpSender;
use crate::templates::Templates;

/// The placeholder an unsubscribe URL template carries for the recipient.
pub const TOKEN_PLACEHOLDER: &str = "{token}";

/// How long an unsubscribe link works, from the event its message tells of. Long: a reader
/// who wants out months later must not find the way closed.
pub const UNSUBSCRIBE_LINK_DAYS: i64 = 365;
/// How long a preference-centre link works: it opens more than a way out, so less long.
pub const PREFERENCES_LINK_DAYS: i64 = 90;

/// The unsubscribe links of every email: a URL with [`TOKEN_PLACEHOLDER`], and the secret
/// the token is signed with (the page that serves the URL verifies it); and, when
/// `tocsin-page` serves them, the preference-centre links (`preferences_url`, with the same
/// placeholder).
#[derive(Debug, Clone)]
pub struct UnsubscribeLinks {
    pub url: String,
    pub secret: tocsin_core::links::LinkSecret,
    pub preferences_url: Option<String>,
}

impl UnsubscribeLinks {
    /// The link for `subscriber`'s email about an event of `occurred_at`; the same on every
    /// attempt, so a resent email is the same email.
    pub fn for_subscriber(
        &self,
        subscriber: tocsin_core::SubscriberId,
        occurred_at: time::OffsetDateTime,
    ) -> String {
        let token = self.secret.sign(&tocsin_core::links::LinkClaims {
            subscriber_id: subscriber,
            purpose: tocsin_core::links::Purpose::Unsubscribe,
            channel: Some(Channel::Email),
            expires_at: occurred_at + time::Duration::days(UNSUBSCRIBE_LINK_DAYS),
        });
        self.url.replace(TOKEN_PLACEHOLDER, &token)
    }

    /// The preference-centre link for `subscriber`, when one is served.
    pub fn preferences_for(
        &self,
        subscriber: tocsin_core::SubscriberId,
        occurred_at: time::OffsetDateTime,
    ) -> Option<String> {
        let url = self.preferences_url.as_ref()?;
        let token = self.secret.sign(&tocsin_core::links::LinkClaims {
            subscriber_id: subscriber,
            purpose: tocsin_core::links::Purpose::Preferences,
            channel: None,
            expires_at: occurred_at + time::Duration::days(PREFERENCES_LINK_DAYS),
        });
        Some(url.replace(TOKEN_PLACEHOLDER, &token))
    }
}

/// Who the emails are from and how they are identified.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The `From` mailbox, e.g. `Acme Status <status@acme.com>`.
    pub from: Mailbox,
    /// The right-hand side of every `Message-ID`: a domain the company controls.
    pub message_id_domain: String,
    /// The signed one-click unsubscribe link of the headers and the footer. `None` sends no
    /// unsubscribe link.
    pub unsubscribe: Option<UnsubscribeLinks>,
    /// The retry schedule for transient failures.
    pub retry: RetryPolicy,
}

/// The email [`Courier`].
#[derive(Debug)]
pub struct EmailCourier {
    templates: Templates,
    sender: SmtpSender,
    settings: EmailSettings,
}

impl EmailCourier {
    pub fn new(templates: Templates, sender: SmtpSender, settings: EmailSettings) -> EmailCourier {
        EmailCourier {
            templates,
            sender,
            settings,
        }
    }

    /// The email for `message`, or why it cannot be built (which no retry would fix).
    fn email(&self, message: &Message) -> Result<lettre::Message, Error> {
        let subscriber = &message.subscriber;
        let address = subscriber
            .contacts
            .email
            .as_deref()
            .ok_or_else(|| Error::Invalid("the subscriber has no email address".into()))?;
        let to: Mailbox = address
            .parse()
            .map_err(|e| Error::Invalid(format!("recipient address {address:?}: {e}")))?;

        let mut notice = message.notice.clone();
        if let Some(links) = &self.settings.unsubscribe {
            notice = notice.with_unsubscribe_url(
                links.for_subscriber(subscriber.id, message.event.occurred_at),
            );
            if let Some(url) = links.preferences_for(subscriber.id, message.event.occurred_at) {
                notice = notice.with_preferences_url(url);
            }
        }
        let rendered = self.templates.render(&notice)?;

        let domain = self.settings.message_id_domain.as_str();
        // The thread's root is the first email about the incident this reader got (the
        // opening, or a catch-up for one who arrived later).
        let opening = message
            .thread_root
            .as_deref()
            .map(|root| message_id(root, domain));
        let compose = Compose {
            from: &self.settings.from,
            to: &to,
            domain,
            opening_message_id: opening.as_deref(),
        };
        build(&notice, &rendered, &compose)
    }
}

impl Courier for EmailCourier {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn policy(&self) -> ChannelPolicy {
        ChannelPolicy {
            unknown: UnknownPolicy::ResendOnce,
            supersede_stale: true,
            retry: self.settings.retry,
        }
    }

    #[instrument(skip_all, fields(delivery_key = %message.key, attempt = message.attempt))]
    async fn send(&self, message: &Message) -> SendOutcome {
        match self.email(message) {
            Ok(email) => self.sender.send(email).await,
            Err(e) => {
                tracing::warn!(error = %e, "the email cannot be built; not retrying");
                SendOutcome::Permanent {
                    reason: e.to_string(),
                }
            }
        }
    }
}

impl AccountCourier for EmailCourier {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    async fn send_account(&self, message: &tocsin_store::AccountMessage) -> SendOutcome {
        let email = self
            .templates
            .render_account(&message.notice)
            .and_then(|rendered| {
                let to: Mailbox = message.address.parse().map_err(|e| {
                    Error::Invalid(format!("recipient address {:?}: {e}", message.address))
                })?;
                build_account(
                    &format!("account-{}", message.id),
                    &rendered,
                    &self.settings.from,
                    &to,
                    &self.settings.message_id_domain,
                )
            });
        match email {
            Ok(email) => self.sender.send(email).await,
            Err(e) => SendOutcome::Permanent {
                reason: e.to_string(),
            },
        }
    }
}
