//! The customer-facing facts of one event for one recipient: what every channel renders.
//!
//! A [`Notice`] is built once per delivery from the incident as it stands after the event
//! and the event itself. It holds only what a customer may read (no labels, no publisher
//! identity, no internal ids beyond the incident's), so a template cannot leak internals by
//! accident. It serialises with RFC 3339 timestamps so templates receive plain strings.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::change::{EventKind, IncidentStatus, MaintenanceWindow, Severity};
use crate::component::{self, Affected, Impact};
use crate::event::RecordedEvent;
use crate::fanout::DeliveryKey;
use crate::ids::IncidentId;
use crate::incident::Incident;

/// What one recipient is told about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The company speaking to its customers, as it signs its messages ("Acme").
    pub company: String,
    pub incident_id: IncidentId,
    pub title: String,
    pub kind: EventKind,
    /// The status after this event.
    pub status: IncidentStatus,
    pub severity: Severity,
    /// The affected components' display names, in the incident's order.
    pub components: Vec<String>,
    /// The affected components with their ids and, where the publisher said, how hard each
    /// is hit. Empty impacts everywhere when none was said.
    #[serde(default)]
    pub affected: Vec<Affected>,
    /// The publisher's customer-facing text for this event.
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// When the problem began, when the publisher said; with `resolved_at` it gives how
    /// long it lasted. `None`: only `reported_at` is known, and no duration is claimed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When the incident was first reported (its opening event).
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// This event's promise: customers hear from us again by then.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_update_at: Option<OffsetDateTime>,
    /// What customers need to do, when the publisher says they must act.
    #[serde(default)]
    pub customer_action: Option<String>,
    /// The publisher's link for this event (the full review, a write-up).
    #[serde(default)]
    pub link: Option<String>,
    /// The resolution promised a review.
    #[serde(default)]
    pub review_to_follow: bool,
    /// The event kinds this recipient receives on this channel: what the message may
    /// promise ("we will text you updates" only when updates are among them).
    #[serde(default)]
    pub channel_kinds: Vec<EventKind>,
    #[serde(default)]
    pub window: Option<MaintenanceWindow>,
    /// The incident version this event created; lets receivers order what they get.
    pub version: u64,
    #[serde(default)]
    pub status_page_url: Option<String>,
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// The reader's preference centre (a signed link), when one is served.
    #[serde(default)]
    pub preferences_url: Option<String>,
    /// The delivery this notice is rendered for; channels derive their message ids from it.
    pub delivery_key: String,
    /// This is the reader's first word of an incident already under way (they subscribed, or
    /// began following a component, after it opened): the message sums up where it stands
    /// and what happened so far (`history`) rather than reading as a bare update.
    #[serde(default)]
    pub catch_up: bool,
    /// For a catch-up: the earlier events, oldest first.
    #[serde(default)]
    pub history: Vec<Moment>,
    /// Set on a fallback notice: which of the reader's channels stopped working, and why.
    /// The message is then about that, not about the event.
    #[serde(default)]
    pub channel_failure: Option<ChannelFailure>,
}

/// The example's affected components: with impacts where the kind has them (`with_impacts`),
/// as a publisher who gives them would.
fn example_affected(kind: EventKind, with_impacts: bool) -> Vec<Affected> {
    let impacts: [Option<Impact>; 2] = match kind {
        _ if !with_impacts => [None, None],
        EventKind::Opened | EventKind::Updated | EventKind::Reopened => [
            Some(Impact::PartialOutage),
            Some(Impact::DegradedPerformance),
        ],
        EventKind::MaintenanceStarted => [Some(Impact::UnderMaintenance); 2],
        _ => [None, None],
    };
    [("payments-api", "Payments API"), ("dashboard", "Dashboard")]
        .into_iter()
        .zip(impacts)
        .map(|((id, name), impact)| Affected {
            id: id.into(),
            name: name.into(),
            impact,
        })
        .collect()
}

