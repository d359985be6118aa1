//! The machinery one scenario runs on: a private PostgreSQL and nats-server for the whole
//! run (never the machine's shared ones, which the harness restarts and wipes), and per
//! scenario a fresh database and bus prefix with every process started under the supervisor.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tocsin_bus::BusConfig;
use tocsin_core::Channel;
use tocsin_testkit::nats::NatsServer;
use tocsin_testkit::postgres::PostgresServer;
use tokio::sync::Mutex;

use super::client::Api;
use super::supervisor::{Spec, Supervisor};
use crate::pipeline::{Ingest, free_port};
use crate::stack::{self, Ports, Urls};

/// Settings of the private PostgreSQL beyond the testkit's (which runs with `fsync=off`):
/// room for every service's pool, replicas included, plus the harness.
pub(super) const POSTGRES_SETTINGS: [(&str, &str); 1] = [("max_connections", "400")];

/// What the workers run with besides the stack's usual settings: short retry delays, so a
/// provider's transient faults clear within the settle limit; the shortest lease the brief
/// allows, so a killed worker's claims come back within it; and provider timeouts of 10 s
/// (defaults 30 s for SMTP, 15 s for Twilio and webhooks), so a provider that hangs is given
/// up on, and its message settled, well within the limit even on a loaded machine.
pub(super) const WORKER_TUNING: [(&str, &str); 6] = [
    ("TOCSIN_RETRY_BASE_SECONDS", "1"),
    ("TOCSIN_RETRY_CAP_SECONDS", "5"),
    ("TOCSIN_WORKER_LEASE_SECONDS", "15"),
    ("TOCSIN_SMTP_TIMEOUT_SECONDS", "10"),
    ("TOCSIN_TWILIO_TIMEOUT_SECONDS", "10"),
    ("TOCSIN_WEBHOOK_TIMEOUT_SECONDS", "10"),
];

/// The run's private servers.
#[derive(Debug)]
pub(super) struct Servers {
    pub(super) postgres: PostgresServer,
    pub(super) nats: NatsServer,
}

impl Servers {
    pub(super) async fn start() -> anyhow::Result<Servers> {
        let postgres = PostgresServer::start_with_settings(&POSTGRES_SETTINGS)
            .await
            .context("starting the private PostgreSQL")?;
        let nats = NatsServer::start()
            .await
            .context("starting the private nats-server")?;
        Ok(Servers { postgres, nats })
    }

