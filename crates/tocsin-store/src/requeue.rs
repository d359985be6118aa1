//! Deliveries whose job may have been lost from JetStream: the ledger says they are still
//! to be worked on, yet nobody has touched them for far longer than their schedule allows.

use std::time::Duration;

use time::OffsetDateTime;

use crate::fanout::DeliveryRow;
use tocsin_core::Delivery;

use crate::{Store, StoreError};

impl Store {
    /// The instant before which a delivery untouched is `stale_after` late, by the
    /// database's clock (the one every ledger time is written with). A sweep fixes it once,
    /// so that what it requeues itself is never taken again in the same sweep.
    pub async fn stale_cutoff(&self, stale_after: Duration) -> Result<OffsetDateTime, StoreError> {
        let (cutoff,): (OffsetDateTime,) =
            sqlx::query_as("SELECT now() - make_interval(secs => $1)")
                .bind(stale_after.as_secs_f64())
                .fetch_one(&self.pool)
                .await?;
        Ok(cutoff)
    }

    /// Takes up to `limit` deliveries that should have been worked on before `cutoff` and
    /// were not: pending or retrying with their due time, last change and last requeue all
    /// before it, or sending under a lease that expired before it. Each is marked requeued
    /// now, with a `requeued` entry in the trail, so later sweeps leave it alone until their
    /// cutoff passes that. Concurrent sweepers never take the same rows.
    pub async fn requeue_stale_deliveries(
        &self,
        cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "WITH stale AS (
                 SELECT delivery_key FROM deliveries
                 WHERE state IN ('pending', 'retrying', 'sending')
                   -- greatest() skips NULLs: the latest of the times that apply.
                   AND greatest(created_at, updated_at, next_attempt_at, send_after,
                                requeued_at, lease_expires_at)
                       < $1
                 ORDER BY created_at
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), requeued AS (
                 UPDATE deliveries d SET requeued_at = now()
                 FROM stale s WHERE d.delivery_key = s.delivery_key
                 RETURNING d.delivery_key, d.incident_id, d.event_id, d.event_version,
                     d.subscriber_id, d.channel, d.send_after, d.lane, d.state
             ), trail AS (
                 INSERT INTO delivery_trail (incident_id, event_id, kind, delivery_key, data)
                 SELECT incident_id, event_id, 'requeued', delivery_key,
                        jsonb_build_object('channel', channel, 'state', state)
                 FROM requeued
             )
             SELECT delivery_key, incident_id, event_id, event_version, subscriber_id, channel,
                    send_after, lane
             FROM requeued ORDER BY event_version",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }
}
