//! The webhook body: a documented, versioned JSON schema (see `PAYLOAD.md`).
//!
//! These are wire types, kept apart from the domain types on purpose: enums travel as their
//! stable strings, so adding a status or an event kind in the core never changes how an
//! existing field is spelled, and receivers written against schema version 1 keep working.
//! Within one `schema_version` changes are additive only: new optional fields, new `type`
//! values; a field is never renamed, retyped or removed without a new version.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tocsin_core::component::Affected;
use tocsin_core::{EventId, EventKind, IncidentId, IncidentStatus, MaintenanceWindow, Severity};

/// The schema version this crate writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// What happened, as `<object>.<verb>`: see [`event_type`].
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// When Tocsin recorded the event this delivery reports. Identical on every resend of the
    /// same delivery, so a resent body is byte-for-byte the body first sent.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub data: PayloadData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadData {
    /// Tocsin's id for this delivery; it is also the `webhook-id` header.
    pub delivery_id: String,
    pub incident: IncidentData,
    pub event: EventData,
}

/// The incident as it stands after the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentData {
    pub id: String,
    pub title: String,
    /// `investigating`, `identified`, `monitoring`, `resolved`, `scheduled`, `in_progress`
    /// or `completed`; receivers should accept values added later.
    pub status: String,
    /// `minor`, `major` or `critical`.
    pub severity: String,
    /// The affected components' ids.
    pub components: Vec<String>,
    /// The affected components with the names customers read and, where the publisher said,
    /// how hard each is hit. Added within version 1.
    #[serde(default)]
    pub affected_components: Vec<AffectedData>,
    /// When it began, as the publisher said; when they did not, when it was reported.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it was first reported (its opening event). Added within version 1.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub reported_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// The latest event's promise of the next update, when it made one. Added within version 1.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_update_at: Option<OffsetDateTime>,
    /// The resolution promised a review (a later `incident.review`). Added within version 1.
    #[serde(default)]
    pub review_to_follow: bool,
    /// For a scheduled maintenance, when it is planned to run.
    #[serde(default)]
    pub maintenance_window: Option<WindowData>,
    /// The public status page for this incident, when the operator has one.
    #[serde(default)]
    pub url: Option<String>,
}

/// One affected component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedData {
    pub id: String,
    /// The display name from the component catalogue; the id when it is not in one.
    pub name: String,
    /// `degraded_performance`, `partial_outage`, `major_outage` or `under_maintenance`;
    /// absent when not stated. Receivers should accept values added later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowData {
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
}

/// The event this webhook reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub id: String,
    /// The event kind as the core names it (`opened`, `maintenance_started`, ...).
    pub kind: String,
    /// The incident's version after this event: receivers order events by it and drop an
    /// event older than one they already applied.
    pub version: u64,
    /// The publisher's customer-facing text; may be empty.
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// What customers need to do, when the publisher says they must act. Added within
    /// version 1.
    #[serde(default)]
    pub customer_action: Option<String>,
    /// The publisher's link for this event (a review's full text). Added within version 1.
    #[serde(default)]
    pub link: Option<String>,
}

/// What the webhook channel needs to know to build a body. The delivery worker fills it
/// from the incident and event it loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadInput {
    pub delivery_id: String,
    pub created_at: OffsetDateTime,
    pub incident_id: IncidentId,
    pub title: String,
    pub status: IncidentStatus,
    pub severity: Severity,
    pub affected: Vec<Affected>,
    pub started_at: Option<OffsetDateTime>,
    pub reported_at: OffsetDateTime,
    pub resolved_at: Option<OffsetDateTime>,
    pub next_update_at: Option<OffsetDateTime>,
    pub review_to_follow: bool,
    pub window: Option<MaintenanceWindow>,
    pub url: Option<String>,
    pub event_id: EventId,
    pub kind: EventKind,
    pub version: u64,
    pub message: String,
    pub occurred_at: OffsetDateTime,
    pub customer_action: Option<String>,
    pub link: Option<String>,
}

