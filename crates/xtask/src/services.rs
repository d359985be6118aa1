//! Finds this machine's PostgreSQL and NATS, starts them if they are installed but stopped,
//! and says exactly what to install when they are missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

#[derive(Debug, Clone)]
pub(crate) struct Services {
    pub(crate) database_url: String,
    pub(crate) nats_url: String,
}

/// Loopback: no TLS. sqlx's default `sslmode=prefer` would encrypt every statement to a
/// server on the same machine (Debian's PostgreSQL has `ssl=on`), which cost the ingest
/// benchmark throughput and tail latency.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The workspace root: xtask lives in `<root>/crates/xtask`.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Pure path arithmetic, no I/O: cargo always passes an absolute manifest directory.
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// `target/`, honouring `CARGO_TARGET_DIR` as cargo does.
pub(crate) fn target_dir() -> PathBuf {
    // A relative CARGO_TARGET_DIR is relative to where cargo runs, which is the workspace root.
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `target/<profile>/<name>`, honouring `CARGO_TARGET_DIR` as cargo does.
pub(crate) fn target_bin(profile: &str, name: &str) -> PathBuf {
    target_dir().join(profile).join(name)
}

/// The cargo that runs xtask (`CARGO`), so toolchain overrides carry over, in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    // `cargo xtask` runs xtask through `cargo run`, which hands it the package's variables
    // and a library path into target/. Passed on, they change what the nested build sees
    // (fingerprints included), so it rebuilt the whole tree that a plain `cargo build` had
    // just built, and the next plain build rebuilt it again.
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if is_run_variable(&name) {
            command.env_remove(name.as_ref());
        } else if name == "LD_LIBRARY_PATH" {
            match outer_library_path(&value) {
                Some(path) => command.env("LD_LIBRARY_PATH", path),
                None => command.env_remove("LD_LIBRARY_PATH"),
            };
        }
    }
    command
}

/// Variables `cargo run` sets for the program it runs, which a nested cargo must not inherit.
fn is_run_variable(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
        || name == "CARGO_PRIMARY_PACKAGE"
}

/// `LD_LIBRARY_PATH` without what `cargo run` put in front of it (the target directory's and
/// the toolchain's library directories); `None` when nothing else is left.
fn outer_library_path(value: &std::ffi::OsStr) -> Option<std::ffi::OsString> {
    let target = workspace_root().join("target");
    let outer: Vec<_> = std::env::split_paths(value)
        .filter(|dir| {
            !dir.starts_with(&target) && !dir.components().any(|c| c.as_os_str() == "toolchains")
        })
        .collect();
    if outer.is_empty() {
        return None;
    }
    std::env::join_paths(outer).ok()
}

/// Builds every binary (debug, or release for benchmarks).
pub(crate) async fn build_binaries(release: bool) -> anyhow::Result<()> {
    let mut command = cargo();
    command.args(["build", "--workspace", "--bins"]);
    if release {
        command.arg("--release");
    }
    let status = command.status().await.context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

/// Checks PostgreSQL and NATS JetStream, starting local ones that are installed but stopped.
pub(crate) async fn ensure_services() -> anyhow::Result<Services> {
    let services = Services {
        database_url: std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into()),
        nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.into()),
    };
    ensure(Service::Postgres, &services.database_url).await?;
    ensure(Service::Nats, &services.nats_url).await?;
    Ok(services)
}

/// How long a freshly started service gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
enum Service {
    Postgres,
    Nats,
}

impl Service {
    fn default_port(self) -> u16 {
        match self {
            Service::Postgres => 5432,
            Service::Nats => 4222,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::Nats => "NATS JetStream",
        }
    }

    async fn check(self, url: &str) -> anyhow::Result<()> {
        match self {
            Service::Postgres => check_postgres(url).await,
            Service::Nats => check_nats(url).await,
        }
    }

