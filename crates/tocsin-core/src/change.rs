//! What a publisher asks the log to record, and the rules every request must meet before
//! it gets near the database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::component::Impact;
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
/// What customers must do, when they must act: one or two sentences, not a second message.
pub const MAX_CUSTOMER_ACTION_CHARS: usize = 500;
pub const MAX_LINK_CHARS: usize = 2_000;
/// How far ahead a "next update by" promise may reach. A promise a week out is no promise.
pub const MAX_NEXT_UPDATE_AHEAD: time::Duration = time::Duration::days(7);
/// How far ahead an event's messages may be scheduled (a review "on Thursday", a notice
/// weeks before a maintenance).
pub const MAX_DELIVER_AHEAD: time::Duration = time::Duration::days(90);
/// At most this many reminders per maintenance, each at most 30 days before it starts.
pub const MAX_REMINDERS: usize = 5;
pub const MAX_REMINDER_MINUTES: u32 = 30 * 24 * 60;

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
    /// After `Resolved`: the post-incident review, or another follow-up about what happened
    /// and what changes. It leaves the incident resolved.
    Review,
    /// Before a scheduled maintenance starts: recorded by Tocsin itself at the reminder times
    /// (see [`crate::maintenance`]). It changes nothing but who has been reminded.
    MaintenanceReminder,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        Self::Opened,
        Self::Updated,
        Self::Resolved,
        Self::Reopened,
        Self::MaintenanceScheduled,
        Self::MaintenanceStarted,
        Self::MaintenanceCompleted,
        Self::Review,
        Self::MaintenanceReminder,
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
            Self::Review => "review",
            Self::MaintenanceReminder => "maintenance_reminder",
        }
    }

    /// Parses the name [`EventKind::as_str`] gives.
    pub fn from_name(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
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
    /// When the problem began, where the publisher knows it: often before it was reported.
    /// Durations are measured from it; without it no duration is claimed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// The time by which customers will hear from us again. Each event makes its own
    /// promise: an event without one withdraws the previous.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub next_update_at: Option<OffsetDateTime>,
    /// What customers need to do, when they need to act ("Rotate API keys created before
    /// 09:00 UTC"). Without it the messages say no action is needed only where that is the
    /// kind's nature (a maintenance), and otherwise say nothing about action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_action: Option<String>,
    /// A link for customers: the full review, a detailed write-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// On `Resolved`: the publisher commits to a review, so the messages may promise one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review_to_follow: bool,
    /// The event is recorded now, but its messages go out at this time, not before (a review
    /// "on Thursday at 10:00"). Durable: it is each delivery's due time in the ledger.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub deliver_at: Option<OffsetDateTime>,
    /// On a maintenance: minutes before its start at which Tocsin reminds subscribers.
    /// `None` keeps what was set before (at first, [`crate::maintenance::DEFAULT_REMINDERS`]);
    /// `Some(vec![])` turns reminders off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<Vec<u32>>,
    /// How hard each named component is hit, by component id. Replaces the incident's
    /// impacts when given; components not named are affected without a stated impact.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub impacts: BTreeMap<String, Impact>,
    /// The catalogue's display names of `components` when the event was published, copied
    /// in by the ingest (publishers cannot set them). Not part of the request's fingerprint,
    /// so a retry after a rename is still the same request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub component_names: BTreeMap<String, String>,
}

