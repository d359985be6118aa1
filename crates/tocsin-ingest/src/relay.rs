//! The outbox relay: moves committed events from PostgreSQL to JetStream, in per-incident
//! order, marking each published only after JetStream acknowledged it.
//!
//! Crash safety comes from the order of operations: publish, await the ack, then mark. A
//! crash between ack and mark republishes the event on restart, and JetStream drops the copy
//! because its `Nats-Msg-Id` (the event id) is still inside the duplicate window.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tocsin_bus::{Bus, BusError};
use tocsin_core::{IncidentId, RecordedEvent};
use tocsin_runtime::Shutdown;
use tocsin_store::{LogNotifications, RelayLease, Store, StoreError};
use tracing::{debug, info, instrument, warn};

/// How often the active relay checks that the events stream is still the one it knows.
const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events taken from the outbox per round.
    pub batch_size: u32,
    /// Fallback poll when no notification arrives.
    pub poll_interval: Duration,
    /// Least time between the starts of two rounds. Under load appends arrive all the
    /// time, and a round per announcement spends more on the round (a read, a write) than on
    /// its few events; pacing gathers them. An idle relay starts at once.
    pub min_round_interval: Duration,
    /// Longest wait between retries while NATS or PostgreSQL is down.
    pub max_backoff: Duration,
    /// How often the active relay prunes old outbox rows and idempotency keys.
    pub housekeeping_interval: Duration,
    /// How long published outbox rows are kept (the events themselves stay forever).
    pub outbox_retention: time::Duration,
    /// How long idempotency keys are kept (never less than 24 h).
    pub idempotency_retention: time::Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            poll_interval: Duration::from_secs(1),
            min_round_interval: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            housekeeping_interval: Duration::from_secs(3600),
            outbox_retention: time::Duration::days(1),
            idempotency_retention: time::Duration::days(7),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Publishes `events` (in position order) so that no event of an incident is sent before its
/// predecessor was acknowledged. Events go in waves: the first pending event of every
/// incident, all pipelined, then the second of each, and so on. When an incident's event
/// fails, its later events wait for the next round.
///
/// Returns the positions JetStream acknowledged and the first error, if any.
pub async fn publish_in_order(bus: &Bus, events: &[RecordedEvent]) -> (Vec<i64>, Option<BusError>) {
    publish_waves(bus, events, None).await
}

