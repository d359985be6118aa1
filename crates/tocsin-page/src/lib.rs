//! Tocsin's public pages, served to the company's customers: the status page, and the
//! unsubscribe page behind the signed link in every email (RFC 8058 one-click included).
//!
//! - [`status_page`]: `/` (components, current incidents and maintenance, 90 days of
//!   history), `/incidents/{id}`, `/feed.atom` and `/api/v1/summary.json`, from PostgreSQL
//!   only; templates in `templates/`.
//! - [`preferences`]: `/preferences/{token}`, the preference centre behind the signed link
//!   in every email: channels (as consent), components, severity, quiet hours.
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
pub mod status_page;
pub mod unsubscribe;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use tocsin_core::links::LinkSecret;
use tocsin_runtime::Shutdown;
use tocsin_store::Store;
use tokio::net::TcpListener;
use tracing::info;

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
}

/// The routes, ready to serve.
pub fn router(config: PageConfig, store: Store) -> Router {
    let pages = Pages {
        config: Arc::new(config),
        store,
        templates: Arc::new(status_page::templates()),
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
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::confirm).post(unsubscribe::unsubscribe),
        )
        .route("/healthz", get(|| async { "ok" }))
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
    axum::serve(listener, router(config, store))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("serving the pages")?;
    info!("pages stopped");
    Ok(())
}
