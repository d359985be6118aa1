//! `/preferences/{token}`: the preference centre, reached by the signed link in every email.
//!
//! The reader chooses where they are told (each channel they have an address for), about
//! what (every component, or some), from which severity, and their quiet hours. Channels are
//! consent: clearing one opts its address out, ticking it again opts back in, exactly like an
//! unsubscribe link or a STOP reply, so no operator write undoes the reader's choice. The
//! rest is their preference document, saved as a new revision.
//!
//! | request | answer |
//! |---|---|
//! | `GET`, valid link | 200, the form with the reader's current choices |
//! | `POST`, valid link, valid choices | 200, the form again, saying it is saved |
//! | `POST` with a choice that does not hold (a time zone we do not know) | 400, the form with what to fix; nothing saved |
//! | a link not made by Tocsin, or cut short; a subscriber deleted since | 404 |
//! | an expired link | 410 |

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::context;
use time::OffsetDateTime;
use tocsin_core::links::{LinkError, Purpose};
use tocsin_core::{Channel, ComponentFilter, QuietHours, Severity, Subscriber, SubscriberId};
use tracing::{error, info, instrument, warn};

use crate::Pages;
use crate::html;

/// An address shown half hidden: enough for its owner to recognise, little for anyone else.
fn masked(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => {
            let digits: Vec<char> = address.chars().collect();
            let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
            format!("•••{tail}")
        }
    }
}

fn channel_words(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "Email",
        Channel::Sms => "Text messages",
        Channel::Webhook => "Webhook calls",
    }
}

fn minutes(hhmm: &str) -> Option<u16> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The reader the link names, or the page saying why not.
async fn reader(pages: &Pages, token: &str) -> Result<Subscriber, Response> {
    let claims = match pages
        .config
        .link_secret
        .verify(token, OffsetDateTime::now_utc())
    {
        Ok(claims) if claims.purpose == Purpose::Preferences => claims,
        Ok(_) | Err(LinkError::Invalid) => {
            warn!("a preferences link that is not valid");
            return Err(html::invalid_link(pages));
        }
        Err(LinkError::Expired) => {
            return Err(html::expired_link(pages));
        }
    };
    match pages.store.subscriber_by_id(claims.subscriber_id).await {
        Ok(Some((subscriber, _))) => Ok(subscriber),
        Ok(None) => Err(html::invalid_link(pages)),
        Err(e) => {
            error!(error = %e, "could not read a subscriber");
            Err(html::unavailable(pages))
        }
    }
}

