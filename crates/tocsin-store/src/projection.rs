//! Recomputing projections from the log: the proof that incident state is a fold of events.

use futures::TryStreamExt;
use sqlx::types::Json;
use tocsin_core::{Incident, RecordedEvent};
use tracing::{info, instrument};
use uuid::Uuid;

use crate::log::kind_str;
use crate::rows::{EventRow, IncidentRow, event_columns};
use crate::{Store, StoreError};

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    pub events: u64,
    pub incidents: u64,
    /// Incidents whose live projection differed from the fold of their log (should be 0).
    pub drifted: u64,
}

/// Incidents are written back in batches of this many.
const WRITE_BATCH: usize = 500;

impl Store {
    /// Folds every incident's events and writes the result over the live projection, in one
    /// transaction that blocks appends meanwhile. With `dry_run` it only counts drift.
    ///
    /// Events are streamed in (incident, version) order, so memory holds one incident and one
    /// write batch, not the log.
    #[instrument(skip(self))]
    pub async fn rebuild_projections(&self, dry_run: bool) -> Result<RebuildReport, StoreError> {
        self.rebuild_projections_reporting(dry_run, |_| {}).await
    }

    /// [`Store::rebuild_projections`], calling `progress` with the counts so far after each
    /// write batch.
    #[instrument(skip(self, progress))]
    pub async fn rebuild_projections_reporting(
        &self,
        dry_run: bool,
        mut progress: impl FnMut(RebuildReport) + Send,
    ) -> Result<RebuildReport, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE incidents IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;

        let mut report = RebuildReport::default();
        let mut batch: Vec<Incident> = Vec::with_capacity(WRITE_BATCH);
        {
            let sql = concat!(
                "SELECT ",
                event_columns!(),
                " FROM events e ORDER BY e.incident_id, e.version"
            );
            let mut conn = self.pool.acquire().await?;
            let mut rows = sqlx::query_as::<_, EventRow>(sql).fetch(&mut *conn);
            let mut current: Option<Incident> = None;
            while let Some(row) = rows.try_next().await? {
                let event = RecordedEvent::try_from(row)?;
                report.events += 1;
                if current.as_ref().is_some_and(|i| i.id != event.incident_id) {
                    batch.extend(current.take());
                }
                current = Some(Incident::apply(current, &event));
                if batch.len() >= WRITE_BATCH {
                    report.drifted += write_batch(&mut tx, &batch, dry_run).await?;
                    report.incidents += batch.len() as u64;
                    batch.clear();
                    progress(report);
                }
            }
            batch.extend(current);
        }
        report.drifted += write_batch(&mut tx, &batch, dry_run).await?;
        report.incidents += batch.len() as u64;
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        info!(?report, dry_run, "projections rebuilt from the log");
        Ok(report)
    }

    /// How many events the log holds at or after `from_position`: the size of a rebuild or
    /// a republish, for progress reports.
    pub async fn count_events_from(&self, from_position: i64) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position >= $1")
            .bind(from_position)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Every incident in the live projection, for comparisons in tests and audits.
    pub async fn all_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let rows: Vec<IncidentRow> =
            sqlx::query_as("SELECT state FROM incidents ORDER BY incident_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.state.0).collect())
    }
}

/// Counts the incidents in `batch` that differ from the live rows, then (unless `dry_run`)
/// overwrites them.
async fn write_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &[Incident],
    dry_run: bool,
) -> Result<u64, StoreError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = batch.iter().map(|i| *i.id.as_uuid()).collect();
    let live: Vec<(Uuid, Json<Incident>)> =
        sqlx::query_as("SELECT incident_id, state FROM incidents WHERE incident_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    let live: std::collections::HashMap<Uuid, Incident> =
        live.into_iter().map(|(id, s)| (id, s.0)).collect();
    let drifted = batch
        .iter()
        .filter(|i| live.get(i.id.as_uuid()) != Some(*i))
        .count() as u64;
    if dry_run {
        return Ok(drifted);
    }
    let states: Vec<Json<&Incident>> = batch.iter().map(Json).collect();
    sqlx::query(
        "INSERT INTO incidents (incident_id, version, kind, status, severity, opened_at, updated_at, state)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                              $6::timestamptz[], $7::timestamptz[], $8::jsonb[])
         ON CONFLICT (incident_id) DO UPDATE SET
             version = EXCLUDED.version, kind = EXCLUDED.kind, status = EXCLUDED.status,
             severity = EXCLUDED.severity, opened_at = EXCLUDED.opened_at,
             updated_at = EXCLUDED.updated_at, state = EXCLUDED.state",
    )
    .bind(&ids)
    .bind(batch.iter().map(|i| i.version as i64).collect::<Vec<_>>())
    .bind(batch.iter().map(kind_str).collect::<Vec<_>>())
    .bind(batch.iter().map(|i| i.status.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|i| i.severity.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|i| i.opened_at).collect::<Vec<_>>())
    .bind(batch.iter().map(|i| i.updated_at).collect::<Vec<_>>())
    .bind(states)
    .execute(&mut **tx)
    .await?;
    Ok(drifted)
}
