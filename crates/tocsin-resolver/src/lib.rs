//! The preference resolver: consumes incident events from JetStream (a durable pull consumer
//! every replica shares) and turns each into one delivery job per recipient and channel,
//! recorded in the PostgreSQL ledger and published on the channel's subject.
//!
//! - [`fanout`]: one event's fan-out, page by page, and `PreviewFanout`'s reach count.
//! - [`Resolver`]: the consumer loop around it: ordering per incident (`order`: an
//!   incident's later events queue behind its running one without taking a slot), acks and
//!   retries, progress reports while an event is in hand, the `tocsin_consumer_pending`
//!   gauge, the check behind `/readyz` ([`ResolverReadiness`]), and the events stream and
//!   consumer recreated when NATS comes back empty.
//! - [`requeue`]: the periodic sweep that republishes, from the ledger, delivery jobs
//!   JetStream lost.
//!
//! An event is acknowledged only after every job is recorded and published and the fan-out
//! is appended to the delivery trail; until then a crash means a redelivery, and a replay
//! makes the same keys.
//!
//! On SIGTERM a resolver stops pulling and hands back the events it pulled but had not
//! started. Fan-outs in progress get the grace period to finish; one still running then is
//! dropped between two statements and its event handed back at once: every step of a
//! fan-out is safe to replay, so another replica (or this one, restarted) does it again.

mod error;
pub mod fanout;
mod order;
pub mod requeue;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tocsin_bus::{Bus, EventEnvelope, QueueSettings, Work, WorkQueue};
use tocsin_core::{IncidentId, RecordedEvent};
use tocsin_runtime::{Readiness, Shutdown};
use tocsin_store::Store;
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::{debug, error, info, warn};

pub use error::ResolveError;
use fanout::{Begun, Fanout};
pub use fanout::{FanoutConfig, Reach, Resolution};

/// How a resolver process behaves.
#[derive(Debug, Clone, Copy)]
pub struct ResolverConfig {
    pub fanout: FanoutConfig,
    /// Events fanned out at once by this replica (different incidents only), a big fan-out
    /// counting only for its first, small page. Up to four times as many may be in hand,
    /// queued behind their incident's running event.
    pub concurrency: usize,
    /// Big fan-outs walked at once past their first page, in slots of their own: a burst of
    /// big fan-outs never takes the slots a small incident needs.
    pub bulk_concurrency: usize,
    /// Delay before an event that arrived ahead of an earlier one is offered again.
    pub ordering_delay: Duration,
    pub queue: QueueSettings,
    /// How long fan-outs in progress may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            fanout: FanoutConfig::default(),
            concurrency: 4,
            bulk_concurrency: 2,
            ordering_delay: Duration::from_millis(250),
            queue: QueueSettings::resolver(),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// How often the consumer's pending count is read for `tocsin_consumer_pending`.
const PENDING_INTERVAL: Duration = Duration::from_secs(5);

/// How often the events stream and the consumer are checked (and recreated if NATS lost
/// them).
const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What happened to one message, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Resolved(Resolution),
    /// The message was not an event envelope; it was terminated.
    Poison,
    /// The fan-out failed; the message comes back after a delay.
    Retrying,
    /// The shutdown deadline came first: the fan-out was dropped unfinished and the event
    /// handed back for a replay.
    HandedBack,
}

/// A resolver replica.
#[derive(Debug, Clone)]
pub struct Resolver {
    store: Store,
    bus: Bus,
    config: ResolverConfig,
    /// Events in hand per incident, so that two events of one incident taken by this
    /// replica run in order instead of bouncing off each other with naks.
    chains: order::Chains,
}

impl Resolver {
    pub fn new(store: Store, bus: Bus, config: ResolverConfig) -> Self {
        Self {
            store,
            bus,
            config,
            chains: order::Chains::default(),
        }
    }

    /// How often an event in hand is reported in progress to JetStream.
    fn progress_interval(&self) -> Duration {
        self.config.queue.ack_wait / 3
    }

    /// The durable consumer this resolver reads from (created if missing).
    pub async fn queue(&self) -> Result<WorkQueue, ResolveError> {
        self.bus.ensure_deliveries_stream().await?;
        Ok(self.bus.resolver_queue(self.config.queue).await?)
    }

    /// The check behind `/readyz`: PostgreSQL answers, NATS is connected, and the durable
    /// consumer exists.
    pub fn readiness(&self) -> ResolverReadiness {
        ResolverReadiness {
            store: self.store.clone(),
            bus: self.bus.clone(),
        }
    }

    /// Handles one message: decode, fan out, then ack, nak with a delay, or terminate.
    pub async fn handle(&self, work: Work) -> Handled {
        match decode(&work).await {
            Some(event) => {
                let slots = Slots::new(&self.config);
                let never = Shutdown::new();
                self.handle_until(work, &event, &slots, &never, &never)
                    .await
            }
            None => Handled::Poison,
        }
    }

