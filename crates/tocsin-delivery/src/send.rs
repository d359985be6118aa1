//! From a claimed batch to one task per delivery: load what the messages need, settle those
//! that need no send, ask the provider about earlier attempts whose outcome was unknown, and
//! send the rest, each once a send slot of its lane is free.
//!
//! Each send is marked begun in the ledger just before the provider is called (the marks of
//! sends starting together share a statement). The mark is what keeps a crash honest: a
//! delivery whose worker dies before it was never sent, and the next holder simply sends it;
//! one whose worker dies after it may have gone out, and the channel's policy for unknown
//! outcomes decides (SMS: never blindly again). Waiting for a slot or for the rate limiter
//! never turns a job into an unknown outcome.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use time::OffsetDateTime;
use tocsin_bus::{DeliveryJob, Work};
use tocsin_core::{Channel, EventId, SendOutcome, Subscriber, SubscriberId};
use tocsin_runtime::Shutdown;
use tocsin_store::{Claimed, IncidentAsOf, ThreadQuery};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
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
    /// Its endpoint was full (sends in flight and waiting): put off, nothing sent.
    Deferred,
}

/// What a batch's messages need, read beside its claim.
pub(crate) struct Loaded {
    subscribers: HashMap<SubscriberId, (Subscriber, Option<String>)>,
    incidents: HashMap<EventId, IncidentAsOf>,
    /// By delivery key, the first message of its thread that already went out; absent for a
    /// reader's first message about the incident.
    thread_roots: HashMap<String, String>,
}

/// One claimed delivery on its way.
pub(crate) struct Ticket {
    pub(crate) work: Work,
    pub(crate) job: DeliveryJob,
    pub(crate) claim: Claimed,
    /// Its place among the lane's jobs in hand, given back when it is answered.
    pub(crate) in_hand: OwnedSemaphorePermit,
}

/// What a claimed job needs before it can be settled.
enum Prepared {
    Send(Message),
    /// An earlier attempt's outcome is unknown and the channel reconciles: ask the provider.
    Reconcile(Message),
    Settled(Result<SendOutcome, String>),
}

impl<C: Courier> Worker<C> {
    /// Reads what the messages of `jobs` need: their recipients and their incidents as of
    /// their events. Run beside the batch's claim, as it needs only the jobs.
    pub(crate) async fn load(&self, jobs: &[&DeliveryJob]) -> Result<Loaded, DeliveryError> {
        let mut subscriber_ids: Vec<SubscriberId> =
            jobs.iter().map(|job| job.subscriber_id.into()).collect();
        subscriber_ids.sort_unstable();
        subscriber_ids.dedup();
        // One entry per subscriber, read by every job of the batch addressed to them: a
        // batch often holds several messages to one recipient.
        let subscribers = async {
            Ok::<_, DeliveryError>(self.store.subscribers_for_delivery(&subscriber_ids).await?)
        };
        let incidents = async {
            let mut incidents: HashMap<EventId, IncidentAsOf> = HashMap::new();
            for job in jobs {
                let event_id = EventId::from(job.event_id);
                if let std::collections::hash_map::Entry::Vacant(slot) = incidents.entry(event_id) {
                    let as_of = self
                        .store
                        .incident_as_of(job.incident_id.into(), job.event_version)
                        .await?
                        .ok_or_else(|| DeliveryError::UnknownEvent(event_id.to_string()))?;
                    slot.insert(as_of);
                }
            }
            Ok::<_, DeliveryError>(incidents)
        };
        let thread_roots = async {
            let queries: Vec<ThreadQuery> = jobs
                .iter()
                .map(|job| ThreadQuery {
                    delivery_key: job.delivery_key.clone(),
                    incident_id: job.incident_id.into(),
                    subscriber_id: job.subscriber_id.into(),
                    channel: job.channel,
                    event_version: job.event_version,
                })
                .collect();
            Ok::<_, DeliveryError>(self.store.thread_roots(&queries).await?)
        };
        let (subscribers, incidents, thread_roots) =
            tokio::try_join!(subscribers, incidents, thread_roots)?;
        Ok(Loaded {
            subscribers,
            incidents,
            thread_roots,
        })
    }

