//! Where one delivery stands in the ledger.
//!
//! The store writes these names, the API reports them, and operators filter on them, so the
//! set is closed and its spelling is defined once, here.

use std::fmt;
use std::str::FromStr;

use crate::error::DomainError;

/// The state of one delivery (one event, one subscriber, one channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Recorded by the resolver, not attempted yet (quiet hours may hold it).
    Pending,
    /// Claimed by a worker, which is sending it.
    Sending,
    /// Failed transiently; a retry is scheduled.
    Retrying,
    /// Accepted by the provider.
    Delivered,
    /// The provider may or may not have it; its callback or the channel's policy decides.
    Unknown,
    /// Refused for good.
    Failed,
    /// Retries ran out; a replay can put it back.
    Dead,
    /// A newer message to the same recipient replaced it before it went out.
    Superseded,
    /// Not sent: the subscriber was deleted or the endpoint disabled first.
    Skipped,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 9] = [
        Self::Pending,
        Self::Sending,
        Self::Retrying,
        Self::Delivered,
        Self::Unknown,
        Self::Failed,
        Self::Dead,
        Self::Superseded,
        Self::Skipped,
    ];

    /// The name stored in the ledger's `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Unknown => "unknown",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Superseded => "superseded",
            Self::Skipped => "skipped",
        }
    }

    /// True when no worker will pick the delivery up again by itself. `unknown` counts as
    /// settled: only a provider's callback (or a resend its channel allows, which is then
    /// `retrying`) moves it on, and `dead` moves only by a replay.
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Pending | Self::Sending | Self::Retrying)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = DomainError;

    /// Accepts exactly the names [`DeliveryState::as_str`] produces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid(
                    "state",
                    format!(
                        "{s:?} is not one of pending, sending, retrying, delivered, unknown, \
                         failed, dead, superseded, skipped"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>().unwrap(), state);
        }
        let err = "sent".parse::<DeliveryState>().unwrap_err();
        assert!(err.to_string().contains("\"sent\""), "{err}");
    }

    #[test]
    fn only_pending_sending_and_retrying_are_unsettled() {
        let unsettled: Vec<_> = DeliveryState::ALL
            .into_iter()
            .filter(|s| !s.is_settled())
            .collect();
        assert_eq!(
            unsettled,
            [
                DeliveryState::Pending,
                DeliveryState::Sending,
                DeliveryState::Retrying
            ]
        );
    }
}

/// One delivery as the ledger records it: one event, to one subscriber, on one channel,
/// under its deterministic key. Its job on the bus carries exactly these ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub delivery_key: String,
    pub incident_id: crate::IncidentId,
    pub event_id: crate::EventId,
    pub event_version: u64,
    pub subscriber_id: crate::SubscriberId,
    pub channel: crate::Channel,
    /// Quiet hours: not to be sent before this instant.
    pub send_after: Option<time::OffsetDateTime>,
    /// The queue its job waits in, decided by its fan-out.
    pub lane: crate::Lane,
}
