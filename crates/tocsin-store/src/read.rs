//! Reading incidents and their events back.

use tocsin_core::{EventId, Incident, IncidentId, RecordedEvent};
use tracing::instrument;

use crate::rows::{EventRow, IncidentRow, event_columns, events, sql_version};
use crate::{Store, StoreError};

/// An incident as it stood right after one of its events.
#[derive(Debug, Clone)]
pub struct IncidentAsOf {
    pub incident: Incident,
    pub event: RecordedEvent,
    pub opening_event_id: EventId,
}

impl Store {
    /// The incident's current state from its projection.
    #[instrument(skip(self))]
    pub async fn incident(&self, incident_id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let row: Option<IncidentRow> =
            sqlx::query_as("SELECT state FROM incidents WHERE incident_id = $1")
                .bind(incident_id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.state.0))
    }

    /// Up to `limit` of the incident's events with a version above `after_version`, in order.
    #[instrument(skip(self))]
    pub async fn incident_events(
        &self,
        incident_id: IncidentId,
        after_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e
             WHERE e.incident_id = $1 AND e.version > $2
             ORDER BY e.version LIMIT $3"
        );
        let rows: Vec<EventRow> = sqlx::query_as(sql)
            .bind(incident_id.as_uuid())
            .bind(sql_version(after_version))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        events(rows)
    }

    /// The incident as it stood right after its event `version`: the fold of its history up
    /// to there. Returns that state, the event itself and the incident's first event's id;
    /// `None` if there is no such event.
    #[instrument(skip(self))]
    pub async fn incident_as_of(
        &self,
        incident_id: IncidentId,
        version: u64,
    ) -> Result<Option<IncidentAsOf>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e WHERE e.incident_id = $1 AND e.version <= $2 ORDER BY e.version"
        );
        let rows: Vec<EventRow> = sqlx::query_as(sql)
            .bind(incident_id.as_uuid())
            .bind(sql_version(version))
            .fetch_all(&self.pool)
            .await?;
        let history = events(rows)?;
        match (history.first(), history.last()) {
            (Some(first), Some(last)) if last.version == version => Ok(Some(IncidentAsOf {
                incident: Incident::fold(&history).expect("a non-empty history folds"),
                opening_event_id: first.event_id,
                event: last.clone(),
            })),
            _ => Ok(None),
        }
    }

    /// Up to `limit` events of the whole log at or after `from_position`, in position order.
    #[instrument(skip(self))]
    pub async fn events_from_position(
        &self,
        from_position: i64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e
             WHERE e.position >= $1 ORDER BY e.position LIMIT $2"
        );
        let rows: Vec<EventRow> = sqlx::query_as(sql)
            .bind(from_position)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        events(rows)
    }
}
