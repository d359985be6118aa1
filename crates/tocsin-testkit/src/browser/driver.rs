//! The processes behind a [`Browser`](super::Browser): a private `chromedriver` on a loopback
//! port, the Chromium it starts, and the temporary profile Chromium writes to.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::process::free_port;

/// How long `chromedriver` may take to answer `/status` with `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Times a port can be taken by someone else between [`free_port`] and chromedriver's bind.
const SPAWN_ATTEMPTS: u32 = 3;

/// How many lines of chromedriver's output are kept to explain a failure.
const LOG_LINES: usize = 200;

/// A running chromedriver, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub(super) struct Driver {
    child: Child,
    /// Kept from the spawn: tokio forgets the id once the child has been reaped.
    pid: u32,
    port: u16,
    log: DriverLog,
}

impl Driver {
    /// Spawns `program` on a free loopback port and waits until it reports ready.
    pub(super) async fn spawn(program: &Path, http: &reqwest::Client) -> anyhow::Result<Driver> {
        let mut attempt = 1;
        loop {
            let port = free_port();
            let log = DriverLog::default();
            let mut child = Command::new(program)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("spawning {}", program.display()))?;
            let pid = child
                .id()
                .context("a just-spawned chromedriver has a pid")?;
            // Drained continuously: a full pipe would block chromedriver mid-write.
            log.follow(child.stdout.take());
            log.follow(child.stderr.take());
            match wait_until_ready(&mut child, http, port, &log).await? {
                None => {
                    return Ok(Driver {
                        child,
                        pid,
                        port,
                        log,
                    });
                }
                // Most likely the port was taken between the probe and chromedriver's bind.
                Some(status) if attempt < SPAWN_ATTEMPTS => {
                    tracing::warn!(%status, port, attempt, "chromedriver exited at start; retrying");
                    attempt += 1;
                }
                Some(status) => bail!(
                    "chromedriver exited at start ({status}) {SPAWN_ATTEMPTS} times; its \
                     output:\n{}",
                    log.tail()
                ),
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(super) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// chromedriver's last lines of output, to explain a failure.
    pub(super) fn output(&self) -> String {
        self.log.tail()
    }

    /// Ends session `id` without awaiting (for `Drop`), and kills Chromium's processes when chromedriver does
    /// not confirm it: killing chromedriver alone leaves Chromium running.
    pub(super) fn end_session_blocking(&self, id: &str) {
        if !delete_session_blocking(self.port, id) {
            kill_descendants(self.pid);
        }
    }

    /// Kills whatever chromedriver started (after a failed `DELETE`, Chromium may still run).
    pub(super) fn kill_browser(&self) {
        kill_descendants(self.pid);
    }

    /// Kills chromedriver and reaps it, so no zombie outlives the call.
    pub(super) async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Polls `GET /status` until chromedriver says it is ready (`None`) or exits (its status).
async fn wait_until_ready(
    child: &mut Child,
    http: &reqwest::Client,
    port: u16,
    log: &DriverLog,
) -> anyhow::Result<Option<ExitStatus>> {
    let url = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("checking on chromedriver")? {
            // Let the output tasks catch the last lines before they are reported.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Some(status));
        }
        // Refused connections and half-started answers just mean "not yet".
        let answer = http.get(&url).timeout(Duration::from_secs(2)).send().await;
        if let Ok(answer) = answer
            && let Ok(status) = answer.json::<Value>().await
            && status["value"]["ready"] == Value::Bool(true)
        {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            bail!(
                "chromedriver did not report ready at {url} within {READY_TIMEOUT:?}; its \
                 output:\n{}",
                log.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines chromedriver wrote to stdout and stderr, kept to explain a failure.
#[derive(Debug, Clone, Default)]
struct DriverLog(Arc<Mutex<VecDeque<String>>>);

impl DriverLog {
    fn follow(&self, stream: Option<impl AsyncRead + Unpin + Send + 'static>) {
        let Some(stream) = stream else { return };
        let lines = Arc::clone(&self.0);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                tracing::debug!(target: "chromedriver", "{line}");
                let mut lines = lines
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
    }

    fn tail(&self) -> String {
        let lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.is_empty() {
            return "(nothing)".to_owned();
        }
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A fresh Chromium profile directory, removed on drop, so no test sees another's cookies.
#[derive(Debug)]
pub(super) struct Profile(PathBuf);

impl Profile {
    pub(super) fn create() -> anyhow::Result<Profile> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!("tocsin-chromium-{unique}"));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating the profile directory {}", path.display()))?;
        Ok(Profile(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, path = %self.0.display(), "could not remove the Chromium profile");
        }
    }
}

/// `/usr/bin/<name>`, else the first `<name>` on `PATH`.
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let usual = Path::new("/usr/bin").join(name);
    if usual.is_file() {
        return Some(usual);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Ends the session from `Drop`, where nothing can be awaited: a bare HTTP/1.1 `DELETE` over a
/// blocking socket, so Chromium exits rather than outliving a test that failed. Returns whether
/// chromedriver confirmed it.
fn delete_session_blocking(port: u16, id: &str) -> bool {
    let attempt = || -> std::io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        // chromedriver answers once Chromium has closed, which takes a moment.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )?;
        // The first bytes of the answer are enough: chromedriver sends them only once the
        // session is gone, and may keep the connection open after them.
        let mut answer = [0; 64];
        let read = stream.read(&mut answer)?;
        let status_line = String::from_utf8_lossy(&answer[..read]);
        if !status_line.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "chromedriver answered {:?}",
                status_line.lines().next().unwrap_or_default()
            )));
        }
        Ok(())
    };
    match attempt() {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, port, "could not end the browser session on drop");
            false
        }
    }
}

/// Kills (SIGKILL) every process descended from `root`, not `root` itself: the Chromium that
/// chromedriver started, when the session could not be ended politely.
fn kill_descendants(root: u32) {
    let doomed: Vec<String> = descendants(root).iter().map(u32::to_string).collect();
    if doomed.is_empty() {
        return;
    }
    tracing::warn!(
        count = doomed.len(),
        "killing the browser processes left behind"
    );
    // kill(1) rather than a libc binding, which would need unsafe code or another crate.
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(&doomed)
        .stderr(Stdio::null())
        .status();
}

/// The processes descended from `root`, from each process's parent in `/proc/<pid>/stat`
/// (this kernel has no `/proc/<pid>/task/<tid>/children`).
fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name, in parentheses, may hold spaces: the fields after it are
            // the state, then the parent's pid.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        next += 1;
    }
    tree.split_off(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_tree_leaves_no_descendants_behind() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60 & wait"])
            .spawn()
            .unwrap();
        let pid = shell.id();
        let started = std::time::Instant::now();
        while descendants(pid).len() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the sleeps never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_descendants(pid);
        // `wait` returns once both sleeps are dead, and the shell exits with it.
        while shell.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the sleeps survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(descendants(pid).is_empty());
    }
}
