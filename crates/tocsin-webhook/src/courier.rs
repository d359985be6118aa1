//! The webhook channel as the delivery runtime sees it: one signed POST per delivery.
//!
//! A resend of one delivery is the same request apart from its `webhook-timestamp` (and so
//! its signature): the `webhook-id` is the delivery key, and the body's `timestamp` is when
//! the event was recorded, not when this attempt ran. Receivers can therefore deduplicate on
//! the id, and an unknown outcome (a timeout after the request went out) is simply resent.

use time::OffsetDateTime;
use tocsin_core::{Channel, RetryPolicy, SendOutcome};
use tocsin_delivery::{ChannelPolicy, Courier, Message, UnknownPolicy};
use tracing::instrument;

use crate::client::{ClientConfig, WebhookClient};
use crate::error::Error;
use crate::payload::{PayloadInput, WebhookPayload};
use crate::signature::{WebhookSecret, signature_headers};

/// Sends webhooks for the delivery worker.
#[derive(Debug, Clone)]
pub struct WebhookCourier {
    client: WebhookClient,
    retry: RetryPolicy,
}

impl WebhookCourier {
    /// A courier with its own SSRF-safe client. The rustls crypto provider must be installed
    /// first (`tocsin_runtime::tls::install_crypto_provider`).
    pub fn new(client: ClientConfig, retry: RetryPolicy) -> Result<Self, Error> {
        Ok(Self::with_client(WebhookClient::new(client)?, retry))
    }

    pub fn with_client(client: WebhookClient, retry: RetryPolicy) -> Self {
        Self { client, retry }
    }
}

/// The body's facts for one message. `created_at` is the event's `recorded_at`, which is
/// fixed once the event is in the log, so every attempt of a delivery has the same body.
pub fn payload_input(message: &Message) -> PayloadInput {
    let notice = &message.notice;
    PayloadInput {
        delivery_id: message.key.as_str().to_owned(),
        created_at: message.event.recorded_at,
        incident_id: message.incident.id,
        title: notice.title.clone(),
        status: notice.status,
        severity: notice.severity,
        affected: notice.affected.clone(),
        started_at: notice.started_at,
        reported_at: notice.reported_at,
        resolved_at: notice.resolved_at,
        next_update_at: notice.next_update_at,
        review_to_follow: notice.review_to_follow,
        window: notice.window,
        url: notice.status_page_url.clone(),
        event_id: message.event.event_id,
        kind: notice.kind,
        version: notice.version,
        message: notice.message.clone(),
        occurred_at: notice.occurred_at,
        customer_action: notice.customer_action.clone(),
        link: notice.link.clone(),
    }
}

impl Courier for WebhookCourier {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }

    fn policy(&self) -> ChannelPolicy {
        ChannelPolicy {
            // Receivers deduplicate on `webhook-id`, which every resend keeps.
            unknown: UnknownPolicy::Resend,
            // Machines want every event, in order; superseding is for people.
            supersede_stale: false,
            retry: self.retry,
        }
    }

    /// The endpoint: its URL without query or fragment, so subscribers told apart only by a
    /// token in the query still count as one server's load.
    fn destination(&self, message: &Message) -> Option<String> {
        let url = message.subscriber.contacts.webhook_url.as_deref()?;
        let mut endpoint = url::Url::parse(url).ok()?;
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        Some(endpoint.into())
    }

    #[instrument(skip_all, fields(delivery_key = %message.key, attempt = message.attempt))]
    async fn send(&self, message: &Message) -> SendOutcome {
        // Without a URL or a usable secret no attempt can ever succeed: final, not retried.
        let Some(url) = message.subscriber.contacts.webhook_url.as_deref() else {
            return SendOutcome::Permanent {
                reason: "the subscriber has no webhook URL".into(),
            };
        };
        let secret = match message.webhook_secret.as_deref().map(WebhookSecret::parse) {
            Some(Ok(secret)) => secret,
            Some(Err(e)) => {
                return SendOutcome::Permanent {
                    reason: format!("the endpoint's signing secret is unusable: {e}"),
                };
            }
            None => {
                return SendOutcome::Permanent {
                    reason: "the endpoint has no signing secret".into(),
                };
            }
        };
        let body = WebhookPayload::new(&payload_input(message)).to_body();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let headers = match signature_headers(&[secret], message.key.as_str(), now, &body) {
            Ok(headers) => headers,
            Err(e) => {
                return SendOutcome::Permanent {
                    reason: format!("the request could not be signed: {e}"),
                };
            }
        };
        self.client.send(url, headers, body).await
    }
}