/// The `type` value for an event kind.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Opened => "incident.opened",
        EventKind::Updated => "incident.updated",
        EventKind::Resolved => "incident.resolved",
        EventKind::Reopened => "incident.reopened",
        EventKind::MaintenanceScheduled => "maintenance.scheduled",
        EventKind::MaintenanceStarted => "maintenance.started",
        EventKind::MaintenanceCompleted => "maintenance.completed",
        EventKind::Review => "incident.review",
        EventKind::MaintenanceReminder => "maintenance.reminder",
    }
}

impl WebhookPayload {
    pub fn new(input: &PayloadInput) -> Self {
        WebhookPayload {
            event_type: event_type(input.kind).to_owned(),
            schema_version: SCHEMA_VERSION,
            timestamp: input.created_at,
            data: PayloadData {
                delivery_id: input.delivery_id.clone(),
                incident: IncidentData {
                    id: input.incident_id.to_string(),
                    title: input.title.clone(),
                    status: input.status.as_str().to_owned(),
                    severity: input.severity.as_str().to_owned(),
                    components: input.affected.iter().map(|a| a.id.clone()).collect(),
                    affected_components: input
                        .affected
                        .iter()
                        .map(|a| AffectedData {
                            id: a.id.clone(),
                            name: a.name.clone(),
                            impact: a.impact.map(|i| i.as_str().to_owned()),
                        })
                        .collect(),
                    started_at: input.started_at.unwrap_or(input.reported_at),
                    reported_at: Some(input.reported_at),
                    resolved_at: input.resolved_at,
                    next_update_at: input.next_update_at,
                    review_to_follow: input.review_to_follow,
                    maintenance_window: input.window.map(|w| WindowData {
                        starts_at: w.starts_at,
                        ends_at: w.ends_at,
                    }),
                    url: input.url.clone(),
                },
                event: EventData {
                    id: input.event_id.to_string(),
                    kind: input.kind.as_str().to_owned(),
                    version: input.version,
                    message: input.message.clone(),
                    occurred_at: input.occurred_at,
                    customer_action: input.customer_action.clone(),
                    link: input.link.clone(),
                },
            },
        }
    }

    /// The body bytes to sign and send.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a payload of strings, numbers and dates always serialises")
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn input() -> PayloadInput {
        PayloadInput {
            delivery_id: "dlv_0123".into(),
            created_at: datetime!(2026-03-01 10:00:05 UTC),
            incident_id: IncidentId::new(),
            title: "Elevated API errors".into(),
            status: IncidentStatus::Investigating,
            severity: Severity::Major,
            affected: vec![
                Affected {
                    id: "api".into(),
                    name: "Payments API".into(),
                    impact: Some(tocsin_core::Impact::MajorOutage),
                },
                Affected {
                    id: "dashboard".into(),
                    name: "Dashboard".into(),
                    impact: None,
                },
            ],
            started_at: Some(datetime!(2026-03-01 09:42 UTC)),
            reported_at: datetime!(2026-03-01 09:58 UTC),
            resolved_at: None,
            next_update_at: Some(datetime!(2026-03-01 10:30 UTC)),
            review_to_follow: false,
            window: None,
            url: None,
            event_id: EventId::new(),
            kind: EventKind::Opened,
            version: 1,
            message: "We are investigating.".into(),
            occurred_at: datetime!(2026-03-01 10:00 UTC),
            customer_action: None,
            link: None,
        }
    }

