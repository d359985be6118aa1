//! `/unsubscribe/{token}`: stop messages from a link in one of them.
//!
//! | request | answer |
//! |---|---|
//! | `GET`, valid link | 200, a page asking to confirm, with a form that POSTs back |
//! | `POST`, valid link (the form, or `List-Unsubscribe=One-Click` from a mail provider) | 200, done; the address is opted out |
//! | a link not made by Tocsin, or cut short | 404 |
//! | an expired link | 410, saying how to get a fresh one |
//! | PostgreSQL unavailable | 503; nothing changed, try again |
//!
//! A POST for a subscriber deleted since is answered as done: there is nothing left to stop,
//! and the answer must not tell a link's holder whether its owner still exists.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use time::OffsetDateTime;
use tocsin_core::Channel;
use tocsin_core::links::{LinkClaims, LinkError, Purpose};
use tracing::{error, info, instrument, warn};

use crate::Pages;
use crate::html;

/// The link's claims if it is a valid unsubscribe link, else the page saying why not.
#[allow(clippy::result_large_err)] // Built once per request, on the refusal path.
fn claims(pages: &Pages, token: &str) -> Result<LinkClaims, Response> {
    match pages
        .config
        .link_secret
        .verify(token, OffsetDateTime::now_utc())
    {
        Ok(claims) if claims.purpose == Purpose::Unsubscribe => Ok(claims),
        Ok(_) | Err(LinkError::Invalid) => {
            warn!("an unsubscribe link that is not valid");
            Err(html::invalid_link(pages))
        }
        Err(LinkError::Expired) => Err(html::expired_link(pages)),
    }
}

/// `GET`: what the link will stop, and a button to do it.
pub(crate) async fn confirm(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    match claims(&pages, &token) {
        Ok(claims) => html::unsubscribe_confirm(&pages, claims.channel),
        Err(page) => page,
    }
}

/// `POST`: opts the link's address out: its channel, or every channel with `scope=all`.
#[instrument(skip_all, fields(subscriber_id, one_click))]
pub(crate) async fn unsubscribe(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let claims = match claims(&pages, &token) {
        Ok(claims) => claims,
        Err(page) => return page,
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // RFC 8058: a mail provider's one-click request carries exactly this.
    let one_click = field("List-Unsubscribe") == Some("One-Click");
    let span = tracing::Span::current();
    span.record(
        "subscriber_id",
        tracing::field::display(claims.subscriber_id),
    );
    span.record("one_click", one_click);
    let channels: Vec<Channel> = match (field("scope"), claims.channel) {
        (Some("all"), _) | (_, None) => Channel::ALL.to_vec(),
        (_, Some(channel)) => vec![channel],
    };
    let source = if one_click {
        "one_click_unsubscribe"
    } else {
        "unsubscribe_page"
    };
    match pages
        .store
        .opt_out_subscriber(claims.subscriber_id, &channels, source)
        .await
    {
        Ok(done) => {
            let done = done.unwrap_or_default();
            info!(channels = ?done, source, "unsubscribed");
            metrics::counter!("tocsin_unsubscribes_total", "source" => source).increment(1);
            html::unsubscribed(&pages, &channels)
        }
        Err(e) => {
            error!(error = %e, "could not record an unsubscribe");
            html::unavailable(&pages)
        }
    }
}
