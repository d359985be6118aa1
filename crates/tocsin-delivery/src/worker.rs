//! The worker: pull jobs, claim them in the ledger, send, record, then answer JetStream.
//!
//! Jobs are handled in batches, because every step but the send itself is one statement per
//! batch (claim, load, record). Several batches run at once, and within a batch the sends run
//! concurrently, each waiting for the channel's rate limiter. The order of the steps is what
//! makes a crash harmless: the ledger is written before JetStream is answered, so a worker
//! killed anywhere leaves either a lease that expires (and the channel's policy for a lost
//! attempt applies) or a recorded outcome that the redelivered job finds.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use time::OffsetDateTime;
use tocsin_bus::{Bus, DeliveryJob, QueueSettings, Work, WorkQueue};
use tocsin_core::{DeliveryKey, EventId, Notice, SendOutcome, SubscriberId};
use tocsin_runtime::Shutdown;
use tocsin_store::{AttemptOutcome, ClaimPolicy, ClaimResult, Claimed, IncidentAsOf, Store};
use tracing::{error, info, warn};

use crate::DeliveryError;
use crate::courier::{Courier, Message, UnknownPolicy};
use crate::decision::Reply;
use crate::instruments::{Instruments, Outcome};
use crate::readiness::WorkerReadiness;

/// How one worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs claimed and recorded together.
    pub batch: usize,
    /// Batches in progress at once.
    pub parallel_batches: usize,
    /// Sends in flight at once within a batch.
    pub send_concurrency: usize,
    /// Sends per second to the provider, across this process; `None`: unlimited.
    pub rate_per_second: Option<NonZeroU32>,
    /// How long a claim holds; a send taking longer keeps reporting progress.
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
            lease: Duration::from_secs(60),
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
    /// Not due, or behind an earlier message: offered again later.
    Deferred { key: String, wait: Duration },
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
}

/// A channel worker.
pub struct Worker<C: Courier> {
    store: Store,
    pub(crate) bus: Bus,
    pub(crate) courier: Arc<C>,
    pub(crate) config: WorkerConfig,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub(crate) instruments: Instruments,
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
        }
    }
}

