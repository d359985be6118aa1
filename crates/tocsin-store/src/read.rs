//! Reading incidents and their events back.

use tocsin_core::{Incident, IncidentId, RecordedEvent};
use tracing::instrument;

use crate::rows::{event_columns, events, sql_version, EventRow, IncidentRow};
use crate::{Store, StoreError};

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
