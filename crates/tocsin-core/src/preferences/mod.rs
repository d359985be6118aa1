//! What a subscriber wants to hear about, on which channels, and when.
//!
//! Preferences are stored as JSONB beside the subscriber and read back by every fan-out, so
//! their serde form is a contract: fields keep their names, new fields come with defaults,
//! and sets and maps are `BTree*` so the same preferences always serialise to the same bytes.
//! Matching lives in [`crate::fanout`]; this module holds the data and its validation.

mod quiet_hours;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use self::quiet_hours::QuietHours;
use crate::change::{EventKind, MAX_COMPONENT_CHARS, Severity};
use crate::channel::Channel;
use crate::error::DomainError;

/// How many components one subscriber may follow. Ten times a large status page; the cap
/// keeps a stored preference document small enough to read on every fan-out.
pub const MAX_SUBSCRIBED_COMPONENTS: usize = 200;

/// Which components a subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentFilter {
    /// Every component, including ones added after the subscriber signed up.
    #[default]
    All,
    /// Only these components, by exact name.
    Only(BTreeSet<String>),
}

impl ComponentFilter {
    /// Whether an incident affecting `components` concerns this subscriber: always for
    /// [`ComponentFilter::All`], otherwise when at least one component is followed.
    pub fn matches(&self, components: &[String]) -> bool {
        match self {
            Self::All => true,
            Self::Only(followed) => components.iter().any(|c| followed.contains(c)),
        }
    }
}

/// One subscriber's delivery preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Where to deliver. At least one.
    pub channels: BTreeSet<Channel>,
    #[serde(default)]
    pub components: ComponentFilter,
    /// Incidents below this severity are not delivered at all.
    pub min_severity: Severity,
    /// Which event kinds each channel delivers. A chosen channel without an entry gets
    /// [`default_kinds`], so the stored document only records what the subscriber changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<Channel, BTreeSet<EventKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

impl Preferences {
    /// Whether `kind` events go out on `channel`: the channel must be chosen and the kind
    /// in its set (its explicit entry, or the default for the channel).
    pub fn wants(&self, channel: Channel, kind: EventKind) -> bool {
        if !self.channels.contains(&channel) {
            return false;
        }
        match self.kinds.get(&channel) {
            Some(kinds) => kinds.contains(&kind),
            None => is_default_kind(channel, kind),
        }
    }

    /// Checks the rules a stored preference document must meet. It does not rewrite
    /// anything: what is stored is exactly what the subscriber sent, or an error naming the
    /// field to fix.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.channels.is_empty() {
            return Err(DomainError::invalid(
                "preferences.channels",
                "choose at least one channel",
            ));
        }
        if let ComponentFilter::Only(followed) = &self.components {
            validate_components(followed)?;
        }
        for (channel, kinds) in &self.kinds {
            if !self.channels.contains(channel) {
                return Err(DomainError::invalid(
                    "preferences.kinds",
                    format!("has an entry for {channel}, which is not a chosen channel"),
                ));
            }
            if kinds.is_empty() {
                return Err(DomainError::invalid(
                    "preferences.kinds",
                    format!(
                        "the {channel} entry is empty; remove {channel} from the channels instead"
                    ),
                ));
            }
        }
        if let Some(quiet_hours) = &self.quiet_hours {
            quiet_hours.check("preferences.quiet_hours")?;
        }
        Ok(())
    }
}

/// The event kinds a channel delivers unless the subscriber chose otherwise.
///
/// SMS gets only the moments that change what a customer should do: an incident opens,
/// resolves or comes back, or a maintenance is announced. This is what status pages send by
/// text, because every message costs money and interrupts. Email and webhooks get everything.
pub fn default_kinds(channel: Channel) -> BTreeSet<EventKind> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| is_default_kind(channel, *kind))
        .collect()
}

/// The single source of truth behind [`default_kinds`], without allocating a set.
fn is_default_kind(channel: Channel, kind: EventKind) -> bool {
    match channel {
        Channel::Email | Channel::Webhook => true,
        Channel::Sms => matches!(
            kind,
            EventKind::Opened
                | EventKind::Resolved
                | EventKind::Reopened
                | EventKind::MaintenanceScheduled
        ),
    }
}

/// Component names must be written exactly as publishers write them, because matching is
/// by exact name and publishers' names are trimmed on ingest.
fn validate_components(followed: &BTreeSet<String>) -> Result<(), DomainError> {
    let invalid = |reason: String| Err(DomainError::invalid("preferences.components", reason));
    if followed.is_empty() {
        return invalid("name at least one component, or follow all".to_owned());
    }
    if followed.len() > MAX_SUBSCRIBED_COMPONENTS {
        return invalid(format!(
            "{} given; the limit is {MAX_SUBSCRIBED_COMPONENTS}",
            followed.len()
        ));
    }
    for name in followed {
        if name.trim().is_empty() {
            return invalid("a component name is empty".to_owned());
        }
        if name.trim() != name {
            return invalid(format!("{name:?} has leading or trailing whitespace"));
        }
        let chars = name.chars().count();
        if chars > MAX_COMPONENT_CHARS {
            return invalid(format!(
                "a name is {chars} characters long; the limit is {MAX_COMPONENT_CHARS}"
            ));
        }
        if name.chars().any(char::is_control) {
            return invalid(format!("{name:?} contains control characters"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