    async fn start(self) -> anyhow::Result<()> {
        match self {
            Service::Postgres => start_postgres().await,
            Service::Nats => start_nats().await,
        }
    }

    /// What a person runs to get this service on this machine.
    fn instructions(self) -> &'static str {
        match self {
            Service::Postgres => {
                "To run PostgreSQL on this machine:\n  \
                 apt-get install -y postgresql\n  \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 It must let user postgres in without a password on 127.0.0.1 (trust in pg_hba.conf); \
                 or point DATABASE_URL at another server."
            }
            Service::Nats => {
                "To run NATS with JetStream on this machine:\n  \
                 apt-get install -y nats-server\n  \
                 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
                 -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log\n\
                 or point NATS_URL at another server started with -js."
            }
        }
    }
}

/// Checks `service` at `url`; if it is down and local, starts it and waits for it to answer.
async fn ensure(service: Service, url: &str) -> anyhow::Result<()> {
    let name = service.name();
    let shown = redact(url);
    let first = match service.check(url).await {
        Ok(()) => {
            println!("✓ {name} reachable at {shown}");
            return Ok(());
        }
        Err(e) => e,
    };
    if !is_loopback(url) {
        // Starting a local server would not help a remote URL; the URL or the network is wrong.
        bail!("{name} at {shown} is unreachable: {first:#}");
    }
    if let Some(addr) = host_port(url, service.default_port())
        && tokio::net::TcpStream::connect(&addr).await.is_ok()
    {
        // A server is there but refuses us (auth, no JetStream): starting one cannot help.
        bail!(
            "{name} at {shown} is running but unusable: {first:#}\n{}",
            service.instructions()
        );
    }
    println!("… {name} is not answering at {shown} ({first:#}); trying to start the local one");
    if let Err(e) = service.start().await {
        bail!(
            "{name} is not answering at {shown} ({first:#}) and could not be started: {e:#}\n{}",
            service.instructions()
        );
    }
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut last = first;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
        match service.check(url).await {
            Ok(()) => {
                println!("✓ {name} started and reachable at {shown}");
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    bail!(
        "{name} is still unreachable at {shown} {} s after starting it: {last:#}\n{}",
        START_TIMEOUT.as_secs(),
        service.instructions()
    )
}

async fn check_postgres(url: &str) -> anyhow::Result<()> {
    let options: PgConnectOptions = url
        .parse()
        .context("DATABASE_URL is not a PostgreSQL URL")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(3), options.connect())
        .await
        .context("timed out connecting")??;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

async fn check_nats(url: &str) -> anyhow::Result<()> {
    let client = tokio::time::timeout(Duration::from_secs(3), async_nats::connect(url))
        .await
        .context("timed out connecting")??;
    // The raw API request rather than `jetstream::Context::query_account`: async-nats 0.51's
    // `Account` requires `reserved_memory`/`reserved_storage`, which nats-server 2.9 does not
    // send, so the typed query fails to decode on a perfectly healthy 2.9 server.
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        client.request("$JS.API.INFO", "".into()),
    )
    .await
    .context("timed out asking for JetStream account info")?
    .context("the server answers but JetStream does not (start nats-server with -js)")?;
    let info: serde_json::Value =
        serde_json::from_slice(&reply.payload).context("JetStream's account info is not JSON")?;
    if let Some(error) = info.get("error") {
        bail!("JetStream is not available to this account: {error}");
    }
    Ok(())
}

async fn start_postgres() -> anyhow::Result<()> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // Debian numbers clusters by major version; the newest is the one a fresh install uses.
    let Some(version) = versions.iter().max() else {
        bail!("PostgreSQL is not installed (no cluster under /etc/postgresql)");
    };
    let Some(pg_ctlcluster) = find_program("pg_ctlcluster") else {
        bail!("pg_ctlcluster is not installed (it comes with postgresql-common)");
    };
    run(
        &pg_ctlcluster,
        &["--skip-systemctl-redirect", version, "main", "start"],
    )
    .await
}

