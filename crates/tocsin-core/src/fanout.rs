//! Fan-out: which deliveries one recorded event causes for one subscriber, and the key that
//! makes each of those deliveries happen at most once.
//!
//! The resolver calls [`plan`] for every subscriber of an incident and records one delivery
//! per [`Planned`] under its [`DeliveryKey`]. Both are pure functions of their inputs, so a
//! resolver that crashes and replays an event plans the same deliveries under the same keys,
//! and every layer below deduplicates them.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::change::{EventKind, Severity};
use crate::channel::Channel;
use crate::event::RecordedEvent;
use crate::ids::{EventId, SubscriberId};
use crate::incident::Incident;
use crate::preferences::Preferences;

/// When a planned delivery may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Now,
    /// Send at this instant, not before: the event is scheduled for then, or the
    /// subscriber's quiet hours are on and end then.
    HeldUntil(OffsetDateTime),
}

/// One delivery the event causes for the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub channel: Channel,
    pub timing: Timing,
}

/// Decides what `event` means for a subscriber with `preferences`.
///
/// `incident` is the state after the event (the fold including it), so a severity raised or
/// components changed by this very update already count. Nothing is planned when the
/// incident is below the subscriber's minimum severity or touches none of the components
/// they follow, unless `already_told`: a subscriber who heard about this incident before
/// hears how it goes on and ends, even after it was downgraded below their threshold or moved
/// off their components, because a customer told of an outage and never of its end is left
/// worse off than one never told. A review goes only to those told about the incident: a
/// look back at an outage nobody told them of would be their first word of it. Otherwise
/// there is one delivery per chosen channel that delivers this kind of event, in channel
/// order.
///
/// An event scheduled for later (`deliver_at`) is held until then. Quiet hours hold every
/// delivery except for critical incidents (an outage bad enough to be critical is what the
/// subscriber wants to be woken for), judged at the time the message would go out.
pub fn plan(
    preferences: &Preferences,
    incident: &Incident,
    event: &RecordedEvent,
    already_told: bool,
    now: OffsetDateTime,
) -> Vec<Planned> {
    debug_assert_eq!(
        event.incident_id, incident.id,
        "the event must belong to the incident"
    );
    let concerned = incident.severity >= preferences.min_severity
        && preferences.components.matches(&incident.components);
    if !already_told && (!concerned || event.change.kind == EventKind::Review) {
        return Vec::new();
    }
    let kind = event.change.kind;
    let channels: Vec<Channel> = preferences
        .channels
        .iter()
        .copied()
        .filter(|channel| preferences.wants(*channel, kind))
        .collect();
    if channels.is_empty() {
        return Vec::new();
    }
    let scheduled = event.change.deliver_at.filter(|at| *at > now);
    let due = scheduled.unwrap_or(now);
    let held_until = match &preferences.quiet_hours {
        Some(quiet_hours) if incident.severity != Severity::Critical => quiet_hours.held_until(due),
        _ => None,
    };
    let timing = held_until
        .or(scheduled)
        .map_or(Timing::Now, Timing::HeldUntil);
    channels
        .into_iter()
        .map(|channel| Planned { channel, timing })
        .collect()
}

/// The identity of one delivery: one event, to one subscriber, on one channel.
///
/// It is derived, never stored first and looked up, so every component can compute it
/// independently and agree. The same key is used as the JetStream `Nats-Msg-Id` of the
/// delivery message (so a replayed fan-out is dropped by the stream), the primary key of the
/// delivery ledger (so a redelivered message is sent once), the `webhook-id` header (so
/// receivers can deduplicate our retries) and the local part of the email `Message-ID` (so
/// mail systems can).
///
/// Format: `dlv_` and the first 32 hex digits (128 bits) of a SHA-256 over
/// `tocsin.delivery.v1|{event}|{subscriber}|{channel}`. Changing it would make in-flight
/// deliveries look new and send them twice; a new format needs a new version tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryKey(String);

impl DeliveryKey {
    pub fn derive(event: EventId, subscriber: SubscriberId, channel: Channel) -> DeliveryKey {
        let input = format!("tocsin.delivery.v1|{event}|{subscriber}|{channel}");
        DeliveryKey::from_digest(&Sha256::digest(input.as_bytes()))
    }

    /// A key as the ledger stores it (the primary key of a row), for a delivery whose key
    /// was not derived from its event (a fallback notice's).
    pub fn from_stored(key: String) -> DeliveryKey {
        DeliveryKey(key)
    }

    /// A key from a SHA-256 digest of a versioned input: `dlv_` and its first 128 bits.
    pub(crate) fn from_digest(digest: &[u8]) -> DeliveryKey {
        DeliveryKey(format!("dlv_{}", hex::encode(&digest[..16])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
