//! Asking Twilio whether it has a message: the reconciliation of an attempt whose answer was
//! lost.
//!
//! `GET {base}/2010-04-01/Accounts/{AccountSid}/Messages.json?To=…&PageSize=…` lists the
//! account's messages to one number, newest first, a page at a time. The list has no
//! status-callback field to find our delivery key by, so a message is ours when it went to
//! the same number with the same body, created no earlier than the attempt began (less a
//! little clock skew). The body is rendered from the delivery alone, so a resend would carry
//! exactly the same text.

use secrecy::ExposeSecret;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tracing::instrument;

use super::{MessageResource, TwilioClient};
use crate::status::MessageStatus;

/// Messages per page asked for.
const PAGE_SIZE: &str = "100";
/// Pages read at most: a recipient gets few texts, and the newest come first.
const MOST_PAGES: usize = 5;
/// How far Twilio's clock may be behind ours.
const CLOCK_SKEW: time::Duration = time::Duration::seconds(60);

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    messages: Vec<Listed>,
    next_page_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    sid: String,
    #[serde(default)]
    body: String,
    status: Option<MessageStatus>,
    error_code: Option<u32>,
    error_message: Option<String>,
    date_created: Option<String>,
}

impl TwilioClient {
    /// The message to `to` with `body` created at or after `since`, if Twilio has one;
    /// an error (as text) when Twilio could not be asked.
    #[instrument(skip(self, body))]
    pub async fn find(
        &self,
        to: &str,
        body: &str,
        since: OffsetDateTime,
    ) -> Result<Option<MessageResource>, String> {
        let mut url = self.messages_url.clone();
        url.query_pairs_mut()
            .append_pair("To", to)
            .append_pair("PageSize", PAGE_SIZE);
        let earliest = since - CLOCK_SKEW;
        for _ in 0..MOST_PAGES {
            let page = self.page(url.clone()).await?;
            let mut older = false;
            for listed in page.messages {
                let created = listed
                    .date_created
                    .as_deref()
                    .and_then(|date| OffsetDateTime::parse(date, &Rfc2822).ok());
                match created {
                    Some(created) if created < earliest => older = true,
                    _ if listed.body == body => {
                        return Ok(Some(MessageResource {
                            sid: listed.sid,
                            status: listed.status,
                            error_code: listed.error_code,
                            error_message: listed.error_message,
                        }));
                    }
                    _ => {}
                }
            }
            // Newest first: once a page reaches back before the attempt, nothing older is ours.
            let next = page.next_page_uri.filter(|_| !older);
            let Some(next) = next else {
                return Ok(None);
            };
            url = self
                .config
                .base_url
                .join(&next)
                .map_err(|e| format!("Twilio's next page {next:?}: {e}"))?;
        }
        Err(format!(
            "more than {MOST_PAGES} pages of messages to {to} since the attempt; not deciding"
        ))
    }

    async fn page(&self, url: url::Url) -> Result<Page, String> {
        let response = self
            .http
            .get(url)
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose_secret()),
            )
            .send()
            .await
            .map_err(|e| format!("listing messages: {e:#}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("listing messages: HTTP {}", status.as_u16()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("listing messages: unreadable answer: {e}"))
    }
}
