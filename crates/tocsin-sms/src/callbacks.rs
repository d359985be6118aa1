//! The HTTP endpoint Twilio posts status callbacks to, and what it records.
//!
//! - `POST /twilio/status`: verifies `X-Twilio-Signature`, reads the callback and, for a
//!   final status, records `delivered` or `failed` in the ledger by our delivery key (the
//!   `delivery` query parameter we put on the callback URL) or else by Twilio's message sid.
//!   In-progress statuses (`queued`, `sent`, ...) are acknowledged and ignored.
//! - `GET /healthz`: liveness.
//!
//! The signature covers the URL Twilio requested, so it is checked against the configured
//! public URL (what Twilio was given) with the request's query string, never against the
//! address this server happens to listen on behind a proxy.
//!
//! | request | answer |
//! |---|---|
//! | missing or wrong signature | 403, nothing recorded |
//! | signed but malformed | 400 |
//! | final status recorded, in-progress status, or no delivery awaiting it | 200 |
//! | the ledger could not be written | 503 |
//!
//! A callback for no delivery we know (or one already settled) still gets 200: Twilio
//! cannot do anything about it, and an error would only make it try again.
//!
//! Callbacks arriving together are recorded in one statement (group commit): Twilio sends
//! one per message, and a transaction each cost PostgreSQL more than the rest of an SMS. A
//! callback is answered only once its statement has committed.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use secrecy::SecretString;
use tocsin_runtime::Shutdown;
use tocsin_runtime::coalesce::Coalescer;
use tocsin_store::{ProviderStatus, Store};
use tokio::net::TcpListener;
use tracing::{debug, error, info, instrument, warn};
use url::Url;

use crate::callback::{StatusCallback, verify_signature};
use crate::status::Progress;

/// The path Twilio posts to, under the configured public URL's origin.
pub const STATUS_PATH: &str = "/twilio/status";

/// Callbacks one statement records at most.
const MOST_PER_STATEMENT: usize = 512;
/// Under load, the shortest time between two statements (see [`Coalescer`]).
const LINGER: Duration = Duration::from_millis(5);

/// What the endpoint needs: the ledger's queue for provider statuses, and what Twilio signs
/// with and signs over.
#[derive(Clone)]
pub struct Callbacks {
    statuses: Coalescer<ProviderStatus, Result<bool, String>>,
    /// The URL Twilio was given, without our `delivery` parameter.
    public_url: Url,
    auth_token: SecretString,
}

// Hand-written: the store has nothing useful to print, and the token must never be printed.
impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("public_url", &self.public_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Callbacks {
    /// `public_url` must be the `StatusCallback` URL the Twilio client is configured with.
    /// Call within a Tokio runtime: the statuses' queue is a task of its own.
    pub fn new(store: Store, public_url: Url, auth_token: SecretString) -> Callbacks {
        let statuses = Coalescer::spawn(MOST_PER_STATEMENT, LINGER, move |batch| {
            let store = store.clone();
            async move {
                match store.record_provider_statuses(&batch).await {
                    Ok(found) => found.into_iter().map(Ok).collect(),
                    Err(e) => batch.iter().map(|_| Err(e.to_string())).collect(),
                }
            }
        });
        Callbacks {
            statuses,
            public_url,
            auth_token,
        }
    }

    /// The routes, ready to serve.
    pub fn router(self) -> Router {
        Router::new()
            .route(STATUS_PATH, post(status_callback))
            .route("/healthz", get(healthz))
            .with_state(self)
    }

    /// The URL Twilio requested for `uri`: the public URL with the request's query string.
    fn signed_url(&self, uri: &Uri) -> String {
        let mut url = self.public_url.clone();
        url.set_query(uri.query());
        url.into()
    }
}

/// Serves `callbacks` on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    callbacks: Callbacks,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, public_url = %callbacks.public_url, "status callback server listening");
    axum::serve(listener, callbacks.router())
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

async fn healthz() -> &'static str {
    "ok"
}

#[instrument(skip_all, fields(message_sid, delivery_key, status))]
async fn status_callback(
    State(callbacks): State<Callbacks>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let url = callbacks.signed_url(&uri);
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if signature.is_empty() || !verify_signature(&url, &params, signature, &callbacks.auth_token) {
        warn!(%url, "status callback refused: bad or missing X-Twilio-Signature");
        return StatusCode::FORBIDDEN;
    }
    let callback = match StatusCallback::parse(&url, &params) {
        Ok(callback) => callback,
        Err(e) => {
            warn!(error = %e, "signed status callback is malformed");
            return StatusCode::BAD_REQUEST;
        }
    };
    let span = tracing::Span::current();
    span.record("message_sid", callback.message_sid.as_str());
    span.record("status", callback.status.as_str());
    if let Some(key) = &callback.delivery_key {
        span.record("delivery_key", key.as_str());
    }
    let state = match callback.progress() {
        Progress::Delivered => "delivered",
        Progress::Failed => "failed",
        Progress::InProgress => {
            debug!("message in progress");
            return StatusCode::OK;
        }
    };
    let detail = serde_json::json!({
        "status": callback.status.as_str(),
        "error_code": callback.error_code,
        "provider_id": callback.message_sid,
    });
    let status = ProviderStatus {
        delivery_key: callback.delivery_key.clone(),
        provider_id: Some(callback.message_sid.clone()),
        state,
        detail,
    };
    let recorded = callbacks
        .statuses
        .call(status)
        .await
        .unwrap_or_else(|| Err("the statuses' queue stopped".into()));
    match recorded {
        Ok(true) => {
            info!(
                state,
                error_code = callback.error_code,
                "provider status recorded"
            );
            StatusCode::OK
        }
        Ok(false) => {
            warn!(
                state,
                "status callback for no delivery awaiting one (unknown, or already settled)"
            );
            StatusCode::OK
        }
        Err(e) => {
            // Twilio may try again; nothing was recorded.
            error!(error = %e, "could not record the provider status");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}
