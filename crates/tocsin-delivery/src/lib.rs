//! The delivery runtime every channel worker shares. A channel implements [`Courier`] (build
//! the provider's request, send it, say what the answer means) and runs a [`Worker`], which
//! does the rest:
//!
//! - [`courier`]: the trait, the [`Message`] a channel renders, and each channel's policies
//!   (what an unknown outcome means for it, whether stale messages are superseded, retries).
//! - [`worker`]: pull jobs from the channel's durable consumers (one per lane, shared by
//!   every replica), claim them in the ledger with a lease a batch at a time, then run each
//!   delivery on its own (`send`): a turn at its destination where bounded
//!   (`destinations`: subscribers sharing a webhook endpoint), a send slot of its lane, the
//!   rate limiter, the send marked begun just before it starts, progress reports, the outcome
//!   recorded (`record`, retrying until PostgreSQL answers, never dropping a known outcome),
//!   then ack, park or dead-letter (`decision`). `tocsin_runtime::coalesce` groups the
//!   per-delivery writes into shared statements. The loops (`run`) stop in two steps on
//!   SIGTERM: no more pulls, then a grace period for the deliveries in progress.
//! - [`dispatch`]: the channel's dispatcher, which publishes parked deliveries (retries,
//!   quiet hours, later messages to a recipient, everything after a lost stream) when due,
//!   and recreates the stream and consumer when NATS comes back empty.
//! - [`account`]: the loop that sends messages about a subscription itself (sign-up
//!   confirmations) from PostgreSQL's account-message queue, each at most once.
//! - [`config`]: the settings every worker binary reads from the environment.
//! - [`readiness`]: what a worker's `/readyz` checks.
//! - `instruments`: the worker's Prometheus metrics (deliveries by outcome, attempt
//!   durations, retries, dead letters, ingest-to-delivery latency, consumer backlog).
//!
//! Never a second send for one key: a delivery is sent only by the holder of its claim, and
//! a claim is granted only while the ledger says it is not finished. The one exception is an
//! attempt whose outcome is unknown, where the channel's policy decides.

pub mod account;
pub mod config;
pub mod courier;
mod decision;
mod destinations;
pub mod dispatch;
mod instruments;
mod leases;
pub mod readiness;
mod record;
mod run;
mod send;
pub mod untold;
pub mod worker;

use tocsin_bus::BusError;
use tocsin_store::StoreError;

pub use account::{AccountCourier, AccountSender};
pub use courier::{ChannelPolicy, Courier, Message, Reconciled, UnknownPolicy};
pub use readiness::WorkerReadiness;
pub use worker::{Handled, Worker, WorkerConfig};

/// Why a batch could not be handled. Its jobs come back after their ack wait.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// A job refers to an event the log does not have.
    #[error("event {0} is not in the log")]
    UnknownEvent(String),
}
