//! The Messages resource: authentication, Twilio's validation codes, faults, and the reply.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{ReceivedSms, Shared, callback};
use crate::fault::Fault;

const API_VERSION: &str = "2010-04-01";

/// Twilio's error body: `{code, message, more_info, status}`.
pub(crate) fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

pub(crate) async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authenticated(&shared, &headers) {
        let mut response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return response;
    }
    if account_sid != shared.config.account_sid {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{account_sid}/Messages.json was not found"
            ),
        );
    }
    let form = Form::parse(&body);
    let to = match form.get("To") {
        None => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21604,
                "A 'To' phone number is required.",
            );
        }
        Some(to) if !is_e164(to) => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        Some(to) => to.to_owned(),
    };
    let from = form.get("From").map(str::to_owned);
    let messaging_service_sid = form.get("MessagingServiceSid").map(str::to_owned);
    if from.is_none() && messaging_service_sid.is_none() {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    }
    let Some(text) = form.get("Body").map(str::to_owned) else {
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    let mut sms = ReceivedSms {
        sid: new_message_sid(),
        account_sid: account_sid.clone(),
        to,
        from,
        messaging_service_sid,
        body: text,
        status_callback: form.get("StatusCallback").map(str::to_owned),
        accepted: true,
        response_status: Some(201),
        error_code: None,
        received_at_unix_ms: crate::now_unix_ms(),
    };

    let mut final_status = callback::FinalStatus::Delivered;
    match shared.faults.take(&sms.to) {
        Some(Fault::Status {
            status,
            code,
            retry_after_secs,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = code.unwrap_or_else(|| default_code(status));
            sms.accepted = status.is_success();
            sms.response_status = Some(status.as_u16());
            sms.error_code = Some(code);
            shared.inbox.push(sms);
            let mut response = twilio_error(status, code, error_message(code));
            if let Some(seconds) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return response;
        }
        Some(Fault::Redirect { location }) => {
            sms.accepted = false;
            sms.response_status = Some(302);
            shared.inbox.push(sms);
            return redirect(&location);
        }
        Some(Fault::Hang) => {
            sms.accepted = false;
            sms.response_status = None;
            shared.inbox.push(sms);
            crate::server::hang(&shared.shutdown).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Some(Fault::Drop) => {
            // Taken and processed (callbacks included), but the reply never comes.
            sms.response_status = None;
            callback::schedule(&shared, &sms, final_status);
            shared.inbox.push(sms);
            crate::server::hang(&shared.shutdown).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Some(Fault::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Undelivered { error_code }) => {
            let code = error_code.unwrap_or(30003);
            sms.error_code = Some(code);
            final_status = callback::FinalStatus::Undelivered(code);
        }
        Some(fault @ Fault::Reject { .. }) => {
            tracing::warn!(?fault, "fault has no meaning for Twilio; ignored")
        }
        None => {}
    }
    let reply = message_body(&sms, "queued");
    callback::schedule(&shared, &sms, final_status);
    shared.inbox.push(sms);
    (StatusCode::CREATED, Json(reply)).into_response()
}

/// Twilio's message resource for `sms`, in `status`.
fn message_body(sms: &ReceivedSms, status: &str) -> serde_json::Value {
    let created = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(sms.received_at_unix_ms) * 1_000_000,
    )
    .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
    .format(&time::format_description::well_known::Rfc2822)
    .unwrap_or_default();
    json!({
        "account_sid": sms.account_sid,
        "api_version": API_VERSION,
        "body": sms.body,
        "date_created": created,
        "date_sent": null,
        "date_updated": created,
        "direction": "outbound-api",
        "error_code": sms.error_code,
        "error_message": null,
        "from": sms.from,
        "messaging_service_sid": sms.messaging_service_sid,
        "num_media": "0",
        "num_segments": num_segments(&sms.body).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sms.sid,
        "status": status,
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{}/Messages/{}/Media.json", sms.account_sid, sms.sid),
        },
        "to": sms.to,
        "uri": format!("/{API_VERSION}/Accounts/{}/Messages/{}.json", sms.account_sid, sms.sid),
    })
}

/// `GET …/Messages.json`: the account's messages (those Twilio created), newest first,
/// filtered by `To`, a page at a time (`PageSize`, `Page`), with `next_page_uri`.
pub(crate) async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(account_sid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if !authenticated(&shared, &headers) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if account_sid != shared.config.account_sid {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let to = param("To");
    let page_size = param("PageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize)
        .clamp(1, 1000);
    let page = param("Page").and_then(|v| v.parse().ok()).unwrap_or(0usize);
    let mut created: Vec<ReceivedSms> = shared
        .inbox
        .accepted()
        .into_iter()
        .filter(|sms| to.is_none_or(|to| sms.to == to))
        .collect();
    created.reverse();
    let start = page * page_size;
    let messages: Vec<serde_json::Value> = created
        .iter()
        .skip(start)
        .take(page_size)
        .map(|sms| {
            let status = if sms.error_code.is_some() {
                "undelivered"
            } else {
                "delivered"
            };
            message_body(sms, status)
        })
        .collect();
    let uri = |page: usize| {
        let mut uri = format!(
            "/{API_VERSION}/Accounts/{account_sid}/Messages.json?PageSize={page_size}&Page={page}"
        );
        if let Some(to) = to {
            uri.push_str("&To=");
            uri.push_str(&url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>());
        }
        uri
    };
    let next = (start + page_size < created.len()).then(|| uri(page + 1));
    Json(json!({
        "messages": messages,
        "page": page,
        "page_size": page_size,
        "start": start,
        "end": start + messages.len().saturating_sub(1),
        "uri": uri(page),
        "first_page_uri": uri(0),
        "next_page_uri": next,
        "previous_page_uri": (page > 0).then(|| uri(page - 1)),
    }))
    .into_response()
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Basic auth with the account sid and auth token, compared in constant time.
fn authenticated(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = user.ct_eq(shared.config.account_sid.as_bytes());
    let password_ok = password.ct_eq(shared.config.auth_token.as_bytes());
    (user_ok & password_ok).into()
}

/// The first value of each form field, as Twilio reads them.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// A present, non-empty field: Twilio treats an empty `Body` as missing.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// `+` then 2 to 15 digits, the first not zero (ITU-T E.164).
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Segments as Twilio counts them: 160/153 characters in GSM-7, 70/67 in UCS-2. Any
/// non-ASCII character is treated as forcing UCS-2, which is close enough for a test double.
fn num_segments(body: &str) -> usize {
    let chars = body.chars().count();
    let (single, multi) = if body.is_ascii() {
        (160, 153)
    } else {
        (70, 67)
    };
    if chars <= single {
        1
    } else {
        chars.div_ceil(multi)
    }
}

fn new_message_sid() -> String {
    format!("SM{}", hex::encode(rand::random::<[u8; 16]>()))
}

fn default_code(status: StatusCode) -> u32 {
    match status.as_u16() {
        429 => 20429,
        401 => 20003,
        404 => 20404,
        503 => 20503,
        500..=599 => 20500,
        _ => 21211,
    }
}

fn error_message(code: u32) -> &'static str {
    match code {
        20003 => "Authenticate",
        20404 => "The requested resource was not found",
        20429 => "Too Many Requests",
        20500 => "An internal server error has occurred",
        20503 => "Service unavailable",
        21211 => "The 'To' number is not a valid phone number.",
        21408 => {
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number."
        }
        21610 => "Attempt to send to unsubscribed recipient",
        21614 => "'To' number is not a valid mobile number",
        _ => "Request refused (fault injected)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers() {
        assert!(is_e164("+15551234567"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+0555"));
        assert!(!is_e164("+1555123456789012"));
        assert!(!is_e164("+1-555"));
    }

    #[test]
    fn segments() {
        assert_eq!(num_segments(&"a".repeat(160)), 1);
        assert_eq!(num_segments(&"a".repeat(161)), 2);
        assert_eq!(num_segments(&"é".repeat(71)), 2);
    }
}
