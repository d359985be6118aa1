//! What a public status page says: each component's state, the page's overall word, and
//! which of an incident's events the public sees.
//!
//! A component's state is the worst an open incident does to it: the impact the publisher
//! stated, or, when they stated none, what the incident's severity implies (critical: major
//! outage; major: partial outage; minor: degraded performance). A maintenance under way puts
//! its components under maintenance; one only scheduled changes nothing yet. Components not
//! in the catalogue but named by an open incident are shown too (an empty catalogue means
//! free-form names).

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::change::{EventKind, IncidentStatus, Severity};
use crate::component::{Component, Impact};
use crate::event::RecordedEvent;
use crate::incident::{Incident, IncidentKind};

/// One component as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    pub id: String,
    pub name: String,
    pub group: Option<String>,
    pub description: Option<String>,
    /// `None`: operational.
    pub impact: Option<Impact>,
}

impl ComponentStatus {
    /// `operational`, or the impact's name.
    pub fn state(&self) -> &'static str {
        self.impact.map_or("operational", Impact::as_str)
    }
}

/// The page's headline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Operational,
    UnderMaintenance,
    Degraded,
    PartialOutage,
    MajorOutage,
}

impl Overall {
    pub fn words(self) -> &'static str {
        match self {
            Overall::Operational => "All systems operational",
            Overall::UnderMaintenance => "Maintenance under way",
            Overall::Degraded => "Some systems are degraded",
            Overall::PartialOutage => "Partial outage",
            Overall::MajorOutage => "Major outage",
        }
    }
}

/// The impact an open incident has on `component`: stated, else implied by severity.
fn impact_on(incident: &Incident, component: &str) -> Option<Impact> {
    if incident.is_closed() {
        return None;
    }
    match (incident.kind, incident.status) {
        (IncidentKind::Maintenance, IncidentStatus::InProgress) => Some(
            incident
                .impacts
                .get(component)
                .copied()
                .unwrap_or(Impact::UnderMaintenance),
        ),
        (IncidentKind::Maintenance, _) => None,
        (IncidentKind::Incident, _) => Some(incident.impacts.get(component).copied().unwrap_or(
            match incident.severity {
                Severity::Critical => Impact::MajorOutage,
                Severity::Major => Impact::PartialOutage,
                Severity::Minor => Impact::DegradedPerformance,
            },
        )),
    }
}

/// Every component's state: the catalogue's in its order, then any others open incidents
/// name, in the order first named.
pub fn component_states(catalogue: &[Component], incidents: &[Incident]) -> Vec<ComponentStatus> {
    let mut shown: Vec<ComponentStatus> = catalogue
        .iter()
        .map(|c| ComponentStatus {
            id: c.id.clone(),
            name: c.name.clone(),
            group: c.group.clone(),
            description: c.description.clone(),
            impact: None,
        })
        .collect();
    let mut index: BTreeMap<String, usize> = shown
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    for incident in incidents.iter().filter(|i| !i.is_closed()) {
        for component in &incident.components {
            let Some(impact) = impact_on(incident, component) else {
                continue;
            };
            let at = *index.entry(component.clone()).or_insert_with(|| {
                shown.push(ComponentStatus {
                    id: component.clone(),
                    name: incident
                        .component_names
                        .get(component)
                        .cloned()
                        .unwrap_or_else(|| component.clone()),
                    group: None,
                    description: None,
                    impact: None,
                });
                shown.len() - 1
            });
            let state = &mut shown[at].impact;
            *state = Impact::worst(state.iter().copied().chain([impact]));
        }
    }
    shown
}

/// The page's headline from its components' states.
pub fn overall(components: &[ComponentStatus]) -> Overall {
    match Impact::worst(components.iter().filter_map(|c| c.impact)) {
        None => Overall::Operational,
        Some(Impact::UnderMaintenance) => Overall::UnderMaintenance,
        Some(Impact::DegradedPerformance) => Overall::Degraded,
        Some(Impact::PartialOutage) => Overall::PartialOutage,
        Some(Impact::MajorOutage) => Overall::MajorOutage,
    }
}

