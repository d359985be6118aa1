use tocsin_bus::BusError;
use tocsin_store::StoreError;

/// Why a fan-out could not finish. Every variant is worth retrying later: the event stays
/// unacknowledged and comes back.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The event is not in the log: the stream holds something the database does not.
    #[error("event {0} is not in the log")]
    UnknownEvent(String),
}
