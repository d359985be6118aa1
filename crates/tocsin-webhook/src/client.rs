//! The SSRF-safe sender: one signed POST to a customer's endpoint, and what came of it.
//!
//! The guard has three parts, all needed. The URL is re-checked under this client's policy
//! before every send (scheme, credentials, literal addresses, internal names), because a
//! literal IP never reaches a resolver. Names are resolved by [`GuardedResolver`], which
//! drops forbidden addresses. And redirects and proxies are off, so an endpoint cannot
//! bounce us to `169.254.169.254` and an environment variable cannot route us elsewhere.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::redirect;
use tocsin_core::SendOutcome;
use tocsin_core::network::{UrlPolicy, WebhookUrl};
use tracing::{Span, instrument};

use crate::error::Error;
use crate::resolver::{GuardedResolver, Refused};
use crate::response::classify;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Standard Webhooks suggests 15 to 30 s; the short end keeps a slow endpoint from holding
/// a worker slot while others wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an answer is read: enough for an error message, too little for an endpoint
/// to make us buffer a large or endless body.
const MAX_RESPONSE_BYTES: usize = 4096;

/// How the sender behaves. Tests and development widen `policy`; production leaves it
/// strict.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time allowed to establish the connection (TCP and TLS). A timeout here is transient:
    /// nothing was sent.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange. A timeout after connecting is an unknown
    /// outcome: the endpoint may have processed the request.
    pub timeout: Duration,
    pub policy: UrlPolicy,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            policy: UrlPolicy::strict(),
            user_agent: concat!("Tocsin-Webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Sends webhooks. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<UrlPolicy>,
}

impl WebhookClient {
    /// Builds the client. The process must have installed its rustls crypto provider first
    /// (`tocsin_runtime::tls::install_crypto_provider`).
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let policy = Arc::new(config.policy);
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))))
            .user_agent(config.user_agent)
            .build()
            .map_err(Error::Setup)?;
        Ok(Self { http, policy })
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    /// POSTs `body` with `headers` (the signature headers, see
    /// [`crate::signature::signature_headers`]) to `url`, and says what came of it. Never
    /// fails: every problem is an outcome the delivery worker knows how to handle.
    #[instrument(skip_all, fields(host = tracing::field::Empty, outcome = tracing::field::Empty))]
    pub async fn send(&self, url: &str, mut headers: HeaderMap, body: Vec<u8>) -> SendOutcome {
        let url = match WebhookUrl::parse(url, &self.policy) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, "webhook URL refused before sending");
                return SendOutcome::Permanent {
                    reason: format!("refused before sending: {e}"),
                };
            }
        };
        Span::current().record("host", url.as_url().host_str());
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let sent = self
            .http
            .post(url.into_url())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => answer(response).await,
            Err(e) => from_error(&e),
        };
        Span::current().record("outcome", outcome.as_str());
        match &outcome {
            SendOutcome::Delivered { .. } => tracing::debug!("webhook delivered"),
            other => tracing::info!(reason = other.reason(), "webhook not delivered"),
        }
        outcome
    }
}

async fn answer(mut response: reqwest::Response) -> SendOutcome {
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header(RETRY_AFTER);
    let location = header(LOCATION);
    // A success needs no body; for a failure the start of it explains why.
    let mut body = Vec::new();
    if !status.is_success() {
        while body.len() < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body
                    .extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BYTES - body.len())]),
                // The status is the answer; a body cut short changes nothing.
                Ok(None) | Err(_) => break,
            }
        }
    }
    classify(
        status,
        retry_after.as_deref(),
        location.as_deref(),
        &body,
        SystemTime::now(),
    )
}

/// Maps a failed exchange to an outcome by how far it got.
fn from_error(e: &reqwest::Error) -> SendOutcome {
    if let Some(refused) = find_source::<Refused>(e) {
        return SendOutcome::Permanent {
            reason: format!("refused by the SSRF guard: {refused}"),
        };
    }
    let detail = chain(e);
    if e.is_builder() {
        return SendOutcome::Permanent {
            reason: format!("request could not be built: {detail}"),
        };
    }
    // Connecting covers DNS, TCP and TLS, and the connect timeout: nothing was sent yet.
    if e.is_connect() {
        return SendOutcome::Transient {
            reason: format!("could not connect: {detail}"),
            retry_after: None,
        };
    }
    // Past connecting, the endpoint may have received and acted on the request.
    if e.is_timeout() {
        return SendOutcome::Unknown {
            reason: format!("no answer before the timeout: {detail}"),
        };
    }
    SendOutcome::Unknown {
        reason: format!("connection failed after the request was sent: {detail}"),
    }
}

fn find_source<T: StdError + 'static>(e: &reqwest::Error) -> Option<&T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// An error and its causes on one line, since reqwest's own message hides the cause.
fn chain(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut current = e.source();
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}
