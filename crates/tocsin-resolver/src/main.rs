//! `tocsin-resolver`: fans incident events out into delivery jobs.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tocsin_bus::{Bus, BusConfig};
use tocsin_resolver::requeue::RequeueConfig;
use tocsin_resolver::{FanoutConfig, Resolver, ResolverConfig};
use tocsin_runtime::{Connections, OpsArgs, Shutdown, ShutdownArgs, init_tracing};
use tocsin_store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "tocsin-resolver",
    version,
    about = "Tocsin resolver: incident events into delivery jobs per recipient and channel"
)]
#[command(mut_arg("metrics_addr", |arg| arg.default_value("127.0.0.1:9465")))]
struct Cli {
    #[command(flatten)]
    connections: Connections,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
    /// Subscribers read, planned, recorded and published per round of a fan-out.
    #[arg(long, env = "TOCSIN_RESOLVER_PAGE_SIZE", default_value_t = 20_000)]
    page_size: u32,
    /// Events this replica fans out at once (of different incidents), counting a big
    /// fan-out only for its first, small page.
    #[arg(long, env = "TOCSIN_RESOLVER_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Big fan-outs this replica walks at once past their first page; they never hold the
    /// slots small ones need.
    #[arg(long, env = "TOCSIN_RESOLVER_BULK_CONCURRENCY", default_value_t = 2)]
    bulk_concurrency: usize,
    /// A fan-out to at most this many candidate subscribers is small: its jobs go to the
    /// small lane, which workers serve apart from big fan-outs.
    #[arg(long, env = "TOCSIN_RESOLVER_SMALL_FANOUT", default_value_t = 1_000)]
    small_fanout: u32,
    /// Delay, in milliseconds, before an event that overtook an earlier one is offered again.
    #[arg(long, env = "TOCSIN_RESOLVER_ORDERING_DELAY_MS", default_value_t = 250)]
    ordering_delay_ms: u64,
    /// Seconds between sweeps for deliveries whose job JetStream lost (0: no sweep).
    #[arg(
        long,
        env = "TOCSIN_RESOLVER_REQUEUE_INTERVAL_SECONDS",
        default_value_t = 60
    )]
    requeue_interval_seconds: u64,
    /// A delivery still unworked this many seconds past its due time (and past its last
    /// attempt or requeue) has lost its job and is published again. Keep it well above the
    /// time a backlog takes to drain: a needless requeue costs a message, never a second send.
    #[arg(
        long,
        env = "TOCSIN_RESOLVER_REQUEUE_AFTER_SECONDS",
        default_value_t = 600
    )]
    requeue_after_seconds: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::fatal::exit("tocsin-resolver", run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.connections.log_format);
    let c = &cli.connections;
    let nats_url = c.nats_url.clone();
    let store = Store::connect(c.database_url.expose_secret(), c.db_max_connections)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {} (DATABASE_URL)",
                tocsin_runtime::fatal::redacted(c.database_url.expose_secret())
            )
        })?;
    let bus_config = BusConfig::new(&c.bus_prefix).context("TOCSIN_BUS_PREFIX")?;
    let bus = Bus::connect(&c.nats_url, bus_config)
        .await
        .with_context(|| {
            format!(
                "connecting to NATS at {} (NATS_URL)",
                tocsin_runtime::fatal::redacted(&c.nats_url)
            )
        })?;
    let config = ResolverConfig {
        fanout: FanoutConfig {
            page_size: cli.page_size.clamp(1, 50_000),
            small_page: cli.small_fanout.clamp(1, 50_000),
        },
        concurrency: cli.concurrency.max(1),
        bulk_concurrency: cli.bulk_concurrency.max(1),
        ordering_delay: Duration::from_millis(cli.ordering_delay_ms),
        shutdown_grace: cli.shutdown.grace(),
        ..ResolverConfig::default()
    };
    let shutdown = Shutdown::on_signals();
    let requeue = (cli.requeue_interval_seconds > 0).then(|| {
        tokio::spawn(tocsin_resolver::requeue::run(
            store.clone(),
            bus.clone(),
            RequeueConfig {
                interval: Duration::from_secs(cli.requeue_interval_seconds),
                stale_after: Duration::from_secs(cli.requeue_after_seconds),
                ..RequeueConfig::default()
            },
            shutdown.clone(),
        ))
    });
    let resolver = Resolver::new(store, bus, config);
    let ops = cli
        .ops
        .spawn(resolver.readiness(), shutdown.clone())
        .await?;
    resolver.run(shutdown).await.with_context(|| {
        format!(
            "running the resolver (NATS at {})",
            tocsin_runtime::fatal::redacted(&nats_url)
        )
    })?;
    // The shutdown that stopped the resolver stops the ops server and the sweep too.
    let _ = ops.await;
    if let Some(requeue) = requeue {
        let _ = requeue.await;
    }
    Ok(())
}
