//! The worker: pull jobs, claim them in the ledger, send, record, then answer JetStream.
//!
//! Jobs are claimed in batches (one statement per batch), and then each delivery goes its
//! own way: it waits for a send slot of its lane, is marked begun, sent, recorded and
//! answered on its own, so that one slow endpoint never holds its batch-mates, nor the
//! capacity they stand for. The per-delivery writes (begun, outcome) are grouped into shared
//! statements by [`tocsin_runtime::coalesce`], so under load they cost little more than per batch.
//!
//! The order of the steps is what makes a crash harmless: the ledger is written before
//! JetStream is answered, so a worker killed anywhere leaves either a lease that lapses or a
//! recorded outcome that the redelivered job finds. A lapsed lease whose send had not begun is
//! simply claimed again; one whose send had begun is a lost attempt, and the channel's policy
//! for unknown outcomes applies.
//!
//! A job that is not due (quiet hours, a scheduled retry, an earlier message to the same
//! recipient still on its way) is acknowledged and its delivery parked in the ledger; the
//! channel's dispatcher ([`crate::dispatch`]) publishes it again when it comes due.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tocsin_bus::{Bus, DeliveryJob, QueueSettings, Work, WorkQueue};
use tocsin_core::fallback::DeliveryNotice;
use tocsin_core::notice::ChannelFailure;
use tocsin_core::{DeliveryKey, Lane, Notice};
use tocsin_runtime::Shutdown;
use tocsin_store::{AttemptOutcome, ClaimPolicy, ClaimResult, Claimed, IncidentAsOf, Store};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::DeliveryError;
use crate::courier::{Courier, Message, UnknownPolicy};
use crate::instruments::{Instruments, Outcome};
use crate::readiness::WorkerReadiness;
use tocsin_runtime::coalesce::Coalescer;

/// How one worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs claimed together (one statement).
    pub batch: usize,
    /// Sends in flight at once in the bulk lane. The small and critical lanes each have a
    /// quarter as many (at least 4, unless this is less) of their own, never shared with the
    /// bulk lane, so that their work never waits for its.
    pub concurrency: usize,
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
    /// Sends in flight at once to one destination ([`Courier::destination`]: a webhook
    /// endpoint), however many subscribers share it; as many more may wait for a turn, and
    /// beyond that a delivery is put off for a second. `None`: no bound.
    pub per_destination: Option<usize>,
}

impl WorkerConfig {
    /// Sends in flight at once in `lane`: the configured concurrency in the bulk lane, a
    /// quarter of it in each of the others (at least 4, unless the bulk lane has fewer).
    pub fn lane_capacity(&self, lane: Lane) -> usize {
        let bulk = self.concurrency.max(1);
        match lane {
            Lane::Bulk => bulk,
            Lane::Small | Lane::Critical => (bulk / 4).max(4).min(bulk),
        }
    }

    /// Sends in flight at once in every lane together (the SMTP pool is sized by it).
    pub fn total_concurrency(&self) -> usize {
        Lane::ALL.map(|lane| self.lane_capacity(lane)).iter().sum()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            concurrency: 256,
            rate_per_second: None,
            lease: Duration::from_secs(15),
            company: "Tocsin".into(),
            status_page_url: None,
            owner: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            shutdown_grace: Duration::from_secs(20),
            per_destination: None,
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
    /// The claims deliveries in progress hold, whose leases this process renews.
    pub(crate) held: crate::leases::Held,
    /// Each lane's capacity: jobs in hand, sends in flight.
    pub(crate) lanes: Arc<[LaneSlots; Lane::ALL.len()]>,
    /// Marks sends begun, many in one statement.
    pub(crate) starts: Coalescer<String, Result<bool, String>>,
    /// Records outcomes, many in one statement.
    pub(crate) records: Coalescer<AttemptOutcome, Result<(), String>>,
    /// Turns per destination, where bounded.
    pub(crate) destinations: Option<Arc<crate::destinations::Destinations>>,
}

/// One lane's capacity in this process.
#[derive(Debug)]
pub(crate) struct LaneSlots {
    /// Sends in flight at once.
    pub(crate) capacity: usize,
    /// Jobs in hand (claimed, waiting to send, sending or being recorded): twice the sends,
    /// so that claims run ahead of the sends.
    pub(crate) in_hand: Arc<Semaphore>,
    pub(crate) sending: Arc<Semaphore>,
}

impl LaneSlots {
    fn new(capacity: usize) -> LaneSlots {
        LaneSlots {
            capacity,
            in_hand: Arc::new(Semaphore::new(capacity * 2)),
            sending: Arc::new(Semaphore::new(capacity)),
        }
    }
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
            lanes: self.lanes.clone(),
            starts: self.starts.clone(),
            records: self.records.clone(),
            destinations: self.destinations.clone(),
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
        let lanes = Lane::ALL.map(|lane| LaneSlots::new(config.lane_capacity(lane)));
        let config_destinations = config
            .per_destination
            .map(crate::destinations::Destinations::new);
        let unblocked: Arc<Notify> = Arc::default();
        let starts = crate::record::starter(store.clone(), config.owner.clone());
        let records =
            crate::record::recorder(store.clone(), config.owner.clone(), unblocked.clone());
        Self {
            store,
            bus,
            courier: Arc::new(courier),
            config,
            limiter,
            instruments,
            unblocked,
            held: crate::leases::Held::default(),
            lanes: Arc::new(lanes),
            starts,
            records,
            destinations: config_destinations,
        }
    }