/// One of the reader's channels stopped working for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFailure {
    pub channel: crate::channel::Channel,
    /// The address that failed (their webhook URL, email address or number), when known.
    pub address: Option<String>,
    /// What the provider or endpoint said, as recorded.
    pub reason: String,
}

/// One earlier event, as told to a reader who missed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub kind: EventKind,
    pub message: String,
}

impl Notice {
    /// The notice for `event`, given `incident` as folded *including* that event.
    /// The URLs start empty; set them with [`Notice::with_status_page_url`] and
    /// [`Notice::with_unsubscribe_url`].
    pub fn new(
        company: impl Into<String>,
        incident: &Incident,
        event: &RecordedEvent,
        delivery_key: &DeliveryKey,
    ) -> Notice {
        debug_assert_eq!(
            event.incident_id, incident.id,
            "the event must belong to the incident"
        );
        let affected = component::affected(
            &incident.components,
            &incident.component_names,
            &incident.impacts,
        );
        Notice {
            company: company.into(),
            incident_id: incident.id,
            title: incident.title.clone(),
            kind: event.change.kind,
            status: incident.status,
            severity: incident.severity,
            components: affected.iter().map(|a| a.name.clone()).collect(),
            affected,
            message: event.change.message.clone(),
            occurred_at: event.occurred_at,
            started_at: incident.started_at,
            reported_at: incident.opened_at,
            resolved_at: incident.resolved_at,
            next_update_at: incident.next_update_at,
            customer_action: event.change.customer_action.clone(),
            link: event.change.link.clone(),
            review_to_follow: incident.review_to_follow,
            channel_kinds: Vec::new(),
            catch_up: false,
            history: Vec::new(),
            channel_failure: None,
            window: incident.window,
            version: event.version,
            status_page_url: None,
            unsubscribe_url: None,
            preferences_url: None,
            delivery_key: delivery_key.as_str().to_owned(),
        }
    }

    pub fn with_status_page_url(mut self, url: impl Into<String>) -> Notice {
        self.status_page_url = Some(url.into());
        self
    }

    pub fn with_unsubscribe_url(mut self, url: impl Into<String>) -> Notice {
        self.unsubscribe_url = Some(url.into());
        self
    }

    pub fn with_preferences_url(mut self, url: impl Into<String>) -> Notice {
        self.preferences_url = Some(url.into());
        self
    }

    /// Makes this the reader's first word of an incident under way, summing up `earlier`
    /// (the events before this one). Only updates and reopenings need it: an opening, a
    /// resolution or a maintenance notice stands on its own.
    pub fn as_catch_up(mut self, earlier: &[RecordedEvent]) -> Notice {
        if !matches!(self.kind, EventKind::Updated | EventKind::Reopened) {
            return self;
        }
        self.catch_up = true;
        self.history = earlier
            .iter()
            .map(|e| Moment {
                occurred_at: e.occurred_at,
                kind: e.change.kind,
                message: e.change.message.clone(),
            })
            .collect();
        self
    }

