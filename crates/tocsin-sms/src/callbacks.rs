//! The HTTP endpoint Twilio posts status callbacks to, and what it records.
//!
//! - `POST /twilio/status`: verifies `X-Twilio-Signature`, reads the callback and, for a
//!   final status, records `delivered` or `failed` in the ledger by our delivery key (the
//!   `delivery` query parameter we put on the callback URL) or else by Twilio's message sid.
//!   In-progress statuses (`queued`, `sent`, ...) are acknowledged and ignored.
//! - `POST /twilio/inbound`: the number's "a message comes in" webhook. Verifies the
//!   signature the same way (over the public URL's origin and this path) and records a STOP
//!   as an opt-out of the sender's number, a START as an opt-in ([`crate::inbound`]); answers
//!   TwiML.
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
use crate::inbound::{Reply, twiml};
use crate::status::Progress;

/// The path Twilio posts to, under the configured public URL's origin.
pub const STATUS_PATH: &str = "/twilio/status";
/// The path to give Twilio as the number's incoming-message webhook.
pub const INBOUND_PATH: &str = "/twilio/inbound";
/// Twilio's error for a message to a number that replied STOP.
pub const UNSUBSCRIBED_RECIPIENT: u32 = 21610;

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
    /// Opt-outs and opt-ins are written straight to it: they are rare.
    store: Store,
    /// Who the answer to a stray reply says is texting.
    company: String,
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
        let ledger = store.clone();
        let statuses = Coalescer::spawn(MOST_PER_STATEMENT, LINGER, move |batch| {
            let store = ledger.clone();
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
            store,
            company: "We".to_owned(),
        }
    }

    /// Names the company in the answer to a reply that is not a keyword.
    pub fn answering_as(mut self, company: impl Into<String>) -> Callbacks {
        self.company = company.into();
        self
    }

    /// The routes, ready to serve.
    pub fn router(self) -> Router {
        Router::new()
            .route(STATUS_PATH, post(status_callback))
            .route(INBOUND_PATH, post(inbound_message))
            .route("/healthz", get(healthz))
            .route_layer(axum::middleware::from_fn(
                tocsin_runtime::requests::http_metrics,
            ))
            .with_state(self)
    }

    /// The URL Twilio requested for `uri`: the public URL with the request's query string.
    fn signed_url(&self, uri: &Uri) -> String {
        let mut url = self.public_url.clone();
        url.set_query(uri.query());
        url.into()
    }

    /// The incoming-message webhook's URL as Twilio was given it: the public URL's origin
    /// with [`INBOUND_PATH`], and the request's query string.
    pub fn inbound_url(&self, uri: &Uri) -> String {
        let mut url = self.public_url.clone();
        url.set_path(INBOUND_PATH);
        url.set_query(uri.query());
        url.into()
    }

    /// Verifies the signature over `url` and the form `body`; the parameters when it holds.
    fn verified(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Vec<(String, String)>> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let signature = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        (!signature.is_empty() && verify_signature(url, &params, signature, &self.auth_token))
            .then_some(params)
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
    let url = callbacks.signed_url(&uri);
    let Some(params) = callbacks.verified(&url, &headers, &body) else {
        warn!(%url, "status callback refused: bad or missing X-Twilio-Signature");
        return StatusCode::FORBIDDEN;
    };
    // A NUL character can never be stored: refused as malformed (400, which Twilio does not
    // retry) rather than failing in PostgreSQL as 503, which Twilio would retry for good.
    let query_has_nul = url::Url::parse(&url)
        .map(|u| {
            u.query_pairs()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        })
        .unwrap_or(false);
    if query_has_nul
        || params
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        warn!("signed status callback holds a NUL character");
        return StatusCode::BAD_REQUEST;
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
    if callback.error_code == Some(UNSUBSCRIBED_RECIPIENT)
        && let Some((_, to)) = params.iter().find(|(k, _)| k == "To")
    {
        // The carrier says the number replied STOP: record it, so nothing more is sent.
        if let Err(e) = callbacks
            .store
            .opt_out_address(tocsin_core::Channel::Sms, to, "carrier_21610")
            .await
        {
            error!(error = %e, "could not record the opt-out Twilio reported");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
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

/// A text a reader sent to our number: STOP opts their number out, START back in.
#[instrument(skip_all, fields(reply))]
async fn inbound_message(
    State(callbacks): State<Callbacks>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let url = callbacks.inbound_url(&uri);
    let Some(params) = callbacks.verified(&url, &headers, &body) else {
        warn!(%url, "incoming message refused: bad or missing X-Twilio-Signature");
        return StatusCode::FORBIDDEN.into_response();
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(from) = param("From").filter(|f| !f.trim().is_empty()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let reply = Reply::read(param("Body").unwrap_or_default(), param("OptOutType"));
    tracing::Span::current().record("reply", tracing::field::debug(reply));
    let recorded = match reply {
        Reply::Stop => {
            callbacks
                .store
                .opt_out_address(tocsin_core::Channel::Sms, from, "sms_stop")
                .await
        }
        Reply::Start => {
            callbacks
                .store
                .opt_in_address(tocsin_core::Channel::Sms, from, "sms_start")
                .await
        }
        Reply::Help | Reply::Other => Ok(0),
    };
    match recorded {
        Ok(subscribers) => {
            info!(?reply, subscribers, "incoming message handled");
            (
                [(axum::http::header::CONTENT_TYPE, "text/xml")],
                twiml(reply, &callbacks.company),
            )
                .into_response()
        }
        Err(e) => {
            // Twilio retries on a 5xx: the opt-out is recorded then.
            error!(error = %e, "could not record an opt-out or opt-in");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
