//! The workspace's binaries as child processes, for tests that kill and restart them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface has free ports")
}

/// Waits until something accepts TCP connections at `addr`, polling every 50 ms.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where cargo put the workspace binary `name`, next to the running test's directory.
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("locating the target directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "binary {name} not found at {}: build it with `cargo build --workspace --bins` \
             (cargo xtask test does this)",
            path.display()
        );
    }
    Ok(path)
}

/// A spawned workspace binary, killed (SIGKILL) when dropped so a failing test leaves no
/// stray service behind.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    /// Kept from the spawn: tokio forgets the id once the child has been waited for.
    pid: u32,
}

impl ServiceProcess {
    /// Spawns the workspace binary `name` with `args` and extra environment `envs`; its
    /// stdout and stderr go to the test's, so a failing test shows the service's logs.
    pub async fn spawn(
        name: &str,
        args: &[&str],
        envs: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let child = Command::new(binary_path(name)?)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let pid = child.id().context("a just-spawned child has a pid")?;
        Ok(ServiceProcess { child, pid })
    }

    /// The process id it was spawned with (still reported after it exits).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, as an orchestrator stops a service, then waits up to 30 s for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        // `id()` is `None` once the child was reaped; then its pid may belong to someone else.
        let pid = self.child.id().context("the process has already exited")?;
        // kill(1) rather than a libc binding, which would need unsafe code or another crate.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed ({sent})");
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("no exit within 30 s of SIGTERM")?
            .map_err(Into::into)
    }

    /// SIGTERM, then asserts the process exits with status 0 in less than `limit`, as a
    /// graceful stop must; returns how long it took.
    pub async fn stop_cleanly_within(&mut self, limit: Duration) -> Duration {
        let started = std::time::Instant::now();
        let status = self.terminate().await.expect("SIGTERM and wait");
        let took = started.elapsed();
        assert!(
            status.success(),
            "SIGTERM ends it with status 0: {status:?}"
        );
        assert!(
            took < limit,
            "it took {took:?} to stop, not less than {limit:?}"
        );
        took
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_tcp_sees_a_listener_and_times_out_without_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        wait_for_tcp(addr, Duration::from_secs(1)).await.unwrap();
        drop(listener);
        let started = std::time::Instant::now();
        let error = wait_for_tcp(addr, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("nothing listens"));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let error = binary_path("no-such-tocsin-binary")
            .unwrap_err()
            .to_string();
        assert!(error.contains("cargo build --workspace --bins"), "{error}");
    }
}
