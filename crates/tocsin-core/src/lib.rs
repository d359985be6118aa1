//! Tocsin's domain core: incident events, their validation, and the fold that turns an
//! incident's event log into its current state.
//!
//! Nothing here does I/O. The store persists what this crate decides, the bus carries it,
//! and the services translate wire types into these types at their edges.
//!
//! - [`ids`]: typed identifiers for incidents and events.
//! - [`change`]: what a publisher asks to record, and its validation.
//! - [`incident`]: incident state, the transition rules and the fold.
//! - [`event`]: an event as recorded in the log.
//! - [`idempotency`]: request fingerprints for publisher idempotency keys.

pub mod change;
pub mod error;
pub mod event;
pub mod idempotency;
pub mod ids;
pub mod incident;

pub use change::{Change, EventKind, IncidentStatus, MaintenanceWindow, PublishRequest, Severity};
pub use error::DomainError;
pub use event::RecordedEvent;
pub use ids::{EventId, IncidentId};
pub use incident::{Incident, IncidentKind};
