//! The workspace's binaries as child processes, for tests that kill and restart them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface has free ports")
}

/// Waits until something accepts TCP connections at `addr`.
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
    let dir = exe.parent().and_then(|deps| deps.parent()).context("locating the target directory")?;
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

/// A spawned service, killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
}

impl ServiceProcess {
    pub async fn spawn(name: &str, args: &[&str], envs: &[(String, String)]) -> anyhow::Result<ServiceProcess> {
        let child = Command::new(binary_path(name)?)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(ServiceProcess { child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits up to 30 s for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let pid = self.pid().context("the process has already exited")?;
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("no exit within 30 s of SIGTERM")?
            .map_err(Into::into)
    }
}