    /// Fans out `event` (the content of `work`) in the slots it needs, unless `deadline`
    /// triggers first: then the fan-out is dropped where it stands and the event handed back
    /// (redelivered at once). That is safe at any point, because a replay rewrites the same
    /// ledger rows (kept as they are), republishes the same jobs (dropped by JetStream as
    /// duplicates) and appends the trail entry once. An event whose slot has not come when
    /// `shutdown` triggers is handed back unstarted. Progress is reported to JetStream
    /// throughout, and for the events of the same incident queued behind it.
    async fn handle_until(
        &self,
        work: Work,
        event: &RecordedEvent,
        slots: &Slots,
        shutdown: &Shutdown,
        deadline: &Shutdown,
    ) -> Handled {
        let waiting = shutdown.unless_triggered(slots.express.acquire());
        let Some(express) = self.keep_in_hand(&work, event.incident_id, waiting).await else {
            if let Err(e) = work.release().await {
                warn!(error = %e, "could not hand an event back; it returns after its ack wait");
            }
            return Handled::HandedBack;
        };
        let express = express.expect("the slots are never closed");
        let fanout = self.fan_out(event, express, &slots.bulk);
        let outcome = self
            .keep_in_hand(&work, event.incident_id, deadline.unless_triggered(fanout))
            .await;
        let Some(outcome) = outcome else {
            warn!(incident_id = %event.incident_id, event_id = %event.event_id,
                "shutdown deadline reached mid-fan-out; handing the event back for a replay");
            if let Err(e) = work.release().await {
                warn!(error = %e, "could not hand the event back; it returns after its ack wait");
            }
            return Handled::HandedBack;
        };
        let answered = match &outcome {
            Ok(Resolution::Waiting { earlier }) => {
                info!(incident_id = %event.incident_id, version = event.version, earlier,
                    "earlier events of the incident are not fanned out yet; waiting");
                work.nak(self.config.ordering_delay).await
            }
            Ok(_) => work.ack().await,
            Err(e) => {
                let delay = fanout::retry_delay(work.delivered());
                warn!(incident_id = %event.incident_id, event_id = %event.event_id, error = %e,
                    delay_ms = delay.as_millis() as u64, "fan-out failed; it will be retried");
                work.nak(delay).await
            }
        };
        if let Err(e) = answered {
            // The message comes back after its ack wait; the replay is harmless.
            warn!(error = %e, "could not answer JetStream");
        }
        match outcome {
            Ok(resolution) => Handled::Resolved(resolution),
            Err(_) => Handled::Retrying,
        }
    }

    /// Runs `task`, reporting `work` and the events queued behind it in progress meanwhile.
    async fn keep_in_hand<F: std::future::Future>(
        &self,
        work: &Work,
        incident: IncidentId,
        task: F,
    ) -> F::Output {
        let queued = || async {
            for work in self.chains.queued(incident) {
                if let Err(e) = work.progress().await {
                    warn!(error = %e, "could not report progress to JetStream");
                }
            }
        };
        let both = async {
            tokio::pin!(task);
            let mut ticks = tokio::time::interval(self.progress_interval());
            ticks.tick().await;
            loop {
                tokio::select! {
                    biased;
                    done = &mut task => return done,
                    _ = ticks.tick() => queued().await,
                }
            }
        };
        work.in_progress(self.progress_interval(), both).await
    }

