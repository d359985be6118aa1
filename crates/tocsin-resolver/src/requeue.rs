//! The resolver's second job: putting back on JetStream the delivery jobs it lost.
//!
//! PostgreSQL is the only durable truth. A job acknowledged by JetStream can still vanish (the
//! 2.9 server does not fsync before acknowledging; a stream can be purged or rebuilt), and a
//! dead-letter replay whose publish failed leaves rows pending with no message. The ledger
//! knows every delivery still to be worked on, so a periodic sweep republishes the jobs of
//! those untouched for much longer than their schedule allows. A republished job whose
//! original was not lost after all is harmless: workers claim deliveries in the ledger, and a
//! delivery already settled or claimed is never sent a second time.

use std::time::Duration;

use time::OffsetDateTime;
use tocsin_bus::{Bus, DeliveryJob};
use tocsin_runtime::Shutdown;
use tocsin_store::Store;

use crate::ResolveError;

/// How the sweep runs.
#[derive(Debug, Clone, Copy)]
pub struct RequeueConfig {
    /// Time between sweeps.
    pub interval: Duration,
    /// A delivery untouched for this long past its due time has lost its job.
    pub stale_after: Duration,
    /// Deliveries taken per round of a sweep.
    pub batch: u32,
}

impl Default for RequeueConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            stale_after: Duration::from_secs(600),
            batch: 5_000,
        }
    }
}

/// One sweep: republishes the jobs of every stale delivery. Returns how many.
pub async fn requeue_stale(
    store: &Store,
    bus: &Bus,
    config: &RequeueConfig,
) -> Result<u64, ResolveError> {
    // A fresh message id per sweep, so JetStream's duplicate window does not drop the copy.
    let tag = format!(
        "requeue{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let cutoff = store.stale_cutoff(config.stale_after).await?;
    let mut requeued = 0;
    loop {
        let stale = store.requeue_stale_deliveries(cutoff, config.batch).await?;
        if stale.is_empty() {
            break;
        }
        let jobs: Vec<DeliveryJob> = stale.iter().map(DeliveryJob::from).collect();
        // A failed publish leaves its row marked: the next sweep after `stale_after` retries.
        for published in bus.republish_jobs(&jobs, &tag).await {
            published?;
        }
        requeued += jobs.len() as u64;
        if stale.len() < config.batch as usize {
            break;
        }
    }
    if requeued > 0 {
        tracing::warn!(
            requeued,
            "republished delivery jobs missing from JetStream (or very late)"
        );
    }
    Ok(requeued)
}

/// Sweeps every `config.interval` until `shutdown`.
pub async fn run(store: Store, bus: Bus, config: RequeueConfig, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = requeue_stale(&store, &bus, &config).await {
            tracing::warn!(%error, "requeue sweep failed; the next one retries");
        }
    }
}
