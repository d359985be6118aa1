//! `tocsin-sms`: the SMS worker and its Twilio status-callback server, in one process.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tocsin_bus::{Bus, BusConfig};
use tocsin_delivery::Worker;
use tocsin_runtime::{Shutdown, init_tracing};
use tocsin_sms::config::Cli;
use tocsin_sms::{Callbacks, SmsCourier, Templates, TwilioClient};
use tocsin_store::Store;

#[tokio::main]
async fn main() -> ExitCode {
    tocsin_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    init_tracing(cli.connections.log_format);
    tocsin_runtime::fatal::exit("tocsin-sms", start(cli).await)
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let sms = &cli.sms;
    let twilio_config = sms.twilio_config().context("Twilio settings")?;
    let public_url = sms
        .public_callback_url()
        .context("TOCSIN_SMS_CALLBACK_PUBLIC_URL")?;
    let client = TwilioClient::new(twilio_config).context("Twilio settings")?;
    let templates = match &sms.templates_dir {
        Some(dir) => Templates::from_dir(dir).with_context(|| {
            format!(
                "SMS templates in {} (TOCSIN_SMS_TEMPLATES_DIR)",
                dir.display()
            )
        })?,
        None => Templates::defaults(),
    };

    let c = &cli.connections;
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
    let listener = tokio::net::TcpListener::bind(sms.callback_addr)
        .await
        .with_context(|| format!("binding {} (TOCSIN_SMS_CALLBACK_ADDR)", sms.callback_addr))?;

    let courier = SmsCourier::new(
        client,
        templates,
        usize::from(sms.max_segments),
        cli.worker.retry_policy(),
    )
    .recording_opt_outs(store.clone());
    let worker_config = cli.worker.worker_config(64);
    let company = worker_config.company.clone();
    let worker = Worker::new(store.clone(), bus, courier, worker_config);
    let callbacks =
        Callbacks::new(store, public_url, sms.twilio_auth_token.clone()).answering_as(company);
    let shutdown = Shutdown::on_signals();
    let ops = cli.ops.spawn(worker.readiness(), shutdown.clone()).await?;
    // Sign-up codes go out from the same process, beside the deliveries.
    let account = tokio::spawn(worker.account_sender().run(shutdown.clone()));
    tocsin_sms::run(worker, callbacks, listener, shutdown).await?;
    // The shutdown that stopped the worker stops the ops server and the account loop too.
    let _ = ops.await;
    let _ = account.await;
    Ok(())
}
