//! Reading incidents and their events back.

use time::OffsetDateTime;
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
    /// The events before `event`, in version order: what a reader who missed them is told.
    pub earlier: Vec<RecordedEvent>,
}

/// One message whose thread is asked for: [`Store::thread_roots`].
#[derive(Debug, Clone)]
pub struct ThreadQuery {
    pub delivery_key: String,
    pub incident_id: IncidentId,
    pub subscriber_id: tocsin_core::SubscriberId,
    pub channel: tocsin_core::Channel,
    pub event_version: u64,
}

/// A maintenance not completed yet, with the idempotency keys of the events one publisher
/// (Tocsin's clock) has recorded for it.
#[derive(Debug, Clone)]
pub struct OpenMaintenance {
    pub maintenance: Incident,
    pub recorded_keys: std::collections::BTreeSet<String>,
}

impl Store {
    /// Every maintenance scheduled or under way, with the keys `publisher` recorded for each.
    /// The keys come from the log itself, which keeps them for ever (the idempotency table
    /// forgets after its retention).
    #[instrument(skip(self))]
    pub async fn open_maintenances(
        &self,
        publisher: &str,
    ) -> Result<Vec<OpenMaintenance>, StoreError> {
        let rows: Vec<(sqlx::types::Json<Incident>, Vec<String>)> = sqlx::query_as(
            "SELECT i.state,
                    coalesce(array_agg(e.idempotency_key) FILTER (WHERE e.event_id IS NOT NULL),
                             '{}') AS keys
             FROM incidents i
             LEFT JOIN events e ON e.incident_id = i.incident_id AND e.publisher = $1
             WHERE i.kind = 'maintenance' AND i.status IN ('scheduled', 'in_progress')
             GROUP BY i.incident_id, i.state",
        )
        .bind(publisher)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(state, keys)| OpenMaintenance {
                maintenance: state.0,
                recorded_keys: keys.into_iter().collect(),
            })
            .collect())
    }

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

    /// The current state of each of `ids` that exists, in one query.
    #[instrument(skip_all, fields(incidents = ids.len()))]
    pub async fn incidents_by_id(&self, ids: &[IncidentId]) -> Result<Vec<Incident>, StoreError> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        let rows: Vec<IncidentRow> =
            sqlx::query_as("SELECT state FROM incidents WHERE incident_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.state.0).collect())
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
        let mut history = events(rows)?;
        match (history.first(), history.last()) {
            (Some(first), Some(last)) if last.version == version => {
                let incident = Incident::fold(&history).expect("a non-empty history folds");
                let opening_event_id = first.event_id;
                let event = history.pop().expect("a non-empty history has a last event");
                Ok(Some(IncidentAsOf {
                    incident,
                    event,
                    opening_event_id,
                    earlier: history,
                }))
            }
            _ => Ok(None),
        }
    }

    /// For each message, the key of the first earlier message on the same thread that went
    /// out (delivered, perhaps delivered, or being sent): the same recipient, channel and
    /// incident, an earlier event. A message without one is the first its reader gets about
    /// the incident, whatever was planned before it (held, superseded, failed).
    #[instrument(skip_all, fields(messages = queries.len()))]
    pub async fn thread_roots(
        &self,
        queries: &[ThreadQuery],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let asked: Vec<&ThreadQuery> = queries.iter().filter(|q| q.event_version > 1).collect();
        if asked.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let keys: Vec<&str> = asked.iter().map(|q| q.delivery_key.as_str()).collect();
        let incidents: Vec<uuid::Uuid> = asked.iter().map(|q| *q.incident_id.as_uuid()).collect();
        let subscribers: Vec<uuid::Uuid> =
            asked.iter().map(|q| *q.subscriber_id.as_uuid()).collect();
        let channels: Vec<&str> = asked.iter().map(|q| q.channel.as_str()).collect();
        let versions: Vec<i64> = asked.iter().map(|q| sql_version(q.event_version)).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT q.key, r.delivery_key
             FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[])
                  AS q(key, incident_id, subscriber_id, channel, version)
             CROSS JOIN LATERAL (
                 SELECT d.delivery_key FROM deliveries d
                 WHERE d.incident_id = q.incident_id AND d.subscriber_id = q.subscriber_id
                   AND d.channel = q.channel AND d.event_version < q.version
                   AND d.state IN ('delivered', 'unknown', 'sending') AND d.notice IS NULL
                 ORDER BY d.event_version LIMIT 1) r",
        )
        .bind(&keys)
        .bind(&incidents)
        .bind(&subscribers)
        .bind(&channels)
        .bind(&versions)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
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

