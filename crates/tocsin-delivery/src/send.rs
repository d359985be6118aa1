//! Sending a batch's claimed deliveries: load what the messages need, settle those that need
//! no send, and send the rest in groups the rate limiter lets through, each group marked as
//! begun in the ledger just before its sends start.
//!
//! The mark is what keeps a crash honest. A delivery whose worker dies before the mark was
//! never sent, and the next holder simply sends it; one whose worker dies after it may have
//! gone out, and the channel's policy for unknown outcomes decides (SMS: never blindly
//! again). Claiming a whole batch and then waiting for the rate limiter no longer turns every
//! job still waiting into an unknown outcome.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use tocsin_bus::{DeliveryJob, Work};
use tocsin_core::{Channel, EventId, SendOutcome, Subscriber, SubscriberId};
use tocsin_runtime::Shutdown;
use tocsin_store::{Claimed, IncidentAsOf};
use tracing::warn;

use crate::DeliveryError;
use crate::courier::{Courier, Message, Reconciled, UnknownPolicy};
use crate::worker::{Handled, Worker};

/// What became of one claimed job's send.
pub(crate) enum Attempt {
    /// Sent, with this outcome; or settled without a send (`Ok`: the policy's outcome, such
    /// as unknown after a lost attempt; `Err`: skipped, for this reason).
    Done(Result<SendOutcome, String>),
    /// Nothing went out (the shutdown deadline came first, or the ledger could not mark the
    /// send begun): due again at once.
    NotStarted,
    /// The shutdown deadline came mid-send: whether it went out is unknown.
    Abandoned,
    /// The claim was no longer this worker's when the send was to begin.
    Lost,
}

/// One claimed job and what became of it.
pub(crate) struct Sent {
    pub(crate) work: Work,
    pub(crate) job: DeliveryJob,
    pub(crate) claim: Claimed,
    pub(crate) attempt: Attempt,
    pub(crate) elapsed: Duration,
}

/// What a claimed job needs before it can be settled.
enum Prepared {
    Send(Message),
    /// An earlier attempt's outcome is unknown and the channel reconciles: ask the provider.
    Reconcile(Message),
    Settled(Result<SendOutcome, String>),
}

/// A claimed job whose message is ready to send.
struct Ready {
    work: Work,
    job: DeliveryJob,
    claim: Claimed,
    message: Message,
}

impl<C: Courier> Worker<C> {
    /// Sends what was claimed, records every outcome, then answers JetStream.
    pub(crate) async fn send_claimed(
        &self,
        claimed: Vec<(Work, DeliveryJob, Claimed)>,
        deadline: &Shutdown,
    ) -> Result<Vec<Handled>, DeliveryError> {
        let subscriber_ids: Vec<SubscriberId> =
            claimed.iter().map(|(_, _, c)| c.subscriber_id).collect();
        // One entry per subscriber, read by every job of the batch addressed to them: a
        // batch often holds several messages to one recipient.
        let subscribers = self.store.subscribers_for_delivery(&subscriber_ids).await?;
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

        let mut results = Vec::with_capacity(claimed.len());
        let mut ready = Vec::new();
        let mut to_reconcile = Vec::new();
        for (work, job, claim) in claimed {
            let subscriber = subscribers.get(&claim.subscriber_id);
            match self.prepare(&claim, subscriber, &incidents[&claim.event_id]) {
                Prepared::Send(message) => ready.push(Ready {
                    work,
                    job,
                    claim,
                    message,
                }),
                Prepared::Reconcile(message) => to_reconcile.push(Ready {
                    work,
                    job,
                    claim,
                    message,
                }),
                Prepared::Settled(outcome) => results.push(Sent {
                    work,
                    job,
                    claim,
                    attempt: Attempt::Done(outcome),
                    elapsed: Duration::ZERO,
                }),
            }
        }
        for (asked, reconciled) in self.reconcile(to_reconcile).await {
            match reconciled {
                Reconciled::NotFound => ready.push(asked),
                Reconciled::Found(outcome) => {
                    results.push(asked.not_sent(Attempt::Done(Ok(outcome))))
                }
                Reconciled::Unsure(reason) => {
                    results.push(asked.not_sent(Attempt::Done(Ok(SendOutcome::Unknown {
                        reason: format!(
                            "could not ask the provider about the earlier attempt: {reason}"
                        ),
                    }))))
                }
            }
        }
        results.extend(self.send_ready(ready, deadline).await);
        self.finish(results, deadline).await
    }

