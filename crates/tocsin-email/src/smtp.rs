//! A thin, pooled SMTP sender and the mapping of SMTP failures onto [`SendOutcome`].
//!
//! # What an unknown outcome means for email
//!
//! SMTP has no sender-side idempotency: if the connection drops or stalls after the final
//! `.` of `DATA` but before the server's `250`, the relay may already have queued the mail
//! (RFC 1047). We cannot tell that apart from a stall earlier in the session, so both are
//! [`SendOutcome::Unknown`]. The email policy for an unknown outcome is to **resend once,
//! with the same `Message-ID`** (it is derived from the delivery key, see
//! [`crate::message::message_id`]): many receiving systems and mail clients collapse messages
//! with identical ids, so the likely duplicate is mostly invisible, while a lost notice about
//! an outage is not. A second unknown outcome is not resent again.
//!
//! # Classification
//!
//! | lettre error | outcome |
//! |---|---|
//! | 5xx reply (`is_permanent`) | `Permanent` |
//! | 4xx reply (`is_transient`): the server asks us to slow down or come back | `Transient` |
//! | TCP connect failure or connect timeout, TLS failure, transport shut down: nothing was sent | `Transient` |
//! | client-side refusal (e.g. the message needs SMTPUTF8 the server lacks) | `Permanent` |
//! | I/O error, unparsable or missing reply mid-session, our send timeout | `Unknown` |
//!
//! lettre's tokio transport applies its timeout to the TCP connect only; a server that stops
//! answering mid-session would hang the send. [`SmtpSender::send`] therefore bounds the whole
//! send with [`SmtpConfig::send_timeout`], and after such a timeout replaces the pool, because
//! the abandoned connection would otherwise be returned to it in the middle of a transaction.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use tocsin_core::SendOutcome;
use tracing::{Instrument, instrument};

use crate::error::Error;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text. Only for a relay on the same host or a test server.
    None,
    /// Plain connection upgraded with `STARTTLS`, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// User name and password, when the relay wants AUTH.
    pub credentials: Option<(String, SecretString)>,
    /// Bounds the TCP connect; a connect that times out sent nothing.
    pub connect_timeout: Duration,
    /// Bounds one whole send: connect, greeting, TLS, AUTH, envelope and data.
    pub send_timeout: Duration,
    /// Most idle connections kept open.
    pub pool_max_size: u32,
    pub pool_idle_timeout: Duration,
}

impl SmtpConfig {
    /// A configuration with the usual limits: 10 s to connect, 60 s per send, up to 10
    /// pooled connections idle for at most a minute.
    pub fn new(host: impl Into<String>, port: u16, tls: TlsMode) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port,
            tls,
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            pool_max_size: 10,
            pool_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Sends messages through one relay over a pool of connections.
#[derive(Debug, Clone)]
pub struct SmtpSender {
    config: Arc<SmtpConfig>,
    /// The current pool and its generation; a timed-out send replaces it (see module doc).
    transport: Arc<RwLock<(u64, AsyncSmtpTransport<Tokio1Executor>)>>,
}

impl SmtpSender {
    /// Builds the transport; it connects lazily, on the first send.
    pub fn new(config: SmtpConfig) -> Result<SmtpSender, Error> {
        let transport = build_transport(&config)?;
        Ok(SmtpSender {
            config: Arc::new(config),
            transport: Arc::new(RwLock::new((0, transport))),
        })
    }

    /// Hands `message` to the relay and says what came of it. Never retries by itself: the
    /// delivery runtime owns retries and the unknown-outcome policy.
    #[instrument(skip_all, fields(host = %self.config.host, message_id))]
    pub async fn send(&self, message: Message) -> SendOutcome {
        let message_id = message
            .headers()
            .get_raw("Message-ID")
            .unwrap_or_default()
            .to_owned();
        tracing::Span::current().record("message_id", message_id.as_str());
        let (generation, transport) = self.current();
        let sent = tokio::time::timeout(self.config.send_timeout, transport.send(message)).await;
        match sent {
            Ok(Ok(response)) => {
                // The relay's reply usually names its queue id ("2.0.0 Ok: queued as 4Fz...").
                let reply = response.message().collect::<Vec<_>>().join(" ");
                tracing::debug!(code = %response.code(), reply, "accepted by the relay");
                SendOutcome::Delivered {
                    provider_id: Some(reply).filter(|r| !r.is_empty()),
                }
            }
            Ok(Err(e)) => {
                let outcome = classify(&e);
                tracing::warn!(outcome = outcome.as_str(), error = %e, "send failed");
                outcome
            }
            Err(_elapsed) => {
                tracing::warn!(
                    timeout_ms = self.config.send_timeout.as_millis() as u64,
                    "send timed out; outcome unknown"
                );
                self.replace_pool(generation);
                SendOutcome::Unknown {
                    reason: format!(
                        "no answer from {} within {:?}; the mail may have been accepted",
                        self.config.host, self.config.send_timeout
                    ),
                }
            }
        }
    }

