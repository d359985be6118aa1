//! The worker: pull jobs, claim them in the ledger, send, record, then answer JetStream.
//!
//! Jobs are handled in batches, because every step but the send itself is one statement per
//! batch (claim, mark the sends begun, record). Several batches run at once, and within a
//! batch the sends run concurrently under the channel's rate limiter. The order of the steps
//! is what makes a crash harmless: the ledger is written before JetStream is answered, so a
//! worker killed anywhere leaves either a lease that lapses or a recorded outcome that the
//! redelivered job finds. A lapsed lease whose send had not begun is simply claimed again; one
//! whose send had begun is a lost attempt, and the channel's policy for unknown outcomes
//! applies.
//!
//! A job that is not due (quiet hours, a scheduled retry, an earlier message to the same
//! recipient still on its way) is acknowledged and its delivery parked in the ledger; the
//! channel's dispatcher ([`crate::dispatch`]) publishes it again when it comes due.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tocsin_bus::{Bus, DeliveryJob, QueueSettings, Work, WorkQueue};
use tocsin_core::{DeliveryKey, Lane, Notice};
use tocsin_runtime::Shutdown;
use tocsin_store::{ClaimPolicy, ClaimResult, Claimed, IncidentAsOf, Store};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::DeliveryError;
use crate::courier::{Courier, Message, UnknownPolicy};
use crate::instruments::{Instruments, Outcome};
use crate::readiness::WorkerReadiness;

/// How one worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs claimed and recorded together.
    pub batch: usize,
    /// Batches in progress at once in the bulk lane; the small and critical lanes each run
    /// half as many more, so that their work never waits for the bulk lane's.
    pub parallel_batches: usize,
    /// Sends in flight at once within a batch.
    pub send_concurrency: usize,
    /// Sends per second to the provider, across this process; `None`: unlimited.
    pub rate_per_second: Option<NonZeroU32>,
    /// How long a claim holds unless renewed: the worker renews its leases every third of
    /// this while it lives, so this is how soon a dead worker's claims can be taken over.
    pub lease: Duration,
    /// The company name customers see.
    pub company: String,
    /// Linked from every message, when set.
    pub status_page_url: Option<String>,
    /// A name for this process's claims in the ledger.
    pub owner: String,
    /// How long batches in progress may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            parallel_batches: 4,
            send_concurrency: 64,
            rate_per_second: None,
            lease: Duration::from_secs(15),
            company: "Tocsin".into(),
            status_page_url: None,
            owner: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// What became of one job in a batch; returned for tests and counted in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Sent (or attempted) with this outcome, recorded as this ledger state.
    Attempted {
        key: String,
        outcome: &'static str,
        state: &'static str,
    },
    /// The ledger said nothing is left to do.
    AlreadyDone { key: String, state: String },
    /// Not due, or behind an earlier message: parked in the ledger, and published again by
    /// the dispatcher when due.
    Parked { key: String },
    /// A worker holds the delivery; this job was a copy. The delivery is parked, for the
    /// dispatcher to publish should the holder die before settling it.
    Held { key: String },
    /// Not sent and never will be: superseded, subscriber deleted, endpoint disabled.
    Skipped { key: String, reason: String },
    /// The job is not a delivery job; terminated.
    Poison,
    /// Claimed, but the shutdown deadline came before the send started: recorded as due
    /// again now and handed back to JetStream for another worker.
    HandedBack { key: String },
    /// The shutdown deadline came mid-send, so whether it went out is unknown: left leased
    /// and unanswered, as a crash would, for the channel's policy on a lost attempt once
    /// the lease expires.
    Abandoned { key: String },
    /// The claim was lost before the send began (its lease lapsed and another worker took
    /// it, or a provider's callback settled it): nothing was sent or recorded here.
    Lost { key: String },
}

/// A channel worker.
pub struct Worker<C: Courier> {
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) courier: Arc<C>,
    pub(crate) config: WorkerConfig,
    pub(crate) limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub(crate) instruments: Instruments,
    /// Wakes this process's dispatcher when a settled delivery had a later one parked
    /// behind it, so that the next message to that recipient leaves now.
    pub(crate) unblocked: Arc<Notify>,
    /// The claims batches in progress hold, whose leases this process renews.
    pub(crate) held: crate::leases::Held,
}

impl<C: Courier> std::fmt::Debug for Worker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("channel", &self.courier.channel())
            .field("config", &self.config)
            .finish()
    }
}

impl<C: Courier> Clone for Worker<C> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            bus: self.bus.clone(),
            courier: self.courier.clone(),
            config: self.config.clone(),
            limiter: self.limiter.clone(),
            instruments: self.instruments.clone(),
            unblocked: self.unblocked.clone(),
            held: self.held.clone(),
        }
    }
}

