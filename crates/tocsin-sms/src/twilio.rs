//! A small client for Twilio's Messages API, mapping every answer onto [`SendOutcome`].
//!
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP Basic
//! auth. The base URL is configurable so tests and the demo can point it at a local
//! Twilio-compatible server.
//!
//! # What an unknown outcome means for SMS
//!
//! Twilio's Messages API has no idempotency key, so a POST whose answer never came back
//! (a timeout or a dropped connection after the request was sent) may or may not have created
//! a message, and a second POST would create a second one: the customer would get the same
//! text twice, and on a phone that is noise they cannot collapse. The SMS policy is therefore
//! **never resend blindly**: the attempt is recorded as [`SendOutcome::Unknown`] and reconciled
//! from the status callback, which carries our delivery key in its URL (`?delivery={key}`).
//! A callback for the key proves the message exists and says how it fared. Until one comes,
//! the worker asks Twilio's Messages list on the retry schedule (`lookup`): a message found
//! settles the delivery by its status; none found means the POST never created one, and only
//! then is the text sent again.
//!
//! # Mapping
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx with a `sid` | `Delivered` (accepted; the callback tells whether it arrived) |
//! | error 21610 (recipient replied STOP) | `Gone` |
//! | errors 21211, 21212, 21408, 21602, 21603, 21604, 21612, 21614, 20003 (auth) | `Permanent` |
//! | error 20429, HTTP 429 | `Transient`, honouring `Retry-After` |
//! | HTTP 408, 5xx | `Transient` |
//! | any other 3xx or 4xx | `Permanent` |
//! | connect failure (DNS, TCP, TLS): nothing was sent | `Transient` |
//! | timeout or broken connection after the request was sent | `Unknown` |

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use tocsin_core::SendOutcome;
use tracing::instrument;
use url::Url;

use crate::callback::DELIVERY_PARAM;
use crate::error::Error;
use crate::status::MessageStatus;

/// Who the message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A Twilio phone number or alphanumeric sender id (`From`).
    From(String),
    /// A messaging service (`MessagingServiceSid`), which picks the number itself.
    MessagingServiceSid(String),
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `https://api.twilio.com` in production.
    pub base_url: Url,
    pub account_sid: String,
    pub auth_token: SecretString,
    pub sender: Sender,
    /// Where Twilio posts status callbacks; the delivery key is appended as `?delivery=`.
    pub status_callback: Option<Url>,
    /// Bounds the TCP and TLS connect; a connect failure sent nothing.
    pub connect_timeout: Duration,
    /// Bounds the whole request; when it fires after the request went out, the outcome is
    /// unknown.
    pub timeout: Duration,
}

impl TwilioConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.twilio.com";

    pub fn new(
        account_sid: impl Into<String>,
        auth_token: SecretString,
        sender: Sender,
    ) -> TwilioConfig {
        TwilioConfig {
            base_url: Url::parse(Self::DEFAULT_BASE_URL).expect("a valid URL"),
            account_sid: account_sid.into(),
            auth_token,
            sender,
            status_callback: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

/// The parts of Twilio's message resource we use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageResource {
    pub sid: String,
    pub status: Option<MessageStatus>,
    pub error_code: Option<u32>,
    pub error_message: Option<String>,
}

/// Twilio's error body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TwilioError {
    pub code: Option<u32>,
    pub message: Option<String>,
    pub more_info: Option<String>,
    pub status: Option<u16>,
}

/// Sends SMS through one Twilio account.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    messages_url: Url,
    config: TwilioConfig,
}