/// [`publish_in_order`], recording each acknowledged event in `instruments` when given.
async fn publish_waves(
    bus: &Bus,
    events: &[RecordedEvent],
    instruments: Option<&RelayInstruments>,
) -> (Vec<i64>, Option<BusError>) {
    let mut waves: Vec<Vec<&RecordedEvent>> = Vec::new();
    let mut depth: HashMap<IncidentId, usize> = HashMap::new();
    for event in events {
        let d = depth.entry(event.incident_id).or_default();
        if waves.len() <= *d {
            waves.push(Vec::new());
        }
        waves[*d].push(event);
        *d += 1;
    }
    let mut acked = Vec::with_capacity(events.len());
    let mut blocked: HashSet<IncidentId> = HashSet::new();
    let mut first_error = None;
    for wave in waves {
        let wave: Vec<RecordedEvent> = wave
            .into_iter()
            .filter(|e| !blocked.contains(&e.incident_id))
            .cloned()
            .collect();
        if wave.is_empty() {
            break;
        }
        for (event, result) in wave.iter().zip(bus.publish_events(&wave).await) {
            match result {
                Ok(published) => {
                    if let Some(instruments) = instruments {
                        instruments.acknowledged(event);
                    }
                    if published.duplicate {
                        debug!(event_id = %event.event_id, "JetStream already had this event");
                    }
                    acked.push(event.position);
                }
                Err(e) => {
                    blocked.insert(event.incident_id);
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    (acked, first_error)
}

/// The relay's metrics: `tocsin_relay_published_total` (counter) and
/// `tocsin_relay_lag_seconds` (histogram, from the event's `recorded_at` to JetStream's ack).
/// A republish records neither: its events are old by design.
#[derive(Debug, Clone)]
struct RelayInstruments {
    published: metrics::Counter,
    lag: metrics::Histogram,
}

impl RelayInstruments {
    fn new() -> Self {
        // A handle taken before the recorder exists would stay a no-op for good.
        tocsin_runtime::recorder::install();
        Self {
            published: metrics::counter!("tocsin_relay_published_total"),
            lag: metrics::histogram!("tocsin_relay_lag_seconds"),
        }
    }

    fn acknowledged(&self, event: &RecordedEvent) {
        self.published.increment(1);
        let lag = time::OffsetDateTime::now_utc() - event.recorded_at;
        self.lag.record(lag.as_seconds_f64().max(0.0));
    }
}

/// The relay. Run one per database; several may run, but only the lease holder works.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Store,
    bus: Bus,
    config: RelayConfig,
    instruments: RelayInstruments,
}

impl Relay {
    pub fn new(store: Store, bus: Bus, config: RelayConfig) -> Self {
        Self {
            store,
            bus,
            config,
            instruments: RelayInstruments::new(),
        }
    }

    /// One round: publish up to `batch_size` unpublished events and mark the acknowledged
    /// ones. Returns how many were published. Tests call this to drain deterministically.
    #[instrument(skip(self))]
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let events = self
            .store
            .unpublished_events(self.config.batch_size)
            .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let (acked, error) = publish_waves(&self.bus, &events, Some(&self.instruments)).await;
        if !acked.is_empty() {
            self.store.mark_published(&acked).await?;
        }
        debug!(
            published = acked.len(),
            pending = events.len(),
            "relay round"
        );
        match error {
            Some(e) => Err(e.into()),
            None => Ok(acked.len()),
        }
    }

    /// Relays until `shutdown`, waking on every append and retrying with backoff while NATS
    /// or PostgreSQL is unavailable. Only the holder of the relay lease publishes.
    pub async fn run(self, shutdown: Shutdown) {
        let mut lease: Option<RelayLease> = None;
        let mut listener: Option<LogNotifications> = None;
        // The events stream's incarnation as last recorded here, and when it was last checked.
        let mut stream: Option<time::OffsetDateTime> = None;
        let mut stream_checked = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut last_housekeeping = tokio::time::Instant::now();
        let mut last_round = tokio::time::Instant::now();
        info!(batch = self.config.batch_size, "relay started");
        while !shutdown.is_triggered() {
            if lease.is_none() {
                lease = match self.store.try_relay_lease().await {
                    Ok(Some(l)) => {
                        info!("relay lease acquired; this relay is active");
                        Some(l)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        warn!(error = %e, "relay cannot reach PostgreSQL");
                        None
                    }
                };
                if lease.is_none() {
                    self.pause(&shutdown, self.config.poll_interval).await;
                    continue;
                }
            }
            if listener.is_none() {
                listener = self.store.listen().await.ok();
            }
            if stream.is_none() || stream_checked.elapsed() >= STREAM_CHECK_INTERVAL {
                stream_checked = tokio::time::Instant::now();
                if let Err(e) = self.check_stream(&mut stream).await {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "events stream not ready");
                    stream = None;
                    backoff = self.backoff_after(&shutdown, backoff).await;
                    continue;
                }
            }
            // Paced: a round right after the previous one would carry only what arrived since.
            let next_round = last_round + self.config.min_round_interval;
            if tokio::time::Instant::now() < next_round {
                tokio::select! {
                    _ = shutdown.wait() => {}
                    _ = tokio::time::sleep_until(next_round) => {}
                }
            }
            last_round = tokio::time::Instant::now();
            match self.relay_once().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as u32 >= self.config.batch_size {
                        continue;
                    }
                }
                Err(RelayError::Bus(e)) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "relay cannot publish; will retry");
                    if !matches!(e, BusError::Unavailable(_)) {
                        // Rejected: the stream may be gone. Check it before the next round.
                        stream = None;
                    }
                    backoff = self.backoff_after(&shutdown, backoff).await;
                    continue;
                }
                Err(RelayError::Store(e)) => {
                    warn!(error = %e, "relay cannot read the outbox; will retry");
                    if let Some(l) = lease.as_mut()
                        && !l.is_held().await
                    {
                        lease = None;
                        listener = None;
                    }
                    backoff = self.backoff_after(&shutdown, backoff).await;
                    continue;
                }
            }
            if last_housekeeping.elapsed() >= self.config.housekeeping_interval {
                last_housekeeping = tokio::time::Instant::now();
                self.housekeeping().await;
            }
            self.wait_for_work(&shutdown, &mut listener).await;
        }
        info!("relay stopped");
    }

    /// Makes sure the events stream exists and records its incarnation in the ledger when it
    /// is not the one `known`. A new incarnation (NATS lost its store) puts every event whose
    /// fan-out is not recorded back into the outbox, so this relay publishes them again.
    async fn check_stream(
        &self,
        known: &mut Option<time::OffsetDateTime>,
    ) -> Result<(), RelayError> {
        let created = self.bus.ensure_events_stream().await?;
        if *known != Some(created) {
            let name = self.bus.config().events_stream();
            if let Some(requeued) = self.store.events_stream_seen(&name, created).await? {
                info!(
                    requeued,
                    "the events stream is new (NATS lost its store?): events not yet fanned out are relayed again"
                );
            }
            *known = Some(created);
        }
        Ok(())
    }

    async fn wait_for_work(&self, shutdown: &Shutdown, listener: &mut Option<LogNotifications>) {
        let poll = tokio::time::sleep(self.config.poll_interval);
        match listener {
            Some(l) => tokio::select! {
                _ = shutdown.wait() => {}
                _ = poll => {}
                note = l.next() => if note.is_err() { *listener = None },
            },
            None => tokio::select! {
                _ = shutdown.wait() => {}
                _ = poll => {}
            },
        }
    }

    async fn pause(&self, shutdown: &Shutdown, duration: Duration) {
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(duration) => {}
        }
    }

    async fn backoff_after(&self, shutdown: &Shutdown, backoff: Duration) -> Duration {
        self.pause(shutdown, backoff).await;
        (backoff * 2).min(self.config.max_backoff)
    }

    async fn housekeeping(&self) {
        match self.store.prune_outbox(self.config.outbox_retention).await {
            Ok(n) => debug!(pruned = n, "old outbox rows pruned"),
            Err(e) => warn!(error = %e, "outbox pruning failed"),
        }
        match self
            .store
            .prune_idempotency_keys(self.config.idempotency_retention)
            .await
        {
            Ok(n) => debug!(pruned = n, "expired idempotency keys pruned"),
            Err(e) => warn!(error = %e, "idempotency key pruning failed"),
        }
    }
}

