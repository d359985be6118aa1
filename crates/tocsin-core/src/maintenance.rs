//! The maintenance clock: the events Tocsin records by itself for a scheduled maintenance
//! (reminders before it starts, and the start and completion at the window's times when the
//! publisher does not say them).
//!
//! [`due`] is a pure function of the maintenance and the time. Each event it returns carries
//! an idempotency key derived from the maintenance, the window and the step, so every replica
//! that runs the clock asks for the same event under the same key, and the log records it
//! once.

use time::OffsetDateTime;

use crate::change::{Change, EventKind, IncidentStatus, PublishRequest};
use crate::incident::{Incident, IncidentKind};

/// The publisher name Tocsin records its own events under.
pub const PUBLISHER: &str = "tocsin";

/// Reminders, in minutes before the start, when a maintenance does not set its own: the day
/// before and the hour before.
pub const DEFAULT_REMINDERS: [u32; 2] = [24 * 60, 60];

/// What the clock would record for `maintenance` at `now`, if anything: one event at a time,
/// the most pressing first (completion, start, then the latest reminder that is due).
///
/// - A reminder `r` minutes ahead is due from `starts_at - r` until the start, and only when
///   the maintenance was announced before `starts_at - r` (a window announced 30 minutes
///   ahead gets no one-hour reminder). When several are due, only the one closest to the
///   start is sent: a clock that was down does not send yesterday's reminder an hour before.
/// - The start is recorded once `starts_at` has passed while the maintenance is still
///   scheduled, the completion once `ends_at` has passed while it is in progress.
///
/// `expected_version` is set, so an event a publisher records meanwhile wins and the clock
/// decides again on its next tick.
pub fn due(maintenance: &Incident, now: OffsetDateTime) -> Option<PublishRequest> {
    if maintenance.kind != IncidentKind::Maintenance {
        return None;
    }
    let window = maintenance.window?;
    let step_key = |step: &str| {
        format!(
            "tocsin.maintenance.v1|{}|{}|{step}",
            maintenance.id,
            window.starts_at.unix_timestamp()
        )
    };
    let request = |kind: EventKind, step: String, message: String| PublishRequest {
        idempotency_key: step,
        incident_id: Some(maintenance.id),
        change: Change::new(kind, message),
        occurred_at: Some(now),
        expected_version: Some(maintenance.version),
    };
    match maintenance.status {
        IncidentStatus::InProgress if now >= window.ends_at => Some(request(
            EventKind::MaintenanceCompleted,
            step_key("completed"),
            "The planned maintenance window has ended.".to_owned(),
        )),
        IncidentStatus::Scheduled if now >= window.starts_at => Some(request(
            EventKind::MaintenanceStarted,
            step_key("started"),
            "The planned work has started on time.".to_owned(),
        )),
        IncidentStatus::Scheduled => {
            let reminders = maintenance
                .reminders
                .as_deref()
                .unwrap_or(&DEFAULT_REMINDERS);
            let minutes = reminders
                .iter()
                .copied()
                .filter(|m| {
                    let at = window.starts_at - time::Duration::minutes(i64::from(*m));
                    at <= now && maintenance.opened_at < at
                })
                .min()?;
            let mut reminder = request(
                EventKind::MaintenanceReminder,
                step_key(&format!("reminder-{minutes}")),
                maintenance.message.clone(),
            );
            // The reminder is when an action asked for before the work matters most.
            reminder
                .change
                .customer_action
                .clone_from(&maintenance.customer_action);
            Some(reminder)
        }
        _ => None,
    }
}

