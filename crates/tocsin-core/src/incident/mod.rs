//! Incident state as a fold of its events, and the lifecycle rules that decide which event
//! may come next.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::change::{Change, EventKind, IncidentStatus, MaintenanceWindow, Severity};
use crate::component::Impact;
use crate::error::DomainError;
use crate::event::RecordedEvent;
use crate::ids::{EventId, IncidentId};

/// Whether this is an unplanned incident or a scheduled maintenance; fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    Incident,
    Maintenance,
}

/// The current state of one incident: nothing but `fold(events)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub kind: IncidentKind,
    pub status: IncidentStatus,
    pub severity: Severity,
    pub title: String,
    pub components: Vec<String>,
    /// The latest customer-facing message.
    pub message: String,
    pub labels: BTreeMap<String, String>,
    pub window: Option<MaintenanceWindow>,
    pub version: u64,
    pub last_event_id: EventId,
    pub last_event_kind: EventKind,
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// When the problem began, as the publisher last said; `None` when never said (then
    /// `opened_at` is only when it was reported, and no duration is claimed).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// The latest event's promise of the next update; each event replaces it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_update_at: Option<OffsetDateTime>,
    /// The resolution promised a review; a reopen withdraws the promise.
    #[serde(default)]
    pub review_to_follow: bool,
    /// What customers need to do, as the latest event said (each event replaces it; a
    /// maintenance reminder repeats it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_action: Option<String>,
    /// For a maintenance: minutes before the start at which subscribers are reminded; `None`
    /// for the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<Vec<u32>>,
    /// How hard each affected component is hit, by id, as the latest event that said so
    /// said; emptied when the incident is resolved or the maintenance completed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub impacts: BTreeMap<String, Impact>,
    /// Display names of the components, from the catalogue as each event found it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub component_names: BTreeMap<String, String>,
}

impl Incident {
    /// Whether the lifecycle has ended (resolved incident, completed maintenance).
    pub fn is_closed(&self) -> bool {
        matches!(
            self.status,
            IncidentStatus::Resolved | IncidentStatus::Completed
        )
    }

