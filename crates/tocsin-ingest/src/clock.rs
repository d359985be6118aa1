//! The maintenance clock: records the events Tocsin owes a scheduled maintenance (reminders,
//! and the start and completion at the window's times when the publisher has not said them)
//! as events in the log, under the publisher [`PUBLISHER`].
//!
//! Every replica of the ingest service runs it. They all ask for the same event under the
//! same idempotency key ([`tocsin_core::maintenance::due`]), the log records it once, and a
//! step already in the log is never asked for again (the keys are read from the log itself,
//! which keeps them after the idempotency table has forgotten them). Each append names the
//! maintenance version it was decided on, so an event a publisher records meanwhile wins and
//! the clock decides again on its next tick.

use std::time::Duration;

use time::OffsetDateTime;
use tocsin_core::maintenance::{PUBLISHER, due};
use tocsin_core::{DomainError, Incident};
use tocsin_runtime::Shutdown;
use tocsin_store::{Store, StoreError};
use tracing::{debug, info, warn};

/// How often the clock looks, unless configured (`TOCSIN_MAINTENANCE_CLOCK_SECONDS`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct MaintenanceClock {
    store: Store,
    interval: Duration,
}

impl MaintenanceClock {
    pub fn new(store: Store, interval: Duration) -> Self {
        Self { store, interval }
    }

    /// Ticks every interval until `shutdown`. A failed tick is logged and retried on the next.
    pub async fn run(self, shutdown: Shutdown) {
        info!(
            interval_s = self.interval.as_secs_f64(),
            "maintenance clock started"
        );
        loop {
            if let Err(e) = self.tick(OffsetDateTime::now_utc()).await {
                warn!(error = %e, "maintenance clock tick failed; trying again next tick");
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// Records every event due at `now`; returns how many it recorded (not counting those
    /// another replica recorded first).
    pub async fn tick(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut recorded = 0;
        for open in self.store.open_maintenances(PUBLISHER).await? {
            let mut maintenance = open.maintenance;
            // A maintenance whose window passed while nobody ran the clock gets its start and
            // its completion in one tick, in order.
            while let Some(request) = due(&maintenance, now) {
                if open.recorded_keys.contains(&request.idempotency_key) {
                    break;
                }
                match self.store.append(PUBLISHER, &request, now).await {
                    Ok(appended) if appended.duplicate => break,
                    Ok(appended) => {
                        recorded += 1;
                        info!(
                            incident_id = %maintenance.id,
                            kind = appended.event.change.kind.as_str(),
                            version = appended.event.version,
                            "maintenance clock recorded an event"
                        );
                        metrics::counter!("tocsin_maintenance_clock_events_total",
                            "kind" => appended.event.change.kind.as_str())
                        .increment(1);
                        maintenance = Incident::apply(Some(maintenance), &appended.event);
                    }
                    // A publisher's event or another replica came first: decide again next tick.
                    Err(StoreError::Domain(
                        DomainError::VersionConflict { .. } | DomainError::InvalidTransition(_),
                    ))
                    | Err(StoreError::IdempotencyKeyReused { .. }) => {
                        debug!(incident_id = %maintenance.id, "maintenance moved on meanwhile");
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(recorded)
    }
}
