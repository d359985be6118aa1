//! Conversions between `tocsin.v1` wire types and `tocsin-core` domain types.

use prost_types::Timestamp;
use time::OffsetDateTime;
use tocsin_core::component::affected;
use tocsin_core::{
    Change, DomainError, EventKind, Incident, IncidentId, IncidentKind, IncidentStatus,
    MaintenanceWindow, PublishRequest, RecordedEvent, Severity,
};

use crate::v1;

/// A wire timestamp as a domain time, refusing values out of range.
pub fn to_offset_datetime(
    field: &'static str,
    ts: &Timestamp,
) -> Result<OffsetDateTime, DomainError> {
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| DomainError::invalid(field, "is not a valid timestamp"))
}

fn optional_time(
    field: &'static str,
    ts: Option<&Timestamp>,
) -> Result<Option<OffsetDateTime>, DomainError> {
    ts.map(|ts| to_offset_datetime(field, ts)).transpose()
}

pub fn timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// Parses an incident id field; empty is `None`.
pub fn incident_id(field: &'static str, raw: &str) -> Result<Option<IncidentId>, DomainError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let id: IncidentId = raw
        .trim()
        .parse()
        .map_err(|_| DomainError::invalid(field, format!("{raw:?} is not a UUID")))?;
    if id.as_uuid().is_nil() {
        return Err(DomainError::invalid(
            field,
            "is the nil UUID, which names no incident",
        ));
    }
    Ok(Some(id))
}

fn event_kind(raw: i32) -> Result<EventKind, DomainError> {
    event_kind_in("kind", raw)
}

/// An event kind from the wire; `field` names it in errors.
pub fn event_kind_in(field: &'static str, raw: i32) -> Result<EventKind, DomainError> {
    Ok(match v1::EventKind::try_from(raw) {
        Ok(v1::EventKind::Opened) => EventKind::Opened,
        Ok(v1::EventKind::Updated) => EventKind::Updated,
        Ok(v1::EventKind::Resolved) => EventKind::Resolved,
        Ok(v1::EventKind::Reopened) => EventKind::Reopened,
        Ok(v1::EventKind::MaintenanceScheduled) => EventKind::MaintenanceScheduled,
        Ok(v1::EventKind::MaintenanceStarted) => EventKind::MaintenanceStarted,
        Ok(v1::EventKind::MaintenanceCompleted) => EventKind::MaintenanceCompleted,
        Ok(v1::EventKind::Review) => EventKind::Review,
        Ok(v1::EventKind::MaintenanceReminder) => EventKind::MaintenanceReminder,
        Ok(v1::EventKind::Unspecified) => {
            return Err(DomainError::invalid(field, "is required"));
        }
        Err(_) => {
            return Err(DomainError::invalid(
                field,
                format!("{raw} is not a known kind"),
            ));
        }
    })
}

fn severity(raw: i32) -> Result<Option<Severity>, DomainError> {
    severity_in("severity", raw)
}

/// A severity from the wire, `None` when unspecified; `field` names it in errors.
pub fn severity_in(field: &'static str, raw: i32) -> Result<Option<Severity>, DomainError> {
    Ok(match v1::Severity::try_from(raw) {
        Ok(v1::Severity::Unspecified) => None,
        Ok(v1::Severity::Minor) => Some(Severity::Minor),
        Ok(v1::Severity::Major) => Some(Severity::Major),
        Ok(v1::Severity::Critical) => Some(Severity::Critical),
        Err(_) => {
            return Err(DomainError::invalid(
                field,
                format!("{raw} is not a known severity"),
            ));
        }
    })
}

fn status(raw: i32) -> Result<Option<IncidentStatus>, DomainError> {
    status_in("status", raw)
}

