//! What the local provider servers say they accepted, keyed by the delivery key each message
//! carries (the email `Message-ID`'s local part, the SMS status callback's `delivery`
//! parameter, the `webhook-id`): the customers' side of the torture harness and of the
//! benchmarks that time single deliveries.

use anyhow::Context;
use serde::Deserialize;
use tocsin_core::Channel;

use crate::stack::Ports;

/// One accepted message at a provider, in the order the provider took them.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) channel: Channel,
    /// `None` when the message carried no recognisable delivery key.
    pub(crate) key: Option<String>,
    /// The recipient addresses (SMTP envelope), the `To` number, or the endpoint name.
    pub(crate) recipients: Vec<String>,
    /// Position in the provider's own list: arrival order.
    pub(crate) seq: usize,
    /// When the provider took it, by this machine's clock.
    pub(crate) received_at_unix_ms: u64,
}

#[derive(Deserialize)]
struct MailRecord {
    recipients: Vec<String>,
    message_id: Option<String>,
    accepted: bool,
    received_at_unix_ms: u64,
}

#[derive(Deserialize)]
struct SmsRecord {
    to: String,
    status_callback: Option<String>,
    accepted: bool,
    received_at_unix_ms: u64,
}

#[derive(Deserialize)]
struct HookRecord {
    endpoint: String,
    webhook_id: Option<String>,
    accepted: bool,
    received_at_unix_ms: u64,
}

/// Pages through `GET /_control/messages` of one provider.
async fn messages<T: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    port: u16,
) -> anyhow::Result<Vec<T>> {
    const PAGE: usize = 2000;
    let mut all = Vec::new();
    loop {
        let url = format!(
            "http://127.0.0.1:{port}/_control/messages?offset={}&limit={PAGE}",
            all.len()
        );
        let page: Vec<T> = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("asking {url}"))?
            .json()
            .await
            .with_context(|| format!("reading {url}"))?;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Every accepted message at the three providers. A refused request (a fault, a hang) is no
/// delivery; a `drop` fault's request was taken, so it counts.
pub(crate) async fn received(
    http: &reqwest::Client,
    ports: Ports,
) -> anyhow::Result<Vec<Received>> {
    let mut all = Vec::new();
    let mails: Vec<MailRecord> = messages(http, ports.smtp_control).await?;
    for (seq, mail) in mails.into_iter().enumerate().filter(|(_, m)| m.accepted) {
        // `<dlv_…@status.acme.example>`: the local part is the delivery key.
        let key = mail.message_id.as_deref().and_then(|id| {
            let id = id.trim().trim_start_matches('<').trim_end_matches('>');
            id.split_once('@').map(|(local, _)| local.to_owned())
        });
        all.push(Received {
            channel: Channel::Email,
            key,
            recipients: mail.recipients,
            seq,
            received_at_unix_ms: mail.received_at_unix_ms,
        });
    }
    let texts: Vec<SmsRecord> = messages(http, ports.twilio).await?;
    for (seq, sms) in texts.into_iter().enumerate().filter(|(_, s)| s.accepted) {
        let key = sms
            .status_callback
            .as_deref()
            .and_then(|url| url::Url::parse(url).ok())
            .and_then(|url| {
                url.query_pairs()
                    .find(|(name, _)| name == "delivery")
                    .map(|(_, value)| value.into_owned())
            });
        all.push(Received {
            channel: Channel::Sms,
            key,
            recipients: vec![sms.to],
            seq,
            received_at_unix_ms: sms.received_at_unix_ms,
        });
    }
    let hooks: Vec<HookRecord> = messages(http, ports.webhook).await?;
    for (seq, hook) in hooks.into_iter().enumerate().filter(|(_, h)| h.accepted) {
        all.push(Received {
            channel: Channel::Webhook,
            key: hook.webhook_id,
            recipients: vec![hook.endpoint],
            seq,
            received_at_unix_ms: hook.received_at_unix_ms,
        });
    }
    Ok(all)
}