impl<C: Courier> Worker<C> {
    pub fn new(store: Store, bus: Bus, courier: C, config: WorkerConfig) -> Self {
        let limiter = config
            .rate_per_second
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));
        let channel = courier.channel();
        let instruments = Instruments::new(channel, bus.config().worker_consumer(channel));
        Self {
            store,
            bus,
            courier: Arc::new(courier),
            config,
            limiter,
            instruments,
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

    fn queue_settings(&self) -> QueueSettings {
        let in_flight = self.config.batch * self.config.parallel_batches;
        QueueSettings {
            ack_wait: self.config.lease,
            // Deferrals (quiet hours, ordering) are naks too, so JetStream must not count
            // them toward a limit: the ledger's attempts and age decide when a job dies.
            max_deliver: None,
            max_ack_pending: i64::try_from(in_flight * 2).unwrap_or(i64::MAX),
        }
    }

    /// The channel's durable consumer, shared by every replica.
    pub async fn queue(&self) -> Result<WorkQueue, DeliveryError> {
        self.bus.ensure_dead_letters_stream().await?;
        Ok(self
            .bus
            .worker_queue(self.courier.channel(), self.queue_settings())
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
            resend_unknown: policy.unknown == UnknownPolicy::ResendOnce,
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
            match claim {
                ClaimResult::Claimed(claimed) => to_send.push((work, job, claimed)),
                ClaimResult::Finished { state } => {
                    answer(work.ack().await);
                    handled.push(Handled::AlreadyDone {
                        key: job.delivery_key,
                        state,
                    });
                }
                ClaimResult::NotYet { wait } => {
                    let wait = wait.min(Duration::from_secs(3600));
                    answer(work.nak(wait).await);
                    handled.push(Handled::Deferred {
                        key: job.delivery_key,
                        wait,
                    });
                }
                ClaimResult::Missing => {
                    error!(delivery_key = %job.delivery_key, "a job without a ledger row; terminating it");
                    answer(work.term().await);
                    handled.push(Handled::Poison);
                }
            }
        }
        if to_send.is_empty() {
            return Ok(handled);
        }
        handled.extend(self.send_claimed(to_send, deadline).await?);
        Ok(handled)
    }

    async fn send_claimed(
        &self,
        claimed: Vec<(Work, DeliveryJob, Claimed)>,
        deadline: &Shutdown,
    ) -> Result<Vec<Handled>, DeliveryError> {
        let subscriber_ids: Vec<SubscriberId> =
            claimed.iter().map(|(_, _, c)| c.subscriber_id).collect();
        let mut subscribers = self.store.subscribers_for_delivery(&subscriber_ids).await?;
        let mut incidents: HashMap<EventId, IncidentAsOf> = HashMap::new();
        for (_, _, c) in &claimed {
            if let std::collections::hash_map::Entry::Vacant(slot) = incidents.entry(c.event_id) {
                let as_of = self
                    .store
                    .incident_as_of(c.incident_id, c.event_version)
                    .await?
                    .ok_or_else(|| DeliveryError::UnknownEvent(c.event_id.to_string()))?;
                slot.insert(as_of);
            }
        }

        let policy = self.courier.policy();
        let attempts = claimed.into_iter().map(|(work, job, claim)| {
            let subscriber = subscribers.remove(&claim.subscriber_id);
            let as_of = incidents[&claim.event_id].clone();
            let (severity, recorded_at) = (as_of.incident.severity, as_of.event.recorded_at);
            async move {
                let started = Instant::now();
                let outcome = match subscriber {
                    None => Attempt::Done(Err("the subscriber was deleted; their contact details are gone".to_owned())),
                    Some((subscriber, _)) if claim.channel == tocsin_core::Channel::Webhook
                        && subscriber.webhook_disabled.is_some() =>
                    {
                        Attempt::Done(Err(format!(
                            "the webhook endpoint is disabled: {}",
                            subscriber.webhook_disabled.unwrap_or_default()
                        )))
                    }
                    Some((subscriber, secret)) => {
                        if claim.after_lost_attempt && policy.unknown == UnknownPolicy::Reconcile {
                            // The previous holder may have sent it: no blind resend.
                            Attempt::Done(Ok(SendOutcome::Unknown {
                                reason: "a worker stopped mid-send; awaiting the provider's status callback".into(),
                            }))
                        } else {
                            let message = self.message(&claim, as_of, subscriber, secret);
                            let attempt = self.send_with_progress(&work, &message, deadline).await;
                            if let Attempt::Done(Ok(SendOutcome::Delivered { .. })) = attempt {
                                self.instruments.accepted(severity, recorded_at);
                            }
                            attempt
                        }
                    }
                };
                (work, job, claim, outcome, started.elapsed())
            }
        });
        let results: Vec<_> = stream::iter(attempts)
            .buffer_unordered(self.config.send_concurrency)
            .collect()
            .await;

        let now = OffsetDateTime::now_utc();
        let mut records = Vec::with_capacity(results.len());
        let mut answers = Vec::with_capacity(results.len());
        let mut disable = Vec::new();
        let mut handled = Vec::with_capacity(results.len());
        for (work, job, claim, attempt, elapsed) in results {
            let outcome = match attempt {
                Attempt::Done(outcome) => outcome,
                Attempt::NotStarted => {
                    records.push(handed_back(&job, &claim, now));
                    let key = job.delivery_key.clone();
                    answers.push((work, job, Reply::Release, Handled::HandedBack { key }));
                    continue;
                }
                Attempt::Abandoned => {
                    // Unanswered on purpose: the job returns when its ack wait ends, the
                    // lease has expired by then, and the channel's policy for a lost attempt
                    // decides (webhook: resend with the same id; email: once; SMS: never).
                    warn!(delivery_key = %job.delivery_key,
                        "shutdown deadline reached mid-send; the outcome is unknown, left to the lease");
                    handled.push(Handled::Abandoned {
                        key: job.delivery_key,
                    });
                    drop(work);
                    continue;
                }
            };
            let gone = match &outcome {
                Ok(SendOutcome::Gone { reason }) => Some(reason.clone()),
                _ => None,
            };
            let (record, reply, handled) = self.decide(&job, &claim, outcome, elapsed, now);
            // A webhook endpoint that is gone (410), or that failed through a whole retry
            // schedule, is disabled so later messages stop trying it.
            if claim.channel == tocsin_core::Channel::Webhook {
                if let Some(reason) = gone {
                    disable.push((claim.clone(), reason));
                } else if record.state == "dead" {
                    let reason = record.error.clone().unwrap_or_default();
                    disable.push((
                        claim.clone(),
                        format!("failed through every retry: {reason}"),
                    ));
                }
            }
            records.push(record);
            answers.push((work, job, reply, handled));
        }
        // The ledger first, then JetStream: a crash in between redelivers jobs whose outcome
        // is already recorded, and the claim finds them finished.
        self.store
            .record_attempts(&self.config.owner, &records)
            .await?;
        for (claim, reason) in disable {
            warn!(subscriber_id = %claim.subscriber_id, %reason, "webhook endpoint disabled");
            self.store
                .disable_webhook(
                    claim.subscriber_id,
                    claim.incident_id,
                    claim.event_id,
                    &reason,
                )
                .await?;
        }
        for (work, job, reply, outcome) in answers {
            if let Some(settled) = Outcome::of(&outcome) {
                self.instruments.settled(settled, 1);
            }
            match reply {
                Reply::Ack => answer(work.ack().await),
                Reply::Release => answer(work.release().await),
                Reply::Nak(delay) => {
                    self.instruments.retry_scheduled();
                    answer(work.nak(delay).await)
                }
                Reply::Dead(reason) => {
                    self.instruments.dead_lettered();
                    if let Err(e) = self.bus.publish_dead_letter(&job, &reason).await {
                        warn!(error = %e, delivery_key = %job.delivery_key, "could not publish the dead letter; the ledger has it");
                    }
                    answer(work.ack().await);
                }
            }
            handled.push(outcome);
        }
        Ok(handled)
    }

    fn message(
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

    /// Sends one message, telling JetStream the job is in progress while the send lasts.
    /// The attempt's duration is recorded without the wait for the rate limiter. At
    /// `deadline` a send not yet started is not started, and one in progress is dropped.
    async fn send_with_progress(
        &self,
        work: &Work,
        message: &Message,
        deadline: &Shutdown,
    ) -> Attempt {
        if let Some(limiter) = &self.limiter
            && deadline
                .unless_triggered(limiter.until_ready())
                .await
                .is_none()
        {
            return Attempt::NotStarted;
        }
        if deadline.is_triggered() {
            return Attempt::NotStarted;
        }
        let started = Instant::now();
        let send = self.courier.send(message);
        tokio::pin!(send);
        let mut ticks = tokio::time::interval(self.config.lease / 3);
        ticks.tick().await;
        loop {
            tokio::select! {
                biased;
                outcome = &mut send => {
                    self.instruments.attempt(started.elapsed());
                    return Attempt::Done(Ok(outcome));
                }
                _ = deadline.wait() => return Attempt::Abandoned,
                _ = ticks.tick() => {
                    if let Err(e) = work.progress().await {
                        warn!(error = %e, "could not report progress");
                    }
                }
            }
        }
    }
}

/// What became of one claimed job's send.
enum Attempt {
    /// Sent, with this outcome; or skipped, for this reason.
    Done(Result<SendOutcome, String>),
    /// The shutdown deadline came before the send started: nothing went out.
    NotStarted,
    /// The shutdown deadline came mid-send: whether it went out is unknown.
    Abandoned,
}

/// The record of a claimed job handed back unsent: due again at once, its lease released.
/// The claim counted an attempt that never happened; that costs one step of the retry
/// schedule, which is cheaper than a second statement to undo it.
fn handed_back(job: &DeliveryJob, claim: &Claimed, now: OffsetDateTime) -> AttemptOutcome {
    AttemptOutcome {
        delivery_key: job.delivery_key.clone(),
        incident_id: claim.incident_id,
        event_id: claim.event_id,
        state: "retrying",
        next_attempt_at: Some(now),
        provider_id: None,
        error: None,
        detail: serde_json::json!({
            "outcome": "handed_back",
            "reason": "the worker stopped before sending; nothing was sent",
        }),
    }
}

fn answer(result: Result<(), tocsin_bus::BusError>) {
    if let Err(e) = result {
        // The job comes back after its ack wait and finds its recorded outcome.
        warn!(error = %e, "could not answer JetStream");
    }
}