impl TwilioClient {
    /// Needs a process-wide rustls crypto provider (ring) installed before it is called.
    pub fn new(config: TwilioConfig) -> Result<TwilioClient, Error> {
        if config.account_sid.is_empty() || config.account_sid.contains(['/', '?', '#']) {
            return Err(Error::Config(format!(
                "account sid {:?} is not a sid",
                config.account_sid
            )));
        }
        let messages_url = config
            .base_url
            .join(&format!(
                "2010-04-01/Accounts/{}/Messages.json",
                config.account_sid
            ))
            .map_err(|e| Error::Config(format!("base URL: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            // A redirect from an API endpoint is a misconfiguration, and following it would
            // resend the credentials and the POST somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(TwilioClient {
            http,
            messages_url,
            config,
        })
    }

    /// How long one request may take before it is given up on.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The URL Twilio will call back for `delivery_key`.
    pub fn status_callback_url(&self, delivery_key: &str) -> Option<Url> {
        self.config.status_callback.clone().map(|mut url| {
            url.query_pairs_mut()
                .append_pair(DELIVERY_PARAM, delivery_key);
            url
        })
    }

    /// Asks Twilio to send `body` to `to` (E.164). Never retries: see the module doc.
    #[instrument(skip_all, fields(delivery_key, sid))]
    pub async fn send(&self, to: &str, body: &str, delivery_key: &str) -> SendOutcome {
        tracing::Span::current().record("delivery_key", delivery_key);
        self.post(to, body, self.status_callback_url(delivery_key))
            .await
    }

    /// Sends a text that no delivery tracks (a sign-up's code): no status callback asked.
    #[instrument(skip_all, fields(sid))]
    pub async fn send_untracked(&self, to: &str, body: &str) -> SendOutcome {
        self.post(to, body, None).await
    }

    async fn post(&self, to: &str, body: &str, callback: Option<Url>) -> SendOutcome {
        let mut form: Vec<(&str, String)> = vec![("To", to.to_owned()), ("Body", body.to_owned())];
        match &self.config.sender {
            Sender::From(from) => form.push(("From", from.clone())),
            Sender::MessagingServiceSid(sid) => form.push(("MessagingServiceSid", sid.clone())),
        }
        if let Some(url) = callback {
            form.push(("StatusCallback", url.into()));
        }
        let sent = self
            .http
            .post(self.messages_url.clone())
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose_secret()),
            )
            .form(&form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let outcome = classify_transport(&e);
                tracing::warn!(outcome = outcome.as_str(), error = %e, "Twilio request failed");
                return outcome;
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers(), OffsetDateTime::now_utc());
        // The status line is the answer; a body that cannot be read only costs us details.
        let body = response.text().await.unwrap_or_default();
        let outcome = classify_response(status, &body, retry_after);
        if let SendOutcome::Delivered {
            provider_id: Some(sid),
        } = &outcome
        {
            tracing::Span::current().record("sid", sid.as_str());
            tracing::debug!("accepted by Twilio");
        } else {
            tracing::warn!(
                http_status = status.as_u16(),
                outcome = outcome.as_str(),
                reason = outcome.reason(),
                "Twilio refused the message"
            );
        }
        outcome
    }
}

/// Maps an HTTP answer from the Messages API onto an outcome.
pub fn classify_response(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> SendOutcome {
    if status.is_success() {
        return match serde_json::from_str::<MessageResource>(body) {
            Ok(message) => SendOutcome::Delivered {
                provider_id: Some(message.sid),
            },
            Err(e) => {
                // Twilio said yes; the message exists even if we cannot read its sid.
                tracing::warn!(error = %e, "unreadable success body from Twilio");
                SendOutcome::Delivered { provider_id: None }
            }
        };
    }
    let error: TwilioError = serde_json::from_str(body).unwrap_or_default();
    let reason = match (&error.code, &error.message) {
        (Some(code), Some(message)) => {
            format!("Twilio error {code} (HTTP {}): {message}", status.as_u16())
        }
        (Some(code), None) => format!("Twilio error {code} (HTTP {})", status.as_u16()),
        _ => format!("HTTP {} from Twilio", status.as_u16()),
    };
    match error.code {
        Some(21610) => return SendOutcome::Gone { reason },
        Some(21211 | 21212 | 21408 | 21602 | 21603 | 21604 | 21612 | 21614 | 20003) => {
            return SendOutcome::Permanent { reason };
        }
        Some(20429) => {
            return SendOutcome::Transient {
                reason,
                retry_after,
            };
        }
        _ => {}
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        SendOutcome::Transient {
            reason,
            retry_after,
        }
    } else {
        SendOutcome::Permanent { reason }
    }
}

/// Maps a failure to get any HTTP answer onto an outcome.
pub fn classify_transport(error: &reqwest::Error) -> SendOutcome {
    let reason = format!("{error:#}");
    if error.is_connect() {
        // DNS, TCP or TLS failed, or the connect timed out: the request never left.
        SendOutcome::Transient {
            reason,
            retry_after: None,
        }
    } else if error.is_builder() {
        SendOutcome::Permanent { reason }
    } else {
        // Timed out or broke after the request was written: Twilio may have the message.
        SendOutcome::Unknown { reason }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, relative to `now`.
pub fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

mod lookup;

#[cfg(test)]
mod tests;
