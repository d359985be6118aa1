//! A hand-written SMTP server (RFC 5321 subset) on a tokio listener: enough of the protocol for
//! lettre's pooled async transport, with faults at `RCPT` and after `DATA`.
//!
//! Every mail whose data arrives is recorded as a [`ReceivedMail`]; the control API runs on a
//! separate HTTP listener because the SMTP port speaks only SMTP.

mod mail;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tocsin_runtime::Shutdown;
use tokio::net::TcpListener;

pub use mail::ReceivedMail;

use crate::Error;
use crate::fault::Faults;
use crate::inbox::{Inbox, Summary};
use crate::server::{ServerTasks, bind, spawn_http};

/// How the SMTP server listens and what it accepts.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The SMTP listen address (`127.0.0.1:0` by default: any free port).
    pub addr: SocketAddr,
    /// The HTTP control API address; `None` serves no control API.
    pub control_addr: Option<SocketAddr>,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Advertised with `SIZE`; larger mails are refused with 552.
    pub max_message_bytes: usize,
    /// Keep each mail's raw data; a benchmark of 100,000 mails may turn this off to save memory.
    pub keep_data: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            hostname: "tocsin-local-smtp".to_owned(),
            max_message_bytes: 10 * 1024 * 1024,
            keep_data: true,
        }
    }
}

/// What every SMTP session shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SmtpConfig,
    pub(crate) inbox: Arc<Inbox<ReceivedMail>>,
    pub(crate) faults: Faults,
    pub(crate) shutdown: Shutdown,
    /// Connections accepted so far; tests read it to see a pool reuse its connection.
    pub(crate) connections: AtomicU64,
}

/// A running SMTP server; it stops when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: ServerTasks,
}

impl SmtpServer {
    /// Binds the SMTP listener (and the control listener) and starts serving.
    pub async fn start(config: SmtpConfig) -> Result<Self, Error> {
        Self::start_with_shutdown(config, Shutdown::new()).await
    }

    /// Like [`start`](Self::start), also stopping when `shutdown` triggers (the binary passes
    /// its signal handler here).
    pub async fn start_with_shutdown(
        config: SmtpConfig,
        shutdown: Shutdown,
    ) -> Result<Self, Error> {
        let listener = bind(config.addr).await?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        let control = match config.control_addr {
            Some(control_addr) => Some(bind(control_addr).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            inbox: Arc::new(Inbox::default()),
            faults: Faults::default(),
            shutdown: shutdown.clone(),
            connections: AtomicU64::new(0),
        });
        let mut tasks = ServerTasks::new(shutdown.clone());
        tasks.push(tokio::spawn(accept_loop(listener, shared.clone())));
        let mut control_addr = None;
        if let Some(control) = control {
            control_addr = control.local_addr().ok();
            let routes = crate::control::routes(shared.inbox.clone(), shared.faults.clone());
            tasks.push(spawn_http(control, routes, shutdown));
        }
        tracing::debug!(%addr, control_addr = ?control_addr, "local SMTP server listening");
        Ok(Self {
            addr,
            control_addr,
            shared,
            tasks,
        })
    }

    /// The SMTP address to point a client at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The control API address, when one was configured.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// Every mail whose data arrived, accepted or refused, oldest first.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.inbox.all()
    }

    /// The record store, for waits and paging.
    pub fn inbox(&self) -> &Inbox<ReceivedMail> {
        &self.shared.inbox
    }

    /// Counts over accepted mails; duplicates share a `Message-ID`.
    pub fn summary(&self) -> Summary {
        self.shared.inbox.summary()
    }

    /// How many SMTP connections were accepted since the start.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The fault plan; targets are recipient addresses.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Stops accepting, closes sessions with 421 and waits for the listeners to close.
    pub async fn shutdown(self) {
        self.tasks.stop().await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Replies are small and each waits on the client's next command: do not let
                // Nagle's algorithm hold them back.
                let _ = stream.set_nodelay(true);
                let connection = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(error) = session::converse(stream, connection, &shared).await {
                        tracing::debug!(%peer, %error, "SMTP session ended with an I/O error");
                    }
                });
            }
            Err(error) => {
                // Usually too many open files: back off instead of spinning.
                tracing::warn!(%error, "SMTP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
