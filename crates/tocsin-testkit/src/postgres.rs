//! A private PostgreSQL server for tests that stop the database and start it again (the
//! shared one at `DATABASE_URL` must keep running for every other test).
//!
//! It is a real `postgres` from the machine's installation (`/usr/lib/postgresql/*/bin`),
//! initialised by `initdb` into a fresh temporary directory, listening on a free loopback
//! port, with trust authentication for the `postgres` role. PostgreSQL refuses to run as
//! root, so when the tests run as root every server command runs as the `postgres` OS user
//! (`runuser`), and the directory is handed to that user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::free_port;

/// A private PostgreSQL server; stopped (immediately) and its directory removed on drop.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    bin_dir: PathBuf,
    dir: PathBuf,
    /// Run the server's commands as the `postgres` OS user (the tests run as root).
    as_postgres: bool,
    running: bool,
    /// Extra `-c name=value` server settings, kept across restarts.
    settings: Vec<(String, String)>,
}

impl PostgresServer {
    /// Initialises a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> anyhow::Result<PostgresServer> {
        Self::start_with_settings(&[]).await
    }

    /// [`PostgresServer::start`] with extra server settings (`("max_connections", "300")`),
    /// which every later start keeps.
    pub async fn start_with_settings(settings: &[(&str, &str)]) -> anyhow::Result<PostgresServer> {
        let bin_dir = bin_dir()?;
        let as_postgres = running_as_root()?;
        let dir = std::env::temp_dir().join(format!("tocsin-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the server directory {}", dir.display()))?;
        let mut server = PostgresServer {
            port: free_port(),
            bin_dir,
            dir,
            as_postgres,
            running: false,
            settings: settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        };
        if as_postgres {
            server.run_plain("chown", &["-R", "postgres:postgres", &server.dir_str()])?;
        }
        let data = server.data_dir();
        server
            .run_blocking(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
            )
            .await
            .context("initdb")?;
        server.start_again().await?;
        Ok(server)
    }

    /// A URL for `database` on this server, as the `postgres` role.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server the way an operator would (`pg_ctl stop -m fast`: sessions are
    /// ended, the data is kept) and waits until it is down.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir();
        self.run_blocking("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
            .await
            .context("pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: every process quits at
    /// once, without a checkpoint, so the next start runs crash recovery from the WAL) and
    /// waits until it is down.
    pub async fn stop_immediate(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir();
        self.run_blocking("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await
            .context("pg_ctl stop -m immediate")?;
        self.running = false;
        Ok(())
    }

    /// The server's log file. It lives in the server's directory, which drop removes: copy
    /// it first to keep it.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Starts the server (again) with the same data, and waits until it accepts connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let log = self.log_path();
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir_str()
        );
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let started = self
            .run_blocking(
                "pg_ctl",
                &[
                    "-D",
                    &data,
                    "-l",
                    &log.to_string_lossy(),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            )
            .await;
        if let Err(e) = started {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("pg_ctl start failed: {e:#}\nthe server log says:\n{log}");
        }
        self.running = true;
        Ok(())
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// Runs one of the server's programs to its end, off the async threads.
    async fn run_blocking(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = self.command(program, args);
        tokio::task::spawn_blocking(move || run(&mut command))
            .await
            .context("the command's thread")?
    }

    fn run_plain(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new(program).args(args))
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin_dir.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command
            .args(args)
            // initdb and pg_ctl look in the working directory; root's may be closed to them.
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null());
        command
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let _ = self
                .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The newest installed PostgreSQL's `bin` directory (Debian and Ubuntu layout), or the
/// directory of `initdb` on the `PATH`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .context("looking for initdb")?;
    let path = String::from_utf8_lossy(&on_path.stdout).trim().to_owned();
    match Path::new(&path).parent() {
        Some(dir) if !path.is_empty() => Ok(dir.to_owned()),
        _ => bail!(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: \
             `apt-get install postgresql` (they go to /usr/lib/postgresql/<version>/bin)"
        ),
    }
}

fn running_as_root() -> anyhow::Result<bool> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    let root = String::from_utf8_lossy(&output.stdout).trim() == "0";
    if root {
        let user = Command::new("id").arg("postgres").output();
        if !user.is_ok_and(|o| o.status.success()) {
            bail!(
                "the tests run as root, and PostgreSQL refuses to: a `postgres` OS user is \
                 needed to run the private server (`apt-get install postgresql` creates it)"
            );
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    #[tokio::test]
    async fn a_private_server_stops_and_starts_again_with_its_data() {
        let mut server = PostgresServer::start()
            .await
            .expect("a private PostgreSQL server starts; see the error for what to install");
        let mut conn = sqlx::PgConnection::connect(&server.url("postgres"))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE kept (n int)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept VALUES (7)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();

        server.stop().await.unwrap();
        assert!(
            sqlx::PgConnection::connect(&server.url("postgres"))
                .await
                .is_err(),
            "a stopped server refuses connections"
        );

        server.start_again().await.unwrap();
        let mut conn = sqlx::PgConnection::connect(&server.url("postgres"))
            .await
            .unwrap();
        let (n,): (i32,) = sqlx::query_as("SELECT n FROM kept")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 7);
        conn.close().await.unwrap();

        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "dropping the server removes its directory");
    }

    #[tokio::test]
    async fn an_immediate_stop_keeps_committed_data_and_the_settings() {
        let mut server = PostgresServer::start_with_settings(&[("max_connections", "123")])
            .await
            .expect("a private PostgreSQL server starts; see the error for what to install");
        let mut conn = sqlx::PgConnection::connect(&server.url("postgres"))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE crashed (n int)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO crashed VALUES (11)")
            .execute(&mut conn)
            .await
            .unwrap();

        server.stop_immediate().await.unwrap();
        assert!(
            sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
            "an open session is cut by the crash"
        );
        server.start_again().await.unwrap();
        let mut conn = sqlx::PgConnection::connect(&server.url("postgres"))
            .await
            .unwrap();
        let (n,): (i32,) = sqlx::query_as("SELECT n FROM crashed")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 11, "crash recovery replays the committed insert");
        let (max,): (String,) = sqlx::query_as("SHOW max_connections")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(max, "123", "the settings survive a restart");
        assert!(server.log_path().exists());
    }
}