/// An incident status from the wire, `None` when unspecified; `field` names it in errors.
pub fn status_in(field: &'static str, raw: i32) -> Result<Option<IncidentStatus>, DomainError> {
    use v1::IncidentStatus as W;
    Ok(match W::try_from(raw) {
        Ok(W::Unspecified) => None,
        Ok(W::Investigating) => Some(IncidentStatus::Investigating),
        Ok(W::Identified) => Some(IncidentStatus::Identified),
        Ok(W::Monitoring) => Some(IncidentStatus::Monitoring),
        Ok(W::Resolved) => Some(IncidentStatus::Resolved),
        Ok(W::Scheduled) => Some(IncidentStatus::Scheduled),
        Ok(W::InProgress) => Some(IncidentStatus::InProgress),
        Ok(W::Completed) => Some(IncidentStatus::Completed),
        Err(_) => {
            return Err(DomainError::invalid(
                field,
                format!("{raw} is not a known status"),
            ));
        }
    })
}

fn window(w: &v1::MaintenanceWindow) -> Result<MaintenanceWindow, DomainError> {
    let missing = || DomainError::invalid("window", "needs both starts_at and ends_at");
    Ok(MaintenanceWindow {
        starts_at: to_offset_datetime("window", w.starts_at.as_ref().ok_or_else(missing)?)?,
        ends_at: to_offset_datetime("window", w.ends_at.as_ref().ok_or_else(missing)?)?,
    })
}

impl TryFrom<v1::PublishEventRequest> for PublishRequest {
    type Error = DomainError;

    /// Decodes the wire request. Field rules (lengths, required per kind) are checked
    /// afterwards by [`PublishRequest::validate`].
    fn try_from(req: v1::PublishEventRequest) -> Result<Self, DomainError> {
        Ok(PublishRequest {
            incident_id: incident_id("incident_id", &req.incident_id)?,
            change: Change {
                kind: event_kind(req.kind)?,
                status: status(req.status)?,
                severity: severity(req.severity)?,
                components: req.components,
                title: Some(req.title),
                message: req.message,
                labels: req.labels.into_iter().collect(),
                window: req.window.as_ref().map(window).transpose()?,
                started_at: optional_time("started_at", req.started_at.as_ref())?,
                next_update_at: optional_time("next_update_at", req.next_update_at.as_ref())?,
                customer_action: Some(req.customer_action).filter(|a| !a.trim().is_empty()),
                link: Some(req.link).filter(|l| !l.trim().is_empty()),
                review_to_follow: req.review_to_follow,
                deliver_at: optional_time("deliver_at", req.deliver_at.as_ref())?,
                reminders: req.reminders.map(|r| r.minutes_before),
                impacts: crate::components::impacts(req.impacts)?,
                // Copied in from the catalogue by the ingest; publishers cannot set them.
                component_names: Default::default(),
            },
            occurred_at: optional_time("occurred_at", req.occurred_at.as_ref())?,
            expected_version: req.expected_version,
            idempotency_key: req.idempotency_key,
        })
    }
}

impl From<EventKind> for v1::EventKind {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::Opened => Self::Opened,
            EventKind::Updated => Self::Updated,
            EventKind::Resolved => Self::Resolved,
            EventKind::Reopened => Self::Reopened,
            EventKind::MaintenanceScheduled => Self::MaintenanceScheduled,
            EventKind::MaintenanceStarted => Self::MaintenanceStarted,
            EventKind::MaintenanceCompleted => Self::MaintenanceCompleted,
            EventKind::Review => Self::Review,
            EventKind::MaintenanceReminder => Self::MaintenanceReminder,
        }
    }
}

impl From<Severity> for v1::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Minor => Self::Minor,
            Severity::Major => Self::Major,
            Severity::Critical => Self::Critical,
        }
    }
}

impl From<IncidentStatus> for v1::IncidentStatus {
    fn from(s: IncidentStatus) -> Self {
        match s {
            IncidentStatus::Investigating => Self::Investigating,
            IncidentStatus::Identified => Self::Identified,
            IncidentStatus::Monitoring => Self::Monitoring,
            IncidentStatus::Resolved => Self::Resolved,
            IncidentStatus::Scheduled => Self::Scheduled,
            IncidentStatus::InProgress => Self::InProgress,
            IncidentStatus::Completed => Self::Completed,
        }
    }
}