    /// Creates database `name` (dropping an older one) and returns its URL.
    pub(super) async fn fresh_database(&self, name: &str) -> anyhow::Result<String> {
        let mut admin = sqlx::PgConnection::connect(&self.postgres.url("postgres"))
            .await
            .context("connecting to the private PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin.close().await?;
        Ok(self.postgres.url(name))
    }

    /// Copies the servers' logs into `dir` (their own directories go with them).
    pub(super) fn keep_logs(&self, dir: &Path) {
        let _ = std::fs::copy(self.postgres.log_path(), dir.join("postgres.log"));
        let _ = std::fs::copy(self.nats.log_path(), dir.join("nats-server.log"));
    }
}

/// One scenario's running stack.
#[derive(Debug)]
pub(super) struct Rig {
    pub(super) supervisor: Arc<Mutex<Supervisor>>,
    pub(super) ports: Ports,
    pub(super) api: Arc<Api>,
    pub(super) db: PgPool,
    /// The Tocsin services a kill may hit, in a fixed order.
    pub(super) killable: Vec<String>,
    pub(super) specs: Vec<Spec>,
    nats_url: String,
    prefix: String,
}

impl Rig {
    /// A fresh database and prefix named after `scenario`, migrated, and every process started
    /// and waited for: the providers, `tocsin-ingest serve`, the resolver and `replicas`
    /// workers per channel.
    pub(super) async fn start(
        servers: &Servers,
        scenario: &str,
        profile: &'static str,
        replicas: usize,
        dir: &Path,
        restart_on_exit: bool,
    ) -> anyhow::Result<Rig> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let database_url = servers
            .fresh_database(&format!("torture_{scenario}"))
            .await?;
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let prefix = format!("torture_{scenario}_{suffix}");
        let nats_url = servers.nats.url();
        let ports = Ports::pick()?;
        let ingest = Ingest {
            profile,
            database_url: database_url.clone(),
            nats_url: nats_url.clone(),
            bus_prefix: prefix.clone(),
            port: free_port()?,
            // Subscribers' webhook URLs point at the receiver on loopback, which only the
            // development allow-list lets through.
            env: vec![("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".into())],
        };
        ingest.migrate().await?;
        let urls = Urls {
            database: &database_url,
            nats: &nats_url,
            bus_prefix: &prefix,
        };
        let specs = specs(&ingest, ports, &urls, replicas)?;
        let mut supervisor = Supervisor::new(profile, dir, restart_on_exit);
        for spec in &specs {
            supervisor.spawn(spec.clone())?;
        }
        let killable = specs
            .iter()
            .filter(|s| s.binary != "tocsin-local-providers")
            .map(|s| s.name.clone())
            .collect();
        let supervisor = Arc::new(Mutex::new(supervisor));
        let api = Arc::new(Api::new(ingest.port)?);
        let db = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&database_url)
            .await
            .context("connecting the harness to the scenario's database")?;
        let rig = Rig {
            supervisor,
            ports,
            api,
            db,
            killable,
            specs,
            nats_url,
            prefix,
        };
        rig.wait_ready().await?;
        Ok(rig)
    }

    /// Waits for the providers, the API and every JetStream consumer, failing early (with
    /// the log to read) when a process exits instead.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        stack::wait_for_providers(self.ports).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        self.api.wait_ready(Duration::from_secs(60)).await?;
        let (js, consumers) = self.consumers().await?;
        for (stream, consumer) in consumers {
            loop {
                self.check_started().await?;
                if let Ok(handle) = js.get_stream(&stream).await
                    && handle.consumer_info(&consumer).await.is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("consumer {consumer} on {stream} did not appear within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The JetStream context and the (stream, consumer) pairs the services use.
    async fn consumers(
        &self,
    ) -> anyhow::Result<(async_nats::jetstream::Context, Vec<(String, String)>)> {
        let config = BusConfig::new(&self.prefix)?;
        let consumers = config.consumers();
        let js = async_nats::jetstream::new(
            async_nats::connect(&self.nats_url)
                .await
                .context("connecting the harness to NATS")?,
        );
        Ok((js, consumers))
    }

    /// What JetStream holds for this scenario's prefix at the end, for the diagnosis: each
    /// stream's messages and each consumer's backlog, or why it could not be read.
    pub(super) async fn bus_state(&self) -> Vec<String> {
        let (js, consumers) = match self.consumers().await {
            Ok(found) => found,
            Err(e) => return vec![format!("JetStream unreadable: {e:#}")],
        };
        let mut lines = Vec::new();
        for (stream, consumer) in consumers {
            let mut handle = match js.get_stream(&stream).await {
                Ok(handle) => handle,
                Err(e) => {
                    lines.push(format!("stream {stream} (for consumer {consumer}): {e}"));
                    continue;
                }
            };
            let messages = handle
                .info()
                .await
                .map_or_else(|e| e.to_string(), |i| i.state.messages.to_string());
            let consumer_state = match handle.consumer_info(&consumer).await {
                Ok(info) => format!(
                    "pending {} ack_pending {} redelivered {} waiting pulls {}",
                    info.num_pending, info.num_ack_pending, info.num_redelivered, info.num_waiting
                ),
                Err(e) => format!("missing ({e})"),
            };
            lines.push(format!(
                "stream {stream} ({messages} messages), consumer {consumer}: {consumer_state}"
            ));
        }
        lines
    }

    async fn check_started(&self) -> anyhow::Result<()> {
        let mut supervisor = self.supervisor.lock().await;
        supervisor.watch();
        if let Some(exit) = supervisor.exits().first() {
            bail!(
                "{} exited at start ({}); see {}",
                exit.name,
                exit.status,
                supervisor.log_path(&exit.name).display()
            );
        }
        Ok(())
    }
}

/// Every process of a scenario: providers, ingest, resolver, `replicas` workers per channel
/// (each SMS worker with a callback port of its own).
fn specs(
    ingest: &Ingest,
    ports: Ports,
    urls: &Urls<'_>,
    replicas: usize,
) -> anyhow::Result<Vec<Spec>> {
    let tuning: Vec<(&'static str, String)> = WORKER_TUNING
        .iter()
        .map(|&(name, value)| (name, value.to_owned()))
        .collect();
    let mut providers = stack::providers_env(ports);
    // Message-IDs are read from the headers, which are parsed either way; the bodies would
    // only fill the provider's memory and the harness's page reads.
    providers.push(("TOCSIN_LOCAL_SMTP_KEEP_DATA", "false".into()));
    let mut specs = vec![
        Spec {
            name: "tocsin-local-providers".into(),
            binary: "tocsin-local-providers",
            args: vec!["all".into()],
            env: providers,
        },
        Spec {
            name: "tocsin-ingest".into(),
            binary: "tocsin-ingest",
            args: vec!["serve".into()],
            env: ingest.env(),
        },
        Spec {
            name: "tocsin-resolver".into(),
            binary: "tocsin-resolver",
            args: Vec::new(),
            env: stack::common_env(urls, &[]),
        },
    ];
    for channel in Channel::ALL {
        for replica in 1..=replicas {
            let callback_port = if channel == Channel::Sms && replica > 1 {
                free_port()?
            } else {
                ports.sms_callbacks
            };
            let binary = stack::worker_binary(channel);
            specs.push(Spec {
                name: format!("{binary}-{replica}"),
                binary,
                args: Vec::new(),
                env: stack::worker_env(channel, ports, urls, &tuning, callback_port),
            });
        }
    }
    Ok(specs)
}

/// Each binary's settings as started (the first scenario's ports; secrets masked), for the
/// report: everything here is a deliberate choice, the rest are the services' defaults.
pub(super) fn settings_lines(specs: &[Spec]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen = Vec::new();
    for spec in specs {
        if seen.contains(&spec.binary) {
            continue;
        }
        seen.push(spec.binary);
        let settings: Vec<String> = spec
            .env
            .iter()
            .map(|(name, value)| {
                if name.contains("TOKEN") {
                    format!("{name}=***")
                } else {
                    format!("{name}={value}")
                }
            })
            .collect();
        lines.push(format!("{}: {}", spec.binary, settings.join(" ")));
    }
    lines
}
