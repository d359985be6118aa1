//! A Standard Webhooks receiver: `POST /hooks/{endpoint}` for registered endpoints, each with
//! its `whsec_` secret, verifying signatures with its own implementation ([`signature`]).
//! `POST /_control/endpoints` registers endpoints in bulk beside the usual control routes.

mod signature;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tocsin_runtime::Shutdown;

pub use signature::WebhookSecret;

use crate::Error;
use crate::fault::{Fault, Faults};
use crate::inbox::{Inbox, Record, Summary};
use crate::server::{ServerTasks, bind, spawn_http};

/// How the receiver listens and how much clock skew it forgives.
#[derive(Debug, Clone)]
pub struct WebhookReceiverConfig {
    /// Listen address (`127.0.0.1:0` by default).
    pub addr: SocketAddr,
    /// Largest accepted distance between `webhook-timestamp` and now (5 minutes, as the
    /// specification recommends).
    pub tolerance: Duration,
}

impl Default for WebhookReceiverConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tolerance: Duration::from_secs(300),
        }
    }
}

/// One request to a registered endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedWebhook {
    pub endpoint: String,
    /// The `webhook-id` header, when present.
    pub webhook_id: Option<String>,
    pub timestamp: Option<i64>,
    /// Whether a signature matched.
    pub verified: bool,
    /// Why verification failed.
    pub verification_error: Option<String>,
    /// True for a verified request answered 2xx (or taken with the reply lost, `drop`).
    pub accepted: bool,
    /// The HTTP status sent back; `None` when none was sent.
    pub response_status: Option<u16>,
    /// The body as JSON; a body that is not JSON is kept as a JSON string.
    pub body: serde_json::Value,
    pub received_at_unix_ms: u64,
}

impl Record for ReceivedWebhook {
    fn dedupe_key(&self) -> Option<String> {
        self.webhook_id.clone()
    }

    fn accepted(&self) -> bool {
        self.accepted
    }
}

/// An endpoint to register over the control API.
#[derive(Clone, Deserialize, Serialize)]
pub struct EndpointRegistration {
    pub name: String,
    /// `whsec_<base64>`.
    pub secret: String,
}

// Hand-written so secrets never reach a log.
impl std::fmt::Debug for EndpointRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRegistration")
            .field("name", &self.name)
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[derive(Debug)]
struct Shared {
    config: WebhookReceiverConfig,
    endpoints: RwLock<HashMap<String, WebhookSecret>>,
    /// Per endpoint: requests being answered now, and the most ever at once.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    inbox: Arc<Inbox<ReceivedWebhook>>,
    faults: Faults,
    shutdown: Shutdown,
}

impl Shared {
    fn register(&self, registrations: impl IntoIterator<Item = (String, WebhookSecret)>) {
        self.endpoints.write().unwrap().extend(registrations);
    }
}

/// A running webhook receiver; it stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: ServerTasks,
}

impl WebhookReceiver {
    pub async fn start(config: WebhookReceiverConfig) -> Result<Self, Error> {
        Self::start_with_shutdown(config, Shutdown::new()).await
    }

    /// Like [`start`](Self::start), also stopping when `shutdown` triggers.
    pub async fn start_with_shutdown(
        config: WebhookReceiverConfig,
        shutdown: Shutdown,
    ) -> Result<Self, Error> {
        let listener = bind(config.addr).await?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        let shared = Arc::new(Shared {
            config,
            endpoints: RwLock::new(HashMap::new()),
            in_flight: Mutex::default(),
            inbox: Arc::new(Inbox::default()),
            faults: Faults::default(),
            shutdown: shutdown.clone(),
        });
        let router = Router::new()
            .route("/hooks/{endpoint}", post(receive))
            .route(
                "/_control/endpoints",
                post(register_endpoints)
                    .get(list_endpoints)
                    // Tens of thousands of registrations exceed axum's 2 MB default.
                    .layer(DefaultBodyLimit::max(64 * 1024 * 1024)),
            )
            .with_state(shared.clone())
            .merge(crate::control::routes(
                shared.inbox.clone(),
                shared.faults.clone(),
            ));
        let mut tasks = ServerTasks::new(shutdown.clone());
        tasks.push(spawn_http(listener, router, shutdown));
        tracing::debug!(%addr, "local webhook receiver listening");
        Ok(Self {
            addr,
            shared,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL a sender posts to for `endpoint`.
    pub fn url_for(&self, endpoint: &str) -> String {
        format!("{}/hooks/{endpoint}", self.base_url())
    }

    /// Registers (or replaces) an endpoint and its `whsec_` secret.
    pub fn register(&self, endpoint: impl Into<String>, secret: &str) -> Result<(), Error> {
        let secret = WebhookSecret::parse(secret)?;
        self.shared.register([(endpoint.into(), secret)]);
        Ok(())
    }

    /// Registers many endpoints; nothing is registered if one secret is malformed.
    pub fn register_all(
        &self,
        registrations: impl IntoIterator<Item = EndpointRegistration>,
    ) -> Result<(), Error> {
        let parsed = parse_all(registrations)?;
        self.shared.register(parsed);
        Ok(())
    }

    /// Every request to a registered endpoint, verified or not, oldest first.
    pub fn deliveries(&self) -> Vec<ReceivedWebhook> {
        self.shared.inbox.all()
    }

    pub fn inbox(&self) -> &Inbox<ReceivedWebhook> {
        &self.shared.inbox
    }

    /// Counts over accepted deliveries; duplicates share a `webhook-id`.
    pub fn summary(&self) -> Summary {
        self.shared.inbox.summary()
    }

    /// The most requests `endpoint` was ever answering at once (a sender's concurrency
    /// toward it, slowed down by a delay fault to be seen).
    pub fn peak_in_flight(&self, endpoint: &str) -> usize {
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(endpoint)
            .map_or(0, |&(_, peak)| peak)
    }

    /// The fault plan; targets are endpoint names.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub async fn shutdown(self) {
        self.tasks.stop().await;
    }
}

/// One request being answered, counted in its endpoint's [`Shared::in_flight`] until dropped.
struct Answering<'a> {
    shared: &'a Shared,
    endpoint: String,
}

impl<'a> Answering<'a> {
    fn start(shared: &'a Shared, endpoint: &str) -> Self {
        // The counts are whole after any panic elsewhere: no request is refused over them.
        let mut in_flight = shared
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (now, peak) = in_flight.entry(endpoint.to_owned()).or_default();
        *now += 1;
        *peak = (*peak).max(*now);
        Answering {
            shared,
            endpoint: endpoint.to_owned(),
        }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Some((now, _)) = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&self.endpoint)
        {
            *now -= 1;
        }
    }
}

