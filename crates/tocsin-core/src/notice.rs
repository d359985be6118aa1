//! The customer-facing facts of one event for one recipient: what every channel renders.
//!
//! A [`Notice`] is built once per delivery from the incident as it stands after the event
//! and the event itself. It holds only what a customer may read (no labels, no publisher
//! identity, no internal ids beyond the incident's), so a template cannot leak internals by
//! accident. It serialises with RFC 3339 timestamps so templates receive plain strings.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::change::{EventKind, IncidentStatus, MaintenanceWindow, Severity};
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
    pub components: Vec<String>,
    /// The publisher's customer-facing text for this event.
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// When the incident began; with `resolved_at` it gives how long it lasted.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub window: Option<MaintenanceWindow>,
    /// The incident version this event created; lets receivers order what they get.
    pub version: u64,
    #[serde(default)]
    pub status_page_url: Option<String>,
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// The delivery this notice is rendered for; channels derive their message ids from it.
    pub delivery_key: String,
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
        Notice {
            company: company.into(),
            incident_id: incident.id,
            title: incident.title.clone(),
            kind: event.change.kind,
            status: incident.status,
            severity: incident.severity,
            components: incident.components.clone(),
            message: event.change.message.clone(),
            occurred_at: event.occurred_at,
            started_at: incident.opened_at,
            resolved_at: incident.resolved_at,
            window: incident.window,
            version: event.version,
            status_page_url: None,
            unsubscribe_url: None,
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

    /// How long the incident lasted, once it is resolved. `None` while it is open, or if
    /// the clocks disagree so badly that it would be negative.
    pub fn duration(&self) -> Option<time::Duration> {
        let resolved_at = self.resolved_at?;
        let lasted = resolved_at - self.started_at;
        (!lasted.is_negative()).then_some(lasted)
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
            company: "Acme".into(),
            incident_id: IncidentId::new(),
            title: "Payments API errors".into(),
            kind: EventKind::Resolved,
            status: IncidentStatus::Resolved,
            severity: Severity::Major,
            components: vec!["Payments API".into()],
            message: "Fixed.".into(),
            occurred_at: datetime!(2026-11-23 15:17 UTC),
            started_at: datetime!(2026-11-23 14:05 UTC),
            resolved_at: Some(datetime!(2026-11-23 15:17 UTC)),
            window: None,
            version: 3,
            status_page_url: None,
            unsubscribe_url: Some("https://status.acme.test/u/1".into()),
            delivery_key: "dlv_0123".into(),
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
            ..n
        };
        assert_eq!(skewed.duration(), None);
    }

    #[test]
    fn times_durations_and_lists_read_plainly() {
        let at = datetime!(2026-11-23 15:05 +01:00);
        assert_eq!(human_time(at), "2026-11-23 14:05 UTC");
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
