//! Standard Webhooks signing: the endpoint secret, the signature, and the three headers.
//!
//! The receiver recomputes `HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")`
//! and compares it with one of the space-separated `v1,<base64>` entries of
//! `webhook-signature`. Signing the id and timestamp with the body is what lets a receiver
//! reject replays (stale timestamps) and deduplicate resends (same id).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use crate::error::Error;

use tocsin_core::webhook_secret::GENERATED_KEY_LEN;
pub use tocsin_core::webhook_secret::SECRET_PREFIX;
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Key sizes the specification allows (192 to 512 bits); we generate 256.
const MIN_KEY_LEN: usize = 24;
const MAX_KEY_LEN: usize = 64;
/// Receivers store message ids for deduplication; keep them short and header-safe.
const MAX_MSG_ID_LEN: usize = 255;

/// An endpoint's signing secret. The key is zeroed on drop and never printed by `Debug`;
/// [`WebhookSecret::expose`] gives the `whsec_` form for storage and for showing the
/// customer once.
#[derive(Clone)]
pub struct WebhookSecret(Arc<SecretSlice<u8>>);

impl WebhookSecret {
    /// A fresh secret of 32 random bytes from the thread-local CSPRNG (seeded by the OS).
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        Self(Arc::new(key.into()))
    }

    /// Reads a `whsec_<base64>` secret, as stored or as a customer pasted it.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::invalid("webhook_secret", reason);
        let encoded = input
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| invalid("must start with whsec_"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| invalid("is not valid base64 after whsec_"))?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(invalid(&format!(
                "key is {} bytes; it must be {MIN_KEY_LEN} to {MAX_KEY_LEN}",
                key.len()
            )));
        }
        Ok(Self(Arc::new(key.into())))
    }

    /// The secret in its `whsec_<base64>` form. Named so every call site reads as a
    /// deliberate disclosure.
    pub fn expose(&self) -> String {
        tocsin_core::webhook_secret::encode(self.key())
    }

    fn key(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl FromStr for WebhookSecret {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// The `v1,<base64>` signature of one message under one secret.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers for one message.
///
/// `secrets` holds the endpoint's current secret, and during a key rotation the previous
/// one as well: the message is signed under each, space-separated, so receivers verify
/// with whichever they know. `msg_id` must stay the same across resends of one delivery,
/// since receivers deduplicate on it; `timestamp_secs` is the time of this attempt.
pub fn signature_headers(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> Result<HeaderMap, Error> {
    if secrets.is_empty() {
        return Err(Error::invalid(
            "webhook_secret",
            "at least one secret is needed to sign",
        ));
    }
    let id_ok = !msg_id.is_empty()
        && msg_id.len() <= MAX_MSG_ID_LEN
        && msg_id.bytes().all(|b| b.is_ascii_graphic());
    if !id_ok {
        return Err(Error::invalid(
            "webhook_id",
            format!("must be 1 to {MAX_MSG_ID_LEN} visible ASCII characters"),
        ));
    }
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp_secs, body))
        .collect();
    let value = |s: String| {
        HeaderValue::try_from(s).map_err(|e| Error::invalid("webhook_headers", e.to_string()))
    };
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        HeaderName::from_static(HEADER_ID),
        value(msg_id.to_owned())?,
    );
    headers.insert(
        HeaderName::from_static(HEADER_TIMESTAMP),
        value(timestamp_secs.to_string())?,
    );
    headers.insert(
        HeaderName::from_static(HEADER_SIGNATURE),
        value(signatures.join(" "))?,
    );
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert!(a.expose().starts_with("whsec_"));
        assert_ne!(a.expose(), b.expose());
        let again = WebhookSecret::parse(&a.expose()).unwrap();
        assert_eq!(again.expose(), a.expose());
        assert_eq!(again.key().len(), 32);
    }

    #[test]
    fn debug_never_prints_the_key() {
        let secret = WebhookSecret::generate();
        let printed = format!("{secret:?}");
        assert_eq!(printed, "WebhookSecret([REDACTED])");
        let encoded = secret.expose();
        assert!(!printed.contains(&encoded["whsec_".len()..]));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "",
            "abc",
            "whsec_",
            "whsec_!!!",
            "whsec_c2hvcnQ=",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(WebhookSecret::parse(bad).is_err(), "{bad:?}");
        }
        let too_long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert!(WebhookSecret::parse(&too_long).is_err());
    }

    /// The example from the Standard Webhooks specification's test vectors.
    #[test]
    fn signs_the_specification_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn headers_carry_one_signature_per_secret() {
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let headers =
            signature_headers(&[new.clone(), old.clone()], "msg_1", 1700000000, b"{}").unwrap();
        assert_eq!(headers[HEADER_ID], "msg_1");
        assert_eq!(headers[HEADER_TIMESTAMP], "1700000000");
        let expected = format!(
            "{} {}",
            sign(&new, "msg_1", 1700000000, b"{}"),
            sign(&old, "msg_1", 1700000000, b"{}")
        );
        assert_eq!(headers[HEADER_SIGNATURE], expected.as_str());
    }

    #[test]
    fn headers_refuse_bad_ids_and_no_secret() {
        let secret = WebhookSecret::generate();
        for id in ["", "has space", "new\nline", &"x".repeat(256)] {
            assert!(
                signature_headers(std::slice::from_ref(&secret), id, 1, b"").is_err(),
                "{id:?}"
            );
        }
        assert!(signature_headers(&[], "msg_1", 1, b"").is_err());
    }
}