/// Whether the public sees `event` at `now`: not Tocsin's own reminders, and nothing
/// scheduled to go out later (a review set for Thursday appears on Thursday).
pub fn is_public(event: &RecordedEvent, now: OffsetDateTime) -> bool {
    event.change.kind != EventKind::MaintenanceReminder
        && event.change.deliver_at.is_none_or(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::change::Change;
    use crate::ids::{EventId, IncidentId};

    fn record(incident_id: IncidentId, version: u64, change: Change) -> RecordedEvent {
        RecordedEvent {
            event_id: EventId::new(),
            incident_id,
            version,
            position: version as i64,
            publisher: "ops".into(),
            idempotency_key: format!("k{version}"),
            occurred_at: datetime!(2026-12-07 10:00 UTC),
            recorded_at: datetime!(2026-12-07 10:00 UTC),
            change,
        }
    }

    fn incident(severity: Severity, components: &[&str], impacts: &[(&str, Impact)]) -> Incident {
        let change = Change {
            severity: Some(severity),
            title: Some("t".into()),
            components: components.iter().map(|c| (*c).to_owned()).collect(),
            impacts: impacts.iter().map(|(c, i)| ((*c).to_owned(), *i)).collect(),
            ..Change::new(EventKind::Opened, "m")
        };
        Incident::fold(&[record(IncidentId::new(), 1, change)]).unwrap()
    }

    fn catalogue() -> Vec<Component> {
        ["api", "dashboard", "billing"]
            .iter()
            .map(|id| Component {
                id: (*id).into(),
                name: id.to_uppercase(),
                group: Some("Platform".into()),
                description: None,
            })
            .collect()
    }

    #[test]
    fn the_worst_open_impact_wins_and_severity_stands_in_for_an_unstated_one() {
        let stated = incident(
            Severity::Minor,
            &["api", "dashboard"],
            &[("api", Impact::PartialOutage)],
        );
        let critical = incident(Severity::Critical, &["api", "legacy"], &[]);
        let states = component_states(&catalogue(), &[stated, critical]);
        let shown: Vec<(&str, &str)> = states.iter().map(|c| (c.id.as_str(), c.state())).collect();
        assert_eq!(
            shown,
            [
                ("api", "major_outage"),
                ("dashboard", "degraded_performance"),
                ("billing", "operational"),
                ("legacy", "major_outage"),
            ]
        );
        assert_eq!(overall(&states), Overall::MajorOutage);
        assert_eq!(
            overall(&component_states(&catalogue(), &[])),
            Overall::Operational
        );
    }

    #[test]
    fn maintenance_counts_once_under_way_and_closed_incidents_not_at_all() {
        let id = IncidentId::new();
        let scheduled = Change {
            title: Some("Upgrade".into()),
            components: vec!["billing".into()],
            window: Some(crate::change::MaintenanceWindow {
                starts_at: datetime!(2026-12-08 02:00 UTC),
                ends_at: datetime!(2026-12-08 03:00 UTC),
            }),
            ..Change::new(EventKind::MaintenanceScheduled, "m")
        };
        let planned = Incident::fold(&[record(id, 1, scheduled.clone())]).unwrap();
        assert_eq!(
            overall(&component_states(&catalogue(), &[planned])),
            Overall::Operational
        );
        let started = Incident::fold(&[
            record(id, 1, scheduled),
            record(id, 2, Change::new(EventKind::MaintenanceStarted, "m")),
        ])
        .unwrap();
        let states = component_states(&catalogue(), std::slice::from_ref(&started));
        assert_eq!(states[2].state(), "under_maintenance");
        assert_eq!(overall(&states), Overall::UnderMaintenance);

        let mut resolved = incident(Severity::Critical, &["api"], &[]);
        resolved.status = IncidentStatus::Resolved;
        assert_eq!(
            overall(&component_states(&catalogue(), &[resolved])),
            Overall::Operational
        );
    }

    #[test]
    fn reminders_and_events_scheduled_for_later_are_not_public_yet() {
        let id = IncidentId::new();
        let now = datetime!(2026-12-07 12:00 UTC);
        let reminder = record(id, 2, Change::new(EventKind::MaintenanceReminder, "m"));
        let later = record(
            id,
            3,
            Change {
                deliver_at: Some(datetime!(2026-12-10 10:00 UTC)),
                ..Change::new(EventKind::Review, "m")
            },
        );
        let update = record(id, 4, Change::new(EventKind::Updated, "m"));
        assert!(!is_public(&reminder, now));
        assert!(!is_public(&later, now));
        assert!(is_public(&later, datetime!(2026-12-10 10:00 UTC)));
        assert!(is_public(&update, now));
    }
}
