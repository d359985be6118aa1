//! After a send: write its outcome to the ledger, then answer JetStream.
//!
//! An outcome known is never thrown away. If PostgreSQL does not answer (a restart, a
//! failover), the delivery keeps its outcome, keeps telling JetStream it is still working on
//! the job (so no other worker gets it), and writes again until PostgreSQL is back. Giving up
//! would let the lease lapse and another worker send again a message whose fate was known.
//! Only the shutdown deadline ends the wait; then the attempt is left as a lost one, for the
//! channel's policy on unknown outcomes.
//!
//! The writes of deliveries settling together share one statement: [`recorder`] and
//! [`starter`] are the group-commit queues every delivery of the process goes through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tocsin_bus::{DeliveryJob, Work};
use tocsin_core::{Channel, SendOutcome};
use tocsin_runtime::Shutdown;
use tocsin_store::{AttemptOutcome, Claimed, FailedDelivery, Store};
use tokio::sync::Notify;
use tracing::{error, warn};

use crate::courier::Courier;
use crate::decision::Reply;
use crate::instruments::Outcome;
use crate::send::{Attempt, Ticket};
use crate::worker::{Handled, Worker, answer};
use tocsin_runtime::coalesce::Coalescer;

/// The longest pause between two tries of a ledger write.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(2);
/// Rows one shared statement writes at most.
const MOST_PER_STATEMENT: usize = 512;
/// Under load, the shortest time between two statements of one queue (see [`Coalescer`]):
/// a few milliseconds more per send, against a statement per send finishing.
const LINGER: Duration = Duration::from_millis(5);

/// The queue that marks sends begun: each request answers whether `owner` still holds the
/// delivery (only then may it be sent), or the error that kept the statement from running.
pub(crate) fn starter(store: Store, owner: String) -> Coalescer<String, Result<bool, String>> {
    Coalescer::spawn(MOST_PER_STATEMENT, LINGER, move |keys: Vec<String>| {
        let (store, owner) = (store.clone(), owner.clone());
        async move {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            match store.start_sends(&owner, &refs).await {
                Ok(started) => {
                    let started: std::collections::HashSet<String> = started.into_iter().collect();
                    keys.iter().map(|key| Ok(started.contains(key))).collect()
                }
                Err(e) => keys.iter().map(|_| Err(e.to_string())).collect(),
            }
        }
    })
}

/// The queue that records outcomes, and wakes the dispatcher when a settled delivery had a
/// later message to the same recipient parked behind it.
pub(crate) fn recorder(
    store: Store,
    owner: String,
    unblocked: Arc<Notify>,
) -> Coalescer<AttemptOutcome, Result<(), String>> {
    Coalescer::spawn(
        MOST_PER_STATEMENT,
        LINGER,
        move |outcomes: Vec<AttemptOutcome>| {
            let (store, owner, unblocked) = (store.clone(), owner.clone(), unblocked.clone());
            async move {
                match store.record_attempts(&owner, &outcomes).await {
                    Ok(recorded) => {
                        if recorded.unblocked > 0 {
                            unblocked.notify_one();
                        }
                        outcomes.iter().map(|_| Ok(())).collect()
                    }
                    Err(e) => outcomes.iter().map(|_| Err(e.to_string())).collect(),
                }
            }
        },
    )
}

