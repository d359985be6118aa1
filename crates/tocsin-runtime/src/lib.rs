//! Process plumbing shared by Tocsin's binaries: tracing set-up, a shutdown signal and the
//! process-wide TLS crypto provider ([`tls`]).
//! Nothing here knows about incidents.

mod connections;
mod shutdown;
mod telemetry;
pub mod tls;

pub use connections::Connections;
pub use shutdown::Shutdown;
pub use telemetry::{init_tracing, LogFormat};