    /// Pulls and handles messages until `shutdown`. Then it pulls no more, hands back what
    /// it pulled and had not started, and gives fan-outs in progress until the grace period
    /// ends ([`ResolverConfig::shutdown_grace`]); see [`Resolver::handle_until`] for those
    /// still running then.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ResolveError> {
        let queue = self.queue().await?;
        info!(
            concurrency = self.config.concurrency,
            page_size = self.config.fanout.page_size,
            "resolver started"
        );
        tokio::spawn(report_pending(self.bus.clone(), shutdown.clone()));
        tokio::spawn(self.clone().keep_streams(shutdown.clone()));
        let deadline = shutdown.deadline(self.config.shutdown_grace);
        let slots = Slots::new(&self.config);
        // Events in hand: running, waiting for a slot, or queued behind their incident.
        let most_in_hand = self.config.concurrency * 4;
        let mut in_hand = 0;
        let mut pull = queue.pull(self.config.concurrency);
        let mut chains = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(done) = chains.next(), if !chains.is_empty() => in_hand -= done,
                pulled = pull.next(), if in_hand < most_in_hand => {
                    let Some(pulled) = pulled else {
                        error!("the pull loop ended; stopping");
                        break;
                    };
                    let work = match pulled {
                        Ok(work) => work,
                        Err(e) => {
                            warn!(error = %e, "pulling events failed; retrying");
                            continue;
                        }
                    };
                    let Some(event) = decode(&work).await else { continue };
                    in_hand += 1;
                    if let Some(first) = self.chains.join((work, event)) {
                        let chain = self.clone().chain(
                            first,
                            slots.clone(),
                            shutdown.clone(),
                            deadline.clone(),
                        );
                        chains.push(chain);
                    }
                }
            }
        }
        info!(
            in_hand,
            "resolver stopping: handing back what it pulled, finishing fan-outs in progress"
        );
        let (handed_back, _) = tokio::join!(pull.hand_back(), chains.collect::<Vec<usize>>());
        // Chains stop after their running event once stopping; what they left queued goes
        // back now.
        for work in self.chains.drain() {
            if let Err(e) = work.release().await {
                warn!(error = %e, "could not hand an event back; it returns after its ack wait");
            }
        }
        if let Err(e) = self.bus.flush().await {
            // Answers lost here come back after their ack wait, and are replayed harmlessly.
            warn!(error = %e, "could not flush the last answers to JetStream");
        }
        info!(handed_back, "resolver stopped");
        Ok(())
    }

    /// One event's fan-out: its first, small page in an express slot; if that shows a big
    /// fan-out, the rest in a bulk slot, the express slot given back for the next small one.
    async fn fan_out(
        &self,
        event: &RecordedEvent,
        express: SemaphorePermit<'_>,
        bulk: &Semaphore,
    ) -> Result<Resolution, ResolveError> {
        let mut fanout = match Fanout::begin(&self.store, &self.bus, event).await? {
            Begun::Ready(fanout) => fanout,
            Begun::Done(resolution) => return Ok(resolution),
        };
        if !fanout.page(self.config.fanout.small_page).await? {
            drop(express);
            let _bulk = bulk.acquire().await.expect("the slots are never closed");
            while !fanout.page(self.config.fanout.page_size).await? {}
        }
        Ok(Resolution::Resolved(fanout.finish().await?))
    }

    /// One incident's events in hand, one after the other, each taking a slot only while it
    /// runs. Once `shutdown` triggers it starts no further event (the run loop hands the rest
    /// back); the one running gets until `deadline`. Returns how many it handled.
    async fn chain(
        self,
        first: order::Pulled,
        slots: Slots,
        shutdown: Shutdown,
        deadline: Shutdown,
    ) -> usize {
        let incident = first.1.incident_id;
        let mut handled = 0;
        let mut next = Some(first);
        while let Some((work, event)) = next {
            let outcome = self
                .handle_until(work, &event, &slots, &shutdown, &deadline)
                .await;
            handled += 1;
            next = if shutdown.is_triggered() || outcome == Handled::HandedBack {
                None
            } else {
                self.chains.next(incident)
            };
        }
        handled
    }

    /// Keeps the events stream and this resolver's consumer in place: NATS may come back
    /// without them (a lost store), and the pull loop then finds them again by name.
    async fn keep_streams(self, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(STREAM_CHECK_INTERVAL);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.queue().await {
                        debug!(error = %e, "could not check the events stream and consumer");
                    }
                }
            }
        }
    }
}

/// A replica's concurrency: express slots every fan-out starts in, bulk slots for the rest of
/// a big one.
#[derive(Debug, Clone)]
struct Slots {
    express: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
}

impl Slots {
    fn new(config: &ResolverConfig) -> Slots {
        Slots {
            express: Arc::new(Semaphore::new(config.concurrency.max(1))),
            bulk: Arc::new(Semaphore::new(config.bulk_concurrency.max(1))),
        }
    }
}

/// The event a message carries, or `None` for a message that is not an event envelope,
/// which is terminated.
async fn decode(work: &Work) -> Option<RecordedEvent> {
    match EventEnvelope::decode(work.payload()) {
        Ok(envelope) => Some(envelope.into()),
        Err(e) => {
            error!(error = %e, "an undecodable message on the events stream; terminating it");
            let _ = work.term().await;
            None
        }
    }
}

/// Sets `tocsin_consumer_pending{consumer="resolver"}` from the consumer's `num_pending`
/// every few seconds until `shutdown`.
async fn report_pending(bus: Bus, shutdown: Shutdown) {
    let pending =
        metrics::gauge!("tocsin_consumer_pending", "consumer" => bus.config().resolver_consumer());
    let mut ticks = tokio::time::interval(PENDING_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticks.tick() => match bus.resolver_pending().await {
                Ok(count) => pending.set(count as f64),
                Err(e) => debug!(error = %e, "could not read the consumer's pending count"),
            },
        }
    }
}

/// A resolver's readiness check; see [`Resolver::readiness`].
#[derive(Debug, Clone)]
pub struct ResolverReadiness {
    store: Store,
    bus: Bus,
}

impl Readiness for ResolverReadiness {
    async fn check(&self) -> Result<(), String> {
        tocsin_runtime::ops::dependency("PostgreSQL", self.store.ping()).await?;
        if !self.bus.is_connected() {
            return Err("NATS is not connected".into());
        }
        if let Err(e) = self.bus.resolver_pending().await {
            debug!(error = %e, "not ready: no consumer");
            return Err(format!(
                "the JetStream consumer {} is not there",
                self.bus.config().resolver_consumer()
            ));
        }
        Ok(())
    }
}