impl<C: Courier> Worker<C> {
    /// Records what became of `ticket`'s delivery, disables a webhook endpoint that is gone,
    /// then answers JetStream.
    pub(crate) async fn settle(
        &self,
        ticket: Ticket,
        attempt: Attempt,
        elapsed: Duration,
        deadline: &Shutdown,
    ) -> Handled {
        let Ticket {
            work,
            job,
            claim,
            in_hand,
        } = ticket;
        let key = job.delivery_key.clone();
        let now = OffsetDateTime::now_utc();
        let outcome = match attempt {
            Attempt::Done(outcome) => outcome,
            Attempt::NotStarted => {
                let record = handed_back(&job, &claim, now);
                if self.persist(&work, deadline, record).await {
                    answer(work.release().await);
                }
                return Handled::HandedBack { key };
            }
            Attempt::Deferred => {
                let record = deferred(&job, &claim, now + crate::destinations::DEFERRAL);
                if self.persist(&work, deadline, record).await {
                    self.instruments.retry_scheduled();
                    answer(work.ack().await);
                }
                return Handled::Parked { key };
            }
            Attempt::Abandoned => {
                // Unanswered on purpose: the job returns when its ack wait ends, the lease
                // has lapsed by then, and the channel's policy for a lost attempt decides
                // (webhook: resend with the same id; email: once; SMS: ask Twilio first).
                warn!(delivery_key = %key,
                    "shutdown deadline reached mid-send; the outcome is unknown, left to the lease");
                return Handled::Abandoned { key };
            }
            Attempt::Lost => {
                answer(work.ack().await);
                return Handled::Lost { key };
            }
        };
        let gone = match &outcome {
            Ok(SendOutcome::Gone { reason }) => Some(reason.clone()),
            _ => None,
        };
        let (record, reply, handled) = self.decide(&job, &claim, outcome, elapsed, now);
        // A webhook endpoint that is gone (410), or that failed through a whole retry
        // schedule, is disabled so later messages stop trying it.
        let disable = match (claim.channel, gone) {
            (Channel::Webhook, Some(reason)) => Some(reason),
            (Channel::Webhook, None) if record.state == "dead" => Some(crate::untold::dead_reason(
                record.error.as_deref().unwrap_or_default(),
            )),
            _ => None,
        };
        // The ledger first, then JetStream: a crash in between redelivers a job whose outcome
        // is already recorded, and the claim finds it finished.
        //
        // The subscriber is told on another channel when this one stopped working for them:
        // their endpoint disabled, or their email or texts dead-lettered. (A fallback notice
        // failing in turn tells nobody more.)
        let fallback_reason = match (&disable, record.state, &claim.notice) {
            (_, _, Some(_)) => None,
            (Some(reason), _, None) => Some(reason.clone()),
            (None, "dead", None) => Some(crate::untold::dead_reason(
                record.error.as_deref().unwrap_or_default(),
            )),
            _ => None,
        };
        if !self.persist(&work, deadline, record).await {
            return handled;
        }
        if let Some(reason) = disable {
            self.disable_webhook(&work, &claim, &reason, deadline).await;
        }
        if let Some(reason) = fallback_reason {
            self.plan_fallback(&work, &claim, &reason, deadline).await;
        }
        if let Some(settled) = Outcome::of(&handled) {
            self.instruments.settled(settled, 1);
        }
        match reply {
            Reply::Ack => answer(work.ack().await),
            Reply::Park => {
                self.instruments.retry_scheduled();
                answer(work.ack().await)
            }
            Reply::Dead(reason) => {
                self.instruments.dead_lettered();
                if let Err(e) = self.bus.publish_dead_letter(&job, &reason).await {
                    warn!(error = %e, delivery_key = %job.delivery_key, "could not publish the dead letter; the ledger has it");
                }
                answer(work.ack().await);
            }
        }
        // Answered: its place in hand goes to the next job.
        drop(in_hand);
        handled
    }

    /// Records `record`, trying until PostgreSQL answers or `deadline`; true once recorded.
    async fn persist(&self, work: &Work, deadline: &Shutdown, record: AttemptOutcome) -> bool {
        let key = record.delivery_key.clone();
        let written = self
            .retry_write(work, deadline, "the outcome", || {
                let (records, record) = (self.records.clone(), record.clone());
                async move {
                    records
                        .call(record)
                        .await
                        .unwrap_or_else(|| Err("the recorder stopped".into()))
                }
            })
            .await;
        if written.is_err() {
            error!(delivery_key = %key,
                "could not record the outcome before the shutdown deadline; the attempt stays leased and counts as lost");
        }
        written.is_ok()
    }

