//! After the sends: write every outcome to the ledger, then answer JetStream.
//!
//! An outcome known is never thrown away. If PostgreSQL does not answer (a restart, a
//! failover), the worker keeps the outcomes, keeps telling JetStream it is still working on
//! the jobs (so no other worker gets them), and writes again until PostgreSQL is back. Giving
//! up would let the lease lapse and another worker send again a message whose fate was known.
//! Only the shutdown deadline ends the wait; then the attempts are left as lost ones, for the
//! channel's policy on unknown outcomes.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use tocsin_bus::{DeliveryJob, Work};
use tocsin_core::{Channel, SendOutcome};
use tocsin_runtime::Shutdown;
use tocsin_store::{AttemptOutcome, Claimed, StoreError};
use tracing::{error, warn};

use crate::DeliveryError;
use crate::courier::Courier;
use crate::decision::Reply;
use crate::instruments::Outcome;
use crate::send::{Attempt, Sent};
use crate::worker::{Handled, Worker, answer};

/// The longest pause between two tries of a ledger write.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(2);

impl<C: Courier> Worker<C> {
    /// Records what the sends did, disables webhook endpoints that are gone, then answers
    /// JetStream for each job.
    pub(crate) async fn finish(
        &self,
        results: Vec<Sent>,
        deadline: &Shutdown,
    ) -> Result<Vec<Handled>, DeliveryError> {
        let now = OffsetDateTime::now_utc();
        let mut records = Vec::with_capacity(results.len());
        let mut answers = Vec::with_capacity(results.len());
        let mut disable = Vec::new();
        let mut handled = Vec::with_capacity(results.len());
        for Sent {
            work,
            job,
            claim,
            attempt,
            elapsed,
        } in results
        {
            let key = job.delivery_key.clone();
            let outcome = match attempt {
                Attempt::Done(outcome) => outcome,
                Attempt::NotStarted => {
                    records.push(handed_back(&job, &claim, now));
                    answers.push((work, job, Reply::Release, Handled::HandedBack { key }));
                    continue;
                }
                Attempt::Abandoned => {
                    // Unanswered on purpose: the job returns when its ack wait ends, the
                    // lease has lapsed by then, and the channel's policy for a lost attempt
                    // decides (webhook: resend with the same id; email: once; SMS: never).
                    warn!(delivery_key = %key,
                        "shutdown deadline reached mid-send; the outcome is unknown, left to the lease");
                    handled.push(Handled::Abandoned { key });
                    continue;
                }
                Attempt::Lost => {
                    answer(work.ack().await);
                    handled.push(Handled::Lost { key });
                    continue;
                }
            };
            let gone = match &outcome {
                Ok(SendOutcome::Gone { reason }) => Some(reason.clone()),
                _ => None,
            };
            let (record, reply, outcome) = self.decide(&job, &claim, outcome, elapsed, now);
            // A webhook endpoint that is gone (410), or that failed through a whole retry
            // schedule, is disabled so later messages stop trying it.
            if claim.channel == Channel::Webhook {
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
            answers.push((work, job, reply, outcome));
        }

        // The ledger first, then JetStream: a crash in between redelivers jobs whose outcome
        // is already recorded, and the claim finds them finished.
        let works: Vec<&Work> = answers.iter().map(|(work, ..)| work).collect();
        let recorded = self
            .persist(&works, deadline, "the outcomes", || {
                self.store.record_attempts(&self.config.owner, &records)
            })
            .await?;
        for (claim, reason) in &disable {
            warn!(subscriber_id = %claim.subscriber_id, %reason, "webhook endpoint disabled");
            self.persist(&works, deadline, "a disabled webhook endpoint", || {
                self.store.disable_webhook(
                    claim.subscriber_id,
                    claim.incident_id,
                    claim.event_id,
                    reason,
                )
            })
            .await?;
        }
        if recorded.unblocked > 0 {
            self.unblocked.notify_one();
        }
        for (work, job, reply, outcome) in answers {
            if let Some(settled) = Outcome::of(&outcome) {
                self.instruments.settled(settled, 1);
            }
            match reply {
                Reply::Ack => answer(work.ack().await),
                Reply::Release => answer(work.release().await),
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
            handled.push(outcome);
        }
        Ok(handled)
    }

    /// Runs `write` until it succeeds, backing off up to [`MAX_WRITE_BACKOFF`] and telling
    /// JetStream that `works` are still in progress meanwhile. Only `deadline` ends it early.
    async fn persist<T, F, Fut>(
        &self,
        works: &[&Work],
        deadline: &Shutdown,
        what: &str,
        mut write: F,
    ) -> Result<T, DeliveryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match write().await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            if deadline.is_triggered() {
                error!(%error, what, jobs = works.len(),
                    "could not write to PostgreSQL before the shutdown deadline; these attempts stay leased and count as lost");
                return Err(error.into());
            }
            warn!(%error, what, retry_ms = backoff.as_millis() as u64,
                "could not write to PostgreSQL; keeping the outcomes and trying again");
            for work in works {
                if let Err(e) = work.progress().await {
                    warn!(error = %e, "could not report progress");
                }
            }
            deadline.unless_triggered(tokio::time::sleep(backoff)).await;
            backoff = (backoff * 2).min(MAX_WRITE_BACKOFF);
        }
    }
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
        parked: false,
        unknown: false,
        provider_id: None,
        error: None,
        detail: serde_json::json!({
            "outcome": "handed_back",
            "reason": "the worker stopped before sending; nothing was sent",
        }),
    }
}
