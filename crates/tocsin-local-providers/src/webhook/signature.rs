//! Standard Webhooks verification, written here rather than borrowed from the reference crate
//! so that the tests can use that crate as an independent signer.

use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Error;

/// An endpoint's signing key: the bytes behind `whsec_<base64>`.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Reads `whsec_<base64>`; the prefix is required so a raw key is never taken by mistake.
    pub fn parse(secret: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::Invalid {
            what: "webhook secret",
            reason: reason.to_owned(),
        };
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| invalid("must start with whsec_"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| invalid("not base64 after whsec_"))?;
        if key.is_empty() {
            return Err(invalid("empty key"));
        }
        Ok(Self(key))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// The headers of a request that passed verification.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) id: String,
    pub(crate) timestamp: i64,
}

/// Why a request failed verification; kept with the record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unverified {
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than the tolerance away from now")]
    StaleTimestamp,
    #[error("no v1 signature matches")]
    NoMatch,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, Unverified> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(Unverified::MissingHeader(name))
}

/// Checks `webhook-id`, `webhook-timestamp` and `webhook-signature` against `body`. Each
/// `v1,<base64>` entry is tried; the comparison is constant time (`Mac::verify_slice`).
pub(crate) fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now_unix_secs: i64,
    tolerance: Duration,
) -> Result<Verified, Unverified> {
    let id = header(headers, "webhook-id")?;
    let timestamp: i64 = header(headers, "webhook-timestamp")?
        .trim()
        .parse()
        .map_err(|_| Unverified::BadTimestamp)?;
    let signatures = header(headers, "webhook-signature")?;
    if now_unix_secs.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(Unverified::StaleTimestamp);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if matched {
        Ok(Verified {
            id: id.to_owned(),
            timestamp,
        })
    } else {
        Err(Unverified::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn any_listed_signature_passes_and_time_is_checked() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"a":1}"#;
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert("webhook-timestamp", HeaderValue::from_static("1700000000"));
        let good = sign(&secret.0, "msg_1", 1_700_000_000, body);
        let list = format!("v1,AAAA v2,zzz {good}");
        headers.insert("webhook-signature", HeaderValue::from_str(&list).unwrap());
        let tolerance = Duration::from_secs(300);
        assert!(verify(&secret, &headers, body, 1_700_000_100, tolerance).is_ok());
        assert!(matches!(
            verify(&secret, &headers, body, 1_700_000_400, tolerance),
            Err(Unverified::StaleTimestamp)
        ));
        assert!(matches!(
            verify(&secret, &headers, b"{}", 1_700_000_000, tolerance),
            Err(Unverified::NoMatch)
        ));
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    }
}
