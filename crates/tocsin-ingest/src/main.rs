//! `tocsin-ingest`: the ingest service and its operator commands.

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tocsin_bus::{Bus, BusConfig};
use tocsin_ingest::config::{Connections, RelayArgs, ServeArgs};
use tocsin_ingest::{IngestConfig, IngestReadiness, Relay, relay};
use tocsin_runtime::{OpsArgs, Shutdown, ShutdownArgs, init_tracing};
use tocsin_store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "tocsin-ingest",
    version,
    about = "Tocsin ingest: gRPC incident events into the PostgreSQL log, relayed to JetStream"
)]
#[command(mut_arg("metrics_addr", |arg| arg.default_value("127.0.0.1:9464")))]
struct Cli {
    #[command(flatten)]
    connections: Connections,
    /// The ops server (metrics and probes) of `serve` and `relay`.
    #[command(flatten)]
    ops: OpsArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the biggest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API (and, by default, run the outbox relay).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run only the outbox relay.
    Relay {
        #[command(flatten)]
        tuning: RelayArgs,
        #[command(flatten)]
        shutdown: ShutdownArgs,
    },
    /// Recompute every incident projection from the event log.
    Rebuild {
        /// Only report how many projections differ from their log; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Publish the log again to JetStream from a position (for a lost or purged stream).
    Republish {
        /// First log position to publish.
        #[arg(long, default_value_t = 1)]
        from_position: i64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::fatal::exit("tocsin-ingest", run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.connections.log_format);
    // The gRPC server's TLS takes the process's provider.
    tocsin_runtime::tls::install_crypto_provider();
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

    match cli.command {
        Command::Migrate => {
            store.migrate().await.context("applying migrations")?;
            tracing::info!("migrations applied");
        }
        Command::Rebuild { dry_run } => {
            let report = store
                .rebuild_projections(dry_run)
                .await
                .context("rebuilding projections")?;
            tracing::info!(
                events = report.events,
                incidents = report.incidents,
                drifted = report.drifted,
                dry_run,
                "rebuild finished"
            );
        }
        Command::Republish { from_position } => {
            let bus = Bus::connect(&c.nats_url, bus_config)
                .await
                .with_context(|| {
                    format!(
                        "connecting to NATS at {} (NATS_URL)",
                        tocsin_runtime::fatal::redacted(&c.nats_url)
                    )
                })?;
            let report = relay::republish(&store, &bus, from_position)
                .await
                .context("republishing")?;
            tracing::info!(events = report.events, last_position = ?report.last_position, "republish finished");
        }
        Command::Relay {
            tuning,
            shutdown: shutdown_args,
        } => {
            let bus = Bus::connect(&c.nats_url, bus_config)
                .await
                .with_context(|| {
                    format!(
                        "connecting to NATS at {} (NATS_URL)",
                        tocsin_runtime::fatal::redacted(&c.nats_url)
                    )
                })?;
            let shutdown = Shutdown::on_signals();
            let ops = spawn_ops(&cli.ops, &store, &bus, &shutdown).await?;
            let relaying = Relay::new(store, bus, tuning.relay_config()).run(shutdown.clone());
            // A round cut here loses nothing: its events stay in the outbox, and those
            // JetStream already holds are dropped by message id when published again.
            if shutdown
                .deadline(shutdown_args.grace())
                .unless_triggered(relaying)
                .await
                .is_none()
            {
                tracing::warn!(
                    grace_ms = shutdown_args.grace().as_millis() as u64,
                    "a relay round still in flight when the shutdown grace period ended was cut"
                );
            }
            let _ = ops.await;
        }
        Command::Serve(args) => {
            if args.migrate {
                store.migrate().await.context("applying migrations")?;
            }
            let bus = Bus::connect(&c.nats_url, bus_config)
                .await
                .with_context(|| {
                    format!(
                        "connecting to NATS at {} (NATS_URL)",
                        tocsin_runtime::fatal::redacted(&c.nats_url)
                    )
                })?;
            let listener = tokio::net::TcpListener::bind(args.grpc_addr)
                .await
                .with_context(|| format!("binding {}", args.grpc_addr))?;
            let config = IngestConfig {
                callers: args
                    .callers()
                    .map_err(anyhow::Error::msg)
                    .context("TOCSIN_OPERATOR_TOKENS")?,
                max_message_bytes: args.max_message_bytes,
                relay: args.relay.then(|| args.relay_tuning.relay_config()),
                idempotency_retention: time::Duration::hours(i64::from(
                    args.idempotency_retention_hours,
                )),
                webhook_policy: tocsin_core::network::UrlPolicy::from_list(&args.webhook_allow)
                    .context("TOCSIN_WEBHOOK_ALLOW")?,
                fanout: tocsin_resolver::FanoutConfig::default(),
                shutdown_grace: args.shutdown.grace(),
                tls: args.tls_identity().map_err(anyhow::Error::msg)?,
                maintenance_clock: (args.maintenance_clock_seconds > 0)
                    .then(|| std::time::Duration::from_secs(args.maintenance_clock_seconds)),
                alert_rules: match &args.alert_rules {
                    None => None,
                    Some(path) => {
                        let text = std::fs::read_to_string(path).with_context(|| {
                            format!("reading {} (TOCSIN_ALERT_RULES)", path.display())
                        })?;
                        Some(std::sync::Arc::new(
                            tocsin_alerts::Mapping::parse(&text).with_context(|| {
                                format!("{} (TOCSIN_ALERT_RULES)", path.display())
                            })?,
                        ))
                    }
                },
            };
            let http = match args.http_addr {
                None => None,
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding {addr} (TOCSIN_HTTP_ADDR)"))?,
                ),
            };
            let shutdown = Shutdown::on_signals();
            let ops = spawn_ops(&cli.ops, &store, &bus, &shutdown).await?;
            tocsin_ingest::run_with_http(config, store, bus, listener, http, shutdown).await?;
            let _ = ops.await;
        }
    }
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown`.
async fn spawn_ops(
    ops: &OpsArgs,
    store: &Store,
    bus: &Bus,
    shutdown: &Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let readiness = IngestReadiness::new(store.clone(), bus.clone());
    Ok(ops.spawn(readiness, shutdown.clone()).await?)
}