impl Change {
    /// A change of `kind` with `message` and nothing else; the other fields are set by the
    /// caller with struct update syntax.
    pub fn new(kind: EventKind, message: impl Into<String>) -> Change {
        Change {
            kind,
            status: None,
            severity: None,
            components: Vec::new(),
            title: None,
            message: message.into(),
            labels: BTreeMap::new(),
            window: None,
            started_at: None,
            next_update_at: None,
            customer_action: None,
            link: None,
            review_to_follow: false,
            deliver_at: None,
            reminders: None,
            impacts: BTreeMap::new(),
            component_names: BTreeMap::new(),
        }
    }
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
        if self.change.kind == EventKind::MaintenanceReminder {
            return Err(DomainError::invalid(
                "kind",
                "maintenance_reminder is recorded by Tocsin itself at the reminder times; set reminders on the maintenance instead",
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
        let reported_at = self.occurred_at.unwrap_or(now);
        self.change = self.change.validate(reported_at, now)?;
        Ok(self)
    }
}

impl Change {
    /// `occurred_at` is the event's time (the publisher's or the server's), `now` the
    /// server's clock.
    fn validate(
        mut self,
        occurred_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        use EventKind::*;
        let kind = self.kind;

        self.message = required_text("message", &self.message, MAX_MESSAGE_CHARS)?;
        self.title = optional_text("title", self.title.as_deref(), MAX_TITLE_CHARS)?;
        self.customer_action = optional_text(
            "customer_action",
            self.customer_action.as_deref(),
            MAX_CUSTOMER_ACTION_CHARS,
        )?;
        self.link = optional_text("link", self.link.as_deref(), MAX_LINK_CHARS)?;
        if let Some(link) = &self.link {
            link_url(link)?;
        }
        self.check_times(occurred_at, now)?;
        self.components = components(&self.components)?;
        self.check_impacts()?;
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
        if self.review_to_follow && kind != Resolved {
            return Err(DomainError::invalid(
                "review_to_follow",
                format!(
                    "is only for a resolved event, not {}; publish the review itself as a review event",
                    kind.as_str()
                ),
            ));
        }
        if let Some(reminders) = &mut self.reminders {
            if !matches!(kind, MaintenanceScheduled | Updated) {
                return Err(DomainError::invalid(
                    "reminders",
                    format!("are set on a maintenance, not on a {} event", kind.as_str()),
                ));
            }
            reminders.sort_unstable_by(|a, b| b.cmp(a));
            reminders.dedup();
            if reminders.len() > MAX_REMINDERS
                || reminders
                    .iter()
                    .any(|m| *m == 0 || *m > MAX_REMINDER_MINUTES)
            {
                return Err(DomainError::invalid(
                    "reminders",
                    format!(
                        "give at most {MAX_REMINDERS}, each 1 to {MAX_REMINDER_MINUTES} minutes before the start"
                    ),
                ));
            }
        }
        if kind == Review && (self.severity.is_some() || !self.components.is_empty()) {
            return Err(DomainError::invalid(
                "severity",
                "a review tells what happened; it changes neither severity nor components",
            ));
        }
        Ok(self)
    }

    /// Impacts name components of this event (or, on an event that keeps the set, of the
    /// incident: checked against it in [`crate::Incident::check_transition`]). An opening may
    /// name its components through its impacts alone.
    fn check_impacts(&mut self) -> Result<(), DomainError> {
        use EventKind::*;
        if self.impacts.is_empty() {
            return Ok(());
        }
        if !matches!(
            self.kind,
            Opened | Updated | Reopened | MaintenanceScheduled | MaintenanceStarted
        ) {
            return Err(DomainError::invalid(
                "impacts",
                format!(
                    "are not allowed on a {} event; it ends the impacts, or leaves them as they are",
                    self.kind.as_str()
                ),
            ));
        }
        let named: Vec<String> = self.impacts.keys().cloned().collect();
        let named = components(&named).map_err(|e| match e {
            DomainError::Invalid { reason, .. } => DomainError::invalid("impacts", reason),
            other => other,
        })?;
        if named.len() != self.impacts.len() {
            return Err(DomainError::invalid(
                "impacts",
                "name each component once, without surrounding spaces",
            ));
        }
        if self.components.is_empty() {
            if self.kind.creates() {
                self.components = named;
            }
        } else if let Some(stray) = named.iter().find(|c| !self.components.contains(c)) {
            return Err(DomainError::invalid(
                "impacts",
                format!("{stray:?} is not among this event's components; list it there too"),
            ));
        }
        Ok(())
    }

    /// The rules for the times a publisher gives: facts in the past, promises ahead.
    fn check_times(
        &self,
        occurred_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), DomainError> {
        use EventKind::*;
        let kind = self.kind;
        if let Some(started_at) = self.started_at {
            if !matches!(kind, Opened | Updated | Reopened | Resolved) {
                return Err(DomainError::invalid(
                    "started_at",
                    format!(
                        "is not allowed on a {} event; a maintenance runs in its window",
                        kind.as_str()
                    ),
                ));
            }
            if started_at > occurred_at.max(now) + MAX_CLOCK_SKEW {
                return Err(DomainError::invalid(
                    "started_at",
                    "lies in the future; it is when the problem began",
                ));
            }
        }
        if let Some(next) = self.next_update_at {
            if !matches!(kind, Opened | Updated | Reopened | MaintenanceStarted) {
                return Err(DomainError::invalid(
                    "next_update_at",
                    format!(
                        "is not allowed on a {} event; it promises an update while work goes on",
                        kind.as_str()
                    ),
                ));
            }
            if next <= occurred_at {
                return Err(DomainError::invalid(
                    "next_update_at",
                    "must lie after the event: it is when customers hear from us next",
                ));
            }
            if next > occurred_at + MAX_NEXT_UPDATE_AHEAD {
                return Err(DomainError::invalid(
                    "next_update_at",
                    "lies more than 7 days after the event",
                ));
            }
        }
        if let Some(at) = self.deliver_at
            && at > now + MAX_DELIVER_AHEAD
        {
            return Err(DomainError::invalid(
                "deliver_at",
                "lies more than 90 days ahead",
            ));
        }
        Ok(())
    }
}

/// A link customers may follow: absolute http or https, no spaces.
fn link_url(link: &str) -> Result<(), DomainError> {
    let rest = link
        .strip_prefix("https://")
        .or_else(|| link.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !link.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(DomainError::invalid(
            "link",
            format!("{link:?} is not an absolute http or https URL"),
        )),
    }
}

/// The bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069):
/// invisible, and able to reorder what a reader sees (the "Trojan Source" trick). The marks
/// U+200E and U+200F stay allowed: right-to-left text needs them, and they reorder nothing.
fn is_direction_override(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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
    if let Some(c) = trimmed.chars().find(|c| is_direction_override(*c)) {
        return Err(DomainError::invalid(
            field,
            format!(
                "contains U+{:04X}, an invisible text-direction control that can make a subject read differently from what it says; write right-to-left text without it",
                u32::from(c)
            ),
        ));
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
