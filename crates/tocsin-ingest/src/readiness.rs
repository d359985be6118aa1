//! What ingest's `/readyz` checks: PostgreSQL answers and NATS is connected. Ingest owns no
//! consumer; it only appends and publishes.

use tocsin_bus::Bus;
use tocsin_runtime::Readiness;
use tocsin_store::Store;
use tracing::debug;

/// The readiness check of `tocsin-ingest serve` and `tocsin-ingest relay`.
#[derive(Debug, Clone)]
pub struct IngestReadiness {
    store: Store,
    bus: Bus,
}

impl IngestReadiness {
    pub fn new(store: Store, bus: Bus) -> Self {
        Self { store, bus }
    }
}

impl Readiness for IngestReadiness {
    async fn check(&self) -> Result<(), String> {
        if let Err(e) = self.store.ping().await {
            debug!(error = %e, "not ready: PostgreSQL does not answer");
            return Err("PostgreSQL does not answer".into());
        }
        if !self.bus.is_connected() {
            return Err("NATS is not connected".into());
        }
        Ok(())
    }
}