impl Store {
    /// What a public status page lists: every open incident and maintenance, and those
    /// closed since `since`, newest first, at most `limit`.
    #[instrument(skip(self))]
    pub async fn public_incidents(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Incident>, StoreError> {
        let rows: Vec<IncidentRow> = sqlx::query_as(
            "SELECT state FROM incidents
             WHERE status NOT IN ('resolved', 'completed') OR updated_at >= $1
             ORDER BY opened_at DESC LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.state.0).collect())
    }

    /// Every event of `incidents`, by incident and version.
    #[instrument(skip_all, fields(incidents = incidents.len()))]
    pub async fn events_of(
        &self,
        incidents: &[IncidentId],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let ids: Vec<uuid::Uuid> = incidents.iter().map(|i| *i.as_uuid()).collect();
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e WHERE e.incident_id = ANY($1) ORDER BY e.incident_id, e.version"
        );
        let rows: Vec<EventRow> = sqlx::query_as(sql).bind(&ids).fetch_all(&self.pool).await?;
        events(rows)
    }

    /// The latest `limit` events in the log, newest first (a feed's entries).
    #[instrument(skip(self))]
    pub async fn latest_events(&self, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e ORDER BY e.position DESC LIMIT $1"
        );
        let rows: Vec<EventRow> = sqlx::query_as(sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        events(rows)
    }
}

/// What [`Store::list_incidents`] keeps.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Empty: every status.
    pub statuses: Vec<tocsin_core::IncidentStatus>,
    pub component: Option<String>,
    /// Empty: every severity.
    pub severities: Vec<tocsin_core::Severity>,
    pub opened_after: Option<OffsetDateTime>,
    pub opened_before: Option<OffsetDateTime>,
    pub kind: Option<tocsin_core::IncidentKind>,
}

/// Where a listing page ended: the last incident's opening time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentCursor {
    pub opened_at: OffsetDateTime,
    pub incident_id: IncidentId,
}

impl Store {
    /// Incidents matching `filter`, newest opened first, after `after`, at most `limit`.
    #[instrument(skip(self))]
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
        after: Option<IncidentCursor>,
        limit: u32,
    ) -> Result<Vec<Incident>, StoreError> {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let severities: Vec<&str> = filter.severities.iter().map(|s| s.as_str()).collect();
        let rows: Vec<IncidentRow> = sqlx::query_as(
            "SELECT state FROM incidents
             WHERE (cardinality($1::text[]) = 0 OR status = ANY($1))
               AND ($2::text IS NULL OR state->'components' ? $2)
               AND (cardinality($3::text[]) = 0 OR severity = ANY($3))
               AND ($4::timestamptz IS NULL OR opened_at >= $4)
               AND ($5::timestamptz IS NULL OR opened_at < $5)
               AND ($6::text IS NULL OR kind = $6)
               AND ($7::timestamptz IS NULL OR (opened_at, incident_id) < ($7, $8))
             ORDER BY opened_at DESC, incident_id DESC LIMIT $9",
        )
        .bind(&statuses)
        .bind(filter.component.as_deref())
        .bind(&severities)
        .bind(filter.opened_after)
        .bind(filter.opened_before)
        .bind(filter.kind.map(|k| match k {
            tocsin_core::IncidentKind::Incident => "incident",
            tocsin_core::IncidentKind::Maintenance => "maintenance",
        }))
        .bind(after.map(|a| a.opened_at))
        .bind(after.map_or(uuid::Uuid::nil(), |a| *a.incident_id.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.state.0).collect())
    }
}
