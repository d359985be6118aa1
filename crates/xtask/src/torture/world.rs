//! The world a scenario runs in, drawn from its seed: subscribers with simple preferences,
//! incidents whose severity and components never change, and, once the events are published
//! and their ids known, the set of deliveries that must happen.
//!
//! The harness models the preferences itself rather than asking `tocsin_core::plan`, so that
//! a mistake in the planner shows up as a difference instead of being copied into the
//! expectation. The model is deliberately small (no custom kinds, no quiet hours, no changes
//! of severity or components), which keeps it exact.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use sha2::{Digest, Sha256};
use tocsin_core::Channel;
use tocsin_proto::v1::{self, EventKind, Severity};

/// The components regular subscribers and incidents choose from.
pub(super) const COMPONENTS: [&str; 4] = ["api", "dashboard", "billing", "auth"];
/// The component of the `busy` scenario's incidents, which only a few subscribers follow.
pub(super) const BUSY_COMPONENT: &str = "busy";
const SEVERITIES: [Severity; 3] = [Severity::Minor, Severity::Major, Severity::Critical];

/// One subscriber as the harness imports and models them.
#[derive(Debug, Clone)]
pub(super) struct Subscriber {
    pub(super) n: usize,
    pub(super) channels: Vec<Channel>,
    /// `None` follows every component.
    pub(super) components: Option<Vec<String>>,
    pub(super) min_severity: Severity,
    /// The internal id Tocsin gave them, learnt after the import.
    pub(super) subscriber_id: String,
}

impl Subscriber {
    pub(super) fn external_id(&self) -> String {
        format!("s{}", self.n)
    }

    /// The address a message on `channel` must reach: the email address, the E.164 number, or
    /// the receiver's endpoint name.
    pub(super) fn contact(&self, channel: Channel) -> String {
        match channel {
            Channel::Email => format!("s{}@example.test", self.n),
            // libphonenumber (which the API validates with) refuses the 555 area code, so
            // the numbers live in San Francisco's 415 instead: +1 415 5xx xxxx, unique per n.
            Channel::Sms => format!("+14155{:06}", self.n),
            Channel::Webhook => self.external_id(),
        }
    }

    /// Whether an incident of this severity on these components concerns them.
    pub(super) fn follows(&self, incident: &IncidentPlan) -> bool {
        incident.severity >= self.min_severity
            && self.components.as_ref().is_none_or(|mine| {
                mine.iter()
                    .any(|component| incident.components.contains(component))
            })
    }

    /// The import row, with the contact of each chosen channel only.
    pub(super) fn row(&self, webhook_port: u16) -> v1::UpsertSubscriberRequest {
        let mut contacts = v1::Contacts::default();
        for &channel in &self.channels {
            match channel {
                Channel::Email => contacts.email = self.contact(channel),
                Channel::Sms => contacts.phone = self.contact(channel),
                Channel::Webhook => {
                    contacts.webhook_url = format!(
                        "http://127.0.0.1:{webhook_port}/hooks/{}",
                        self.contact(channel)
                    );
                }
            }
        }
        v1::UpsertSubscriberRequest {
            consent: String::new(),
            external_id: self.external_id(),
            contacts: Some(contacts),
            preferences: Some(v1::Preferences {
                channels: self
                    .channels
                    .iter()
                    .map(|&c| wire_channel(c).into())
                    .collect(),
                components: self.components.clone().unwrap_or_default(),
                min_severity: self.min_severity.into(),
                kinds: Vec::new(),
                quiet_hours: None,
            }),
        }
    }
}

pub(super) fn wire_channel(channel: Channel) -> v1::Channel {
    match channel {
        Channel::Email => v1::Channel::Email,
        Channel::Sms => v1::Channel::Sms,
        Channel::Webhook => v1::Channel::Webhook,
    }
}

/// Who is generated besides the regular mix.
#[derive(Debug, Clone, Copy)]
pub(super) enum Population {
    /// Random channels, components (some follow everything) and minimum severities.
    Mixed,
    /// Subscriber 0 follows only the busy component on all three channels, the next
    /// `followers` follow it too on random channels, and nobody else follows everything, so
    /// the busy incidents reach only them.
    Busy { followers: usize },
}

/// `count` subscribers `s0..`, drawn from `rng`.
pub(super) fn subscribers(
    rng: &mut StdRng,
    count: usize,
    population: Population,
) -> Vec<Subscriber> {
    (0..count)
        .map(|n| {
            let busy_role = match population {
                Population::Busy { followers } if n <= followers => Some(n == 0),
                _ => None,
            };
            let channels = match busy_role {
                Some(true) => Channel::ALL.to_vec(),
                _ => random_channels(rng),
            };
            let components = match (busy_role, population) {
                (Some(_), _) => Some(vec![BUSY_COMPONENT.to_owned()]),
                (None, Population::Mixed) if rng.random_bool(0.3) => None,
                (None, _) => Some(random_components(rng)),
            };
            let min_severity = match busy_role {
                Some(_) => Severity::Minor,
                None => *SEVERITIES.choose(rng).expect("not empty"),
            };
            Subscriber {
                n,
                channels,
                components,
                min_severity,
                subscriber_id: String::new(),
            }
        })
        .collect()
}

