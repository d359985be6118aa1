//! A subscriber: who wants to hear about incidents, how to reach them, and what they want.
//!
//! Contact details are personal data and live apart from everything else: the store keeps
//! them in their own table, events and deliveries refer to subscribers by id only, and
//! deleting a subscriber erases the contacts while the anonymised trail stays.

use time::OffsetDateTime;

use crate::channel::Channel;
use crate::error::DomainError;
use crate::ids::SubscriberId;
use crate::preferences::Preferences;

/// The longest external id a caller may use. Long enough for any UUID, email address or
/// account path; short enough to index.
pub const MAX_EXTERNAL_ID_CHARS: usize = 200;

/// Where a subscriber can be reached, one optional address per channel. Values are already
/// validated and normalised by the service that accepted them (email per RFC 5321, phone in
/// E.164, webhook URL checked against SSRF rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contacts {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub webhook_url: Option<String>,
}

impl Contacts {
    /// The address for `channel`, if there is one.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms => self.phone.as_deref(),
            Channel::Webhook => self.webhook_url.as_deref(),
        }
    }

    /// Every chosen channel needs an address: a subscriber who asked for SMS without a phone
    /// number would silently never be told, which is worse than refusing the request.
    pub fn check_reachable(&self, preferences: &Preferences) -> Result<(), DomainError> {
        for channel in &preferences.channels {
            if self.address(*channel).is_none() {
                let field = match channel {
                    Channel::Email => "contacts.email",
                    Channel::Sms => "contacts.phone",
                    Channel::Webhook => "contacts.webhook_url",
                };
                return Err(DomainError::invalid(
                    field,
                    format!("is required because preferences.channels includes {channel}"),
                ));
            }
        }
        Ok(())
    }
}

/// A subscriber as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub id: SubscriberId,
    /// The caller's own identifier, by which they upsert, get and delete.
    pub external_id: String,
    /// The global preference revision of this subscriber's last change.
    pub revision: i64,
    pub preferences: Preferences,
    pub contacts: Contacts,
    /// Why the webhook endpoint was disabled (410 Gone, sustained failure), if it was.
    pub webhook_disabled: Option<String>,
    /// Channels whose address opted out (an unsubscribe link, a STOP reply): nothing is sent
    /// there, whatever the preferences say, until the reader opts back in.
    pub opted_out: std::collections::BTreeSet<Channel>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Checks an external id: present, bounded, printable.
pub fn validate_external_id(external_id: &str) -> Result<(), DomainError> {
    let invalid = |reason: String| Err(DomainError::invalid("external_id", reason));
    if external_id.trim().is_empty() {
        return invalid("is required".to_owned());
    }
    let chars = external_id.chars().count();
    if chars > MAX_EXTERNAL_ID_CHARS {
        return invalid(format!(
            "is {chars} characters long; the limit is {MAX_EXTERNAL_ID_CHARS}"
        ));
    }
    if external_id.chars().any(char::is_control) {
        return invalid("contains control characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::change::Severity;
    use crate::preferences::ComponentFilter;

    fn prefs(channels: &[Channel]) -> Preferences {
        Preferences {
            channels: channels.iter().copied().collect::<BTreeSet<_>>(),
            components: ComponentFilter::All,
            min_severity: Severity::Minor,
            kinds: BTreeMap::new(),
            quiet_hours: None,
        }
    }

    #[test]
    fn every_chosen_channel_needs_an_address() {
        let contacts = Contacts {
            email: Some("a@example.com".into()),
            ..Contacts::default()
        };
        assert!(contacts.check_reachable(&prefs(&[Channel::Email])).is_ok());
        let err = contacts
            .check_reachable(&prefs(&[Channel::Email, Channel::Sms]))
            .unwrap_err();
        assert!(err.to_string().contains("contacts.phone"), "{err}");
        let err = Contacts::default()
            .check_reachable(&prefs(&[Channel::Webhook]))
            .unwrap_err();
        assert!(err.to_string().contains("contacts.webhook_url"), "{err}");
    }

    #[test]
    fn external_ids_are_checked() {
        assert!(validate_external_id("cust-42").is_ok());
        assert!(validate_external_id(" ").is_err());
        assert!(validate_external_id(&"x".repeat(201)).is_err());
        assert!(validate_external_id("a\u{0}b").is_err());
    }
}
