//! Process plumbing shared by Tocsin's binaries: tracing set-up, a shutdown signal with its
//! grace period ([`Shutdown::deadline`]), the process-wide TLS crypto provider ([`tls`]), and
//! the ops HTTP server ([`ops`]: Prometheus `/metrics` from the [`recorder`], `/healthz`,
//! `/readyz`), and the process's open-files limit ([`limits`]).
//! Nothing here knows about incidents.

mod connections;
pub mod limits;
pub mod ops;
pub mod recorder;
mod shutdown;
mod telemetry;
pub mod tls;

pub use connections::Connections;
pub use ops::{OpsArgs, Readiness};
pub use shutdown::{Shutdown, ShutdownArgs};
pub use telemetry::{LogFormat, init_tracing};