    /// The kinds of event this recipient receives on this channel; see `channel_kinds`.
    pub fn with_channel_kinds(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Notice {
        self.channel_kinds = kinds.into_iter().collect();
        self.channel_kinds.sort();
        self.channel_kinds.dedup();
        self
    }

    /// For a maintenance not started yet: how long until it starts, from this event, to the
    /// nearest minute (a reminder sent 59 seconds ahead says "1 minute").
    pub fn starts_in(&self) -> Option<time::Duration> {
        let window = self.window?;
        let ahead = window.starts_at - self.occurred_at;
        let minutes = (ahead.whole_seconds() + 30) / 60;
        (ahead.is_positive() && self.status == IncidentStatus::Scheduled)
            .then_some(time::Duration::minutes(minutes))
    }

    /// How long the incident lasted, once it is resolved. `None` while it is open, when
    /// nobody said when it started, or if the clocks disagree so badly that it would be
    /// negative.
    pub fn duration(&self) -> Option<time::Duration> {
        let lasted = self.resolved_at? - self.started_at?;
        (!lasted.is_negative()).then_some(lasted)
    }

    /// Whether this recipient will hear about `kind` events on this channel.
    pub fn hears(&self, kind: EventKind) -> bool {
        self.channel_kinds.contains(&kind)
    }

    /// One line per component with a stated impact, for a message with room to list them:
    /// "Payments API: partial outage". Empty when no impact was stated.
    pub fn impact_lines(&self) -> Vec<String> {
        self.affected
            .iter()
            .filter_map(|a| a.impact.map(|i| format!("{}: {}", a.name, i.words())))
            .collect()
    }

    /// The affected components in few words, each with its impact where stated, for a text
    /// message: "Payments API down and Dashboard slow"; without impacts, the names alone.
    pub fn affected_in_short(&self) -> String {
        let parts: Vec<String> = self
            .affected
            .iter()
            .map(|a| match a.impact {
                Some(i) => format!("{} {}", a.name, i.short_words()),
                None => a.name.clone(),
            })
            .collect();
        if parts.is_empty() {
            human_list(&self.components)
        } else {
            human_list(&parts)
        }
    }

    /// The worst impact on any affected component, if the publisher gave impacts.
    pub fn worst_impact(&self) -> Option<Impact> {
        Impact::worst(self.affected.iter().filter_map(|a| a.impact))
    }

    fn severity_headline(&self) -> &'static str {
        match self.severity {
            Severity::Critical => "Outage",
            Severity::Major => "Partial outage",
            Severity::Minor => "Degraded",
        }
    }

    /// The word that opens a subject or a text, saying how bad it is or where it stands:
    /// an opening by severity, an update by status.
    pub fn headline(&self) -> &'static str {
        // A catch-up is the reader's opening: it says how bad it is.
        let kind = if self.catch_up {
            EventKind::Opened
        } else {
            self.kind
        };
        match kind {
            // The impacts, where the publisher gave them, are the more precise word.
            EventKind::Opened => match self.worst_impact() {
                Some(Impact::MajorOutage) => "Outage",
                Some(Impact::PartialOutage) => "Partial outage",
                Some(Impact::DegradedPerformance) => "Degraded",
                Some(Impact::UnderMaintenance) | None => self.severity_headline(),
            },
            EventKind::Updated => match self.status {
                IncidentStatus::Identified => "Identified",
                IncidentStatus::Monitoring => "Monitoring",
                IncidentStatus::InProgress => "Maintenance update",
                IncidentStatus::Scheduled => "Maintenance plan changed",
                // Still investigating: the body says so; "Update" does not repeat it.
                _ => "Update",
            },
            EventKind::Reopened => "Problem back",
            EventKind::Resolved => "Resolved",
            EventKind::Review => "Incident review",
            EventKind::MaintenanceScheduled => "Planned maintenance",
            EventKind::MaintenanceReminder => "Reminder: planned maintenance",
            EventKind::MaintenanceStarted => "Maintenance under way",
            EventKind::MaintenanceCompleted => "Maintenance complete",
        }
    }
}