    /// What to do with `claim`: send it, ask the provider about an earlier attempt first,
    /// or settle it without a send (`Ok`: the channel's policy after a lost attempt; `Err`:
    /// skipped, and why).
    fn prepare(
        &self,
        claim: &Claimed,
        subscriber: Option<&(Subscriber, Option<String>)>,
        as_of: &IncidentAsOf,
    ) -> Prepared {
        let Some((subscriber, secret)) = subscriber else {
            return Prepared::Settled(Err(
                "the subscriber was deleted; their contact details are gone".to_owned(),
            ));
        };
        if claim.channel == Channel::Webhook
            && let Some(reason) = &subscriber.webhook_disabled
        {
            return Prepared::Settled(Err(format!("the webhook endpoint is disabled: {reason}")));
        }
        let message = self.message(claim, as_of.clone(), subscriber.clone(), secret.clone());
        let earlier_unknown = claim.after_lost_attempt || claim.after_unknown;
        match self.courier.policy().unknown {
            UnknownPolicy::Reconcile if earlier_unknown => Prepared::Reconcile(message),
            UnknownPolicy::ResendOnce if claim.after_lost_attempt && claim.unknowns > 1 => {
                Prepared::Settled(Ok(SendOutcome::Unknown {
                    reason: "a second attempt was lost mid-send too; not resent again".into(),
                }))
            }
            _ => Prepared::Send(message),
        }
    }

    /// Asks the provider about each earlier attempt whose outcome is unknown.
    async fn reconcile(&self, asking: Vec<Ready>) -> Vec<(Ready, Reconciled)> {
        let asks = asking.into_iter().map(|ready| async move {
            let since = ready
                .claim
                .previous_send_started_at
                .unwrap_or(ready.claim.created_at);
            let reconciled = self.courier.reconcile(&ready.message, since).await;
            (ready, reconciled)
        });
        stream::iter(asks)
            .buffer_unordered(self.config.send_concurrency.max(1))
            .collect()
            .await
    }

    /// Sends `ready` in groups: each group waits for the rate limiter, is marked begun in
    /// the ledger, then goes out concurrently.
    async fn send_ready(&self, ready: Vec<Ready>, deadline: &Shutdown) -> Vec<Sent> {
        let group_size = self.send_group_size();
        let mut results = Vec::with_capacity(ready.len());
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let group: Vec<Ready> = ready.by_ref().take(group_size).collect();
            if !self.wait_for_rate(group.len(), deadline).await {
                results.extend(group.into_iter().map(|r| r.not_sent(Attempt::NotStarted)));
                continue;
            }
            let keys: Vec<&str> = group.iter().map(|r| r.job.delivery_key.as_str()).collect();
            let started: HashSet<String> =
                match self.store.start_sends(&self.config.owner, &keys).await {
                    Ok(started) => started.into_iter().collect(),
                    Err(e) => {
                        warn!(error = %e, "could not mark sends as begun; not sending them now");
                        results.extend(group.into_iter().map(|r| r.not_sent(Attempt::NotStarted)));
                        continue;
                    }
                };
            let (go, lost): (Vec<Ready>, Vec<Ready>) = group
                .into_iter()
                .partition(|r| started.contains(&r.job.delivery_key));
            results.extend(lost.into_iter().map(|r| r.not_sent(Attempt::Lost)));
            let sends = go.into_iter().map(|r| async move {
                let started = Instant::now();
                let attempt = self.send_with_progress(&r.work, &r.message, deadline).await;
                if let Attempt::Done(Ok(SendOutcome::Delivered { .. })) = attempt {
                    self.instruments
                        .accepted(r.message.incident.severity, r.message.event.recorded_at);
                }
                Sent {
                    work: r.work,
                    job: r.job,
                    claim: r.claim,
                    attempt,
                    elapsed: started.elapsed(),
                }
            });
            results.extend(
                stream::iter(sends)
                    .buffer_unordered(group_size)
                    .collect::<Vec<_>>()
                    .await,
            );
        }
        results
    }

    /// Sends begun together: as many as run concurrently, and no more than the rate
    /// limiter's burst (one second's worth), so that a group never waits on itself.
    fn send_group_size(&self) -> usize {
        let burst = self
            .config
            .rate_per_second
            .map_or(usize::MAX, |rate| rate.get() as usize);
        self.config.send_concurrency.min(burst).max(1)
    }

    /// Waits until the rate limiter lets `count` sends through; false if the deadline came
    /// first.
    async fn wait_for_rate(&self, count: usize, deadline: &Shutdown) -> bool {
        if deadline.is_triggered() {
            return false;
        }
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let count = std::num::NonZeroU32::new(u32::try_from(count).unwrap_or(u32::MAX))
            .unwrap_or(std::num::NonZeroU32::MIN);
        match deadline
            .unless_triggered(limiter.until_n_ready(count))
            .await
        {
            None => false,
            Some(Ok(())) => true,
            // The group is never larger than the burst; were it, send without waiting
            // rather than never.
            Some(Err(e)) => {
                warn!(error = %e, "a send group larger than the rate limiter's burst");
                true
            }
        }
    }

    /// Sends one message, telling JetStream the job is in progress while the send lasts. At
    /// `deadline` a send in progress is dropped and its outcome is unknown.
    async fn send_with_progress(
        &self,
        work: &Work,
        message: &Message,
        deadline: &Shutdown,
    ) -> Attempt {
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

impl Ready {
    fn not_sent(self, attempt: Attempt) -> Sent {
        Sent {
            work: self.work,
            job: self.job,
            claim: self.claim,
            attempt,
            elapsed: Duration::ZERO,
        }
    }
}