    /// The loop that sends this channel's account messages (sign-up confirmations) with the
    /// same courier; run it beside [`Worker::run`].
    pub fn account_sender(&self) -> crate::account::AccountSender<C>
    where
        C: crate::account::AccountCourier,
    {
        crate::account::AccountSender::new(self.store.clone(), self.courier.clone())
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

    /// One lane's slots.
    pub(crate) fn slots(&self, lane: Lane) -> &LaneSlots {
        &self.lanes[Lane::ALL.iter().position(|l| *l == lane).unwrap_or(0)]
    }

    fn queue_settings(&self, lane: Lane) -> QueueSettings {
        let in_hand = self.slots(lane).capacity * 2;
        QueueSettings {
            ack_wait: self.config.lease,
            // The ledger's attempts and age decide when a delivery dies, never JetStream.
            max_deliver: None,
            // Room for the jobs in hand and a pull request's worth on its way.
            max_ack_pending: i64::try_from(in_hand + self.config.batch * 2).unwrap_or(i64::MAX),
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
    /// and [`Handled::Abandoned`]); waits for every delivery of the batch to be settled.
    pub async fn process_until(
        &self,
        works: Vec<Work>,
        deadline: &Shutdown,
    ) -> Result<Vec<Handled>, DeliveryError> {
        // The run loop takes slots before it pulls; here the batch brings its own.
        let hand = Arc::new(Semaphore::new(works.len().max(1)));
        let mut permits = Vec::with_capacity(works.len());
        for _ in 0..works.len() {
            permits.push(
                hand.clone()
                    .acquire_owned()
                    .await
                    .expect("a fresh semaphore"),
            );
        }
        let (mut handled, running) = self.take(works, permits, deadline).await?;
        for delivery in running {
            match delivery.await {
                Ok(outcome) => handled.push(outcome),
                Err(e) => error!(error = %e, "a delivery task failed"),
            }
        }
        Ok(handled)
    }

    /// Claims a batch and starts a task for each delivery claimed, each holding one of
    /// `in_hand` until it is done. Returns what was settled at once (done, parked, held
    /// elsewhere, poison) and the tasks.
    pub(crate) async fn take(
        &self,
        works: Vec<Work>,
        mut in_hand: Vec<OwnedSemaphorePermit>,
        deadline: &Shutdown,
    ) -> Result<(Vec<Handled>, Vec<JoinHandle<Handled>>), DeliveryError> {
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
        // The messages' reads need only the jobs: they run beside the claim, not after it.
        let to_load: Vec<&DeliveryJob> = jobs.iter().map(|(_, job)| job).collect();
        let (claimed, loaded) = tokio::join!(
            self.store
                .claim_deliveries(&keys, &self.config.owner, claim_policy),
            self.load(&to_load)
        );
        let (claims, superseded) = claimed?;
        if superseded > 0 {
            info!(superseded, "stale messages superseded by newer ones");
            self.instruments.settled(Outcome::Superseded, superseded);
        }

        let mut claimed: Vec<(Work, DeliveryJob, Claimed, OwnedSemaphorePermit)> = Vec::new();
        for ((work, job), claim) in jobs.into_iter().zip(claims) {
            let key = job.delivery_key.clone();
            match claim {
                ClaimResult::Claimed(claim) => {
                    // Every pulled job came with a slot; the claimed ones keep theirs.
                    let Some(permit) = in_hand.pop() else {
                        error!("a claimed job without a slot; handing it back");
                        answer(work.release().await);
                        continue;
                    };
                    claimed.push((work, job, claim, permit));
                }
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
        if claimed.is_empty() {
            return Ok((handled, Vec::new()));
        }
        let running = self.start_deliveries(claimed, loaded?, deadline).await?;
        Ok((handled, running))
    }

    pub(crate) fn message(
        &self,
        claim: &Claimed,
        as_of: IncidentAsOf,
        subscriber: tocsin_core::Subscriber,
        webhook_secret: Option<String>,
        thread_root: Option<String>,
    ) -> Message {
        // The ledger's key: the event's message's is derived from it, a fallback notice's
        // is its own (its Message-ID and webhook-id must not be the event message's).
        let key = DeliveryKey::from_stored(claim.delivery_key.clone());
        let mut notice = Notice::new(
            self.config.company.clone(),
            &as_of.incident,
            &as_of.event,
            &key,
        );
        if let Some(url) = &self.config.status_page_url {
            notice = notice.with_status_page_url(url.clone());
        }
        // What the message may promise: only what this reader will get on this channel.
        let preferences = &subscriber.preferences;
        notice = notice.with_channel_kinds(
            tocsin_core::EventKind::ALL
                .into_iter()
                .filter(|kind| preferences.wants(claim.channel, *kind)),
        );
        match &claim.notice {
            // A fallback notice is about a channel of theirs, not about the event.
            Some(DeliveryNotice::ChannelFailed {
                failed_channel,
                reason,
            }) => {
                notice.channel_failure = Some(ChannelFailure {
                    channel: *failed_channel,
                    address: subscriber
                        .contacts
                        .address(*failed_channel)
                        .map(str::to_owned),
                    reason: reason.clone(),
                });
            }
            // Nothing about this incident reached this reader on this channel yet: an update
            // would thread under an opening they never saw, so it sums up the story instead.
            None if thread_root.is_none() && as_of.event.version > 1 => {
                notice = notice.as_catch_up(&as_of.earlier);
            }
            None => {}
        }
        Message {
            key,
            attempt: claim.attempt,
            notice,
            incident: as_of.incident,
            event: as_of.event,
            thread_root,
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