impl Notice {
    /// Two notices of `kind` for checking templates: the first with every optional fact set
    /// (a known start, a next-update promise, a link, a promised review, every kind heard on
    /// the channel, both URLs), the second with none of them. A template set that renders
    /// both takes every branch a real notice can.
    pub fn examples(kind: EventKind) -> [Notice; 2] {
        use time::macros::datetime;
        let maintenance = matches!(
            kind,
            EventKind::MaintenanceScheduled
                | EventKind::MaintenanceReminder
                | EventKind::MaintenanceStarted
                | EventKind::MaintenanceCompleted
        );
        let status = match kind {
            EventKind::Resolved | EventKind::Review => IncidentStatus::Resolved,
            EventKind::MaintenanceScheduled | EventKind::MaintenanceReminder => {
                IncidentStatus::Scheduled
            }
            EventKind::MaintenanceStarted => IncidentStatus::InProgress,
            EventKind::MaintenanceCompleted => IncidentStatus::Completed,
            _ => IncidentStatus::Investigating,
        };
        let closed = matches!(kind, EventKind::Resolved | EventKind::Review);
        let ongoing = matches!(
            kind,
            EventKind::Opened
                | EventKind::Updated
                | EventKind::Reopened
                | EventKind::MaintenanceStarted
        );
        let full = Notice {
            company: "Acme".into(),
            incident_id: IncidentId::from_uuid(uuid::Uuid::from_u128(
                0x0192_7a1e_5b2c_7d40_9a51_3f2e_8b6c_4d10,
            )),
            title: "Payments API errors".into(),
            kind,
            status,
            severity: Severity::Major,
            components: vec!["Payments API".into(), "Dashboard".into()],
            affected: example_affected(kind, true),
            message: "Some card payments fail with an error.".into(),
            occurred_at: datetime!(2026-11-23 15:17 UTC),
            started_at: Some(datetime!(2026-11-23 14:05 UTC)),
            reported_at: datetime!(2026-11-23 14:20 UTC),
            resolved_at: closed.then_some(datetime!(2026-11-23 15:17 UTC)),
            next_update_at: ongoing.then_some(datetime!(2026-11-23 16:00 UTC)),
            customer_action: Some("Retry payments that failed after 14:05 UTC.".into()),
            link: Some("https://status.acme.test/reviews/payments".into()),
            review_to_follow: closed,
            channel_kinds: EventKind::ALL.to_vec(),
            window: maintenance.then_some(MaintenanceWindow {
                starts_at: datetime!(2026-11-24 02:00 UTC),
                ends_at: datetime!(2026-11-24 03:30 UTC),
            }),
            version: 2,
            status_page_url: Some("https://status.acme.test".into()),
            unsubscribe_url: Some("https://status.acme.test/unsubscribe/u1".into()),
            preferences_url: Some("https://status.acme.test/preferences/p1".into()),
            delivery_key: "dlv_0123456789abcdef0123456789abcdef".into(),
            catch_up: false,
            history: Vec::new(),
            channel_failure: None,
        };
        let bare = Notice {
            affected: example_affected(kind, false),
            started_at: None,
            next_update_at: None,
            customer_action: None,
            link: None,
            review_to_follow: false,
            channel_kinds: vec![kind],
            status_page_url: None,
            unsubscribe_url: None,
            preferences_url: None,
            ..full.clone()
        };
        [full, bare]
    }

    /// The full example of a fallback notice: the reader's webhook endpoint was disabled.
    pub fn channel_failure_example() -> Notice {
        let [update, _] = Notice::examples(EventKind::Updated);
        Notice {
            channel_failure: Some(ChannelFailure {
                channel: crate::channel::Channel::Webhook,
                address: Some("https://hooks.example.test/acme".into()),
                reason: "the endpoint answered 410 Gone".into(),
            }),
            ..update
        }
    }

    /// The full example of an update, as the first message of a reader who subscribed
    /// while the incident was under way.
    pub fn catch_up_example() -> Notice {
        use time::macros::datetime;
        let [update, _] = Notice::examples(EventKind::Updated);
        Notice {
            catch_up: true,
            history: vec![Moment {
                occurred_at: datetime!(2026-11-23 14:20 UTC),
                kind: EventKind::Opened,
                message: "Some card payments fail with an error.".into(),
            }],
            message: "We found a faulty configuration change and are rolling it back.".into(),
            status: IncidentStatus::Identified,
            ..update
        }
    }
}

/// A timestamp as customers read it, always in UTC so one message means the same to every
/// reader: `2026-11-23 14:05 UTC`.
pub fn human_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// A time as an SMS reads it: `14:05 UTC` on the same UTC day as `reference`, else as
/// [`human_time`]. Every character of a text costs.
pub fn human_time_near(at: OffsetDateTime, reference: OffsetDateTime) -> String {
    let (at_utc, reference) = (
        at.to_offset(time::UtcOffset::UTC),
        reference.to_offset(time::UtcOffset::UTC),
    );
    if at_utc.date() == reference.date() {
        format!("{:02}:{:02} UTC", at_utc.hour(), at_utc.minute())
    } else {
        human_time(at)
    }
}

