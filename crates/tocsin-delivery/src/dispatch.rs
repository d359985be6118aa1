//! The channel's dispatcher: puts the jobs of parked deliveries back on JetStream when they
//! come due.
//!
//! Deliveries wait in the ledger, never on JetStream: a retry for later, quiet hours, a
//! message behind an earlier one to the same recipient, and every delivery still to be worked
//! on when the deliveries stream was lost. Every worker process runs a dispatcher for its
//! channel; replicas share the work through row locks that skip each other. It looks every
//! [`DISPATCH_INTERVAL`], and at once when this process settled a delivery that had a later
//! one parked behind it, so that a recipient's next message leaves without waiting a tick.
//!
//! Every [`crate::untold::UNTOLD_SWEEP_INTERVAL`] it also tells the subscribers of dead
//! deliveries a lost worker left untold (see [`crate::untold`]).
//!
//! It also watches the deliveries stream. When the stream is found created anew (NATS lost
//! its store), the ledger records it and parks every delivery still to be worked on, in one
//! transaction, and the dispatchers publish their jobs again: the pipeline heals from
//! PostgreSQL without a restart or an operator.

use std::time::Duration;

use time::OffsetDateTime;
use tocsin_bus::DeliveryJob;
use tocsin_core::Lane;
use tocsin_runtime::Shutdown;
use tracing::{debug, info, warn};

use crate::DeliveryError;
use crate::courier::Courier;
use crate::worker::Worker;

/// How often the dispatcher looks for parked deliveries come due.
pub const DISPATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the dispatcher checks that the stream and the consumer are there.
pub const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Deliveries published per round.
const DISPATCH_BATCH: u32 = 1_000;

impl<C: Courier> Worker<C> {
    /// Publishes the jobs of this channel's parked deliveries that are due now; returns how
    /// many. The "process one" step of the dispatcher, for tests.
    pub async fn dispatch_due(&self) -> Result<u64, DeliveryError> {
        let policy = self.courier.policy();
        let mut dispatched = 0;
        loop {
            let due = self
                .store
                .due_deliveries(
                    self.courier.channel(),
                    policy.supersede_stale,
                    DISPATCH_BATCH,
                )
                .await?;
            if due.deliveries.is_empty() {
                due.release().await?;
                return Ok(dispatched);
            }
            let jobs: Vec<(DeliveryJob, u32)> = due
                .deliveries
                .iter()
                .map(|(delivery, number)| (DeliveryJob::from(delivery), *number))
                .collect();
            // Published before they are marked: a failure leaves them parked (the locks are
            // released with the transaction) for the next round.
            let failed = self
                .bus
                .dispatch_jobs(&jobs)
                .await
                .into_iter()
                .find_map(Result::err);
            if let Some(e) = failed {
                if let Err(release) = due.release().await {
                    warn!(error = %release, "could not release the undispatched deliveries; they are released when the connection is next used");
                }
                return Err(e.into());
            }
            let count = due.dispatched().await?;
            dispatched += count;
            if count < u64::from(DISPATCH_BATCH) {
                return Ok(dispatched);
            }
        }
    }

    /// Makes sure the deliveries stream, the dead-letter stream and this channel's consumers
    /// (one per lane) exist (creating what is missing: NATS may have come back empty), and records the
    /// deliveries stream's incarnation in the ledger when it is not the one `known`. A new
    /// incarnation parks every delivery still to be worked on; returns how many, if this call
    /// was the one to find it.
    pub async fn check_stream(
        &self,
        known: &mut Option<OffsetDateTime>,
    ) -> Result<Option<u64>, DeliveryError> {
        for lane in Lane::ALL {
            self.queue(lane).await?;
        }
        let created = self.bus.ensure_deliveries_stream().await?;
        if *known == Some(created) {
            return Ok(None);
        }
        let stream = self.bus.config().deliveries_stream();
        let parked = self.store.deliveries_stream_seen(&stream, created).await?;
        *known = Some(created);
        Ok(parked)
    }

    /// The dispatcher's loop, until `shutdown`.
    pub(crate) async fn dispatch(self, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(DISPATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checks = tokio::time::interval(STREAM_CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut untold = tokio::time::interval(crate::untold::UNTOLD_SWEEP_INTERVAL);
        untold.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut known = None;
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = untold.tick() => {
                    match self.tell_untold_failures().await {
                        Ok(0) => {}
                        Ok(told) => info!(told, "subscribers of dead deliveries told on another channel"),
                        Err(e) => debug!(error = %e, "could not look for untold failures; the next sweep retries"),
                    }
                    continue;
                }
                _ = checks.tick() => {
                    match self.check_stream(&mut known).await {
                        Ok(Some(parked)) => info!(parked,
                            "the deliveries stream is new (NATS lost its store?): every delivery still to be worked on is queued again"),
                        Ok(None) => {}
                        Err(e) => debug!(error = %e, "could not check the deliveries stream"),
                    }
                }
                _ = ticks.tick() => {}
                () = self.unblocked.notified() => {}
            }
            match self.dispatch_due().await {
                Ok(0) => {}
                Ok(dispatched) => debug!(dispatched, "parked deliveries published"),
                Err(e) => {
                    warn!(error = %e, "dispatching parked deliveries failed; the next round retries")
                }
            }
        }
    }
}
