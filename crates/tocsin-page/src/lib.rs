//! Tocsin's public pages, served to the company's customers: the status page, and the
//! unsubscribe page behind the signed link in every email (RFC 8058 one-click included).
//!
//! - [`status_page`]: `/` (components, current incidents and maintenance, 90 days of
//!   history), `/incidents/{id}`, `/feed.atom` and `/api/v1/summary.json`, from PostgreSQL
//!   only; templates in `templates/`.
//! - [`preferences`]: `/preferences/{token}`, the preference centre behind the signed link
//!   in every email: channels (as consent), components, severity, quiet hours.
//! - [`signup`]: `/subscribe`, self-service subscription with double opt-in: the email
//!   confirmed by a link, the phone by a texted code, sent by the workers from PostgreSQL.
//! - [`unsubscribe`]: `GET` shows what the link will stop and asks to confirm (link scanners
//!   follow GETs, so a GET never unsubscribes); `POST` does it, from the form or from a mail
//!   provider's one-click request (`List-Unsubscribe=One-Click`).
//! - [`html`]: the pages, server-rendered, readable without JavaScript.
//!
//! The link itself is the credential: a token signed with the operator's link secret
//! ([`tocsin_core::links`]), so there is no session, cookie or password, and a forged POST
//! needs a valid token anyway. The pages never show an address: a forwarded link reveals
//! nothing about whom it belongs to.
//!
//! [`run`] serves on a given listener until a given signal, so tests run the real service
//! in-process on `127.0.0.1:0`.

pub mod html;
pub mod preferences;
pub mod signup;
pub mod status_page;
pub mod unsubscribe;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tocsin_core::links::LinkSecret;
use tocsin_runtime::Shutdown;
use tocsin_store::Store;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

/// What the pages need to know.
#[derive(Debug, Clone)]
pub struct PageConfig {
    /// Verifies the links in messages; the same secret the email worker signs with.
    pub link_secret: LinkSecret,
    /// The company speaking to its customers ("Acme").
    pub company: String,
    /// Where the public reaches these pages (`https://status.acme.com`): the feed's links.
    pub public_url: String,
    /// A logo shown in the page header.
    pub logo_url: Option<String>,
    /// The links' colour, `#rgb` or `#rrggbb` (see [`check_colour`]).
    pub accent: String,
    /// Self-service sign-up: the channels offered and the abuse limits.
    pub signup: signup::SignupConfig,
    /// How long the status page, its JSON summary and history may be served from one read of
    /// PostgreSQL; zero reads on every request.
    pub snapshot_ttl: std::time::Duration,
}

/// Checks a CSS colour from configuration: only `#rgb` or `#rrggbb`, since it goes into the
/// page's style sheet.
pub fn check_colour(colour: &str) -> Result<(), String> {
    let hex = colour.strip_prefix('#').unwrap_or_default();
    if matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "{colour:?} is not a colour of the form #rgb or #rrggbb"
        ))
    }
}

/// Shared by every request.
#[derive(Debug, Clone)]
pub(crate) struct Pages {
    pub(crate) config: Arc<PageConfig>,
    pub(crate) store: Store,
    pub(crate) templates: Arc<minijinja::Environment<'static>>,
    pub(crate) snapshots: Arc<status_page::Snapshots>,
}

/// The routes, ready to serve.
pub fn router(config: PageConfig, store: Store) -> Router {
    let snapshots = Arc::new(status_page::Snapshots::new(config.snapshot_ttl));
    let pages = Pages {
        config: Arc::new(config),
        store,
        templates: Arc::new(status_page::templates()),
        snapshots,
    };
    Router::new()
        .route("/", get(status_page::status))
        .route("/incidents/{id}", get(status_page::incident))
        .route("/feed.atom", get(status_page::feed))
        .route("/api/v1/summary.json", get(status_page::summary))
        .route(
            "/preferences/{token}",
            get(preferences::show).post(preferences::save),
        )
        .route("/subscribe", get(signup::show).post(signup::submit))
        .route(
            "/subscribe/confirm/{token}",
            get(signup::confirm_page).post(signup::confirm),
        )
        .route(
            "/subscribe/verify/{token}",
            get(signup::verify_page).post(signup::verify),
        )
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::confirm).post(unsubscribe::unsubscribe),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route_layer(axum::middleware::from_fn(
            tocsin_runtime::requests::http_metrics,
        ))
        .with_state(pages)
}

/// Serves the pages on `listener` until `shutdown`, finishing the requests in flight.
pub async fn run(
    config: PageConfig,
    store: Store,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    info!(%addr, "pages serving");
    let sweep = tokio::spawn(expire_signups(store.clone(), shutdown.clone()));
    let app = router(config, store).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let wait = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { wait.wait().await })
        .await
        .context("serving the pages")?;
    shutdown.trigger();
    let _ = sweep.await;
    info!("pages stopped");
    Ok(())
}

/// Deletes expired sign-ups (and the addresses they held) every minute.
async fn expire_signups(store: Store, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        match store.expire_signups().await {
            Ok(0) => {}
            Ok(n) => info!(signups = n, "expired sign-ups deleted"),
            Err(e) => warn!(error = %e, "could not delete expired sign-ups"),
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            () = shutdown.wait() => {}
        }
    }
}

/// Renders page template `name` in the common frame (company, logo, colours, time).
pub(crate) fn render(
    pages: &Pages,
    status: StatusCode,
    name: &str,
    ctx: minijinja::Value,
) -> Response {
    let base = minijinja::context! {
        company => &pages.config.company,
        logo_url => &pages.config.logo_url,
        accent => &pages.config.accent,
        signup_open => !pages.config.signup.channels.is_empty(),
        generated_at => tocsin_core::notice::human_time(time::OffsetDateTime::now_utc()),
        ..ctx
    };
    match pages
        .templates
        .get_template(name)
        .and_then(|t| t.render(base))
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            error!(error = %e, template = name, "a page template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The pages' `/readyz`: PostgreSQL answers (the pages need nothing else).
#[derive(Debug, Clone)]
pub struct PageReadiness(pub Store);

impl tocsin_runtime::ops::Readiness for PageReadiness {
    async fn check(&self) -> Result<(), String> {
        tocsin_runtime::ops::dependency("PostgreSQL", self.0.ping()).await
    }
}