impl<C: Courier> Worker<C> {
    pub fn new(store: Store, bus: Bus, courier: C, config: WorkerConfig) -> Self {
        let limiter = config
            .rate_per_second
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));
        let channel = courier.channel();
        let instruments =
            Instruments::new(channel, |lane| bus.config().worker_consumer(channel, lane));
        Self {
            store,
            bus,
            courier: Arc::new(courier),
            config,
            limiter,
            instruments,
            unblocked: Arc::default(),
            held: crate::leases::Held::default(),
        }
    }

    /// The check behind this worker's `/readyz`: PostgreSQL answers, NATS is connected, and
    /// the channel's consumer exists.
    pub fn readiness(&self) -> WorkerReadiness {
        WorkerReadiness {
            store: self.store.clone(),
            bus: self.bus.clone(),
            channel: self.courier.channel(),
        }
    }

    /// Batches one lane runs at once: the bulk lane the configured number, the small and
    /// critical lanes half as many each, on top (never taken from the bulk lane's share, and
    /// never given to it).
    pub(crate) fn lane_batches(&self, lane: Lane) -> usize {
        match lane {
            Lane::Bulk => self.config.parallel_batches,
            Lane::Small | Lane::Critical => self.config.parallel_batches.div_ceil(2),
        }
    }

    fn queue_settings(&self, lane: Lane) -> QueueSettings {
        let in_flight = self.config.batch * self.lane_batches(lane);
        QueueSettings {
            ack_wait: self.config.lease,
            // The ledger's attempts and age decide when a delivery dies, never JetStream.
            max_deliver: None,
            max_ack_pending: i64::try_from(in_flight * 2).unwrap_or(i64::MAX),
        }
    }

    /// The channel's durable consumer of one lane, shared by every replica (created if
    /// missing, with the dead-letter stream).
    pub async fn queue(&self, lane: Lane) -> Result<WorkQueue, DeliveryError> {
        self.bus.ensure_dead_letters_stream().await?;
        Ok(self
            .bus
            .worker_queue(self.courier.channel(), lane, self.queue_settings(lane))
            .await?)
    }

    /// Handles one batch of pulled jobs, answering each. The "process one" path for tests.
    pub async fn process(&self, works: Vec<Work>) -> Result<Vec<Handled>, DeliveryError> {
        self.process_until(works, &Shutdown::new()).await
    }

    /// [`Worker::process`], with sends given up at `deadline` (see [`Handled::HandedBack`]
    /// and [`Handled::Abandoned`]). The claims and the recording are never cut short: they
    /// are single statements, and cutting them would strand the whole batch.
    pub async fn process_until(
        &self,
        works: Vec<Work>,
        deadline: &Shutdown,
    ) -> Result<Vec<Handled>, DeliveryError> {
        let policy = self.courier.policy();
        let mut handled = Vec::with_capacity(works.len());
        let mut jobs: Vec<(Work, DeliveryJob)> = Vec::with_capacity(works.len());
        let mut seen = std::collections::HashSet::new();
        for work in works {
            match DeliveryJob::decode(work.payload()) {
                // A redelivered copy beside its original in one batch: the original carries
                // the delivery, the copy is done.
                Ok(job) if !seen.insert(job.delivery_key.clone()) => {
                    answer(work.ack().await);
                    handled.push(Handled::AlreadyDone {
                        key: job.delivery_key,
                        state: "duplicate in batch".into(),
                    });
                }
                Ok(job) => jobs.push((work, job)),
                Err(e) => {
                    error!(error = %e, "an undecodable delivery job; terminating it");
                    let _ = work.term().await;
                    handled.push(Handled::Poison);
                }
            }
        }
        let keys: Vec<String> = jobs
            .iter()
            .map(|(_, job)| job.delivery_key.clone())
            .collect();
        let claim_policy = ClaimPolicy {
            channel: self.courier.channel(),
            lease: self.config.lease,
            supersede_stale: policy.supersede_stale,
            resend_unknown: policy.unknown != UnknownPolicy::Resend,
        };
        let (claims, superseded) = self
            .store
            .claim_deliveries(&keys, &self.config.owner, claim_policy)
            .await?;
        if superseded > 0 {
            info!(superseded, "stale messages superseded by newer ones");
            self.instruments.settled(Outcome::Superseded, superseded);
        }

        let mut to_send: Vec<(Work, DeliveryJob, Claimed)> = Vec::new();
        for ((work, job), claim) in jobs.into_iter().zip(claims) {
            let key = job.delivery_key.clone();
            match claim {
                ClaimResult::Claimed(claimed) => to_send.push((work, job, claimed)),
                ClaimResult::Finished { state } => {
                    answer(work.ack().await);
                    handled.push(Handled::AlreadyDone { key, state });
                }
                ClaimResult::Parked => {
                    answer(work.ack().await);
                    handled.push(Handled::Parked { key });
                }
                ClaimResult::Held => {
                    answer(work.ack().await);
                    handled.push(Handled::Held { key });
                }
                ClaimResult::Missing => {
                    error!(delivery_key = %key, "a job without a ledger row; terminating it");
                    answer(work.term().await);
                    handled.push(Handled::Poison);
                }
            }
        }
        if to_send.is_empty() {
            return Ok(handled);
        }
        // Renewed while this batch works on them, let go however it ends.
        let _holding = self.held.hold(
            to_send
                .iter()
                .map(|(_, job, _)| job.delivery_key.clone())
                .collect(),
        );
        handled.extend(self.send_claimed(to_send, deadline).await?);
        Ok(handled)
    }

    pub(crate) fn message(
        &self,
        claim: &Claimed,
        as_of: IncidentAsOf,
        subscriber: tocsin_core::Subscriber,
        webhook_secret: Option<String>,
    ) -> Message {
        let key = DeliveryKey::derive(claim.event_id, claim.subscriber_id, claim.channel);
        let mut notice = Notice::new(
            self.config.company.clone(),
            &as_of.incident,
            &as_of.event,
            &key,
        );
        if let Some(url) = &self.config.status_page_url {
            notice = notice.with_status_page_url(url.clone());
        }
        Message {
            key,
            attempt: claim.attempt,
            notice,
            incident: as_of.incident,
            event: as_of.event,
            opening_event_id: as_of.opening_event_id,
            subscriber,
            webhook_secret,
        }
    }
}

pub(crate) fn answer(result: Result<(), tocsin_bus::BusError>) {
    if let Err(e) = result {
        // The job comes back after its ack wait and finds its recorded outcome.
        warn!(error = %e, "could not answer JetStream");
    }
}
