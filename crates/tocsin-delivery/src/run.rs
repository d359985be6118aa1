//! The worker's loops, one per lane: pull batches, handle several at once, and stop in two
//! steps. Each lane has batch slots of its own, so a small incident's jobs never wait for a
//! big fan-out's.
//!
//! On the shutdown signal the worker pulls no more, and hands back at once the jobs it
//! pulled but had not started, so that another replica takes them now rather than an ack
//! wait later. Batches in progress get the grace period to send, record and answer. At its
//! end a send not yet started is handed back (recorded as due again, redelivered at once)
//! and a send in progress is dropped: its outcome is unknown, so it stays leased and
//! unanswered and comes back when the lease expires, exactly as after a crash.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tocsin_bus::{BusError, Work, WorkQueue};
use tocsin_core::Lane;
use tocsin_runtime::Shutdown;
use tracing::{error, info, warn};

use crate::courier::Courier;
use crate::{DeliveryError, Worker};

impl<C: Courier> Worker<C> {
    /// Pulls and handles jobs until `shutdown`, then stops as the module says, within
    /// [`WorkerConfig::shutdown_grace`](crate::WorkerConfig::shutdown_grace) (plus the end of
    /// the open pull request and the last batch's recording).
    pub async fn run(self, shutdown: Shutdown) -> Result<(), DeliveryError> {
        let mut queues = Vec::with_capacity(Lane::ALL.len());
        for lane in Lane::ALL {
            queues.push((lane, self.queue(lane).await?));
        }
        let channel = self.courier.channel();
        info!(%channel, batch = self.config.batch, parallel = self.config.parallel_batches,
            rate = ?self.config.rate_per_second, "worker started");
        tokio::spawn(self.instruments.clone().report_pending(
            self.bus.clone(),
            channel,
            shutdown.clone(),
        ));
        tokio::spawn(self.clone().dispatch(shutdown.clone()));
        let keep_leases = tokio::spawn(self.clone().keep_leases());
        let deadline = shutdown.deadline(self.config.shutdown_grace);
        let lanes = queues.into_iter().map(|(lane, queue)| {
            self.clone()
                .lane(lane, queue, shutdown.clone(), deadline.clone())
        });
        let handed_back: usize = futures::future::join_all(lanes).await.into_iter().sum();
        // Batches are done: leases still held (a send abandoned at the deadline) may lapse.
        keep_leases.abort();
        if let Err(e) = self.bus.flush().await {
            // Answers lost here come back after their ack wait and find their recorded outcome.
            warn!(error = %e, "could not flush the last answers to JetStream");
        }
        info!(%channel, handed_back, "worker stopped");
        Ok(())
    }

    /// One lane's loop: pulls its jobs and handles up to its share of batches at once until
    /// `shutdown`, then hands back what it pulled and finishes its batches. Returns how many
    /// jobs it handed back.
    async fn lane(
        self,
        lane: Lane,
        queue: WorkQueue,
        shutdown: Shutdown,
        deadline: Shutdown,
    ) -> usize {
        let channel = self.courier.channel();
        let batches = self.lane_batches(lane);
        let mut pull = queue.pull(self.config.batch);
        let mut running = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(()) = running.next(), if !running.is_empty() => {}
                pulled = pull.next_batch(self.config.batch), if running.len() < batches => {
                    if pulled.is_empty() {
                        error!(%channel, %lane, "the pull loop ended; stopping");
                        break;
                    }
                    running.push(self.clone().serve(pulled, deadline.clone()));
                }
            }
        }
        info!(%channel, %lane, batches = running.len(),
            "worker stopping: handing back what it pulled, finishing batches in progress");
        let (handed_back, ()) = tokio::join!(pull.hand_back(), running.collect::<()>());
        handed_back
    }

    /// Renews the leases of the claims batches in progress hold, every third of a lease,
    /// until aborted once those batches are done (through the grace period, too): a live
    /// worker keeps its claims however long its sends take, and a dead one's lapse within one
    /// lease.
    async fn keep_leases(self) {
        let mut ticks = tokio::time::interval(self.config.lease / 3);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let keys = self.held.keys();
            if keys.is_empty() {
                continue;
            }
            if let Err(e) = self
                .store
                .extend_leases(&self.config.owner, &keys, self.config.lease)
                .await
            {
                warn!(error = %e, "could not renew this worker's leases");
            }
        }
    }

    /// One pulled batch in the run loop.
    async fn serve(self, pulled: Vec<Result<Work, BusError>>, deadline: Shutdown) {
        let mut works = Vec::with_capacity(pulled.len());
        for item in pulled {
            match item {
                Ok(work) => works.push(work),
                Err(e) => warn!(error = %e, "pulling jobs failed; retrying"),
            }
        }
        if works.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        if let Err(e) = self.process_until(works, &deadline).await {
            // Unanswered jobs come back after their ack wait; leases expire.
            warn!(error = %e, "a batch failed; its jobs will be redelivered");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
