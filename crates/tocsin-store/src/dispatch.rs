//! The ledger as the queue's memory: parked deliveries coming due, and the incarnations of
//! the JetStream streams.
//!
//! A delivery whose job is not on JetStream is `parked`. A channel's dispatcher takes those
//! that have come due ([`Store::due_deliveries`]), publishes their jobs, and only then
//! marks them dispatched, in the same transaction that locked them: a dispatcher killed in
//! between leaves them parked, and the next one publishes them again under the same message
//! id, which JetStream drops as a duplicate.
//!
//! When a stream is found created anew (its server lost its store), what it held is put
//! back from the ledger and the log in the transaction that records the new incarnation,
//! so exactly one process does it and nothing depends on that process surviving.

use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use tocsin_core::{Channel, Delivery};
use tracing::instrument;

use crate::fanout::DeliveryRow;
use crate::{Store, StoreError};

/// Parked deliveries that have come due, locked until [`DueDeliveries::dispatched`] or drop.
#[derive(Debug)]
pub struct DueDeliveries {
    tx: Transaction<'static, Postgres>,
    /// Each delivery with its dispatch number, for the job's message id.
    pub deliveries: Vec<(Delivery, u32)>,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    dispatch: i32,
}

impl Store {
    /// Up to `limit` parked deliveries of `channel` that may go now: due (retry time, quiet
    /// hours), and not behind an earlier message to the same recipient still on its way; or
    /// held by a worker whose lease lapsed. With `supersede_stale`, only an earlier message
    /// being sent holds one back, since claiming it supersedes the others. Rows another
    /// dispatcher has locked are skipped.
    #[instrument(skip(self))]
    pub async fn due_deliveries(
        &self,
        channel: Channel,
        supersede_stale: bool,
        limit: u32,
    ) -> Result<DueDeliveries, StoreError> {
        let blocking: &[&str] = if supersede_stale {
            &["sending"]
        } else {
            &["pending", "sending", "retrying"]
        };
        let mut tx = self.pool.begin().await?;
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT d.delivery_key, d.incident_id, d.event_id, d.event_version, d.subscriber_id,
                    d.channel, d.send_after, d.lane, d.dispatches + 1 AS dispatch
             FROM deliveries d
             WHERE d.parked AND d.channel = $1
               AND coalesce(d.next_attempt_at, d.send_after, d.created_at) <= now()
               AND (d.send_after IS NULL OR d.send_after <= now())
               AND ((d.state = 'sending' AND d.lease_expires_at < now())
                    OR ((d.state IN ('pending', 'retrying')
                         OR (d.state = 'unknown' AND d.next_attempt_at IS NOT NULL))
                        AND (d.notice IS NOT NULL OR NOT EXISTS (
                            SELECT 1 FROM deliveries e
                            WHERE e.incident_id = d.incident_id
                              AND e.subscriber_id = d.subscriber_id
                              AND e.channel = d.channel AND e.event_version < d.event_version
                              AND e.state = ANY($3) AND e.notice IS NULL))))
             ORDER BY coalesce(d.next_attempt_at, d.send_after, d.created_at)
             LIMIT $2
             FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(channel.as_str())
        .bind(i64::from(limit))
        .bind(blocking)
        .fetch_all(&mut *tx)
        .await?;
        let deliveries = rows
            .into_iter()
            .map(|row| {
                let dispatch = u32::try_from(row.dispatch).unwrap_or_default();
                Delivery::try_from(row.delivery).map(|d| (d, dispatch))
            })
            .collect::<Result<_, _>>()?;
        Ok(DueDeliveries { tx, deliveries })
    }

    /// Records that `stream` (the deliveries stream) now has the incarnation created at
    /// `created`. If that is news, every delivery still to be worked on is parked in the
    /// same transaction, so the dispatchers publish its job again; returns how many, or
    /// `None` when the incarnation was known already.
    #[instrument(skip(self))]
    pub async fn deliveries_stream_seen(
        &self,
        stream: &str,
        created: OffsetDateTime,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !note_incarnation(&mut tx, stream, created).await? {
            return Ok(None);
        }
        // Every such row, parked already or not: a dispatch committing right now may have
        // published into the stream that was lost (a condition on `parked` would be judged
        // on the snapshot and skip it).
        let parked = sqlx::query(
            "UPDATE deliveries SET parked = true
             WHERE state IN ('pending', 'retrying', 'sending')
                OR (state = 'unknown' AND next_attempt_at IS NOT NULL)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(parked))
    }

    /// Records that `stream` (the events stream) now has the incarnation created at
    /// `created`. If that is news, every event whose fan-out is not recorded goes back into
    /// the outbox in the same transaction, so the relay publishes it again; returns how
    /// many, or `None` when the incarnation was known already.
    #[instrument(skip(self))]
    pub async fn events_stream_seen(
        &self,
        stream: &str,
        created: OffsetDateTime,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !note_incarnation(&mut tx, stream, created).await? {
            return Ok(None);
        }
        let requeued = sqlx::query(
            "INSERT INTO outbox (position, incident_id)
             SELECT e.position, e.incident_id FROM events e
             WHERE NOT EXISTS (SELECT 1 FROM delivery_trail t
                               WHERE t.event_id = e.event_id AND t.kind = 'recipients_resolved')
             ON CONFLICT (position) DO UPDATE SET published_at = NULL",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(requeued))
    }
}

impl DueDeliveries {
    /// Their jobs are published: unpark them and count the dispatch, then release the locks.
    pub async fn dispatched(mut self) -> Result<u64, StoreError> {
        let keys: Vec<&str> = self
            .deliveries
            .iter()
            .map(|(d, _)| d.delivery_key.as_str())
            .collect();
        // The rows are locked already (the select that found them): no waiting here.
        let done = sqlx::query(
            "UPDATE deliveries SET parked = false, dispatches = dispatches + 1
             WHERE delivery_key = ANY($1)",
        )
        .bind(&keys)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Their jobs were not published: release the locks now, as they are. (A transaction
    /// merely dropped is rolled back only when its connection is next used, and until then
    /// the rows stay locked and other dispatchers pass them by.)
    pub async fn release(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// Records `created` as `stream`'s incarnation; true if it was not the one recorded (or none
/// was). Concurrent callers queue on the row, so exactly one of them sees the news.
async fn note_incarnation(
    tx: &mut Transaction<'static, Postgres>,
    stream: &str,
    created: OffsetDateTime,
) -> Result<bool, StoreError> {
    let changed: Option<(String,)> = sqlx::query_as(
        "INSERT INTO bus_streams (name, created) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET created = excluded.created, recorded_at = now()
             WHERE bus_streams.created IS DISTINCT FROM excluded.created
         RETURNING name",
    )
    .bind(stream)
    .bind(created)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(changed.is_some())
}
