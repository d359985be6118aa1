//! `tocsin-webhook`: the webhook worker. Pulls webhook delivery jobs, signs each with the
//! subscriber's secret, POSTs it through the SSRF-safe client, and records the outcome in
//! the ledger; see `tocsin-delivery` for the loop.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tocsin_bus::{Bus, BusConfig};
use tocsin_core::network::UrlPolicy;
use tocsin_delivery::config::WorkerArgs;
use tocsin_delivery::{Worker, WorkerConfig};
use tocsin_runtime::{Connections, OpsArgs, Shutdown, init_tracing};
use tocsin_store::Store;
use tocsin_webhook::ClientConfig;
use tocsin_webhook::courier::WebhookCourier;

#[derive(Debug, Parser)]
#[command(
    name = "tocsin-webhook",
    version,
    about = "Tocsin webhook worker: signed Standard Webhooks to subscribers' endpoints"
)]
#[command(mut_arg("metrics_addr", |arg| arg.default_value("127.0.0.1:9468")))]
struct Cli {
    #[command(flatten)]
    connections: Connections,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    /// Development only: private hosts, IPs or CIDRs webhooks may reach (over plain http
    /// too), comma-separated, e.g. `127.0.0.1,10.5.0.0/16`. Empty is the strict policy
    /// production must run with.
    #[arg(long, env = "TOCSIN_WEBHOOK_ALLOW", default_value = "")]
    allow: String,
    /// Seconds allowed for a whole exchange with an endpoint. Past connecting, a timeout is
    /// an unknown outcome and the webhook is resent with the same `webhook-id`.
    #[arg(long, env = "TOCSIN_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15)]
    timeout_seconds: u64,
    /// Seconds allowed to connect (TCP and TLS); a timeout here is retried, nothing was sent.
    #[arg(
        long,
        env = "TOCSIN_WEBHOOK_CONNECT_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    connect_timeout_seconds: u64,
    /// Sends in flight at once to one endpoint URL, however many subscribers share it (as
    /// many more wait for a turn; beyond that a message is put off for a second). One
    /// customer's slow server then holds this many of the worker's sends, never all of them.
    /// 0: no bound.
    #[arg(
        long,
        env = "TOCSIN_WEBHOOK_PER_ENDPOINT_CONCURRENCY",
        default_value_t = 64
    )]
    per_endpoint_concurrency: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tocsin_runtime::fatal::exit("tocsin-webhook", run().await)
}

/// Sends in flight in the bulk lane unless `TOCSIN_WORKER_CONCURRENCY` says otherwise: an
/// HTTP request in flight costs a socket and a few kilobytes, and 10,000 endpoints answering
/// after 200 ms take 2 s at this width (4 s at 512).
const DEFAULT_CONCURRENCY: usize = 1024;

async fn run() -> anyhow::Result<()> {
    // reqwest is built without a provider of its own; install ring before any client.
    tocsin_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    init_tracing(cli.connections.log_format);

    // Everything that can be wrong with the settings fails here, before any connection.
    let policy = UrlPolicy::from_list(&cli.allow).context("TOCSIN_WEBHOOK_ALLOW")?;
    if !policy.is_strict() {
        tracing::warn!(allow = %cli.allow,
            "webhooks may reach allow-listed private addresses; never run this in production");
    }
    anyhow::ensure!(
        cli.timeout_seconds > 0,
        "TOCSIN_WEBHOOK_TIMEOUT_SECONDS must be at least 1"
    );
    anyhow::ensure!(
        cli.connect_timeout_seconds > 0,
        "TOCSIN_WEBHOOK_CONNECT_TIMEOUT_SECONDS must be at least 1"
    );
    let client = ClientConfig {
        connect_timeout: Duration::from_secs(cli.connect_timeout_seconds),
        timeout: Duration::from_secs(cli.timeout_seconds),
        policy,
        ..ClientConfig::default()
    };
    let courier = WebhookCourier::new(client, cli.worker.retry_policy())
        .context("building the webhook HTTP client")?;

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

    let shutdown = Shutdown::on_signals();
    let config = WorkerConfig {
        per_destination: (cli.per_endpoint_concurrency > 0).then_some(cli.per_endpoint_concurrency),
        ..cli.worker.worker_config(DEFAULT_CONCURRENCY)
    };
    // A socket per send in flight, and room for the rest (PostgreSQL, NATS, the ops server).
    let wanted = u64::try_from(config.total_concurrency()).unwrap_or(u64::MAX) + 256;
    match tocsin_runtime::limits::raise_open_files() {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-files limit is below what the configured sends in flight need; raise it (ulimit -n) or lower TOCSIN_WORKER_CONCURRENCY"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-files limit"),
    }
    let worker = Worker::new(store, bus, courier, config);
    let ops = cli.ops.spawn(worker.readiness(), shutdown.clone()).await?;
    worker.run(shutdown).await.with_context(|| {
        format!(
            "running the webhook worker (NATS at {})",
            tocsin_runtime::fatal::redacted(&nats_url)
        )
    })?;
    // The shutdown that stopped the worker stops the ops server too.
    let _ = ops.await;
    Ok(())
}