    #[test]
    fn builds_the_documented_shape() {
        let input = input();
        let body: serde_json::Value =
            serde_json::from_slice(&WebhookPayload::new(&input).to_body()).unwrap();
        assert_eq!(body["type"], "incident.opened");
        assert_eq!(body["schema_version"], 1);
        assert_eq!(body["timestamp"], "2026-03-01T10:00:05Z");
        assert_eq!(body["data"]["delivery_id"], "dlv_0123");
        assert_eq!(
            body["data"]["incident"]["id"],
            input.incident_id.to_string()
        );
        assert_eq!(body["data"]["incident"]["status"], "investigating");
        assert_eq!(body["data"]["incident"]["severity"], "major");
        assert_eq!(body["data"]["incident"]["components"][0], "api");
        assert_eq!(
            body["data"]["incident"]["affected_components"],
            serde_json::json!([
                {"id": "api", "name": "Payments API", "impact": "major_outage"},
                {"id": "dashboard", "name": "Dashboard"}
            ])
        );
        assert_eq!(
            body["data"]["incident"]["resolved_at"],
            serde_json::Value::Null
        );
        assert_eq!(body["data"]["event"]["id"], input.event_id.to_string());
        assert_eq!(body["data"]["event"]["kind"], "opened");
        assert_eq!(body["data"]["event"]["version"], 1);
        assert_eq!(body["data"]["event"]["occurred_at"], "2026-03-01T10:00:00Z");
        assert_eq!(
            body["data"]["incident"]["started_at"],
            "2026-03-01T09:42:00Z"
        );
        assert_eq!(
            body["data"]["incident"]["reported_at"],
            "2026-03-01T09:58:00Z"
        );
        assert_eq!(
            body["data"]["incident"]["next_update_at"],
            "2026-03-01T10:30:00Z"
        );
        assert_eq!(body["data"]["incident"]["review_to_follow"], false);
        assert_eq!(
            body["data"]["event"]["customer_action"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn an_unknown_start_is_the_report_time_and_a_review_carries_its_link() {
        let input = PayloadInput {
            started_at: None,
            kind: EventKind::Review,
            status: IncidentStatus::Resolved,
            resolved_at: Some(datetime!(2026-03-01 11:00 UTC)),
            next_update_at: None,
            link: Some("https://status.acme.test/reviews/7".into()),
            ..input()
        };
        let body = serde_json::to_value(WebhookPayload::new(&input)).unwrap();
        assert_eq!(body["type"], "incident.review");
        assert_eq!(
            body["data"]["incident"]["started_at"],
            "2026-03-01T09:58:00Z"
        );
        assert_eq!(
            body["data"]["incident"]["started_at"],
            body["data"]["incident"]["reported_at"]
        );
        assert_eq!(
            body["data"]["event"]["link"],
            "https://status.acme.test/reviews/7"
        );
    }

    #[test]
    fn every_kind_has_a_dotted_type() {
        for kind in EventKind::ALL {
            let t = event_type(kind);
            let (object, verb) = t.split_once('.').unwrap();
            assert!(["incident", "maintenance"].contains(&object), "{t}");
            assert!(!verb.is_empty());
        }
    }

    /// The example in PAYLOAD.md is the contract receivers read; it must stay parseable.
    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../PAYLOAD.md");
        let start = doc
            .find("```json\n")
            .expect("PAYLOAD.md has a json example")
            + "```json\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let example: WebhookPayload = serde_json::from_str(&doc[start..end]).unwrap();
        assert_eq!(example.schema_version, SCHEMA_VERSION);
        assert_eq!(example.event_type, "incident.resolved");
        assert!(example.data.incident.resolved_at.is_some());
        // A round trip keeps every documented field.
        let again: serde_json::Value = serde_json::to_value(&example).unwrap();
        let original: serde_json::Value = serde_json::from_str(&doc[start..end]).unwrap();
        assert_eq!(again, original);
    }

    /// Additive changes within a version must not break readers of that version.
    #[test]
    fn unknown_fields_are_ignored() {
        let mut body: serde_json::Value =
            serde_json::to_value(WebhookPayload::new(&input())).unwrap();
        body["data"]["incident"]["added_later"] = "x".into();
        body["added_later"] = 1.into();
        let parsed: WebhookPayload = serde_json::from_value(body).unwrap();
        assert_eq!(parsed.data.delivery_id, "dlv_0123");
    }
}
