//! A Twilio-compatible Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with Twilio's authentication, validation codes, reply and error bodies, and status callbacks
//! signed with `X-Twilio-Signature`. The control routes share its port.

mod api;
mod callback;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tocsin_runtime::Shutdown;
use tokio::sync::Semaphore;

pub use callback::{CallbackAttempt, signature};

use crate::Error;
use crate::fault::Faults;
use crate::inbox::{Inbox, Record, Summary};
use crate::server::{ServerTasks, bind, spawn_http};

/// The account sid the binary and [`TwilioConfig::default`] use: `AC` and 32 hex digits.
pub const DEFAULT_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The auth token the binary and [`TwilioConfig::default`] use. A test value, not a secret.
pub const DEFAULT_AUTH_TOKEN: &str = "tocsin-local-auth-token";

/// How the Twilio double listens and authenticates.
#[derive(Clone)]
pub struct TwilioConfig {
    /// Listen address (`127.0.0.1:0` by default).
    pub addr: SocketAddr,
    pub account_sid: String,
    /// Checked by Basic auth and the key for callback signatures.
    pub auth_token: String,
    /// The wait before each status callback (`sent`, then the final status).
    pub callback_delay: Duration,
    /// Status callbacks in flight at once; more wait their turn.
    pub callback_concurrency: usize,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            account_sid: DEFAULT_ACCOUNT_SID.to_owned(),
            auth_token: DEFAULT_AUTH_TOKEN.to_owned(),
            callback_delay: Duration::from_millis(50),
            callback_concurrency: 64,
        }
    }
}

// Hand-written so the auth token never reaches a log.
impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("addr", &self.addr)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .field("callback_delay", &self.callback_delay)
            .field("callback_concurrency", &self.callback_concurrency)
            .finish()
    }
}

/// One message request that passed authentication and validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedSms {
    /// The `SM…` sid returned (or that would have been returned) for it.
    pub sid: String,
    pub account_sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub status_callback: Option<String>,
    /// True when answered 201 (or taken with the reply lost, the `drop` fault).
    pub accepted: bool,
    /// The HTTP status sent back; `None` when none was sent.
    pub response_status: Option<u16>,
    /// The Twilio error code of a refusal, or of the `undelivered` callback.
    pub error_code: Option<u32>,
    pub received_at_unix_ms: u64,
}

impl Record for ReceivedSms {
    /// The `delivery` query parameter of the callback URL names the delivery when the sender
    /// puts one there; otherwise the same recipient, text and callback make the same message.
    fn dedupe_key(&self) -> Option<String> {
        if let Some(callback) = &self.status_callback
            && let Ok(url) = url::Url::parse(callback)
            && let Some((_, delivery)) = url.query_pairs().find(|(name, _)| name == "delivery")
        {
            return Some(format!("delivery:{delivery}"));
        }
        Some(format!(
            "{}\u{1f}{}\u{1f}{}",
            self.to,
            self.body,
            self.status_callback.as_deref().unwrap_or("")
        ))
    }

    fn accepted(&self) -> bool {
        self.accepted
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TwilioConfig,
    pub(crate) inbox: Arc<Inbox<ReceivedSms>>,
    pub(crate) faults: Faults,
    pub(crate) shutdown: Shutdown,
    pub(crate) client: reqwest::Client,
    pub(crate) callback_slots: Semaphore,
    pub(crate) callbacks: Mutex<Vec<CallbackAttempt>>,
}

/// A running Twilio double; it stops when dropped.
#[derive(Debug)]
pub struct TwilioServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: ServerTasks,
}

impl TwilioServer {
    pub async fn start(config: TwilioConfig) -> Result<Self, Error> {
        Self::start_with_shutdown(config, Shutdown::new()).await
    }

    /// Like [`start`](Self::start), also stopping when `shutdown` triggers.
    pub async fn start_with_shutdown(
        config: TwilioConfig,
        shutdown: Shutdown,
    ) -> Result<Self, Error> {
        // reqwest is built without a rustls provider; callbacks are plain HTTP, but the builder
        // still wants one installed. Another caller may have installed it first: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::Client)?;
        let listener = bind(config.addr).await?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        let shared = Arc::new(Shared {
            callback_slots: Semaphore::new(config.callback_concurrency.max(1)),
            config,
            inbox: Arc::new(Inbox::default()),
            faults: Faults::default(),
            shutdown: shutdown.clone(),
            client,
            callbacks: Mutex::new(Vec::new()),
        });
        let callbacks_state = shared.clone();
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json",
                post(api::create_message).get(api::list_messages),
            )
            .with_state(shared.clone())
            .route(
                "/_control/callbacks",
                get(move || {
                    let state = callbacks_state.clone();
                    async move { Json(state.callbacks.lock().unwrap().clone()) }
                }),
            )
            .merge(crate::control::routes(
                shared.inbox.clone(),
                shared.faults.clone(),
            ));
        let mut tasks = ServerTasks::new(shutdown.clone());
        tasks.push(spawn_http(listener, router, shutdown));
        tracing::debug!(%addr, account_sid = %shared.config.account_sid, "local Twilio Messages API listening");
        Ok(Self {
            addr,
            shared,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`: what a client uses in place of `https://api.twilio.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full Messages resource URL for the configured account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url(),
            self.shared.config.account_sid
        )
    }

    pub fn account_sid(&self) -> &str {
        &self.shared.config.account_sid
    }

    pub fn auth_token(&self) -> &str {
        &self.shared.config.auth_token
    }

    /// Every valid message request, accepted or refused by a fault, oldest first.
    pub fn messages(&self) -> Vec<ReceivedSms> {
        self.shared.inbox.all()
    }

    pub fn inbox(&self) -> &Inbox<ReceivedSms> {
        &self.shared.inbox
    }

    pub fn summary(&self) -> Summary {
        self.shared.inbox.summary()
    }

    /// Status callbacks sent so far, with the answer each got.
    pub fn callbacks(&self) -> Vec<CallbackAttempt> {
        self.shared.callbacks.lock().unwrap().clone()
    }

    /// The fault plan; targets are `To` numbers.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub async fn shutdown(self) {
        self.tasks.stop().await;
    }
}
