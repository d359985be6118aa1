//! The ways Tocsin can reach a subscriber.
//!
//! A channel is a closed set known to the domain, because preferences, fan-out and the
//! delivery key all branch on it; each has its own worker crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// One way of delivering a notification. Ordered by declaration, so sets of channels
/// serialise in a stable order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Self::Email, Self::Sms, Self::Webhook];

    /// The stable name used in JSON, in delivery keys and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = DomainError;

    /// Accepts exactly the names [`Channel::as_str`] produces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|channel| channel.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid(
                    "channel",
                    format!("{s:?} is not one of email, sms, webhook"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for channel in Channel::ALL {
            assert_eq!(channel.as_str().parse::<Channel>().unwrap(), channel);
            let json = serde_json::to_string(&channel).unwrap();
            assert_eq!(json, format!("\"{}\"", channel.as_str()));
            assert_eq!(serde_json::from_str::<Channel>(&json).unwrap(), channel);
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        for name in ["", "Email", "push", " sms"] {
            let err = name.parse::<Channel>().unwrap_err();
            assert!(
                matches!(
                    err,
                    DomainError::Invalid {
                        field: "channel",
                        ..
                    }
                ),
                "{name:?}"
            );
        }
    }
}
