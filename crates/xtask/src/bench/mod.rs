//! `cargo xtask bench <name>`: the project's benchmarks, each on a fresh database and bus
//! prefix, each printing a results table and one JSON line last.
//!
//! - [`ingest`]: sustained durable publishes with many concurrent gRPC clients.
//! - [`fanout_plan`]: one incident opened for many subscribers, through the resolver.
//! - [`fanout`]: the same, all the way through the workers to the local provider servers;
//!   with `--small-incidents`, [`small`] critical incidents published meanwhile and timed;
//!   with `--webhooks-only` and `--endpoint-delay-ms`, one message to N (slow) endpoints; and
//!   the [`raw`] ledger cycle in PostgreSQL alone, for reference.
//! - [`ordered`]: many updates of one incident to one webhook endpoint, in order.

mod cpu;
mod disk;
mod fanout;
mod fanout_plan;
mod ingest;
mod ordered;
mod pgbench;
mod raw;
mod scenario;
mod small;

use anyhow::{Context, bail};

use crate::pipeline::{create_database, drop_database};
use crate::services::{Services, build_binaries, ensure_services};

/// The benchmarks `cargo xtask bench` knows, for its error message.
const AVAILABLE: &str = "ingest, fanout-plan, fanout, ordered";

#[derive(Debug, Clone)]
pub(crate) struct BenchArgs {
    pub(crate) which: String,
    pub(crate) clients: usize,
    pub(crate) seconds: u64,
    /// Stop after about this many measured events (in-flight calls still finish).
    pub(crate) events: Option<u64>,
    /// Subscribers of the incident `fanout-plan` and `fanout` open.
    pub(crate) recipients: usize,
    /// `fanout`: small critical incidents published during the big fan-out.
    pub(crate) small_incidents: usize,
    /// `fanout`: every subscriber by webhook.
    pub(crate) webhooks_only: bool,
    /// `fanout`: every webhook endpoint answers after this long.
    pub(crate) endpoint_delay_ms: u64,
    /// `ordered`: updates to one incident for one subscriber.
    pub(crate) updates: usize,
    /// `ingest`: the offered load in events per second (open loop); `None` publishes as fast
    /// as the service answers (closed loop).
    pub(crate) rate: Option<u32>,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // An unknown name fails before the release build, which takes minutes.
    if !AVAILABLE.split(", ").any(|name| name == args.which) {
        bail!("unknown benchmark {:?}; available: {AVAILABLE}", args.which);
    }
    if cfg!(debug_assertions) {
        // The load generator shares two cores with the service, PostgreSQL and NATS; an
        // unoptimised client would eat the service's CPU and understate its throughput.
        return rerun_optimised().await;
    }
    match args.which.as_str() {
        "ingest" => ingest::run(args).await,
        "fanout-plan" => fanout_plan::run(args).await,
        "fanout" => fanout::run(args).await,
        "ordered" => ordered::run(args).await,
        other => bail!("unknown benchmark {other:?}; available: {AVAILABLE}"),
    }
}

/// Builds every binary in release and runs this same command with the release xtask.
async fn rerun_optimised() -> anyhow::Result<()> {
    build_binaries(true).await?;
    let status = tokio::process::Command::new(crate::services::target_bin("release", "xtask"))
        .args(std::env::args_os().skip(1))
        .status()
        .await
        .context("running the release xtask")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}

/// One benchmark run's own database and bus prefix, on this machine's services.
struct Fresh {
    services: Services,
    db_name: String,
    database_url: String,
    prefix: String,
}

impl Fresh {
    /// Checks the services, builds the release binaries (a no-op after `rerun_optimised`)
    /// and creates an empty database named after a new run id.
    async fn create() -> anyhow::Result<Self> {
        let services = ensure_services().await?;
        build_binaries(true).await?;
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        let db_name = format!("tocsin_bench_{}", &run_id[20..]);
        let prefix = format!("bench_{}", &run_id[20..]);
        let database_url = create_database(&services, &db_name, true).await?;
        Ok(Self {
            services,
            db_name,
            database_url,
            prefix,
        })
    }

    /// Where the Tocsin services of this run find their database and bus.
    fn urls(&self) -> crate::stack::Urls<'_> {
        crate::stack::Urls {
            database: &self.database_url,
            nats: &self.services.nats_url,
            bus_prefix: &self.prefix,
        }
    }

    /// Drops the database and deletes the prefix's streams. Best effort: a failure is said
    /// and does not fail the benchmark, whose numbers are already measured.
    async fn cleanup(self) {
        if let Err(e) = drop_database(&self.services, &self.db_name).await {
            eprintln!("note: could not drop {}: {e}", self.db_name);
        }
        if let Ok(config) = tocsin_bus::BusConfig::new(&self.prefix)
            && let Ok(bus) = tocsin_bus::Bus::connect(&self.services.nats_url, config).await
        {
            crate::pipeline::delete_streams(&bus).await;
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