    /// Records the fallback notice for `claim`'s failed channel. Like the endpoint's
    /// disabling, it follows the outcome's record: for a dead delivery, a worker lost in
    /// between leaves both to the dispatcher's sweep ([`crate::untold`]).
    async fn plan_fallback(&self, work: &Work, claim: &Claimed, reason: &str, deadline: &Shutdown) {
        let failed = FailedDelivery {
            incident_id: claim.incident_id,
            event_id: claim.event_id,
            event_version: claim.event_version,
            subscriber_id: claim.subscriber_id,
            channel: claim.channel,
        };
        let planned = self
            .retry_write(work, deadline, "a fallback notice", || async {
                self.store
                    .plan_fallback(&failed, reason)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        match planned {
            Ok(planned) => crate::untold::note_planned(&failed, &planned),
            Err(_) => error!(subscriber_id = %claim.subscriber_id,
                "could not record the fallback notice before the shutdown deadline"),
        }
    }

    async fn disable_webhook(
        &self,
        work: &Work,
        claim: &Claimed,
        reason: &str,
        deadline: &Shutdown,
    ) {
        warn!(subscriber_id = %claim.subscriber_id, %reason, "webhook endpoint disabled");
        let disabled = self
            .retry_write(work, deadline, "a disabled webhook endpoint", || async {
                self.store
                    .disable_webhook(
                        claim.subscriber_id,
                        claim.incident_id,
                        claim.event_id,
                        reason,
                    )
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        if disabled.is_err() {
            error!(subscriber_id = %claim.subscriber_id,
                "could not disable the webhook endpoint before the shutdown deadline");
        }
    }

    /// Runs `write` until it succeeds, backing off up to [`MAX_WRITE_BACKOFF`] and telling
    /// JetStream that `work` is still in progress meanwhile. Only `deadline` ends it early.
    async fn retry_write<T, F, Fut>(
        &self,
        work: &Work,
        deadline: &Shutdown,
        what: &str,
        mut write: F,
    ) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match write().await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            if deadline.is_triggered() {
                return Err(error);
            }
            warn!(%error, what, retry_ms = backoff.as_millis() as u64,
                "could not write to PostgreSQL; keeping the outcome and trying again");
            if let Err(e) = work.progress().await {
                warn!(error = %e, "could not report progress");
            }
            deadline.unless_triggered(tokio::time::sleep(backoff)).await;
            backoff = (backoff * 2).min(MAX_WRITE_BACKOFF);
        }
    }
}

/// The record of a claimed job handed back unsent: due again at once, its lease released,
/// and the attempt the claim counted given back (nothing was sent).
fn handed_back(job: &DeliveryJob, claim: &Claimed, now: OffsetDateTime) -> AttemptOutcome {
    AttemptOutcome {
        delivery_key: job.delivery_key.clone(),
        incident_id: claim.incident_id,
        event_id: claim.event_id,
        state: "retrying",
        next_attempt_at: Some(now),
        parked: false,
        unknown: false,
        not_attempted: true,
        provider_id: None,
        error: None,
        detail: serde_json::json!({
            "outcome": "handed_back",
            "reason": "the worker stopped before sending; nothing was sent",
        }),
    }
}

/// The record of a claimed job put off because its endpoint already has as many sends in
/// flight and waiting as one endpoint may: parked until `until`, when the dispatcher
/// publishes it again, its lease released and its attempt given back (nothing was sent).
fn deferred(job: &DeliveryJob, claim: &Claimed, until: OffsetDateTime) -> AttemptOutcome {
    AttemptOutcome {
        delivery_key: job.delivery_key.clone(),
        incident_id: claim.incident_id,
        event_id: claim.event_id,
        state: "retrying",
        next_attempt_at: Some(until),
        parked: true,
        unknown: false,
        not_attempted: true,
        provider_id: None,
        error: None,
        detail: serde_json::json!({
            "outcome": "deferred",
            "reason": "its endpoint already had as many messages in flight as one endpoint may; nothing was sent",
        }),
    }
}