    /// Closes pooled connections politely (`QUIT`).
    pub async fn shutdown(&self) {
        let (_, transport) = self.current();
        transport.shutdown().await;
    }

    fn current(&self) -> (u64, AsyncSmtpTransport<Tokio1Executor>) {
        let guard = self
            .transport
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard.0, guard.1.clone())
    }

    /// Swaps in a fresh pool unless another timed-out send already did, and shuts the old one
    /// down; the abandoned connection is then aborted instead of recycled.
    fn replace_pool(&self, generation: u64) {
        let Ok(fresh) = build_transport(&self.config) else {
            return; // The same config built before; keep the old pool rather than none.
        };
        let old = {
            let mut guard = self
                .transport
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if guard.0 != generation {
                return;
            }
            let old = std::mem::replace(&mut guard.1, fresh);
            guard.0 += 1;
            old
        };
        tokio::spawn(async move { old.shutdown().await }.in_current_span());
    }
}

fn build_transport(config: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, Error> {
    let tls_parameters = || {
        TlsParameters::builder(config.host.clone())
            .build_rustls()
            .map_err(|e| Error::Config(format!("TLS for {}: {e}", config.host)))
    };
    let tls = match config.tls {
        TlsMode::None => Tls::None,
        TlsMode::StartTls => Tls::Required(tls_parameters()?),
        TlsMode::Tls => Tls::Wrapper(tls_parameters()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
        .port(config.port)
        .tls(tls)
        .timeout(Some(config.connect_timeout))
        .pool_config(
            PoolConfig::new()
                .max_size(config.pool_max_size)
                .idle_timeout(config.pool_idle_timeout),
        );
    if let Some((user, password)) = &config.credentials {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// Maps a lettre SMTP error onto a [`SendOutcome`]; see the module doc for the table.
pub fn classify(error: &lettre::transport::smtp::Error) -> SendOutcome {
    let reason = error.to_string();
    if error.is_permanent() {
        return SendOutcome::Permanent { reason };
    }
    if error.is_transient() || error.is_tls() || error.is_transport_shutdown() || is_connect(error)
    {
        return SendOutcome::Transient {
            reason,
            retry_after: None,
        };
    }
    if error.is_client() {
        return SendOutcome::Permanent { reason };
    }
    // A network error or a garbled or missing reply in the middle of a session: it may have
    // happened after the data was sent.
    SendOutcome::Unknown { reason }
}

/// Whether the TCP connection was never established. lettre has no predicate for its
/// connection kind, so this reads its stable `Display` prefix; the integration test pins
/// it against a closed port.
fn is_connect(error: &lettre::transport::smtp::Error) -> bool {
    error.to_string().starts_with("Connection error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message::builder()
            .from("a@b.test".parse().unwrap())
            .to("c@d.test".parse().unwrap())
            .subject("s")
            .body(String::from("b"))
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let sender = SmtpSender::new(SmtpConfig::new("127.0.0.1", port, TlsMode::None)).unwrap();
        let outcome = sender.send(message()).await;
        assert!(
            matches!(outcome, SendOutcome::Transient { .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_makes_the_outcome_unknown() {
        // Accepts the TCP connection and never says anything: the send cannot complete.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut config = SmtpConfig::new("127.0.0.1", port, TlsMode::None);
        config.send_timeout = Duration::from_millis(200);
        let sender = SmtpSender::new(config).unwrap();
        let outcome = sender.send(message()).await;
        assert!(
            matches!(outcome, SendOutcome::Unknown { .. }),
            "{outcome:?}"
        );
        assert_eq!(sender.current().0, 1, "the pool was replaced");
    }
}