/// A non-empty subset of the three channels, each of the seven equally likely.
fn random_channels(rng: &mut StdRng) -> Vec<Channel> {
    let mask = rng.random_range(1..8u8);
    Channel::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, c)| c)
        .collect()
}

/// One or two of [`COMPONENTS`].
pub(super) fn random_components(rng: &mut StdRng) -> Vec<String> {
    let mut all = COMPONENTS.to_vec();
    all.shuffle(rng);
    let take = rng.random_range(1..=2);
    all[..take].iter().map(|&c| c.to_owned()).collect()
}

pub(super) fn random_severity(rng: &mut StdRng) -> Severity {
    *SEVERITIES.choose(rng).expect("not empty")
}

/// An incident to publish: fixed severity and components, and its events with the time
/// (from the scenario's start) each is due.
#[derive(Debug, Clone)]
pub(super) struct IncidentPlan {
    pub(super) label: String,
    pub(super) severity: Severity,
    pub(super) components: Vec<String>,
    pub(super) steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) kind: EventKind,
    pub(super) at: Duration,
}

impl IncidentPlan {
    /// Opened at `start`, updated `updates` times and resolved, one step every `gap`.
    pub(super) fn lifecycle(
        label: String,
        severity: Severity,
        components: Vec<String>,
        start: Duration,
        updates: usize,
        gap: Duration,
    ) -> Self {
        let mut steps = vec![Step {
            kind: EventKind::Opened,
            at: start,
        }];
        for i in 1..=updates {
            steps.push(Step {
                kind: EventKind::Updated,
                at: start + gap * i as u32,
            });
        }
        steps.push(Step {
            kind: EventKind::Resolved,
            at: start + gap * (updates as u32 + 1),
        });
        Self {
            label,
            severity,
            components,
            steps,
        }
    }
}

/// An event as the API recorded it.
#[derive(Debug, Clone)]
pub(super) struct PublishedEvent {
    pub(super) event_id: String,
    pub(super) version: u64,
    pub(super) kind: EventKind,
}

/// What one incident became once published.
#[derive(Debug, Clone, Default)]
pub(super) struct PublishedIncident {
    pub(super) incident_id: String,
    pub(super) events: Vec<PublishedEvent>,
}

/// One delivery that must happen (or, for email and SMS, may be superseded).
#[derive(Debug, Clone, Copy)]
pub(super) struct ExpectedDelivery {
    pub(super) incident: usize,
    pub(super) version: u64,
    pub(super) kind: EventKind,
    pub(super) subscriber: usize,
    pub(super) channel: Channel,
    /// The incident's last message on this channel (its resolution), which email and SMS
    /// recipients must get even when earlier ones were superseded.
    pub(super) is_final: bool,
}

/// Whether `channel` carries events of `kind` by default (README, "Preferences"): SMS only
/// the opening, resolution, reopening and scheduled maintenance; the others everything.
pub(super) fn channel_wants(channel: Channel, kind: EventKind) -> bool {
    match channel {
        Channel::Sms => matches!(
            kind,
            EventKind::Opened
                | EventKind::Resolved
                | EventKind::Reopened
                | EventKind::MaintenanceScheduled
        ),
        Channel::Email | Channel::Webhook => true,
    }
}

/// Every delivery the published events owe, by delivery key.
pub(super) fn expected(
    subscribers: &[Subscriber],
    plans: &[IncidentPlan],
    published: &[PublishedIncident],
) -> HashMap<String, ExpectedDelivery> {
    let mut expected = HashMap::new();
    for (incident, (plan, done)) in plans.iter().zip(published).enumerate() {
        let Some(last) = done.events.iter().map(|e| e.version).max() else {
            continue;
        };
        for subscriber in subscribers.iter().filter(|s| s.follows(plan)) {
            for &channel in &subscriber.channels {
                for event in done
                    .events
                    .iter()
                    .filter(|e| channel_wants(channel, e.kind))
                {
                    let key = delivery_key(&event.event_id, &subscriber.subscriber_id, channel);
                    expected.insert(
                        key,
                        ExpectedDelivery {
                            incident,
                            version: event.version,
                            kind: event.kind,
                            subscriber: subscriber.n,
                            channel,
                            is_final: event.version == last,
                        },
                    );
                }
            }
        }
    }
    expected
}

