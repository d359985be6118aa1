//! The preference resolver: consumes incident events from JetStream (a durable pull consumer
//! every replica shares) and turns each into one delivery job per recipient and channel,
//! recorded in the PostgreSQL ledger and published on the channel's subject.
//!
//! - [`fanout`]: one event's fan-out, page by page, and `PreviewFanout`'s reach count.
//! - [`Resolver`]: the consumer loop around it: ordering per incident, acks and retries,
//!   the `tocsin_consumer_pending` gauge, and the check behind `/readyz` ([`ResolverReadiness`]).
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
pub mod requeue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tocsin_bus::{Bus, BusError, EventEnvelope, QueueSettings, Work, WorkQueue};
use tocsin_core::{IncidentId, RecordedEvent};
use tocsin_runtime::{Readiness, Shutdown};
use tocsin_store::Store;
use tracing::{debug, error, info, warn};

pub use error::ResolveError;
pub use fanout::{FanoutConfig, Reach, Resolution};

/// How a resolver process behaves.
#[derive(Debug, Clone, Copy)]
pub struct ResolverConfig {
    pub fanout: FanoutConfig,
    /// Events fanned out at once by this replica (different incidents only).
    pub concurrency: usize,
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
            ordering_delay: Duration::from_millis(250),
            queue: QueueSettings::resolver(),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// How often the consumer's pending count is read for `tocsin_consumer_pending`.
const PENDING_INTERVAL: Duration = Duration::from_secs(5);

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
    /// One lock per incident being fanned out here, so two events of one incident taken by
    /// this replica run in order instead of bouncing off each other with naks.
    incidents: Arc<Mutex<HashMap<IncidentId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Resolver {
    pub fn new(store: Store, bus: Bus, config: ResolverConfig) -> Self {
        Self {
            store,
            bus,
            config,
            incidents: Arc::default(),
        }
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
        self.handle_until(work, &Shutdown::new()).await
    }

    /// [`Resolver::handle`], unless `deadline` triggers first: then the fan-out is dropped
    /// where it stands and the event handed back (redelivered at once). That is safe at any
    /// point, because a replay rewrites the same ledger rows (kept as they are), republishes
    /// the same jobs (dropped by JetStream as duplicates) and appends the trail entry once.
    pub async fn handle_until(&self, work: Work, deadline: &Shutdown) -> Handled {
        let event: RecordedEvent = match EventEnvelope::decode(work.payload()) {
            Ok(envelope) => envelope.into(),
            Err(e) => {
                error!(error = %e, "an undecodable message on the events stream; terminating it");
                let _ = work.term().await;
                return Handled::Poison;
            }
        };
        let lock = self.incident_lock(event.incident_id);
        let guard = lock.lock().await;
        let progress = || async {
            if let Err(e) = work.progress().await {
                warn!(error = %e, "could not report progress to JetStream");
            }
        };
        let fanout = fanout::resolve(&self.store, &self.bus, self.config.fanout, &event, progress);
        let outcome = deadline.unless_triggered(fanout).await;
        drop(guard);
        self.release_incident_lock(event.incident_id, lock);
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
        let deadline = shutdown.deadline(self.config.shutdown_grace);
        let mut pull = queue.pull(self.config.concurrency);
        let mut running = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(()) = running.next(), if !running.is_empty() => {}
                pulled = pull.next(), if running.len() < self.config.concurrency => {
                    let Some(pulled) = pulled else {
                        error!("the pull loop ended; stopping");
                        break;
                    };
                    running.push(self.clone().serve(pulled, deadline.clone()));
                }
            }
        }
        info!(
            in_flight = running.len(),
            "resolver stopping: handing back what it pulled, finishing fan-outs in progress"
        );
        let (handed_back, ()) = tokio::join!(pull.hand_back(), running.collect::<()>());
        if let Err(e) = self.bus.flush().await {
            // Answers lost here come back after their ack wait, and are replayed harmlessly.
            warn!(error = %e, "could not flush the last answers to JetStream");
        }
        info!(handed_back, "resolver stopped");
        Ok(())
    }

    /// One pulled message, or one pull error, in the run loop.
    async fn serve(self, pulled: Result<Work, BusError>, deadline: Shutdown) {
        match pulled {
            Ok(work) => {
                self.handle_until(work, &deadline).await;
            }
            Err(e) => {
                warn!(error = %e, "pulling events failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn incident_lock(&self, incident_id: IncidentId) -> Arc<tokio::sync::Mutex<()>> {
        let mut incidents = self.incidents.lock().expect("incident locks");
        incidents.entry(incident_id).or_default().clone()
    }

    fn release_incident_lock(&self, incident_id: IncidentId, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut incidents = self.incidents.lock().expect("incident locks");
        // Two references: the map's and ours. No one else waits, so the entry can go.
        if Arc::strong_count(&lock) == 2 {
            incidents.remove(&incident_id);
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
