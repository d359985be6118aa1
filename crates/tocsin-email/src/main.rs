//! `tocsin-email`: the email worker. Pulls email delivery jobs, sends each through the SMTP
//! relay, and records the outcome in the ledger; see `tocsin-delivery` for the loop.

mod config;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tocsin_bus::{Bus, BusConfig};
use tocsin_delivery::Worker;
use tocsin_email::{EmailCourier, SmtpSender};
use tocsin_runtime::{Shutdown, init_tracing};
use tocsin_store::Store;

use crate::config::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line, causes included: "connecting to NATS at … (NATS_URL): ...".
    tocsin_runtime::fatal::exit("tocsin-email", run().await)
}

async fn run() -> anyhow::Result<()> {
    // lettre's rustls needs the process-wide provider before any transport is built.
    tocsin_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    init_tracing(cli.connections.log_format);

    // Everything that can be wrong with the settings fails here, before any connection.
    let config = cli.worker.worker_config(32);
    let mut smtp = cli.email.smtp_config().context("SMTP settings")?;
    // One connection per send in flight: a send that waited for a pooled connection would
    // count its wait against the send timeout, behind a relay that stalls.
    smtp.pool_max_size = u32::try_from(config.total_concurrency()).unwrap_or(u32::MAX);
    let settings = cli.email.settings(&cli.worker).context("email settings")?;
    let templates = cli.email.templates()?;
    let sender = SmtpSender::new(smtp).context("SMTP transport")?;
    let courier = EmailCourier::new(templates, sender, settings);

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
    let worker = Worker::new(store, bus, courier, config);
    let ops = cli.ops.spawn(worker.readiness(), shutdown.clone()).await?;
    // Sign-up confirmations go out from the same process, beside the deliveries.
    let account = tokio::spawn(worker.account_sender().run(shutdown.clone()));
    worker.run(shutdown).await.with_context(|| {
        format!(
            "running the email worker (NATS at {})",
            tocsin_runtime::fatal::redacted(&nats_url)
        )
    })?;
    // The shutdown that stopped the worker stops the ops server too.
    let _ = ops.await;
    let _ = account.await;
    Ok(())
}