    /// Decides whether `change` may be appended to an incident in state `current`
    /// (`None`: the incident does not exist yet).
    pub fn check_transition(
        current: Option<&Incident>,
        incident_id: IncidentId,
        change: &Change,
        expected_version: Option<u64>,
    ) -> Result<(), DomainError> {
        use EventKind::*;
        let actual = current.map_or(0, |i| i.version);
        let Some(incident) = current else {
            if change.kind.creates() {
                return Ok(());
            }
            return Err(DomainError::NotFound(incident_id));
        };
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(DomainError::VersionConflict { expected, actual });
        }
        if change.components.is_empty()
            && let Some(stray) = change
                .impacts
                .keys()
                .find(|c| !incident.components.contains(c))
        {
            return Err(DomainError::invalid(
                "impacts",
                format!(
                    "{stray:?} is not among the incident's components ({}); list the components \
                     too to change them",
                    incident.components.join(", ")
                ),
            ));
        }
        let refuse = |why: &str| Err(DomainError::InvalidTransition(why.to_owned()));
        match (incident.kind, incident.status, change.kind) {
            (_, _, Opened | MaintenanceScheduled) => refuse(
                "the incident already exists; publish an update, or open a new incident without an id",
            ),
            (IncidentKind::Incident, IncidentStatus::Resolved, Reopened | Review) => Ok(()),
            (IncidentKind::Incident, IncidentStatus::Resolved, _) => {
                refuse("the incident is resolved; it accepts only a review or a reopen")
            }
            (_, _, Review) => {
                refuse("a review comes after the incident is resolved; resolve it first")
            }
            (IncidentKind::Incident, _, Reopened) => {
                refuse("only a resolved incident can be reopened")
            }
            (IncidentKind::Incident, _, Updated | Resolved) => Ok(()),
            (IncidentKind::Incident, _, MaintenanceStarted | MaintenanceCompleted) => {
                refuse("maintenance events apply only to a scheduled maintenance")
            }
            (IncidentKind::Maintenance, IncidentStatus::Completed, _) => {
                refuse("the maintenance is completed and accepts no further events")
            }
            (IncidentKind::Maintenance, IncidentStatus::Scheduled, MaintenanceStarted) => Ok(()),
            (IncidentKind::Maintenance, IncidentStatus::Scheduled, MaintenanceReminder) => Ok(()),
            (_, _, MaintenanceReminder) => {
                refuse("a reminder comes before a scheduled maintenance starts")
            }
            (IncidentKind::Maintenance, _, MaintenanceStarted) => {
                refuse("the maintenance has already started")
            }
            (IncidentKind::Maintenance, _, MaintenanceCompleted | Updated) => Ok(()),
            (IncidentKind::Maintenance, _, Resolved | Reopened) => refuse(
                "a maintenance is closed with maintenance_completed, not resolved or reopened",
            ),
        }
    }

    /// Applies one recorded event. The event must have passed [`Incident::check_transition`]
    /// when it was appended; the fold itself never fails, so old logs always replay.
    pub fn apply(current: Option<Incident>, event: &RecordedEvent) -> Incident {
        let change = &event.change;
        let mut incident = match current {
            Some(incident) => incident,
            None => Incident {
                id: event.incident_id,
                kind: if change.kind == EventKind::MaintenanceScheduled {
                    IncidentKind::Maintenance
                } else {
                    IncidentKind::Incident
                },
                status: IncidentStatus::Investigating,
                severity: Severity::Minor,
                title: String::new(),
                components: Vec::new(),
                message: String::new(),
                labels: BTreeMap::new(),
                window: None,
                version: 0,
                last_event_id: event.event_id,
                last_event_kind: change.kind,
                opened_at: event.occurred_at,
                updated_at: event.occurred_at,
                resolved_at: None,
                started_at: None,
                next_update_at: None,
                review_to_follow: false,
                customer_action: None,
                reminders: None,
                impacts: BTreeMap::new(),
                component_names: BTreeMap::new(),
            },
        };

        incident.status = match change.kind {
            EventKind::Opened | EventKind::Updated | EventKind::Reopened => {
                change.status.unwrap_or(match (incident.kind, change.kind) {
                    (_, EventKind::Reopened | EventKind::Opened) => IncidentStatus::Investigating,
                    _ => incident.status,
                })
            }
            EventKind::Resolved => IncidentStatus::Resolved,
            EventKind::MaintenanceScheduled => IncidentStatus::Scheduled,
            EventKind::MaintenanceStarted => IncidentStatus::InProgress,
            EventKind::MaintenanceCompleted => IncidentStatus::Completed,
            EventKind::Review | EventKind::MaintenanceReminder => incident.status,
        };
        if let Some(severity) = change.severity {
            incident.severity = severity;
        }
        if let Some(title) = &change.title {
            incident.title.clone_from(title);
        }
        if !change.components.is_empty() {
            incident.components.clone_from(&change.components);
        }
        incident
            .component_names
            .extend(change.component_names.clone());
        fold_impacts(&mut incident, change);
        if let Some(window) = change.window {
            incident.window = Some(window);
        }
        if change.kind != EventKind::MaintenanceReminder {
            // A reminder repeats the details; it does not replace them.
            incident.message.clone_from(&change.message);
        }
        if let Some(reminders) = &change.reminders {
            incident.reminders = Some(reminders.clone());
        }
        incident.labels.extend(change.labels.clone());
        incident.resolved_at = match (incident.status, change.kind) {
            // A review looks back; the incident ended when it was resolved.
            (_, EventKind::Review) => incident.resolved_at,
            (IncidentStatus::Resolved | IncidentStatus::Completed, _) => Some(event.occurred_at),
            _ => None,
        };
        if let Some(started_at) = change.started_at {
            incident.started_at = Some(started_at);
        }
        incident.next_update_at = change.next_update_at;
        incident.customer_action.clone_from(&change.customer_action);
        match change.kind {
            EventKind::Resolved => incident.review_to_follow = change.review_to_follow,
            EventKind::Reopened => incident.review_to_follow = false,
            _ => {}
        }
        incident.version = event.version;
        incident.last_event_id = event.event_id;
        incident.last_event_kind = change.kind;
        incident.updated_at = event.occurred_at;
        incident
    }

    /// Folds a whole history. `None` for an empty one.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Option<Incident> {
        events
            .into_iter()
            .fold(None, |state, event| Some(Incident::apply(state, event)))
    }
}

/// The impacts after `change`: its own when it gives any; otherwise the previous ones of
/// components still affected. A started maintenance with none puts every component under
/// maintenance; an ending clears them.
fn fold_impacts(incident: &mut Incident, change: &Change) {
    match change.kind {
        EventKind::Resolved | EventKind::MaintenanceCompleted => incident.impacts.clear(),
        _ if !change.impacts.is_empty() => incident.impacts.clone_from(&change.impacts),
        EventKind::MaintenanceStarted => {
            incident.impacts = incident
                .components
                .iter()
                .map(|c| (c.clone(), Impact::UnderMaintenance))
                .collect();
        }
        _ => {
            let components = &incident.components;
            incident.impacts.retain(|c, _| components.contains(c));
        }
    }
}

#[cfg(test)]
mod tests;
