//! What an endpoint's HTTP answer means for the delivery, following the Standard Webhooks
//! guidance: 2xx delivered, 410 gone, 408/429/5xx later, redirects and other 4xx never.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use tocsin_core::SendOutcome;

/// The longest `Retry-After` honoured. An endpoint asking for a day would otherwise park
/// the delivery past its whole retry window; the retry schedule takes over beyond this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of a failing endpoint's answer is kept in the reason, for support.
const REASON_SNIPPET_CHARS: usize = 200;

/// Maps one answer to an outcome. `retry_after` is the raw header; `body` is the start of
/// the response body, already cut to a few KB; `location` is the redirect target, if any.
pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<&str>,
    location: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> SendOutcome {
    let code = status.as_u16();
    let described = || {
        let snippet = snippet(body);
        if snippet.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {snippet}")
        }
    };
    match code {
        200..=299 => SendOutcome::Delivered { provider_id: None },
        410 => SendOutcome::Gone {
            reason: format!("endpoint answered {status}; it asks to be disabled"),
        },
        408 | 429 | 500..=599 => SendOutcome::Transient {
            reason: described(),
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        300..=399 => {
            let target = location
                .map(|l| format!(" to {}", truncate(l, REASON_SNIPPET_CHARS)))
                .unwrap_or_default();
            SendOutcome::Permanent {
                reason: format!("redirect not followed ({status}{target})"),
            }
        }
        _ => SendOutcome::Permanent {
            reason: described(),
        },
    }
}

/// Reads `Retry-After` as delta-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
/// A date in the past means "now"; anything unreadable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = parse_http_date(value)?;
        let now = OffsetDateTime::from(now);
        let delta = at - now;
        if delta.is_negative() {
            Duration::ZERO
        } else {
            delta.unsigned_abs()
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The IMF-fixdate form every current server sends (`Sun, 06 Nov 1994 08:49:37 GMT`), with
/// RFC 2822 as a lenient fallback for older senders.
fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    let imf = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(value, imf)
        .map(PrimitiveDateTime::assume_utc)
        .or_else(|_| OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822))
        .ok()
}

/// The first characters of a body, on one line, for a log-friendly reason.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&one_line, REASON_SNIPPET_CHARS)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn outcome(code: u16, retry_after: Option<&str>, body: &str) -> SendOutcome {
        classify(
            StatusCode::from_u16(code).unwrap(),
            retry_after,
            None,
            body.as_bytes(),
            at(0),
        )
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome(200, None, "ok").as_str(), "delivered");
        assert_eq!(outcome(204, None, "").as_str(), "delivered");
        assert_eq!(outcome(410, None, "").as_str(), "gone");
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(outcome(code, None, "").as_str(), "transient", "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert_eq!(outcome(code, None, "").as_str(), "permanent", "{code}");
        }
        let redirect = classify(
            StatusCode::FOUND,
            None,
            Some("http://169.254.169.254/"),
            b"",
            at(0),
        );
        assert_eq!(redirect.as_str(), "permanent");
        assert!(
            redirect.reason().contains("redirect not followed"),
            "{redirect:?}"
        );
        assert!(
            redirect.reason().contains("169.254.169.254"),
            "{redirect:?}"
        );
    }

    #[test]
    fn reasons_carry_a_short_single_line_snippet() {
        let reason = outcome(400, None, "bad\n  request").reason().to_owned();
        assert_eq!(reason, "400 Bad Request: bad request");
        let long = outcome(500, None, &"x".repeat(5000))
            .reason()
            .chars()
            .count();
        assert!(long < 300, "{long}");
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn transient_answers_carry_retry_after() {
        let SendOutcome::Transient { retry_after, .. } = outcome(429, Some("30"), "") else {
            panic!()
        };
        assert_eq!(retry_after, Some(Duration::from_secs(30)));
        let SendOutcome::Transient { retry_after, .. } = outcome(503, None, "") else {
            panic!()
        };
        assert_eq!(retry_after, None);
    }
}
