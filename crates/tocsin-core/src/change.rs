//! What a publisher asks the log to record, and the rules every request must meet before
//! it gets near the database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::DomainError;
use crate::ids::IncidentId;

/// Longest idempotency key accepted, as Stripe does.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
pub const MAX_TITLE_CHARS: usize = 200;
/// Customer-facing text. Long enough for a careful update, short enough that the webhook
/// payload stays well under the ~20 KB receivers expect.
pub const MAX_MESSAGE_CHARS: usize = 4_000;
pub const MAX_COMPONENTS: usize = 50;
pub const MAX_COMPONENT_CHARS: usize = 100;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY_CHARS: usize = 63;
pub const MAX_LABEL_VALUE_CHARS: usize = 256;
/// How far in the future `occurred_at` may lie: clock skew, not a scheduling feature.
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// The lifecycle event a publisher reports.
///
/// `Ord` follows declaration order; it exists so subscriber preferences can keep kinds in a
/// `BTreeSet` and serialise them in a stable order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    Updated,
    Resolved,
    /// The only event accepted after `Resolved`: the problem came back.
    Reopened,
    MaintenanceScheduled,
    MaintenanceStarted,
    MaintenanceCompleted,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        Self::Opened,
        Self::Updated,
        Self::Resolved,
        Self::Reopened,
        Self::MaintenanceScheduled,
        Self::MaintenanceStarted,
        Self::MaintenanceCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Updated => "updated",
            Self::Resolved => "resolved",
            Self::Reopened => "reopened",
            Self::MaintenanceScheduled => "maintenance_scheduled",
            Self::MaintenanceStarted => "maintenance_started",
            Self::MaintenanceCompleted => "maintenance_completed",
        }
    }

    /// Kinds that bring a new incident or maintenance into existence.
    pub fn creates(self) -> bool {
        matches!(self, Self::Opened | Self::MaintenanceScheduled)
    }
}

/// How bad it is for customers. Ordered: `Minor < Major < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }
}

/// Where an incident or maintenance stands, as a status page would show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
    Scheduled,
    InProgress,
    Completed,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Investigating => "investigating",
            Self::Identified => "identified",
            Self::Monitoring => "monitoring",
            Self::Resolved => "resolved",
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    /// Statuses a publisher may set on an open incident; the others follow from event kinds.
    pub fn is_working_status(self) -> bool {
        matches!(
            self,
            Self::Investigating | Self::Identified | Self::Monitoring
        )
    }
}

/// When a scheduled maintenance is planned to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
}

/// The content of one lifecycle event, validated. This is what the log stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<MaintenanceWindow>,
}

/// A publish as the ingest API receives it, after wire decoding and before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishRequest {
    pub idempotency_key: String,
    pub incident_id: Option<IncidentId>,
    pub change: Change,
    /// When the publisher saw it happen; the server's clock when absent.
    pub occurred_at: Option<OffsetDateTime>,
    /// Optimistic concurrency: the incident version the publisher last saw.
    pub expected_version: Option<u64>,
}

impl PublishRequest {
    /// Checks every field and normalises text (trimmed; components de-duplicated).
    /// `now` is the server's clock, passed in so this stays pure.
    pub fn validate(mut self, now: OffsetDateTime) -> Result<Self, DomainError> {
        self.idempotency_key = required_text(
            "idempotency_key",
            &self.idempotency_key,
            MAX_IDEMPOTENCY_KEY_CHARS,
        )?;
        if let Some(at) = self.occurred_at
            && at > now + MAX_CLOCK_SKEW
        {
            return Err(DomainError::invalid(
                "occurred_at",
                "lies more than 5 minutes in the future",
            ));
        }
        if self.change.kind.creates() {
            if self.expected_version.is_some_and(|v| v != 0) {
                return Err(DomainError::invalid(
                    "expected_version",
                    "must be 0 or absent when creating an incident",
                ));
            }
        } else if self.incident_id.is_none() {
            return Err(DomainError::invalid(
                "incident_id",
                format!("is required for a {} event", self.change.kind.as_str()),
            ));
        }
        self.change = self.change.validate()?;
        Ok(self)
    }
}

