//! What one attempt to hand a message to a provider came to.
//!
//! Every channel maps its provider's answers onto this one type, and the delivery runtime
//! decides from it alone whether to record a success, retry, give up, or apply the
//! channel's policy for an attempt whose fate nobody knows.

use std::time::Duration;

/// The result of one send attempt, as the channel understood the provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted the message. `provider_id` is its reference (Twilio's `sid`,
    /// the SMTP queue id), kept for reconciliation and support.
    Delivered { provider_id: Option<String> },
    /// The attempt failed in a way that may pass: a timeout before anything was sent,
    /// a refused connection, SMTP 4xx, HTTP 408/429/5xx. `retry_after` is the provider's own
    /// request to wait (HTTP `Retry-After`, Twilio 20429); the retry is never scheduled
    /// earlier than it.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused this message and will refuse it again: SMTP 5xx, HTTP 4xx,
    /// an invalid number. No retry.
    Permanent { reason: String },
    /// The destination itself is gone (webhook 410, SMS recipient opted out): no retry,
    /// and the destination is disabled so later messages do not try it either.
    Gone { reason: String },
    /// The request may have reached the provider but no answer came back (a timeout after
    /// the SMTP `DATA` terminator or the Twilio POST body was sent). Each channel decides
    /// what that means: a webhook resends with the same id, an SMS is not resent blindly.
    Unknown { reason: String },
}

impl SendOutcome {
    /// The outcome's stable name, used in the ledger, in log events and in metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } => "permanent",
            Self::Gone { .. } => "gone",
            Self::Unknown { .. } => "unknown",
        }
    }

    /// A human-readable reason, empty for a delivery.
    pub fn reason(&self) -> &str {
        match self {
            Self::Delivered { .. } => "",
            Self::Transient { reason, .. }
            | Self::Permanent { reason }
            | Self::Gone { reason }
            | Self::Unknown { reason } => reason,
        }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_reasons_are_carried() {
        let gone = SendOutcome::Gone {
            reason: "410 Gone".into(),
        };
        assert_eq!(gone.as_str(), "gone");
        assert_eq!(gone.reason(), "410 Gone");
        let delivered = SendOutcome::Delivered {
            provider_id: Some("SM1".into()),
        };
        assert_eq!(delivered.as_str(), "delivered");
        assert_eq!(delivered.reason(), "");
        assert_eq!(SendOutcome::transient("timeout").as_str(), "transient");
    }
}
