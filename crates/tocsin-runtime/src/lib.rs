//! Process plumbing shared by Tocsin's binaries: tracing set-up, a shutdown signal with its
//! grace period ([`Shutdown::deadline`]), the process-wide TLS crypto provider ([`tls`]), and
//! the ops HTTP server ([`ops`]: Prometheus `/metrics` from the [`recorder`], `/healthz`,
//! `/readyz`), the process's open-files limit ([`limits`]), and group commit for writes
//! requested one by one ([`coalesce`]).
//! Nothing here knows about incidents.

pub mod catalogue;
pub mod coalesce;
mod connections;
pub mod dns;
pub mod fatal;
pub mod limits;
pub mod ops;
pub mod recorder;
pub mod requests;
mod shutdown;
mod telemetry;
pub mod tls;

pub use connections::Connections;
pub use ops::{OpsArgs, Readiness};
pub use shutdown::{Shutdown, ShutdownArgs};
pub use telemetry::{LogFormat, init_tracing};