/// What a republish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepublishReport {
    pub events: u64,
    pub last_position: Option<i64>,
}

/// Publishes the log again from `from_position`, for a stream that was lost or purged.
/// Consumers must be idempotent anyway: copies outside the duplicate window are not dropped.
pub async fn republish(
    store: &Store,
    bus: &Bus,
    from_position: i64,
) -> Result<RepublishReport, RelayError> {
    republish_reporting(store, bus, from_position, |_| {}).await
}

/// [`republish`], calling `progress` with the counts so far after each page of the log.
pub async fn republish_reporting(
    store: &Store,
    bus: &Bus,
    from_position: i64,
    mut progress: impl FnMut(RepublishReport) + Send,
) -> Result<RepublishReport, RelayError> {
    bus.ensure_events_stream().await?;
    let mut report = RepublishReport::default();
    let mut next = from_position;
    loop {
        let events = store.events_from_position(next, 1_000).await?;
        let Some(last) = events.last() else { break };
        next = last.position + 1;
        let (acked, error) = publish_in_order(bus, &events).await;
        report.events += acked.len() as u64;
        if let Some(e) = error {
            return Err(e.into());
        }
        report.last_position = Some(last.position);
        info!(
            republished = report.events,
            up_to_position = last.position,
            "republishing the log"
        );
        progress(report);
    }
    Ok(report)
}
