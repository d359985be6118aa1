//! The only crate that speaks SQL. PostgreSQL is Tocsin's one durable truth, and this crate
//! owns its schema and every query against it:
//!
//! - [`log`]: appending to the append-only event log, with publisher idempotency, per-incident
//!   gapless versions, the incident projection and the outbox, all in one transaction.
//! - [`Appender`]: group commit: concurrent appends share one transaction.
//! - [`read`]: reading incidents and events back.
//! - [`outbox`]: what the relay needs: unpublished events, marking them published, waking up.
//! - [`projection`]: recomputing every projection from the log.
//! - [`ledger`]: the workers' side of the ledger: claims with leases, outcomes, dead letters.
//! - [`dispatch`]: parked deliveries coming due for the channels' dispatchers, and the
//!   incarnations of the JetStream streams (a stream created anew is refilled from here).
//! - [`progress`]: what operators read of the ledger: progress, fan-out, listings.
//! - [`components`]: the component catalogue.
//! - [`consent`]: opt-outs by address (the suppression list) and the consent log.
//! - [`subscribers`]: subscribers, their contact details (kept apart) and preference history.
//! - [`fanout`]: what the resolver reads and writes: candidates, the delivery ledger, the
//!   append-only delivery trail.
//!
//! Migrations live in `migrations/` and run only when asked ([`Store::migrate`]).

pub mod account_messages;
mod announce;
mod batch;
pub mod components;
pub mod consent;
pub mod dispatch;
pub mod drafts;
mod error;
pub mod fallback;
pub mod fanout;
pub mod ledger;
pub mod log;
pub mod outbox;
pub mod progress;
pub mod projection;
pub mod read;
mod requeue;
mod rows;
pub mod signups;
pub mod subscribers;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use account_messages::{AccountMessage, AccountOutcome};
pub use batch::Appender;
pub use components::ComponentPut;
pub use dispatch::DueDeliveries;
pub use drafts::Draft;
pub use error::StoreError;
pub use fallback::{FailedDelivery, FallbackPlanned, UntoldFailure};
pub use fanout::{Candidate, FanoutRecord, TrailEntry};
pub use ledger::{AttemptOutcome, ClaimPolicy, ClaimResult, Claimed, ProviderStatus, Recorded};
pub use log::Appended;
pub use outbox::{LogNotification, LogNotifications, RelayLease};
pub use progress::{ChannelProgress, DeliveryCursor, DeliveryFilter, DeliveryView};
pub use projection::RebuildReport;
pub use read::{IncidentAsOf, IncidentCursor, IncidentFilter, OpenMaintenance, ThreadQuery};
pub use signups::{
    CodeCheck, ConsentRecord, NewSignup, Signup, SignupAddress, SignupLimits, SignupRecorded,
};
pub use subscribers::{SubscriberFilter, SubscriberPage, SubscriberWrite, Upserted};

/// The schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The channel `NOTIFY`'d on every append, so that relays and watchers wake at once.
pub(crate) const EVENTS_CHANNEL: &str = "tocsin_events";

/// A handle on Tocsin's database. Cheap to clone.
/// Settings of every session the store opens.
///
/// - `jit=off`: JIT compilation costs tens of milliseconds and pays off only for long
///   analytic queries; the multi-row appends crossed its cost threshold and paid it every time.
/// - `plan_cache_mode=force_custom_plan`: a prepared statement's generic plan, chosen after
///   its first five runs, is kept until the table's next `ANALYZE`. On a young database those
///   runs see empty tables, so the append's key check froze as a sequential scan and a hash
///   join over every idempotency key, costing more with each append (measured: 2,600 scans
///   reading 30 million rows in a 10 s benchmark). Planning for the data as it is now costs
///   tens of microseconds a statement.
const SESSION_SETTINGS: [(&str, &str); 2] =
    [("jit", "off"), ("plan_cache_mode", "force_custom_plan")];

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    announcer: tokio::sync::mpsc::UnboundedSender<LogNotification>,
}

impl Store {
    /// Connects a pool of at most `max_connections` to `database_url`.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions = database_url.parse().map_err(StoreError::from)?;
        Self::connect_with(options, max_connections).await
    }

    /// [`Store::connect`] with options already parsed.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(
                options
                    .application_name("tocsin")
                    .options(SESSION_SETTINGS.iter().copied()),
            )
            .await?;
        report_pool_use(pool.clone(), max_connections);
        Ok(Self::from_pool(pool))
    }

    /// Wraps a pool. Starts this store's announcer task, so it needs a Tokio runtime.
    pub fn from_pool(pool: PgPool) -> Self {
        let announcer = announce::start(pool.clone());
        Self { pool, announcer }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. Called by `tocsin-ingest migrate`, never implicitly.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Whether the database answers; for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Reports the pool's use every 5 s (`tocsin_db_pool_connections` by state,
/// `tocsin_db_pool_max_connections`) until the pool is closed, so an operator sees a process
/// that runs out of connections before its requests time out.
fn report_pool_use(pool: PgPool, max_connections: u32) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        while !pool.is_closed() {
            tick.tick().await;
            // Set on every tick: the recorder may be installed after the pool is made.
            metrics::gauge!("tocsin_db_pool_max_connections").set(f64::from(max_connections));
            let size = pool.size();
            let idle = u32::try_from(pool.num_idle()).unwrap_or(size);
            metrics::gauge!("tocsin_db_pool_connections", "state" => "idle").set(f64::from(idle));
            metrics::gauge!("tocsin_db_pool_connections", "state" => "in_use")
                .set(f64::from(size.saturating_sub(idle)));
        }
    });
}
