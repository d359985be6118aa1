//! Conversions of subscribers and preferences between `tocsin.v1` and `tocsin-core`.

use std::collections::{BTreeMap, BTreeSet};

use tocsin_core::{
    Channel, ComponentFilter, Contacts, DomainError, Preferences, QuietHours, Severity, Subscriber,
};

use crate::convert::{event_kind_in, severity_in, timestamp};
use crate::v1;

/// A channel from the wire; unspecified or unknown values are refused.
pub fn channel(field: &'static str, raw: i32) -> Result<Channel, DomainError> {
    match v1::Channel::try_from(raw) {
        Ok(v1::Channel::Email) => Ok(Channel::Email),
        Ok(v1::Channel::Sms) => Ok(Channel::Sms),
        Ok(v1::Channel::Webhook) => Ok(Channel::Webhook),
        Ok(v1::Channel::Unspecified) => {
            Err(DomainError::invalid(field, "a channel is unspecified"))
        }
        Err(_) => Err(DomainError::invalid(
            field,
            format!("{raw} is not a known channel"),
        )),
    }
}

/// An optional channel filter: unspecified means none.
pub fn channel_filter(field: &'static str, raw: i32) -> Result<Option<Channel>, DomainError> {
    if raw == v1::Channel::Unspecified as i32 {
        return Ok(None);
    }
    channel(field, raw).map(Some)
}

impl From<Channel> for v1::Channel {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Email => Self::Email,
            Channel::Sms => Self::Sms,
            Channel::Webhook => Self::Webhook,
        }
    }
}

/// Preferences from the wire, validated by the domain's rules.
pub fn preferences(wire: Option<v1::Preferences>) -> Result<Preferences, DomainError> {
    let wire = wire.ok_or_else(|| DomainError::invalid("preferences", "is required"))?;
    let channels = wire
        .channels
        .iter()
        .map(|raw| channel("preferences.channels", *raw))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let components = if wire.components.is_empty() {
        ComponentFilter::All
    } else {
        ComponentFilter::Only(wire.components.into_iter().collect())
    };
    let mut kinds = BTreeMap::new();
    for entry in wire.kinds {
        let channel = channel("preferences.kinds.channel", entry.channel)?;
        let set = entry
            .kinds
            .iter()
            .map(|raw| event_kind_in("preferences.kinds.kinds", *raw))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if kinds.insert(channel, set).is_some() {
            return Err(DomainError::invalid(
                "preferences.kinds",
                format!("{channel} appears twice"),
            ));
        }
    }
    let quiet_hours = wire
        .quiet_hours
        .map(|q| -> Result<QuietHours, DomainError> {
            let minute = |field: &'static str, value: u32| {
                u16::try_from(value).map_err(|_| DomainError::invalid(field, "must be below 1440"))
            };
            Ok(QuietHours {
                time_zone: q.time_zone,
                start_minute: minute("preferences.quiet_hours.start_minute", q.start_minute)?,
                end_minute: minute("preferences.quiet_hours.end_minute", q.end_minute)?,
            })
        });
    let preferences = Preferences {
        channels,
        components,
        min_severity: severity_in("preferences.min_severity", wire.min_severity)?
            .unwrap_or(Severity::Minor),
        kinds,
        quiet_hours: quiet_hours.transpose()?,
    };
    preferences.validate()?;
    Ok(preferences)
}

impl From<&Preferences> for v1::Preferences {
    fn from(p: &Preferences) -> Self {
        v1::Preferences {
            channels: p
                .channels
                .iter()
                .map(|c| v1::Channel::from(*c) as i32)
                .collect(),
            components: match &p.components {
                ComponentFilter::All => Vec::new(),
                ComponentFilter::Only(names) => names.iter().cloned().collect(),
            },
            min_severity: v1::Severity::from(p.min_severity) as i32,
            kinds: p
                .kinds
                .iter()
                .map(|(channel, kinds)| v1::ChannelKinds {
                    channel: v1::Channel::from(*channel) as i32,
                    kinds: kinds
                        .iter()
                        .map(|k| v1::EventKind::from(*k) as i32)
                        .collect(),
                })
                .collect(),
            quiet_hours: p.quiet_hours.as_ref().map(|q| v1::QuietHours {
                time_zone: q.time_zone.clone(),
                start_minute: u32::from(q.start_minute),
                end_minute: u32::from(q.end_minute),
            }),
        }
    }
}

impl From<&Subscriber> for v1::Subscriber {
    fn from(s: &Subscriber) -> Self {
        v1::Subscriber {
            subscriber_id: s.id.to_string(),
            external_id: s.external_id.clone(),
            contacts: Some(contacts_to_wire(&s.contacts)),
            preferences: Some((&s.preferences).into()),
            revision: s.revision,
            webhook_disabled_reason: s.webhook_disabled.clone().unwrap_or_default(),
            created_at: Some(timestamp(s.created_at)),
            updated_at: Some(timestamp(s.updated_at)),
            opted_out: s
                .opted_out
                .iter()
                .map(|c| v1::Channel::from(*c) as i32)
                .collect(),
        }
    }
}

fn contacts_to_wire(c: &Contacts) -> v1::Contacts {
    v1::Contacts {
        email: c.email.clone().unwrap_or_default(),
        phone: c.phone.clone().unwrap_or_default(),
        webhook_url: c.webhook_url.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_round_trip_and_errors_name_the_field() {
        let wire = v1::Preferences {
            channels: vec![v1::Channel::Email as i32, v1::Channel::Sms as i32],
            components: vec!["api".into()],
            min_severity: v1::Severity::Major as i32,
            kinds: vec![v1::ChannelKinds {
                channel: v1::Channel::Sms as i32,
                kinds: vec![v1::EventKind::Opened as i32],
            }],
            quiet_hours: Some(v1::QuietHours {
                time_zone: "Europe/Paris".into(),
                start_minute: 1320,
                end_minute: 420,
            }),
        };
        let domain = preferences(Some(wire.clone())).unwrap();
        assert_eq!(v1::Preferences::from(&domain), wire);

        let err = preferences(Some(v1::Preferences {
            channels: vec![9],
            ..wire.clone()
        }))
        .unwrap_err();
        assert!(err.to_string().contains("preferences.channels"), "{err}");
        let err = preferences(Some(v1::Preferences {
            channels: vec![],
            ..wire.clone()
        }))
        .unwrap_err();
        assert!(err.to_string().contains("preferences.channels"), "{err}");
        let err = preferences(None).unwrap_err();
        assert!(err.to_string().contains("preferences"), "{err}");
    }
}