    /// Asks the provider about earlier unknown attempts, and starts one task per delivery,
    /// with what [`Worker::load`] read for them.
    pub(crate) async fn start_deliveries(
        &self,
        claimed: Vec<(Work, DeliveryJob, Claimed, OwnedSemaphorePermit)>,
        loaded: Loaded,
        deadline: &Shutdown,
    ) -> Result<Vec<JoinHandle<Handled>>, DeliveryError> {
        let Loaded {
            subscribers,
            incidents,
            thread_roots,
        } = loaded;
        for (_, _, claim, _) in &claimed {
            if !incidents.contains_key(&claim.event_id) {
                return Err(DeliveryError::UnknownEvent(claim.event_id.to_string()));
            }
        }
        let mut running = Vec::with_capacity(claimed.len());
        let mut to_reconcile = Vec::new();
        for (work, job, claim, in_hand) in claimed {
            let subscriber = subscribers.get(&claim.subscriber_id);
            let thread_root = thread_roots.get(&job.delivery_key).cloned();
            let prepared =
                self.prepare(&claim, subscriber, &incidents[&claim.event_id], thread_root);
            let ticket = Ticket {
                work,
                job,
                claim,
                in_hand,
            };
            match prepared {
                Prepared::Send(message) => running.push(self.spawn_send(ticket, message, deadline)),
                Prepared::Reconcile(message) => to_reconcile.push((ticket, message)),
                Prepared::Settled(outcome) => {
                    running.push(self.spawn_settle(ticket, Attempt::Done(outcome), deadline));
                }
            }
        }
        for ((ticket, message), reconciled) in self.reconcile(to_reconcile).await {
            running.push(match reconciled {
                Reconciled::NotFound => self.spawn_send(ticket, message, deadline),
                Reconciled::Found(outcome) => {
                    self.spawn_settle(ticket, Attempt::Done(Ok(outcome)), deadline)
                }
                Reconciled::Unsure(reason) => {
                    let outcome = SendOutcome::Unknown {
                        reason: format!(
                            "could not ask the provider about the earlier attempt: {reason}"
                        ),
                    };
                    self.spawn_settle(ticket, Attempt::Done(Ok(outcome)), deadline)
                }
            });
        }
        Ok(running)
    }

    /// What to do with `claim`: send it, ask the provider about an earlier attempt first,
    /// or settle it without a send (`Ok`: the channel's policy after a lost attempt; `Err`:
    /// skipped, and why).
    fn prepare(
        &self,
        claim: &Claimed,
        subscriber: Option<&(Subscriber, Option<String>)>,
        as_of: &IncidentAsOf,
        thread_root: Option<String>,
    ) -> Prepared {
        let Some((subscriber, secret)) = subscriber else {
            return Prepared::Settled(Err(
                "the subscriber was deleted; their contact details are gone".to_owned(),
            ));
        };
        if subscriber.opted_out.contains(&claim.channel) {
            return Prepared::Settled(Err(format!(
                "the subscriber's {} address opted out (unsubscribed or replied STOP)",
                claim.channel
            )));
        }
        if claim.channel == Channel::Webhook
            && let Some(reason) = &subscriber.webhook_disabled
        {
            return Prepared::Settled(Err(format!("the webhook endpoint is disabled: {reason}")));
        }
        let message = self.message(
            claim,
            as_of.clone(),
            subscriber.clone(),
            secret.clone(),
            thread_root,
        );
        let earlier_unknown = claim.after_lost_attempt || claim.after_unknown;
        match self.courier.policy().unknown {
            UnknownPolicy::Reconcile if earlier_unknown => {
                let began = claim.previous_send_started_at.unwrap_or(claim.created_at);
                if OffsetDateTime::now_utc() < began + self.courier.reconcile_after() {
                    // The earlier request may still be in progress at the provider: asked now,
                    // it would say "not found" and the message go out twice. Ask later.
                    Prepared::Settled(Ok(SendOutcome::Unknown {
                        reason: "the earlier attempt is too recent to ask the provider about"
                            .into(),
                    }))
                } else {
                    Prepared::Reconcile(message)
                }
            }
            UnknownPolicy::ResendOnce if claim.after_lost_attempt && claim.unknowns > 1 => {
                Prepared::Settled(Ok(SendOutcome::Unknown {
                    reason: "a second attempt was lost mid-send too; not resent again".into(),
                }))
            }
            _ => Prepared::Send(message),
        }
    }

    /// Asks the provider about each earlier attempt whose outcome is unknown.
    async fn reconcile(
        &self,
        asking: Vec<(Ticket, Message)>,
    ) -> Vec<((Ticket, Message), Reconciled)> {
        let asks = asking.into_iter().map(|(ticket, message)| async move {
            let since = ticket
                .claim
                .previous_send_started_at
                .unwrap_or(ticket.claim.created_at);
            let reconciled = self.courier.reconcile(&message, since).await;
            ((ticket, message), reconciled)
        });
        stream::iter(asks)
            .buffer_unordered(self.config.batch.max(1))
            .collect()
            .await
    }

