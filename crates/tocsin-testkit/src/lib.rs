//! Test-only helpers, never a stand-in for Tocsin's own code: real per-test PostgreSQL
//! databases, unique bus prefixes, private `nats-server` and PostgreSQL servers that a test
//! can stop and restart, the workspace's binaries spawned as child processes, and a headless
//! Chromium driven over WebDriver for browser tests.
//!
//! A missing PostgreSQL, NATS, browser or binary fails the test loudly with what to do;
//! nothing skips.

pub mod browser;
pub mod certs;
pub mod database;
pub mod nats;
pub mod pipeline;
pub mod postgres;
pub mod process;

/// Installs a test-friendly tracing subscriber once (`RUST_LOG`, `warn` by default).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
