//! NATS for tests: the shared server with a unique prefix per test, or a private
//! `nats-server` process that a test may stop and start again.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::process::{free_port, wait_for_tcp};

/// The shared NATS server: `NATS_URL`, or the machine's default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A prefix no other test uses: valid as a subject token and, upper-cased, in a stream name.
pub fn unique_prefix() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn server_binary() -> anyhow::Result<PathBuf> {
    let candidates = [PathBuf::from("/usr/sbin/nats-server"), PathBuf::from("/usr/bin/nats-server")];
    if let Some(found) = candidates.into_iter().find(|p| p.exists()) {
        return Ok(found);
    }
    let on_path = std::process::Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .context("looking for nats-server")?;
    let path = String::from_utf8_lossy(&on_path.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("nats-server is not installed: `apt-get install nats-server`");
    }
    Ok(PathBuf::from(path))
}

/// A private JetStream-enabled `nats-server` on a free loopback port.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start() -> anyhow::Result<NatsServer> {
        let store_dir = std::env::temp_dir().join(format!("tocsin-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store_dir)?;
        let mut server = NatsServer { port: free_port(), store_dir, child: None };
        server.start_again().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port with the same JetStream store.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let child = Command::new(server_binary()?)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server")?;
        self.child = Some(child);
        wait_for_tcp(([127, 0, 0, 1], self.port).into(), Duration::from_secs(10)).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_private_server_stops_and_starts_again() {
        let mut server = NatsServer::start().await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        client.flush().await.unwrap();
        server.stop().await;
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.is_err());
        server.start_again().await.unwrap();
        let again = async_nats::connect(server.url()).await.unwrap();
        again.flush().await.unwrap();
    }

    #[test]
    fn prefixes_are_unique_and_well_formed() {
        let (a, b) = (unique_prefix(), unique_prefix());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }
}