/// A duration as customers read it: the two largest units, to the minute
/// (`1 hour 12 minutes`, `2 days 3 hours`, `less than a minute`). Seconds are dropped
/// because an outage's length is only known to the minute anyway.
pub fn human_duration(duration: time::Duration) -> String {
    let minutes = duration.whole_minutes().max(0);
    if minutes == 0 {
        return "less than a minute".to_owned();
    }
    let units = [
        (minutes / 1440, "day"),
        (minutes / 60 % 24, "hour"),
        (minutes % 60, "minute"),
    ];
    let parts: Vec<String> = units
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    parts.join(" ")
}

/// A list as a sentence: `A`, `A and B`, `A, B and C`.
pub fn human_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", init.join(", "), last.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn notice() -> Notice {
        Notice {
            preferences_url: None,
            affected: Vec::new(),
            company: "Acme".into(),
            incident_id: IncidentId::new(),
            title: "Payments API errors".into(),
            kind: EventKind::Resolved,
            status: IncidentStatus::Resolved,
            severity: Severity::Major,
            components: vec!["Payments API".into()],
            message: "Fixed.".into(),
            occurred_at: datetime!(2026-11-23 15:17 UTC),
            started_at: Some(datetime!(2026-11-23 14:05 UTC)),
            reported_at: datetime!(2026-11-23 14:20 UTC),
            resolved_at: Some(datetime!(2026-11-23 15:17 UTC)),
            next_update_at: None,
            customer_action: None,
            link: None,
            review_to_follow: false,
            channel_kinds: vec![EventKind::Resolved],
            window: None,
            version: 3,
            status_page_url: None,
            unsubscribe_url: Some("https://status.acme.test/u/1".into()),
            delivery_key: "dlv_0123".into(),
            catch_up: false,
            history: Vec::new(),
            channel_failure: None,
        }
    }

    #[test]
    fn duration_is_resolution_minus_start() {
        let n = notice();
        assert_eq!(n.duration(), Some(time::Duration::minutes(72)));
        let open = Notice {
            resolved_at: None,
            ..n.clone()
        };
        assert_eq!(open.duration(), None);
        let skewed = Notice {
            resolved_at: Some(datetime!(2026-11-23 14:00 UTC)),
            ..n.clone()
        };
        assert_eq!(skewed.duration(), None);
        // Only the report time is known: no duration is claimed from it.
        let unknown_start = Notice {
            started_at: None,
            ..n
        };
        assert_eq!(unknown_start.duration(), None);
    }

    #[test]
    fn impacts_are_told_in_words_and_the_worst_names_an_opening() {
        let [opening, bare] = Notice::examples(EventKind::Opened);
        assert_eq!(
            opening.impact_lines(),
            [
                "Payments API: partial outage",
                "Dashboard: degraded performance"
            ]
        );
        assert_eq!(
            opening.affected_in_short(),
            "Payments API partly down and Dashboard slow"
        );
        assert_eq!(opening.headline(), "Partial outage");
        let down = Notice {
            affected: opening
                .affected
                .iter()
                .cloned()
                .map(|a| Affected {
                    impact: Some(Impact::MajorOutage),
                    ..a
                })
                .collect(),
            severity: Severity::Minor,
            ..opening.clone()
        };
        // The stated impact outranks a severity that says less.
        assert_eq!(down.headline(), "Outage");
        assert!(bare.impact_lines().is_empty());
        assert_eq!(bare.affected_in_short(), "Payments API and Dashboard");
        assert_eq!(
            Notice {
                severity: Severity::Critical,
                ..bare
            }
            .headline(),
            "Outage"
        );
    }

    #[test]
    fn headlines_say_severity_on_opening_and_status_on_update() {
        let n = notice();
        let opened = |severity| Notice {
            kind: EventKind::Opened,
            status: IncidentStatus::Investigating,
            severity,
            ..n.clone()
        };
        assert_eq!(opened(Severity::Critical).headline(), "Outage");
        assert_eq!(opened(Severity::Major).headline(), "Partial outage");
        assert_eq!(opened(Severity::Minor).headline(), "Degraded");
        let updated = |status| Notice {
            kind: EventKind::Updated,
            status,
            ..n.clone()
        };
        assert_eq!(updated(IncidentStatus::Identified).headline(), "Identified");
        assert_eq!(updated(IncidentStatus::Monitoring).headline(), "Monitoring");
        assert_eq!(updated(IncidentStatus::Investigating).headline(), "Update");
        assert_eq!(n.headline(), "Resolved");
    }

    #[test]
    fn only_an_update_or_a_reopening_becomes_a_catch_up() {
        let [update, _] = Notice::examples(EventKind::Updated);
        let opening = RecordedEvent {
            event_id: crate::ids::EventId::new(),
            incident_id: update.incident_id,
            version: 1,
            position: 1,
            publisher: "ops".into(),
            idempotency_key: "k".into(),
            occurred_at: datetime!(2026-11-23 14:20 UTC),
            recorded_at: datetime!(2026-11-23 14:20 UTC),
            change: crate::change::Change::new(EventKind::Opened, "Payments fail."),
        };
        let caught_up = update.clone().as_catch_up(std::slice::from_ref(&opening));
        assert!(caught_up.catch_up);
        assert_eq!(caught_up.headline(), "Partial outage");
        assert_eq!(
            caught_up.history,
            vec![Moment {
                occurred_at: opening.occurred_at,
                kind: EventKind::Opened,
                message: "Payments fail.".into(),
            }]
        );
        for kind in [
            EventKind::Resolved,
            EventKind::MaintenanceStarted,
            EventKind::Review,
        ] {
            let [notice, _] = Notice::examples(kind);
            let same = notice.clone().as_catch_up(std::slice::from_ref(&opening));
            assert_eq!(same, notice, "{kind:?} stands on its own");
        }
    }

    #[test]
    fn channel_kinds_decide_what_may_be_promised() {
        let n = notice().with_channel_kinds([
            EventKind::Resolved,
            EventKind::Opened,
            EventKind::Resolved,
        ]);
        assert_eq!(
            n.channel_kinds,
            vec![EventKind::Opened, EventKind::Resolved]
        );
        assert!(n.hears(EventKind::Resolved));
        assert!(!n.hears(EventKind::Updated));
    }

    #[test]
    fn times_durations_and_lists_read_plainly() {
        let at = datetime!(2026-11-23 15:05 +01:00);
        assert_eq!(human_time(at), "2026-11-23 14:05 UTC");
        assert_eq!(
            human_time_near(at, datetime!(2026-11-23 09:00 UTC)),
            "14:05 UTC"
        );
        assert_eq!(
            human_time_near(at, datetime!(2026-11-22 23:00 -01:00)),
            "14:05 UTC",
            "the same day in UTC counts, whatever offset the reference carries"
        );
        assert_eq!(
            human_time_near(at, datetime!(2026-11-22 09:00 UTC)),
            "2026-11-23 14:05 UTC"
        );
        let d = |m: i64| human_duration(time::Duration::minutes(m));
        assert_eq!(
            human_duration(time::Duration::seconds(59)),
            "less than a minute"
        );
        assert_eq!(d(1), "1 minute");
        assert_eq!(d(72), "1 hour 12 minutes");
        assert_eq!(d(120), "2 hours");
        assert_eq!(d(1440 + 5), "1 day");
        assert_eq!(d(2 * 1440 + 180 + 7), "2 days 3 hours");
        assert_eq!(d(-5), "less than a minute");
        assert_eq!(human_list::<&str>(&[]), "");
        assert_eq!(human_list(&["A"]), "A");
        assert_eq!(human_list(&["A", "B"]), "A and B");
        assert_eq!(human_list(&["A", "B", "C"]), "A, B and C");
    }

    #[test]
    fn serialises_times_as_rfc3339_and_round_trips() {
        let n = notice();
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["started_at"], "2026-11-23T14:05:00Z");
        assert_eq!(json["kind"], "resolved");
        let back: Notice = serde_json::from_value(json).unwrap();
        assert_eq!(back, n);
    }
}
