//! NATS for tests: the shared server with a unique prefix per test, or a private
//! `nats-server` process that a test may stop and start again.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::process::free_port;

/// The shared NATS server: `NATS_URL`, or the machine's default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A prefix no other test uses: valid as a subject token and, upper-cased, in a stream name.
/// Under `cargo xtask test` it carries the run's tag (`t_<tag>_<random>`), by which xtask
/// removes the run's streams from the shared server afterwards.
pub fn unique_prefix() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    match std::env::var("TOCSIN_TEST_RUN") {
        Ok(tag) if tag.len() == 8 && tag.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("t_{}_{}", tag.to_ascii_lowercase(), &random[..8])
        }
        _ => format!("t_{}", &random[..12]),
    }
}

fn server_binary() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("/usr/sbin/nats-server"),
        PathBuf::from("/usr/bin/nats-server"),
    ];
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

/// A private JetStream-enabled `nats-server` on a free loopback port, for tests that stop
/// the bus and start it again. Its JetStream store and log live in a fresh temporary
/// directory that survives restarts and is removed on drop; the process is killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

/// How long a starting server gets before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<NatsServer> {
        let store_dir =
            std::env::temp_dir().join(format!("tocsin-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store_dir)
            .with_context(|| format!("creating the JetStream store {}", store_dir.display()))?;
        let mut server = NatsServer {
            port: free_port(),
            store_dir,
            child: None,
        };
        server.start_again().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no clean shutdown, as in a crash) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Deletes the JetStream store (every stream, consumer and message), as a server that
    /// lost its disk; [`NatsServer::start_again`] then starts it empty. Stops it first.
    pub async fn wipe_store(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let jetstream = self.store_dir.join("jetstream");
        if jetstream.exists() {
            std::fs::remove_dir_all(&jetstream)
                .with_context(|| format!("wiping {}", jetstream.display()))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same JetStream store; streams and
    /// messages written before [`NatsServer::stop`] are still there. Stops it first if running.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let log = self.log_path();
        let mut child = Command::new(server_binary()?)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            // A file rather than the test's output: it is read back when the server fails.
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server")?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nats-server exited at start ({status}); its log says:\n{}",
                    self.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill().await;
                bail!(
                    "nats-server did not listen on port {} within {START_TIMEOUT:?}; its log says:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the server, deletes its JetStream store (streams, consumers and messages, as
    /// a lost disk would) and starts it again, empty, on the same port: clients that reconnect
    /// find a server that has never heard of their streams.
    pub async fn start_empty(&mut self) -> anyhow::Result<()> {
        self.wipe_store().await?;
        self.start_again().await
    }

    /// The server's log file. It lives in the store directory, which drop removes: copy it
    /// first to keep it.
    pub fn log_path(&self) -> PathBuf {
        self.store_dir.join("nats-server.log")
    }

    /// The end of the server's log, to explain a failed start.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
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
    use async_nats::jetstream;

    use super::*;

    #[tokio::test]
    async fn a_private_server_stops_and_starts_again_with_its_streams() {
        let mut server = NatsServer::start().await.unwrap();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client);
        let stream = jetstream::stream::Config {
            name: "TESTKIT".into(),
            subjects: vec!["testkit.>".into()],
            ..Default::default()
        };
        js.create_stream(stream).await.unwrap();
        js.publish("testkit.a", "before the crash".into())
            .await
            .unwrap()
            .await
            .unwrap();

        server.stop().await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .is_err()
        );
        assert!(
            async_nats::connect(server.url()).await.is_err(),
            "a stopped server refuses clients"
        );

        server.start_again().await.unwrap();
        let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        let mut stream = js.get_stream("TESTKIT").await.unwrap();
        assert_eq!(
            stream.info().await.unwrap().state.messages,
            1,
            "the store survives a SIGKILL"
        );
        let message = stream.get_raw_message(1).await.unwrap();
        assert_eq!(&message.payload[..], b"before the crash");
    }

    #[tokio::test]
    async fn starting_empty_forgets_every_stream_on_the_same_port() {
        let mut server = NatsServer::start().await.unwrap();
        let url = server.url();
        let js = jetstream::new(async_nats::connect(&url).await.unwrap());
        let stream = jetstream::stream::Config {
            name: "WIPED".into(),
            subjects: vec!["wiped.>".into()],
            ..Default::default()
        };
        js.create_stream(stream).await.unwrap();
        js.publish("wiped.a", "lost with the disk".into())
            .await
            .unwrap()
            .await
            .unwrap();

        server.start_empty().await.unwrap();
        assert_eq!(server.url(), url, "the same port");
        let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        assert!(
            js.get_stream("WIPED").await.is_err(),
            "the stream went with the store"
        );
        assert!(
            server.log_path().exists(),
            "the log survives the wipe, to explain what happened"
        );
    }

    #[tokio::test]
    async fn dropping_a_server_removes_its_store() {
        let server = NatsServer::start().await.unwrap();
        let store = server.store_dir.clone();
        assert!(store.exists());
        drop(server);
        assert!(!store.exists());
    }

    #[test]
    fn prefixes_are_unique_and_well_formed() {
        let (a, b) = (unique_prefix(), unique_prefix());
        assert_ne!(a, b);
        // `t_<12 hex>`, or `t_<run tag>_<8 hex>` under `cargo xtask test`.
        assert!(a.len() == 14 || a.len() == 19, "{a}");
        assert!(a.len() <= 32, "a bus prefix has at most 32 characters");
        assert!(a.starts_with("t_"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
