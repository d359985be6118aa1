//! Finds this machine's PostgreSQL and NATS, starts them if they are installed but stopped,
//! and says exactly what to install when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[derive(Debug, Clone)]
pub(crate) struct Services {
    pub(crate) database_url: String,
    pub(crate) nats_url: String,
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

pub(crate) fn target_bin(profile: &str, name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join(profile).join(name)
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Builds every binary (debug, or release for benchmarks).
pub(crate) async fn build_binaries(release: bool) -> anyhow::Result<()> {
    let mut command = cargo();
    command.args(["build", "--workspace", "--bins"]);
    if release {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

pub(crate) async fn ensure_services() -> anyhow::Result<Services> {
    let services = Services {
        database_url: std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into()),
        nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.into()),
    };
    ensure("PostgreSQL", &services.database_url, || check_postgres(&services.database_url), start_postgres).await?;
    ensure("NATS JetStream", &services.nats_url, || check_nats(&services.nats_url), start_nats).await?;
    Ok(services)
}

async fn ensure<C, F>(name: &str, url: &str, check: C, start: fn() -> anyhow::Result<()>) -> anyhow::Result<()>
where
    C: Fn() -> F,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let first = match check().await {
        Ok(()) => {
            println!("✓ {name} reachable at {}", redact(url));
            return Ok(());
        }
        Err(e) => e,
    };
    if !is_loopback(url) {
        bail!("{name} at {} is unreachable: {first:#}", redact(url));
    }
    println!("… {name} is not answering at {} ({first:#}); trying to start the local one", redact(url));
    start()?;
    let mut last = first;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match check().await {
            Ok(()) => {
                println!("✓ {name} started and reachable at {}", redact(url));
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    bail!("{name} still unreachable at {} after starting it: {last:#}", redact(url))
}

async fn check_postgres(url: &str) -> anyhow::Result<()> {
    let options: PgConnectOptions = url.parse().context("DATABASE_URL is not a PostgreSQL URL")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(3), options.connect())
        .await
        .context("timed out")??;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

async fn check_nats(url: &str) -> anyhow::Result<()> {
    let client = tokio::time::timeout(Duration::from_secs(3), async_nats::connect(url))
        .await
        .context("timed out")??;
    // The raw API request works on every server version; the typed account query expects
    // fields that nats-server 2.9 does not send.
    let reply = tokio::time::timeout(Duration::from_secs(3), client.request("$JS.API.INFO", "".into()))
        .await
        .context("timed out asking for JetStream account info")?
        .context("the server answers but JetStream is not enabled (start nats-server with -js)")?;
    let body = String::from_utf8_lossy(&reply.payload);
    if body.contains("\"error\"") {
        bail!("JetStream is not available: {body}");
    }
    Ok(())
}

fn start_postgres() -> anyhow::Result<()> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let Some(version) = versions.iter().max() else {
        bail!(
            "PostgreSQL is not installed. Install and start it:\n  apt-get install -y postgresql\n  \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             and allow trust auth for 127.0.0.1 (pg_hba.conf), or set DATABASE_URL"
        );
    };
    run("pg_ctlcluster", &["--skip-systemctl-redirect", version, "main", "start"])
}

fn start_nats() -> anyhow::Result<()> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].into_iter().find(|p| Path::new(p).exists());
    let Some(binary) = binary else {
        bail!(
            "nats-server is not installed. Install and start it:\n  apt-get install -y nats-server\n  \
             start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
             -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
        );
    };
    std::fs::create_dir_all("/var/lib/nats-server").ok();
    let args = ["-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log"];
    if Path::new("/sbin/start-stop-daemon").exists() || Path::new("/usr/sbin/start-stop-daemon").exists() {
        let mut full = vec!["--start", "--oknodo", "--background", "--exec", binary, "--"];
        full.extend(args);
        run("start-stop-daemon", &full)
    } else {
        Command::new(binary).args(args).spawn().context("starting nats-server")?;
        Ok(())
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program).args(args).status().with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

fn is_loopback(url: &str) -> bool {
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| url.contains(h))
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
