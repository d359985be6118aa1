//! Signed, expiring links in messages: a reader's key to act on their own subscription
//! (unsubscribe, manage preferences) without a password.
//!
//! A token names the subscriber, what it may do, optionally a channel, and when it expires,
//! and carries an HMAC-SHA256 over all of it under the operator's link secret. Nothing is
//! stored per token: any replica holding the secret checks it, and rotating the secret voids
//! every link sent. Tokens hold no contact details, only the internal subscriber id.
//!
//! Format: `base64url(payload) "." base64url(first 16 bytes of the MAC)`, the payload being
//! the subscriber id (16 bytes), the purpose (1), the channel (1, 0 for none) and the expiry
//! in Unix seconds (8, big-endian): 58 URL-safe characters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::channel::Channel;
use crate::ids::SubscriberId;

/// The shortest secret accepted: 32 bytes, the size of the MAC's key block's worth of
/// entropy that makes guessing pointless.
pub const MIN_SECRET_BYTES: usize = 32;
const PAYLOAD_BYTES: usize = 26;
const MAC_BYTES: usize = 16;

/// What a link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Stop messages on the link's channel (or every channel when it names none).
    Unsubscribe,
    /// Open the preference centre.
    Preferences,
    /// Confirm a sign-up's email address (double opt-in). The id is the sign-up's, which
    /// becomes the new subscriber's.
    ConfirmSignup,
    /// Enter the code texted to a sign-up's phone number. The id is the sign-up's.
    VerifyPhone,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Unsubscribe => 1,
            Purpose::Preferences => 2,
            Purpose::ConfirmSignup => 3,
            Purpose::VerifyPhone => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Purpose> {
        match b {
            1 => Some(Purpose::Unsubscribe),
            2 => Some(Purpose::Preferences),
            3 => Some(Purpose::ConfirmSignup),
            4 => Some(Purpose::VerifyPhone),
            _ => None,
        }
    }
}

fn channel_byte(channel: Option<Channel>) -> u8 {
    match channel {
        None => 0,
        Some(Channel::Email) => 1,
        Some(Channel::Sms) => 2,
        Some(Channel::Webhook) => 3,
    }
}

fn channel_from_byte(b: u8) -> Option<Option<Channel>> {
    match b {
        0 => Some(None),
        1 => Some(Some(Channel::Email)),
        2 => Some(Some(Channel::Sms)),
        3 => Some(Some(Channel::Webhook)),
        _ => None,
    }
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkClaims {
    pub subscriber_id: SubscriberId,
    pub purpose: Purpose,
    pub channel: Option<Channel>,
    pub expires_at: OffsetDateTime,
}

/// Why a token was refused. The page shows the same thing for every kind of forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is not one Tocsin made, or was cut short")]
    Invalid,
    #[error("the link has expired")]
    Expired,
}

/// The key links are signed with. `Debug` never shows it.
#[derive(Clone)]
pub struct LinkSecret(Vec<u8>);

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(…)")
    }
}

impl LinkSecret {
    /// A secret from configuration; refused when shorter than [`MIN_SECRET_BYTES`].
    pub fn new(raw: &[u8]) -> Result<LinkSecret, crate::DomainError> {
        if raw.len() < MIN_SECRET_BYTES {
            return Err(crate::DomainError::invalid(
                "link_secret",
                format!(
                    "is {} bytes long; use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                    raw.len()
                ),
            ));
        }
        Ok(LinkSecret(raw.to_vec()))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(b"tocsin.link.v1|");
        mac.update(payload);
        mac
    }

