//! Status callbacks: `sent`, then `delivered` or `undelivered`, POSTed as forms to the
//! message's `StatusCallback` and signed as Twilio signs them.

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

use super::{ReceivedSms, Shared};

/// The last status a message reaches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FinalStatus {
    Delivered,
    /// With the Twilio error code the callback carries.
    Undelivered(u32),
}

/// One callback POST and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackAttempt {
    pub message_sid: String,
    pub status: String,
    pub url: String,
    /// The receiver's HTTP status; `None` when the request failed.
    pub response_status: Option<u16>,
    pub error: Option<String>,
}

/// `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + each parameter's name and value,
/// parameters sorted by name)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Sends the message's callbacks in the background, if it asked for them.
pub(crate) fn schedule(shared: &Arc<Shared>, sms: &ReceivedSms, final_status: FinalStatus) {
    let Some(url) = sms.status_callback.clone() else {
        return;
    };
    let shared = shared.clone();
    let sms = sms.clone();
    tokio::spawn(async move {
        let final_name = match final_status {
            FinalStatus::Delivered => "delivered",
            FinalStatus::Undelivered(_) => "undelivered",
        };
        for status in ["sent", final_name] {
            tokio::select! {
                () = tokio::time::sleep(shared.config.callback_delay) => {}
                () = shared.shutdown.wait() => return,
            }
            let error_code = match (status, final_status) {
                ("undelivered", FinalStatus::Undelivered(code)) => Some(code),
                _ => None,
            };
            send(&shared, &sms, &url, status, error_code).await;
        }
    });
}

async fn send(
    shared: &Shared,
    sms: &ReceivedSms,
    url: &str,
    status: &str,
    error_code: Option<u32>,
) {
    // Waiting for a slot bounds the sockets a benchmark of many messages opens at once.
    let Ok(_slot) = shared.callback_slots.acquire().await else {
        return;
    };
    let mut params: Vec<(String, String)> = vec![
        ("AccountSid".into(), sms.account_sid.clone()),
        ("ApiVersion".into(), "2010-04-01".into()),
        ("From".into(), sms.from.clone().unwrap_or_default()),
        ("MessageSid".into(), sms.sid.clone()),
        ("MessageStatus".into(), status.into()),
        ("SmsSid".into(), sms.sid.clone()),
        ("SmsStatus".into(), status.into()),
        ("To".into(), sms.to.clone()),
    ];
    if let Some(service) = &sms.messaging_service_sid {
        params.push(("MessagingServiceSid".into(), service.clone()));
    }
    if let Some(code) = error_code {
        params.push(("ErrorCode".into(), code.to_string()));
    }
    let signed = signature(&shared.config.auth_token, url, &params);
    let result = shared
        .client
        .post(url)
        .header("X-Twilio-Signature", signed)
        .form(&params)
        .send()
        .await;
    let (response_status, error) = match result {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(error) => {
            tracing::warn!(message_sid = %sms.sid, %status, %error, "status callback failed");
            (None, Some(error.to_string()))
        }
    };
    shared.callbacks.lock().unwrap().push(CallbackAttempt {
        message_sid: sms.sid.clone(),
        status: status.to_owned(),
        url: url.to_owned(),
        response_status,
        error,
    });
}