async fn start_nats() -> anyhow::Result<()> {
    let Some(server) = find_program("nats-server") else {
        bail!("nats-server is not installed");
    };
    let server_arg = server.to_string_lossy().into_owned();
    // Best effort: when this fails (not root), nats-server says why in its log.
    let _ = std::fs::create_dir_all("/var/lib/nats-server");
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        "4222",
        "-js",
        "-sd",
        "/var/lib/nats-server",
        "-l",
        "/var/log/nats-server.log",
    ];
    if let Some(daemon) = find_program("start-stop-daemon") {
        let mut full = vec![
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            &server_arg,
            "--",
        ];
        full.extend(args);
        return run(&daemon, &full).await;
    }
    // No start-stop-daemon: a child in its own process group, so that neither xtask's exit
    // nor a Ctrl-C in this terminal takes the server down with it. Its log goes to the file.
    use std::os::unix::process::CommandExt;
    std::process::Command::new(&server)
        .args(&args[..7])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    Ok(())
}

/// `name` in the usual system directories or on `PATH`; sbin directories are often
/// missing from a non-root `PATH`, and that is where Debian puts servers.
fn find_program(name: &str) -> Option<PathBuf> {
    let system = [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .map(PathBuf::from);
    let path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    system
        .into_iter()
        .chain(path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

async fn run(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        // pg_ctlcluster explains itself on stdout ("Cluster is already running."), others on stderr.
        let said = [&output.stderr, &output.stdout]
            .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned());
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            output.status,
            said.join(" ").trim()
        );
    }
    Ok(())
}

/// The URL's authority (`user:pass@host:port`), without scheme, path or query.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// `host:port` to probe with TCP; `None` for a Unix socket (no host).
fn host_port(url: &str, default_port: u16) -> Option<String> {
    let authority = authority(url);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host_port.is_empty() {
        return None;
    }
    // The port is whatever follows the last colon, unless that colon is inside `[v6]`.
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    })
}

/// Whether the URL names this machine, so that starting a local server can help. An empty
/// host (`postgres:///db`) means PostgreSQL's local Unix socket.
fn is_loopback(url: &str) -> bool {
    let authority = authority(url);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => host_port.split(':').next().unwrap_or(host_port),
    };
    host.is_empty()
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The URL without its secret, for printing: a password, or a NATS token (a user with no
/// password in a `nats://` URL is a token).
fn redact(url: &str) -> String {
    let Some((credentials, _)) = authority(url).rsplit_once('@') else {
        return url.to_owned();
    };
    // The authority, and so the credentials, start right after the scheme.
    let start = url.find("://").map_or(0, |i| i + 3);
    let shown = match credentials.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if url.starts_with("postgres") => credentials.to_owned(),
        None => "***".to_owned(),
    };
    format!(
        "{}{shown}{}",
        &url[..start],
        &url[start + credentials.len()..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback("postgres://postgres@127.0.0.1:5432/postgres"));
        assert!(is_loopback("postgres://u:p@localhost/db"));
        assert!(is_loopback("postgres:///db?host=/var/run/postgresql"));
        assert!(is_loopback("nats://[::1]:4222"));
        assert!(is_loopback("127.0.0.1:4222"));
        assert!(!is_loopback(
            "postgres://u:127.0.0.1@db.example.com/postgres"
        ));
        assert!(!is_loopback("nats://nats.internal:4222"));
    }

    #[test]
    fn probe_addresses_get_default_ports() {
        assert_eq!(
            host_port("postgres://u:p@127.0.0.1/db", 5432).as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            host_port("nats://[::1]:4223", 4222).as_deref(),
            Some("[::1]:4223")
        );
        assert_eq!(
            host_port("nats://[::1]", 4222).as_deref(),
            Some("[::1]:4222")
        );
        assert_eq!(host_port("postgres:///db?host=/run/postgresql", 5432), None);
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
        assert_eq!(redact("nats://s3cret@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }
}
