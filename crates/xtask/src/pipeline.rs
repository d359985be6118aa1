//! Shared by `demo` and `bench`: a database of its own, the ingest binary as a child
//! process, and an authenticated gRPC client.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tocsin_proto::v1;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::services::{Services, target_bin};

pub(crate) const TOKEN: &str = "xtask-demo-token-0123456789";
pub(crate) const OPERATOR_TOKEN: &str = "xtask-operator-token-0123456789";

/// `database_url` with its database name replaced by `name`.
/// `admin_url` with its database name replaced by `name`; query parameters (such as a
/// socket directory in `host=`) are kept.
pub(crate) fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url_without_path(admin_url);
    url.push('/');
    url.push_str(name);
    if let Some(query) = admin_url.find('?').map(|i| &admin_url[i..]) {
        url.push_str(query);
    }
    Ok(url)
}

fn url_without_path(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    url[..path_start].to_owned()
}

/// Creates database `name` unless it exists. With `fresh`, drops it first.
pub(crate) async fn create_database(
    services: &Services,
    name: &str,
    fresh: bool,
) -> anyhow::Result<String> {
    let options: PgConnectOptions = services.database_url.parse().context("DATABASE_URL")?;
    let mut admin = options
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    if fresh {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
    }
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    admin.close().await?;
    database_url(&services.database_url, name)
}

pub(crate) async fn drop_database(services: &Services, name: &str) -> anyhow::Result<()> {
    let options: PgConnectOptions = services.database_url.parse()?;
    let mut admin = options.connect().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// How to run one `tocsin-ingest` process.
pub(crate) struct Ingest {
    pub(crate) profile: &'static str,
    pub(crate) database_url: String,
    pub(crate) nats_url: String,
    pub(crate) bus_prefix: String,
    pub(crate) port: u16,
    /// Settings on top of the connection ones, such as `TOCSIN_WEBHOOK_ALLOW`.
    pub(crate) env: Vec<(&'static str, String)>,
}

impl Ingest {
    /// Every setting `tocsin-ingest` is started with (besides `RUST_LOG`).
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("NATS_URL", self.nats_url.clone()),
            ("TOCSIN_BUS_PREFIX", self.bus_prefix.clone()),
            ("TOCSIN_GRPC_ADDR", format!("127.0.0.1:{}", self.port)),
            ("TOCSIN_PUBLISHER_TOKENS", format!("xtask={TOKEN}")),
            (
                "TOCSIN_OPERATOR_TOKENS",
                format!("xtask-operator={OPERATOR_TOKEN}"),
            ),
            ("TOCSIN_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ];
        env.extend(self.env.iter().cloned());
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(target_bin(self.profile, "tocsin-ingest"));
        command
            .args(args)
            .envs(self.env())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true);
        command
    }

    pub(crate) async fn migrate(&self) -> anyhow::Result<()> {
        let status = self
            .command(&["migrate"])
            .status()
            .await
            .context("running tocsin-ingest migrate")?;
        if !status.success() {
            bail!("tocsin-ingest migrate failed: {status}");
        }
        Ok(())
    }

    /// Starts `tocsin-ingest serve` and waits until it answers; the channel serves every
    /// gRPC service of the process.
    pub(crate) async fn serve(&self) -> anyhow::Result<(Child, Channel)> {
        let child = self
            .command(&["serve"])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting tocsin-ingest serve")?;
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        for _ in 0..100 {
            if let Ok(channel) = Channel::from_shared(endpoint.clone())?.connect().await {
                return Ok((child, channel));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("tocsin-ingest did not start listening on {endpoint} within 10 s")
    }
}

/// SIGTERM, then wait; an error unless it exits 0 within 30 s.
pub(crate) async fn terminate(child: Child) -> anyhow::Result<()> {
    terminate_named(child, "tocsin-ingest").await
}

/// [`terminate`] for any of the services; `name` is for the error messages.
pub(crate) async fn terminate_named(mut child: Child, name: &str) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .with_context(|| format!("{name} did not stop within 30 s of SIGTERM"))??;
    if !status.success() {
        bail!("{name} exited with {status} after SIGTERM");
    }
    Ok(())
}

/// Deletes the events, deliveries and dead-letter streams of `bus`'s prefix, where they
/// exist. PostgreSQL holds the truth; these are rebuilt from it.
pub(crate) async fn delete_streams(bus: &tocsin_bus::Bus) {
    let js = async_nats::jetstream::new(bus.client().clone());
    let config = bus.config();
    for stream in [
        config.events_stream(),
        config.deliveries_stream(),
        config.dead_letters_stream(),
    ] {
        // Absent is the outcome we want.
        let _ = js.delete_stream(&stream).await;
    }
}

/// `message` as the `xtask` publisher: may publish and read incidents.
pub(crate) fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(message, TOKEN)
}

/// `message` as the `xtask-operator` operator: may also manage subscribers.
pub(crate) fn operator_authed<T>(message: T) -> tonic::Request<T> {
    with_token(message, OPERATOR_TOKEN)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("valid header"),
    );
    request
}

/// A loopback port nothing listens on, never one this process handed out before: the
/// kernel may give a port it just released to the next bind, and two services started on
/// the same port fail (a torture run once lost its providers scenario to that).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no loopback port this process has not handed out already, after 64 tries")
}

pub(crate) fn kind_name(kind: i32) -> &'static str {
    v1::EventKind::try_from(kind)
        .map_or("?", |k| k.as_str_name())
        .trim_start_matches("EVENT_KIND_")
}

#[cfg(test)]
mod free_port_tests {
    #[test]
    fn a_port_is_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| super::free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
