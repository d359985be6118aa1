//! Process plumbing shared by Tocsin's binaries: tracing set-up and a shutdown signal.
//! Nothing here knows about incidents.

mod shutdown;
mod telemetry;

pub use shutdown::Shutdown;
pub use telemetry::{init_tracing, LogFormat};
