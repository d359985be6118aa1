//! Row types and their conversion to domain types. Kept apart so queries stay readable.

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::{Change, Incident, RecordedEvent};
use uuid::Uuid;

use crate::StoreError;

/// The columns of `events` every query selects, as a literal so queries stay `&'static str`.
macro_rules! event_columns {
    () => {
        "e.position, e.event_id, e.incident_id, e.version, e.publisher, e.idempotency_key, \
         e.occurred_at, e.recorded_at, e.data"
    };
}
pub(crate) use event_columns;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) position: i64,
    pub(crate) event_id: Uuid,
    pub(crate) incident_id: Uuid,
    pub(crate) version: i64,
    pub(crate) publisher: String,
    pub(crate) idempotency_key: String,
    pub(crate) occurred_at: OffsetDateTime,
    pub(crate) recorded_at: OffsetDateTime,
    pub(crate) data: Json<Change>,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        Ok(RecordedEvent {
            event_id: row.event_id.into(),
            incident_id: row.incident_id.into(),
            version: u64::try_from(row.version).map_err(|_| {
                StoreError::Corrupt(format!(
                    "event at {} has version {}",
                    row.position, row.version
                ))
            })?,
            position: row.position,
            publisher: row.publisher,
            idempotency_key: row.idempotency_key,
            occurred_at: row.occurred_at,
            recorded_at: row.recorded_at,
            change: row.data.0,
        })
    }
}

pub(crate) fn events(rows: Vec<EventRow>) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.into_iter().map(RecordedEvent::try_from).collect()
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct IncidentRow {
    pub(crate) state: Json<Incident>,
}

/// Version numbers are `u64` in the domain and `bigint` in SQL.
pub(crate) fn sql_version(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}