    fn spawn_send(
        &self,
        ticket: Ticket,
        message: Message,
        deadline: &Shutdown,
    ) -> JoinHandle<Handled> {
        let worker = self.clone();
        let deadline = deadline.clone();
        tokio::spawn(async move { worker.deliver(ticket, message, &deadline).await })
    }

    fn spawn_settle(
        &self,
        ticket: Ticket,
        attempt: Attempt,
        deadline: &Shutdown,
    ) -> JoinHandle<Handled> {
        let worker = self.clone();
        let deadline = deadline.clone();
        tokio::spawn(async move {
            worker
                .settle(ticket, attempt, Duration::ZERO, &deadline)
                .await
        })
    }

    /// Waits for `until`, telling JetStream meanwhile that `ticket`'s job is in progress;
    /// `None` if the shutdown deadline came first. Waiting never turns a job into an unknown
    /// outcome: nothing has been sent yet.
    async fn wait_in_progress<T>(
        &self,
        ticket: &Ticket,
        deadline: &Shutdown,
        until: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let waiting = deadline.unless_triggered(until);
        ticket
            .work
            .in_progress(self.config.lease / 3, waiting)
            .await
    }

    /// One delivery: a turn at its destination where bounded, a send slot of its lane, the
    /// rate limiter, the mark, the send, then the record and the answer. Its lease is renewed
    /// until it is settled.
    async fn deliver(self, ticket: Ticket, message: Message, deadline: &Shutdown) -> Handled {
        let _holding = self.held.hold(vec![ticket.job.delivery_key.clone()]);
        // A turn at its destination first, then a send slot: a delivery waiting for a busy
        // endpoint holds no slot another endpoint's messages could use.
        let mut at_destination = None;
        if let (Some(destinations), Some(destination)) =
            (&self.destinations, self.courier.destination(&message))
        {
            let Some(mut entered) = destinations.enter(&destination) else {
                return self
                    .settle(ticket, Attempt::Deferred, Duration::ZERO, deadline)
                    .await;
            };
            if self
                .wait_in_progress(&ticket, deadline, entered.turn())
                .await
                .is_none()
            {
                return self
                    .settle(ticket, Attempt::NotStarted, Duration::ZERO, deadline)
                    .await;
            }
            at_destination = Some(entered);
        }
        let sending = self.slots(ticket.job.lane).sending.clone();
        let slot = self
            .wait_in_progress(&ticket, deadline, sending.acquire_owned())
            .await;
        let Some(Ok(_slot)) = slot else {
            return self
                .settle(ticket, Attempt::NotStarted, Duration::ZERO, deadline)
                .await;
        };
        if let Some(limiter) = &self.limiter
            && self
                .wait_in_progress(&ticket, deadline, limiter.until_ready())
                .await
                .is_none()
        {
            return self
                .settle(ticket, Attempt::NotStarted, Duration::ZERO, deadline)
                .await;
        }
        if deadline.is_triggered() {
            return self
                .settle(ticket, Attempt::NotStarted, Duration::ZERO, deadline)
                .await;
        }
        let attempt = match self.starts.call(ticket.job.delivery_key.clone()).await {
            Some(Ok(true)) => None,
            Some(Ok(false)) => Some(Attempt::Lost),
            Some(Err(e)) => {
                warn!(error = %e, "could not mark the send begun; not sending it now");
                Some(Attempt::NotStarted)
            }
            None => Some(Attempt::NotStarted),
        };
        if let Some(attempt) = attempt {
            return self.settle(ticket, attempt, Duration::ZERO, deadline).await;
        }
        let started = Instant::now();
        let attempt = self
            .send_with_progress(&ticket.work, &message, deadline)
            .await;
        if let Attempt::Done(Ok(SendOutcome::Delivered { .. })) = attempt {
            self.instruments
                .accepted(message.incident.severity, message.event.recorded_at);
        }
        drop(_slot);
        drop(at_destination);
        self.settle(ticket, attempt, started.elapsed(), deadline)
            .await
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
        let send = async {
            let outcome = self.courier.send(message).await;
            self.instruments.attempt(started.elapsed());
            outcome
        };
        let sent = work
            .in_progress(self.config.lease / 3, deadline.unless_triggered(send))
            .await;
        match sent {
            Some(outcome) => Attempt::Done(Ok(outcome)),
            None => Attempt::Abandoned,
        }
    }
}