impl Change {
    fn validate(mut self) -> Result<Self, DomainError> {
        use EventKind::*;
        let kind = self.kind;

        self.message = required_text("message", &self.message, MAX_MESSAGE_CHARS)?;
        self.title = optional_text("title", self.title.as_deref(), MAX_TITLE_CHARS)?;
        self.components = components(&self.components)?;
        labels(&self.labels)?;

        if matches!(kind, Opened | MaintenanceScheduled) {
            if self.title.is_none() {
                return Err(DomainError::invalid(
                    "title",
                    "is required to open an incident",
                ));
            }
            if self.components.is_empty() {
                return Err(DomainError::invalid(
                    "components",
                    "name at least one affected component",
                ));
            }
        }
        if kind == Opened && self.severity.is_none() {
            return Err(DomainError::invalid(
                "severity",
                "is required to open an incident",
            ));
        }

        match (kind, self.status) {
            (_, None) => {}
            (Opened | Updated | Reopened, Some(s)) if s.is_working_status() => {}
            (Opened | Updated | Reopened, Some(s)) => {
                return Err(DomainError::invalid(
                    "status",
                    format!(
                        "{} is not allowed on a {} event; use investigating, identified or monitoring",
                        s.as_str(),
                        kind.as_str()
                    ),
                ));
            }
            (Resolved, Some(IncidentStatus::Resolved)) => {}
            (_, Some(s)) => {
                return Err(DomainError::invalid(
                    "status",
                    format!("{} is not allowed on a {} event", s.as_str(), kind.as_str()),
                ));
            }
        }

        match (kind, self.window) {
            (MaintenanceScheduled, None) => {
                return Err(DomainError::invalid(
                    "window",
                    "a maintenance needs its start and end",
                ));
            }
            (MaintenanceScheduled | Updated, Some(w)) if w.ends_at <= w.starts_at => {
                return Err(DomainError::invalid("window", "must end after it starts"));
            }
            (MaintenanceScheduled | Updated, _) => {}
            (_, Some(_)) => {
                return Err(DomainError::invalid(
                    "window",
                    format!("is not allowed on a {} event", kind.as_str()),
                ));
            }
            (_, None) => {}
        }
        Ok(self)
    }
}

fn has_control_chars(s: &str, allow_newlines: bool) -> bool {
    s.chars()
        .any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t')))
}

fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, DomainError> {
    optional_text(field, Some(value), max)?
        .ok_or_else(|| DomainError::invalid(field, "is required"))
}

fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, DomainError> {
    let Some(trimmed) = value.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let chars = trimmed.chars().count();
    if chars > max {
        return Err(DomainError::invalid(
            field,
            format!("is {chars} characters long; the limit is {max}"),
        ));
    }
    if has_control_chars(trimmed, field == "message") {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(Some(trimmed.to_owned()))
}

fn components(raw: &[String]) -> Result<Vec<String>, DomainError> {
    if raw.len() > MAX_COMPONENTS {
        return Err(DomainError::invalid(
            "components",
            format!("{} given; the limit is {MAX_COMPONENTS}", raw.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for c in raw {
        let c = required_text("components", c, MAX_COMPONENT_CHARS)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn labels(labels: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if labels.len() > MAX_LABELS {
        return Err(DomainError::invalid(
            "labels",
            format!("{} given; the limit is {MAX_LABELS}", labels.len()),
        ));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_CHARS
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
        if !key_ok {
            return Err(DomainError::invalid(
                "labels",
                format!(
                    "key {key:?} must be 1-{MAX_LABEL_KEY_CHARS} characters of a-z, 0-9, '_', '-', '.', '/'"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_CHARS || has_control_chars(value, false) {
            return Err(DomainError::invalid(
                "labels",
                format!(
                    "value of {key:?} must be at most {MAX_LABEL_VALUE_CHARS} characters without control characters"
                ),
            ));
        }
    }
    Ok(())
}
