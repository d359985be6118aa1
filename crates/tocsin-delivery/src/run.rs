//! The worker's loops, one per lane: take jobs as the lane's capacity allows, claim them a
//! batch at a time, and let each delivery run on its own; stop in two steps.
//!
//! A lane pulls only as many jobs as it has room for in hand (twice its sends in flight), so
//! a backlog waits on JetStream, not in the process. Each lane has capacity of its own, so a
//! small incident's jobs never wait for a big fan-out's.
//!
//! On the shutdown signal the worker pulls no more, and hands back at once the jobs it
//! pulled but had not claimed, so that another replica takes them now rather than an ack
//! wait later. Deliveries in progress get the grace period to send, record and answer. At
//! its end a send not yet started is handed back (recorded as due again, redelivered at
//! once) and a send in progress is dropped: its outcome is unknown, so it stays leased and
//! unanswered and comes back when the lease expires, exactly as after a crash.

use std::time::Duration;

use tocsin_bus::{BusError, Work, WorkQueue};
use tocsin_core::Lane;
use tocsin_runtime::Shutdown;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info, warn};

use crate::courier::Courier;
use crate::{DeliveryError, Worker};

/// Batches a lane claims at once. A claim is one short statement; more at once would only
/// hold more connections, while the sends, not the claims, take the time.
const CLAIMS_AT_ONCE: usize = 2;

/// How long a lane whose sends are all taken waits for room for a fuller batch before it
/// claims: its jobs would only wait for a send slot, and one claim of 64 costs PostgreSQL
/// far less than 64 claims of one, which is what sends finishing one by one would make.
const GATHER: Duration = Duration::from_millis(20);

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
        info!(%channel, batch = self.config.batch, concurrency = self.config.concurrency,
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
        // Deliveries are done: leases still held (a send abandoned at the deadline) may lapse.
        keep_leases.abort();
        if let Err(e) = self.bus.flush().await {
            // Answers lost here come back after their ack wait and find their recorded outcome.
            warn!(error = %e, "could not flush the last answers to JetStream");
        }
        info!(%channel, handed_back, "worker stopped");
        Ok(())
    }

    /// One lane's loop: takes jobs while the lane has room in hand and claims them a batch at
    /// a time until `shutdown`; then hands back what it pulled and waits for the deliveries
    /// in progress. Returns how many jobs it handed back.
    async fn lane(
        self,
        lane: Lane,
        queue: WorkQueue,
        shutdown: Shutdown,
        deadline: Shutdown,
    ) -> usize {
        let channel = self.courier.channel();
        let in_hand = self.slots(lane).in_hand.clone();
        let room = self.slots(lane).capacity * 2;
        let mut pull = queue.pull(self.config.batch);
        // Claims run as tasks of their own: a claim's transaction must never wait on this
        // loop, which waits for jobs to arrive.
        let mut claiming = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(_) = claiming.join_next(), if !claiming.is_empty() => {}
                first = in_hand.clone().acquire_owned(), if claiming.len() < CLAIMS_AT_ONCE => {
                    let Ok(first) = first else { break };
                    // Room for one at least: take as much of a batch as there is room for.
                    let mut permits = vec![first];
                    while permits.len() < self.config.batch {
                        match in_hand.clone().try_acquire_owned() {
                            Ok(permit) => permits.push(permit),
                            Err(_) => break,
                        }
                    }
                    if permits.len() < self.config.batch
                        && self.slots(lane).sending.available_permits() == 0
                    {
                        let until = tokio::time::Instant::now() + GATHER;
                        while permits.len() < self.config.batch {
                            let more = tokio::time::timeout_at(until, in_hand.clone().acquire_owned());
                            match more.await {
                                Ok(Ok(permit)) => permits.push(permit),
                                _ => break,
                            }
                        }
                    }
                    let pulled = tokio::select! {
                        _ = shutdown.wait() => break,
                        pulled = pull.next_batch(permits.len()) => pulled,
                    };
                    if pulled.is_empty() {
                        error!(%channel, %lane, "the pull loop ended; stopping");
                        break;
                    }
                    permits.truncate(pulled.len());
                    claiming.spawn(self.clone().serve(pulled, permits, deadline.clone()));
                }
            }
        }
        info!(%channel, %lane, "worker stopping: handing back what it pulled, finishing deliveries in progress");
        let (handed_back, ()) = tokio::join!(pull.hand_back(), async {
            while claiming.join_next().await.is_some() {}
        });
        // Every delivery gives its place back when it is done: all of them back, all done.
        let all = u32::try_from(room).unwrap_or(u32::MAX);
        let _ = in_hand.acquire_many(all).await;
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

    /// One pulled batch in a lane's loop: claimed, and its deliveries started on their own.
    async fn serve(
        self,
        pulled: Vec<Result<Work, BusError>>,
        mut permits: Vec<OwnedSemaphorePermit>,
        deadline: Shutdown,
    ) {
        let mut works = Vec::with_capacity(pulled.len());
        for item in pulled {
            match item {
                Ok(work) => works.push(work),
                Err(e) => warn!(error = %e, "pulling jobs failed; retrying"),
            }
        }
        permits.truncate(works.len());
        if works.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        if let Err(e) = self.take(works, permits, &deadline).await {
            // Unanswered jobs come back after their ack wait; leases expire.
            warn!(error = %e, "a batch failed; its jobs will be redelivered");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
