//! What ingest's `/readyz` checks: PostgreSQL answers and NATS is connected. Ingest owns no
//! consumer; it only appends and publishes.

use tocsin_bus::Bus;
use tocsin_runtime::Readiness;
use tocsin_store::Store;

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
        // Bounded: a stopped server would otherwise hold the probe for the pool's whole
        // acquire timeout, and the answer would only say the check timed out.
        tocsin_runtime::ops::dependency("PostgreSQL", self.store.ping()).await?;
        if !self.bus.is_connected() {
            return Err("NATS is not connected".into());
        }
        Ok(())
    }
}