fn parse_all(
    registrations: impl IntoIterator<Item = EndpointRegistration>,
) -> Result<Vec<(String, WebhookSecret)>, Error> {
    registrations
        .into_iter()
        .map(|r| Ok((r.name, WebhookSecret::parse(&r.secret)?)))
        .collect()
}

async fn register_endpoints(
    State(shared): State<Arc<Shared>>,
    Json(registrations): Json<Vec<EndpointRegistration>>,
) -> Response {
    match parse_all(registrations) {
        Ok(parsed) => {
            tracing::info!(endpoints = parsed.len(), "webhook endpoints registered");
            shared.register(parsed);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

async fn list_endpoints(State(shared): State<Arc<Shared>>) -> Json<Vec<String>> {
    let mut names: Vec<String> = shared.endpoints.read().unwrap().keys().cloned().collect();
    names.sort();
    Json(names)
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = shared.endpoints.read().unwrap().get(&endpoint).cloned() else {
        return (StatusCode::NOT_FOUND, "unknown endpoint").into_response();
    };
    let _answering = Answering::start(&shared, &endpoint);
    let now = (crate::now_unix_ms() / 1000) as i64;
    let verification = signature::verify(&secret, &headers, &body, now, shared.config.tolerance);
    let mut record = ReceivedWebhook {
        endpoint,
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        timestamp: None,
        verified: false,
        verification_error: None,
        accepted: true,
        response_status: Some(204),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned().into()),
        received_at_unix_ms: crate::now_unix_ms(),
    };
    match verification {
        Ok(verified) => {
            record.verified = true;
            record.webhook_id = Some(verified.id);
            record.timestamp = Some(verified.timestamp);
        }
        Err(error) => {
            tracing::debug!(endpoint = %record.endpoint, %error, "webhook failed verification");
            record.verification_error = Some(error.to_string());
            record.accepted = false;
            record.response_status = Some(401);
            shared.inbox.push(record);
            return (StatusCode::UNAUTHORIZED, "signature verification failed").into_response();
        }
    }
    // Faults apply only to verified requests, so a plan's counts match what a correct sender
    // sees.
    match shared.faults.take(&record.endpoint) {
        Some(Fault::Status {
            status,
            retry_after_secs,
            ..
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            record.accepted = status.is_success();
            record.response_status = Some(status.as_u16());
            shared.inbox.push(record);
            let mut response = (status, "fault injected").into_response();
            if let Some(seconds) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        Some(Fault::Redirect { location }) => {
            record.accepted = false;
            record.response_status = Some(302);
            shared.inbox.push(record);
            let mut response = StatusCode::FOUND.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        Some(fault @ (Fault::Hang | Fault::Drop)) => {
            record.accepted = fault == Fault::Drop;
            record.response_status = None;
            shared.inbox.push(record);
            crate::server::hang(&shared.shutdown).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Some(Fault::Delay { ms }) => {
            shared.inbox.push(record);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(fault @ (Fault::Reject { .. } | Fault::Undelivered { .. })) => {
            tracing::warn!(?fault, "fault has no meaning for webhooks; ignored");
            shared.inbox.push(record);
            StatusCode::NO_CONTENT.into_response()
        }
        None => {
            shared.inbox.push(record);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