/// The delivery key as README "How each message goes out once" documents it: `dlv_` and
/// the first 32 hex digits of SHA-256 over `tocsin.delivery.v1|{event}|{subscriber}|{channel}`,
/// with ids in their hyphenated form.
pub(super) fn delivery_key(event_id: &str, subscriber_id: &str, channel: Channel) -> String {
    let digest = Sha256::digest(
        format!(
            "tocsin.delivery.v1|{}|{}|{}",
            canonical_uuid(event_id),
            canonical_uuid(subscriber_id),
            channel.as_str()
        )
        .as_bytes(),
    );
    format!("dlv_{}", &hex::encode(digest)[..32])
}

/// Lower-case hyphenated, whatever spelling the API used; left alone if it is not a UUID.
fn canonical_uuid(id: &str) -> String {
    uuid::Uuid::parse_str(id).map_or_else(|_| id.to_owned(), |u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use tocsin_core::{DeliveryKey, EventId, SubscriberId};

    use super::*;

    #[test]
    fn the_documented_key_formula_matches_the_core() {
        let event = uuid::Uuid::now_v7();
        let subscriber = uuid::Uuid::now_v7();
        for channel in Channel::ALL {
            let core = DeliveryKey::derive(
                EventId::from_uuid(event),
                SubscriberId::from_uuid(subscriber),
                channel,
            );
            let ours = delivery_key(
                &event.simple().to_string(),
                &subscriber.hyphenated().to_string().to_uppercase(),
                channel,
            );
            assert_eq!(ours, core.as_str(), "{channel}");
        }
    }

    fn subscriber(channels: &[Channel], components: Option<&[&str]>, min: Severity) -> Subscriber {
        Subscriber {
            n: 7,
            channels: channels.to_vec(),
            components: components.map(|c| c.iter().map(|&s| s.to_owned()).collect()),
            min_severity: min,
            subscriber_id: uuid::Uuid::now_v7().to_string(),
        }
    }

    fn incident(severity: Severity, components: &[&str]) -> IncidentPlan {
        IncidentPlan::lifecycle(
            "t".into(),
            severity,
            components.iter().map(|&c| c.to_owned()).collect(),
            Duration::ZERO,
            2,
            Duration::from_millis(10),
        )
    }

    #[test]
    fn severity_and_components_decide_who_follows() {
        let api_major = incident(Severity::Major, &["api", "auth"]);
        assert!(subscriber(&[Channel::Email], None, Severity::Minor).follows(&api_major));
        assert!(
            subscriber(&[Channel::Email], Some(&["auth"]), Severity::Major).follows(&api_major)
        );
        assert!(
            !subscriber(&[Channel::Email], Some(&["billing"]), Severity::Minor).follows(&api_major)
        );
        assert!(!subscriber(&[Channel::Email], None, Severity::Critical).follows(&api_major));
    }

    #[test]
    fn sms_gets_the_opening_and_the_resolution_only() {
        let plan = incident(Severity::Critical, &["api"]);
        let s = subscriber(&Channel::ALL, None, Severity::Minor);
        let kinds = [
            EventKind::Opened,
            EventKind::Updated,
            EventKind::Updated,
            EventKind::Resolved,
        ];
        let done = PublishedIncident {
            incident_id: "i".into(),
            events: kinds
                .iter()
                .enumerate()
                .map(|(i, &kind)| PublishedEvent {
                    event_id: uuid::Uuid::now_v7().to_string(),
                    version: i as u64 + 1,
                    kind,
                })
                .collect(),
        };
        let expected = expected(&[s], &[plan], &[done]);
        let count = |channel| expected.values().filter(|d| d.channel == channel).count();
        assert_eq!(count(Channel::Email), 4);
        assert_eq!(count(Channel::Webhook), 4);
        assert_eq!(count(Channel::Sms), 2);
        let finals: Vec<_> = expected.values().filter(|d| d.is_final).collect();
        assert_eq!(finals.len(), 3, "one resolution per channel");
        assert!(
            finals
                .iter()
                .all(|d| d.version == 4 && d.kind == EventKind::Resolved)
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_world() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            subscribers(&mut rng, 50, Population::Mixed)
                .iter()
                .map(|s| format!("{:?}{:?}{:?}", s.channels, s.components, s.min_severity))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let mut rng = StdRng::seed_from_u64(1);
        let busy = subscribers(&mut rng, 20, Population::Busy { followers: 3 });
        assert_eq!(busy[0].channels, Channel::ALL.to_vec());
        assert!(
            busy.iter().all(|s| s.components.is_some()),
            "nobody follows everything"
        );
        assert!(
            busy.iter()
                .all(|s| s.channels.iter().all(|&c| !s.contact(c).is_empty()))
        );
    }
}