/// The steps the clock will record for `maintenance` after `now`, in time order, if the
/// publisher does not record them first: the reminders still to come (those due after the
/// announcement), the start and the completion. What `PreviewFanout` shows of a schedule.
pub fn schedule(maintenance: &Incident, now: OffsetDateTime) -> Vec<(EventKind, OffsetDateTime)> {
    let Some(window) = maintenance
        .window
        .filter(|_| maintenance.kind == IncidentKind::Maintenance)
    else {
        return Vec::new();
    };
    let mut steps = Vec::new();
    if maintenance.status == IncidentStatus::Scheduled {
        let reminders = maintenance
            .reminders
            .as_deref()
            .unwrap_or(&DEFAULT_REMINDERS);
        let mut minutes: Vec<u32> = reminders.to_vec();
        minutes.sort_unstable_by(|a, b| b.cmp(a));
        minutes.dedup();
        for m in minutes {
            let at = window.starts_at - time::Duration::minutes(i64::from(m));
            if at > now && maintenance.opened_at < at {
                steps.push((EventKind::MaintenanceReminder, at));
            }
        }
        steps.push((EventKind::MaintenanceStarted, window.starts_at.max(now)));
    }
    if matches!(
        maintenance.status,
        IncidentStatus::Scheduled | IncidentStatus::InProgress
    ) {
        steps.push((EventKind::MaintenanceCompleted, window.ends_at.max(now)));
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::macros::datetime;

    use super::*;
    use crate::change::MaintenanceWindow;
    use crate::event::RecordedEvent;
    use crate::ids::{EventId, IncidentId};

    const ANNOUNCED: OffsetDateTime = datetime!(2026-12-01 09:00 UTC);
    const STARTS: OffsetDateTime = datetime!(2026-12-05 02:00 UTC);
    const ENDS: OffsetDateTime = datetime!(2026-12-05 03:30 UTC);

    fn scheduled(announced: OffsetDateTime, reminders: Option<Vec<u32>>) -> Incident {
        let change = Change {
            title: Some("Database upgrade".into()),
            components: vec!["db".into()],
            window: Some(MaintenanceWindow {
                starts_at: STARTS,
                ends_at: ENDS,
            }),
            reminders,
            labels: BTreeMap::new(),
            customer_action: Some("Pause your nightly imports.".into()),
            ..Change::new(
                EventKind::MaintenanceScheduled,
                "Writes pause for a minute.",
            )
        };
        Incident::apply(
            None,
            &RecordedEvent {
                event_id: EventId::new(),
                incident_id: IncidentId::new(),
                version: 1,
                position: 1,
                publisher: "ops".into(),
                idempotency_key: "k".into(),
                occurred_at: announced,
                recorded_at: announced,
                change,
            },
        )
    }

    fn step(m: &Incident, now: OffsetDateTime) -> Option<(EventKind, String)> {
        due(m, now).map(|r| {
            let step = r.idempotency_key.rsplit('|').next().unwrap().to_owned();
            (r.change.kind, step)
        })
    }

    #[test]
    fn reminders_come_the_day_and_the_hour_before_then_the_start_and_the_end() {
        let m = scheduled(ANNOUNCED, None);
        let minutes = time::Duration::minutes;
        assert_eq!(step(&m, STARTS - time::Duration::days(2)), None);
        assert_eq!(
            step(&m, STARTS - minutes(24 * 60)),
            Some((EventKind::MaintenanceReminder, "reminder-1440".into()))
        );
        assert_eq!(
            step(&m, STARTS - minutes(61)),
            Some((EventKind::MaintenanceReminder, "reminder-1440".into())),
            "the same step, asked again, carries the same key"
        );
        assert_eq!(
            step(&m, STARTS - minutes(60)),
            Some((EventKind::MaintenanceReminder, "reminder-60".into()))
        );
        let r = due(&m, STARTS - minutes(30)).unwrap();
        assert_eq!(r.change.message, "Writes pause for a minute.");
        assert_eq!(
            r.change.customer_action.as_deref(),
            Some("Pause your nightly imports."),
            "the reminder repeats what to do before the work"
        );
        assert_eq!(r.expected_version, Some(1));
        assert_eq!(
            step(&m, STARTS),
            Some((EventKind::MaintenanceStarted, "started".into()))
        );
        let started = Incident {
            status: IncidentStatus::InProgress,
            ..m.clone()
        };
        assert_eq!(step(&started, ENDS - minutes(1)), None);
        assert_eq!(
            step(&started, ENDS),
            Some((EventKind::MaintenanceCompleted, "completed".into()))
        );
        let completed = Incident {
            status: IncidentStatus::Completed,
            ..m
        };
        assert_eq!(step(&completed, ENDS + minutes(5)), None);
    }

    #[test]
    fn the_schedule_lists_what_the_clock_will_send() {
        let m = scheduled(ANNOUNCED, None);
        assert_eq!(
            schedule(&m, ANNOUNCED),
            vec![
                (
                    EventKind::MaintenanceReminder,
                    STARTS - time::Duration::hours(24)
                ),
                (
                    EventKind::MaintenanceReminder,
                    STARTS - time::Duration::hours(1)
                ),
                (EventKind::MaintenanceStarted, STARTS),
                (EventKind::MaintenanceCompleted, ENDS),
            ]
        );
        let late = scheduled(STARTS - time::Duration::minutes(30), None);
        assert_eq!(
            schedule(&late, STARTS - time::Duration::minutes(30)),
            vec![
                (EventKind::MaintenanceStarted, STARTS),
                (EventKind::MaintenanceCompleted, ENDS),
            ],
            "announced 30 minutes ahead: no reminders"
        );
        let under_way = Incident {
            status: IncidentStatus::InProgress,
            ..m
        };
        assert_eq!(
            schedule(&under_way, STARTS),
            vec![(EventKind::MaintenanceCompleted, ENDS)]
        );
    }

    #[test]
    fn no_reminder_for_a_window_announced_closer_than_it() {
        let late = scheduled(STARTS - time::Duration::minutes(30), None);
        assert_eq!(step(&late, STARTS - time::Duration::minutes(10)), None);
        let day_before = scheduled(STARTS - time::Duration::hours(5), None);
        assert_eq!(
            step(&day_before, STARTS - time::Duration::minutes(60)),
            Some((EventKind::MaintenanceReminder, "reminder-60".into())),
            "the hour-before reminder still comes"
        );
        assert_eq!(step(&day_before, STARTS - time::Duration::hours(4)), None);
    }

    #[test]
    fn reminders_are_configurable_and_can_be_turned_off() {
        let off = scheduled(ANNOUNCED, Some(vec![]));
        assert_eq!(step(&off, STARTS - time::Duration::minutes(5)), None);
        assert_eq!(
            step(&off, STARTS),
            Some((EventKind::MaintenanceStarted, "started".into())),
            "the start is still told"
        );
        let custom = scheduled(ANNOUNCED, Some(vec![15]));
        assert_eq!(step(&custom, STARTS - time::Duration::minutes(60)), None);
        assert_eq!(
            step(&custom, STARTS - time::Duration::minutes(15)),
            Some((EventKind::MaintenanceReminder, "reminder-15".into()))
        );
    }

    #[test]
    fn a_moved_window_gets_its_own_steps() {
        let m = scheduled(ANNOUNCED, None);
        let moved = Incident {
            window: Some(MaintenanceWindow {
                starts_at: STARTS + time::Duration::days(1),
                ends_at: ENDS + time::Duration::days(1),
            }),
            ..m.clone()
        };
        let now = STARTS - time::Duration::minutes(30);
        assert_ne!(
            due(&m, now).unwrap().idempotency_key,
            due(&moved, now + time::Duration::days(1))
                .unwrap()
                .idempotency_key
        );
    }
}
