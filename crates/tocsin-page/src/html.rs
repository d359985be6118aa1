//! The short pages every route shares (a link that does not work, one that expired, a
//! moment of unavailability, unsubscribe's question and answer), rendered in the same
//! layout as the status page (`templates/notice.html`), so every page has the same language,
//! landmarks, heading and contrast.

use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use tocsin_core::Channel;

use crate::{Pages, render};

/// Escapes text for HTML content and attribute values (the Atom feed is built by hand).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page of a title and a few sentences, with `status`.
fn notice(pages: &Pages, status: StatusCode, title: &str, paragraphs: &[String]) -> Response {
    render(
        pages,
        status,
        "notice.html",
        context! { title => title, paragraphs => paragraphs },
    )
}

fn channel_words(channel: Option<Channel>) -> &'static str {
    match channel {
        Some(Channel::Email) => "emails",
        Some(Channel::Sms) => "text messages",
        Some(Channel::Webhook) => "webhook calls",
        None => "messages",
    }
}

/// Unsubscribe's question; the buttons POST back to the same URL.
pub(crate) fn unsubscribe_confirm(pages: &Pages, channel: Option<Channel>) -> Response {
    let what = channel_words(channel);
    let company = &pages.config.company;
    render(
        pages,
        StatusCode::OK,
        "notice.html",
        context! {
            title => "Unsubscribe",
            paragraphs => vec![format!(
                "Stop service status {what} from {company} to this address? You will no longer hear from us there about outages or maintenance."
            )],
            buttons => vec![
                context! { name => "scope", value => "channel", label => format!("Stop {what}") },
                context! { name => "scope", value => "all", label => format!("Stop every message from {company}"), secondary => true },
            ],
        },
    )
}

/// Unsubscribe's answer: what stopped, and how to come back.
pub(crate) fn unsubscribed(pages: &Pages, channels: &[Channel]) -> Response {
    let what = if channels.len() == 1 {
        channel_words(channels.first().copied())
    } else {
        "messages"
    };
    let company = &pages.config.company;
    notice(
        pages,
        StatusCode::OK,
        "You are unsubscribed",
        &[
            format!(
                "{company} will send no more service status {what} to this address. A message already on its way may still arrive in the next minute."
            ),
            "Changed your mind? Subscribe again on the status page, or reply START to one of our texts to get texts again.".to_owned(),
        ],
    )
}

/// 404: no such incident.
pub(crate) fn not_found(pages: &Pages) -> Response {
    render(
        pages,
        StatusCode::NOT_FOUND,
        "notice.html",
        context! {
            title => "Not found",
            paragraphs => vec!["There is no such incident."],
            link => "/",
            link_words => "See the current status",
        },
    )
}

/// 404: a link not made by us, or cut short.
pub(crate) fn invalid_link(pages: &Pages) -> Response {
    notice(
        pages,
        StatusCode::NOT_FOUND,
        "This link does not work",
        &["The link is incomplete or was not made by us. Copy the whole link from the message, or use the link in a more recent one.".to_owned()],
    )
}

/// 410: an unsubscribe or preferences link past its time.
pub(crate) fn expired_link(pages: &Pages) -> Response {
    notice(
        pages,
        StatusCode::GONE,
        "This link has expired",
        &["Use the link in a more recent message: every one carries a fresh link.".to_owned()],
    )
}

/// 503: PostgreSQL did not answer; nothing changed.
pub(crate) fn unavailable(pages: &Pages) -> Response {
    notice(
        pages,
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        &["We could not record your request just now, and nothing was changed. Please try again in a minute.".to_owned()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("A&B <Cloud> \"x\" 'y'"),
            "A&amp;B &lt;Cloud&gt; &quot;x&quot; &#39;y&#39;"
        );
    }
}
