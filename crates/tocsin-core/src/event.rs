use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::change::Change;
use crate::ids::{EventId, IncidentId};

/// One event as the log holds it: the change plus where and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: EventId,
    pub incident_id: IncidentId,
    /// 1 for the event that created the incident, then gapless.
    pub version: u64,
    /// Global order of the log. Unique and increasing, but not gapless and not commit order.
    pub position: i64,
    /// The authenticated publisher that sent it.
    pub publisher: String,
    pub idempotency_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub change: Change,
}