impl From<MaintenanceWindow> for v1::MaintenanceWindow {
    fn from(w: MaintenanceWindow) -> Self {
        Self {
            starts_at: Some(timestamp(w.starts_at)),
            ends_at: Some(timestamp(w.ends_at)),
        }
    }
}

impl From<&RecordedEvent> for v1::IncidentEvent {
    fn from(e: &RecordedEvent) -> Self {
        let c = &e.change;
        Self {
            event_id: e.event_id.to_string(),
            incident_id: e.incident_id.to_string(),
            version: e.version,
            position: e.position,
            publisher: e.publisher.clone(),
            kind: v1::EventKind::from(c.kind).into(),
            status: c.status.map_or(0, |s| v1::IncidentStatus::from(s).into()),
            severity: c.severity.map_or(0, |s| v1::Severity::from(s).into()),
            components: c.components.clone(),
            title: c.title.clone().unwrap_or_default(),
            message: c.message.clone(),
            labels: c.labels.clone().into_iter().collect(),
            window: c.window.map(Into::into),
            occurred_at: Some(timestamp(e.occurred_at)),
            recorded_at: Some(timestamp(e.recorded_at)),
            idempotency_key: e.idempotency_key.clone(),
            started_at: c.started_at.map(timestamp),
            next_update_at: c.next_update_at.map(timestamp),
            customer_action: c.customer_action.clone().unwrap_or_default(),
            link: c.link.clone().unwrap_or_default(),
            review_to_follow: c.review_to_follow,
            deliver_at: c.deliver_at.map(timestamp),
            reminders: c
                .reminders
                .clone()
                .map(|minutes_before| v1::Reminders { minutes_before }),
            impacts: crate::components::affected(&affected(
                &c.impacts.keys().cloned().collect::<Vec<_>>(),
                &c.component_names,
                &c.impacts,
            )),
        }
    }
}

impl From<&Incident> for v1::Incident {
    fn from(i: &Incident) -> Self {
        Self {
            incident_id: i.id.to_string(),
            kind: match i.kind {
                IncidentKind::Incident => v1::IncidentKind::Incident,
                IncidentKind::Maintenance => v1::IncidentKind::Maintenance,
            }
            .into(),
            status: v1::IncidentStatus::from(i.status).into(),
            severity: v1::Severity::from(i.severity).into(),
            title: i.title.clone(),
            components: i.components.clone(),
            message: i.message.clone(),
            labels: i.labels.clone().into_iter().collect(),
            window: i.window.map(Into::into),
            version: i.version,
            opened_at: Some(timestamp(i.opened_at)),
            updated_at: Some(timestamp(i.updated_at)),
            resolved_at: i.resolved_at.map(timestamp),
            // Both come from the ledger, which GetIncident reads separately.
            delivery: Vec::new(),
            fanned_out_version: 0,
            started_at: i.started_at.map(timestamp),
            next_update_at: i.next_update_at.map(timestamp),
            review_to_follow: i.review_to_follow,
            reminders: i
                .reminders
                .clone()
                .map(|minutes_before| v1::Reminders { minutes_before }),
            affected: crate::components::affected(&affected(
                &i.components,
                &i.component_names,
                &i.impacts,
            )),
        }
    }
}

/// An incident kind from the wire, `None` when unspecified; `field` names it in errors.
pub fn kind_in(field: &'static str, raw: i32) -> Result<Option<IncidentKind>, DomainError> {
    match v1::IncidentKind::try_from(raw) {
        Ok(v1::IncidentKind::Unspecified) => Ok(None),
        Ok(v1::IncidentKind::Incident) => Ok(Some(IncidentKind::Incident)),
        Ok(v1::IncidentKind::Maintenance) => Ok(Some(IncidentKind::Maintenance)),
        Err(_) => Err(DomainError::invalid(
            field,
            format!("{raw} is not a known kind"),
        )),
    }
}