/// The form for `subscriber`, with a note that it was saved or what to fix.
async fn form(
    pages: &Pages,
    subscriber: &Subscriber,
    saved: bool,
    problem: Option<String>,
) -> Response {
    let catalogue = match pages.store.components().await {
        Ok(catalogue) => catalogue,
        Err(e) => {
            error!(error = %e, "could not read the catalogue");
            return html::unavailable(pages);
        }
    };
    let p = &subscriber.preferences;
    let channels: Vec<minijinja::Value> = Channel::ALL
        .into_iter()
        .filter_map(|c| {
            let address = subscriber.contacts.address(c)?;
            Some(context! {
                id => c.as_str(),
                words => channel_words(c),
                address => masked(address),
                on => p.channels.contains(&c) && !subscriber.opted_out.contains(&c),
            })
        })
        .collect();
    let followed = match &p.components {
        ComponentFilter::All => None,
        ComponentFilter::Only(only) => Some(only),
    };
    let components: Vec<minijinja::Value> = catalogue
        .iter()
        .map(|c| {
            context! {
                id => &c.id,
                name => &c.name,
                on => followed.is_some_and(|f| f.contains(&c.id)),
            }
        })
        .collect();
    let severities: Vec<minijinja::Value> = [
        (Severity::Minor, "Minor (every incident)"),
        (Severity::Major, "Major"),
        (Severity::Critical, "Critical only"),
    ]
    .into_iter()
    .map(|(s, words)| context! { id => s.as_str(), words => words, on => s == p.min_severity })
    .collect();
    let quiet = p.quiet_hours.as_ref();
    let ctx = context! {
        company => &pages.config.company,
        logo_url => &pages.config.logo_url,
        accent => &pages.config.accent,
        generated_at => tocsin_core::notice::human_time(OffsetDateTime::now_utc()),
        saved => saved,
        error => problem.clone(),
        channels => channels,
        components => components,
        all_components => followed.is_none(),
        severities => severities,
        quiet_tz => quiet.map(|q| q.time_zone.clone()).unwrap_or_default(),
        quiet_from => quiet.map(|q| hhmm(q.start_minute)).unwrap_or_default(),
        quiet_to => quiet.map(|q| hhmm(q.end_minute)).unwrap_or_default(),
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    match pages
        .templates
        .get_template("preferences.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(page) => (status, Html(page)).into_response(),
        Err(e) => {
            error!(error = %e, "the preferences template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET`: the reader's current choices.
pub(crate) async fn show(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    match reader(&pages, &token).await {
        Ok(subscriber) => form(&pages, &subscriber, false, None).await,
        Err(page) => page,
    }
}

/// `POST`: saves the reader's choices.
#[instrument(skip_all, fields(subscriber_id))]
pub(crate) async fn save(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let subscriber = match reader(&pages, &token).await {
        Ok(subscriber) => subscriber,
        Err(page) => return page,
    };
    tracing::Span::current().record("subscriber_id", tracing::field::display(subscriber.id));
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let all = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |name: &str| all(name).first().copied().unwrap_or_default();

    let mut preferences = subscriber.preferences.clone();
    let wanted: BTreeSet<Channel> = all("channel")
        .into_iter()
        .filter_map(|c| c.parse().ok())
        .filter(|c| subscriber.contacts.address(*c).is_some())
        .collect();
    // The document keeps at least one channel; consent says which are heard.
    preferences.channels.extend(wanted.iter().copied());
    preferences.components = if one("components") == "only" {
        ComponentFilter::Only(all("component").into_iter().map(str::to_owned).collect())
    } else {
        ComponentFilter::All
    };
    if let Some(severity) = [Severity::Minor, Severity::Major, Severity::Critical]
        .into_iter()
        .find(|s| s.as_str() == one("min_severity"))
    {
        preferences.min_severity = severity;
    }
    preferences.quiet_hours = match (one("quiet_tz").trim(), one("quiet_from"), one("quiet_to")) {
        ("", _, _) => None,
        (zone, from, to) => match (minutes(from), minutes(to)) {
            (Some(start_minute), Some(end_minute)) => Some(QuietHours {
                time_zone: zone.to_owned(),
                start_minute,
                end_minute,
            }),
            _ => {
                let problem = "Give quiet hours as a start and an end time, or leave the time zone empty for none.";
                return form(&pages, &subscriber, false, Some(problem.into())).await;
            }
        },
    };
    if let ComponentFilter::Only(only) = &preferences.components
        && only.is_empty()
    {
        let problem = "Choose at least one part of the service, or every part.";
        return form(&pages, &subscriber, false, Some(problem.into())).await;
    }
    if let Err(e) = preferences.validate() {
        return form(
            &pages,
            &subscriber,
            false,
            Some(format!("That did not work: {e}.")),
        )
        .await;
    }
    match apply(&pages, &subscriber, &wanted, &preferences).await {
        Ok(Some(updated)) => {
            info!(channels = ?wanted, "preferences saved by the reader");
            metrics::counter!("tocsin_preference_changes_total").increment(1);
            form(&pages, &updated, true, None).await
        }
        Ok(None) => html::invalid_link(&pages),
        Err(e) => {
            error!(error = %e, "could not save preferences");
            html::unavailable(&pages)
        }
    }
}

/// Records the consent for each channel the reader has an address for, then the document.
async fn apply(
    pages: &Pages,
    subscriber: &Subscriber,
    wanted: &BTreeSet<Channel>,
    preferences: &tocsin_core::Preferences,
) -> Result<Option<Subscriber>, tocsin_store::StoreError> {
    const SOURCE: &str = "preference_centre";
    let id: SubscriberId = subscriber.id;
    for channel in Channel::ALL {
        let Some(address) = subscriber.contacts.address(channel) else {
            continue;
        };
        let heard = !subscriber.opted_out.contains(&channel);
        match (wanted.contains(&channel), heard) {
            (true, false) => {
                pages.store.opt_in_address(channel, address, SOURCE).await?;
            }
            (false, true) => {
                pages
                    .store
                    .opt_out_address(channel, address, SOURCE)
                    .await?;
            }
            _ => {}
        }
    }
    pages
        .store
        .set_own_preferences(id, preferences, SOURCE)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_half_hidden_and_times_read_both_ways() {
        assert_eq!(masked("ada@example.com"), "a•••@example.com");
        assert_eq!(masked("+14155550123"), "•••23");
        assert_eq!(minutes("22:30"), Some(1350));
        assert_eq!(minutes("24:00"), None);
        assert_eq!(minutes("7"), None);
        assert_eq!(hhmm(420), "07:00");
    }
}