    /// A keyed digest of `value` for `context` (a form's anti-forgery field from its cookie,
    /// a texted code as stored): only a holder of the secret can make or check one, and a
    /// short value (a six-digit code) cannot be found from its digest by trying them all.
    pub fn digest(&self, context: &str, value: &[u8]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(b"tocsin.digest.v1|");
        mac.update(context.as_bytes());
        mac.update(b"|");
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// A token for `claims`.
    pub fn sign(&self, claims: &LinkClaims) -> String {
        let mut payload = Vec::with_capacity(PAYLOAD_BYTES);
        payload.extend_from_slice(claims.subscriber_id.as_uuid().as_bytes());
        payload.push(claims.purpose.byte());
        payload.push(channel_byte(claims.channel));
        payload.extend_from_slice(&claims.expires_at.unix_timestamp().to_be_bytes());
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])
        )
    }

    /// The claims of `token` if this secret signed it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<LinkClaims, LinkError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(LinkError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Invalid)?;
        if payload.len() != PAYLOAD_BYTES || tag.len() != MAC_BYTES {
            return Err(LinkError::Invalid);
        }
        // Constant time, so the tag cannot be found a byte at a time.
        self.mac(&payload)
            .verify_truncated_left(&tag)
            .map_err(|_| LinkError::Invalid)?;
        let id: [u8; 16] = payload[..16].try_into().map_err(|_| LinkError::Invalid)?;
        let purpose = Purpose::from_byte(payload[16]).ok_or(LinkError::Invalid)?;
        let channel = channel_from_byte(payload[17]).ok_or(LinkError::Invalid)?;
        let expires: [u8; 8] = payload[18..].try_into().map_err(|_| LinkError::Invalid)?;
        let expires_at = OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(expires))
            .map_err(|_| LinkError::Invalid)?;
        if now >= expires_at {
            return Err(LinkError::Expired);
        }
        Ok(LinkClaims {
            subscriber_id: SubscriberId::from_uuid(uuid::Uuid::from_bytes(id)),
            purpose,
            channel,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn secret() -> LinkSecret {
        LinkSecret::new(&[7u8; 32]).unwrap()
    }

    fn claims() -> LinkClaims {
        LinkClaims {
            subscriber_id: SubscriberId::from_uuid(uuid::Uuid::from_u128(42)),
            purpose: Purpose::Unsubscribe,
            channel: Some(Channel::Email),
            expires_at: datetime!(2027-12-01 00:00 UTC),
        }
    }

    #[test]
    fn a_token_round_trips_and_is_url_safe() {
        let token = secret().sign(&claims());
        assert_eq!(token.len(), 58, "{token}");
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "{token}"
        );
        let now = datetime!(2026-12-07 12:00 UTC);
        assert_eq!(secret().verify(&token, now), Ok(claims()));
    }

    #[test]
    fn forged_cut_expired_and_foreign_tokens_are_refused() {
        let now = datetime!(2026-12-07 12:00 UTC);
        let token = secret().sign(&claims());
        // Another subscriber's id spliced into the payload.
        let other = secret().sign(&LinkClaims {
            subscriber_id: SubscriberId::from_uuid(uuid::Uuid::from_u128(43)),
            ..claims()
        });
        let spliced = format!(
            "{}.{}",
            other.split_once('.').unwrap().0,
            token.split_once('.').unwrap().1
        );
        assert_eq!(secret().verify(&spliced, now), Err(LinkError::Invalid));
        assert_eq!(
            secret().verify(&token[..token.len() - 1], now),
            Err(LinkError::Invalid)
        );
        assert_eq!(secret().verify("", now), Err(LinkError::Invalid));
        assert_eq!(secret().verify("a.b.c", now), Err(LinkError::Invalid));
        let foreign = LinkSecret::new(&[8u8; 32]).unwrap();
        assert_eq!(foreign.verify(&token, now), Err(LinkError::Invalid));
        assert_eq!(
            secret().verify(&token, datetime!(2027-12-01 00:00 UTC)),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn every_purpose_round_trips_and_digests_depend_on_context_and_secret() {
        let now = datetime!(2026-12-07 12:00 UTC);
        for purpose in [
            Purpose::Unsubscribe,
            Purpose::Preferences,
            Purpose::ConfirmSignup,
            Purpose::VerifyPhone,
        ] {
            let c = LinkClaims {
                purpose,
                ..claims()
            };
            assert_eq!(secret().verify(&secret().sign(&c), now), Ok(c));
        }
        let d = secret().digest("code", b"123456");
        assert_eq!(d, secret().digest("code", b"123456"));
        assert_ne!(d, secret().digest("csrf", b"123456"));
        assert_ne!(d, secret().digest("code", b"123457"));
        assert_ne!(
            d,
            LinkSecret::new(&[8u8; 32])
                .unwrap()
                .digest("code", b"123456")
        );
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(LinkSecret::new(b"too short").is_err());
        assert_eq!(format!("{:?}", secret()), "LinkSecret(…)");
    }
}
