//! What a worker's `/readyz` checks: PostgreSQL answers, NATS is connected, and the
//! channel's durable consumers, one per lane, exist (the worker creates them when it starts).

use tocsin_bus::Bus;
use tocsin_core::{Channel, Lane};
use tocsin_runtime::Readiness;
use tocsin_runtime::ops::dependency;
use tocsin_store::Store;
use tracing::debug;

/// A channel worker's readiness check; see [`crate::Worker::readiness`].
#[derive(Debug, Clone)]
pub struct WorkerReadiness {
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) channel: Channel,
}

impl Readiness for WorkerReadiness {
    async fn check(&self) -> Result<(), String> {
        dependency("PostgreSQL", self.store.ping()).await?;
        if !self.bus.is_connected() {
            return Err("NATS is not connected".into());
        }
        for lane in Lane::ALL {
            if let Err(e) = self.bus.worker_pending(self.channel, lane).await {
                debug!(error = %e, "not ready: no consumer");
                return Err(format!(
                    "the JetStream consumer {} is not there",
                    self.bus.config().worker_consumer(self.channel, lane)
                ));
            }
        }
        Ok(())
    }
}
