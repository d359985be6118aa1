//! Builds the email for one rendered notice: text and HTML alternatives, a deterministic
//! `Message-ID`, threading with the incident's opening email, and the headers that mark it as
//! an automated notice with a one-click unsubscribe.

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use tocsin_core::Notice;

use crate::error::Error;
use crate::templates::Rendered;

/// Who the email is from and to, and how it threads.
#[derive(Debug, Clone, Copy)]
pub struct Compose<'a> {
    pub from: &'a Mailbox,
    pub to: &'a Mailbox,
    /// The right-hand side of our `Message-ID`s: a domain the company controls, so the ids
    /// are globally unique.
    pub domain: &'a str,
    /// The `Message-ID` of the incident's opening email to this recipient, as
    /// [`message_id`] made it. The worker derives it from the opening event's delivery key
    /// for the same subscriber (`DeliveryKey::derive(opening_event, subscriber,
    /// Channel::Email)`), so no lookup is needed. `None` for the opening email itself.
    pub opening_message_id: Option<&'a str>,
}

/// The `Message-ID` for a delivery: `<{delivery_key}@{domain}>`.
///
/// Deterministic, because SMTP has no sender-side idempotency: a resend after an unknown
/// outcome carries the same id, and receivers and mail clients that deduplicate on it show
/// the message once.
pub fn message_id(delivery_key: &str, domain: &str) -> String {
    format!("<{delivery_key}@{domain}>")
}

/// The email for `notice`, rendered as `rendered`.
pub fn build(
    notice: &Notice,
    rendered: &Rendered,
    compose: &Compose<'_>,
) -> Result<Message, Error> {
    let id = message_id(&notice.delivery_key, compose.domain);
    let mut builder = Message::builder()
        .from(compose.from.clone())
        .to(compose.to.clone())
        .subject(rendered.subject.clone())
        .message_id(Some(id.clone()));
    if let Some(opening) = compose.opening_message_id.filter(|opening| *opening != id) {
        // In-Reply-To makes it a reply to the opening email; References is what most clients
        // actually thread on. Both name the opening, so every update hangs off the same root.
        builder = builder
            .in_reply_to(opening.to_owned())
            .references(opening.to_owned());
    }
    let mut message = builder
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| Error::Invalid(e.to_string()))?;

    let headers = message.headers_mut();
    mark_automatic(headers);
    headers.insert_raw(raw("X-Tocsin-Incident", notice.incident_id.to_string()));
    if let Some(url) = &notice.unsubscribe_url {
        if !is_header_safe(url) {
            return Err(Error::Invalid(format!(
                "unsubscribe URL {url:?} is not a plain URL"
            )));
        }
        // RFC 8058 one-click unsubscribe, which Gmail and Yahoo require of bulk senders.
        headers.insert_raw(raw("List-Unsubscribe", format!("<{url}>")));
        headers.insert_raw(raw(
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".into(),
        ));
    }
    Ok(message)
}

/// The email for an account message (a sign-up's confirmation): transactional, so no
/// unsubscribe headers, and identified by its queue id so a resend would be the same email.
pub fn build_account(
    message_id_key: &str,
    rendered: &Rendered,
    from: &Mailbox,
    to: &Mailbox,
    domain: &str,
) -> Result<Message, Error> {
    let mut message = Message::builder()
        .from(from.clone())
        .to(to.clone())
        .subject(rendered.subject.clone())
        .message_id(Some(message_id(message_id_key, domain)))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    mark_automatic(message.headers_mut());
    Ok(message)
}

/// Marks a mail as sent by a machine, so nobody's auto-responder answers it.
fn mark_automatic(headers: &mut lettre::message::header::Headers) {
    // RFC 3834: marks the mail as automatic, so well-behaved auto-responders stay silent.
    headers.insert_raw(raw("Auto-Submitted", "auto-generated".into()));
    // Outlook and Exchange ignore Auto-Submitted; this asks them not to send out-of-office
    // replies to an address that nobody reads.
    headers.insert_raw(raw("X-Auto-Response-Suppress", "OOF, AutoReply".into()));
}

fn raw(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// A URL inside `<...>` must not close the bracket or break the header line.
fn is_header_safe(url: &str) -> bool {
    !url.is_empty()
        && url
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '<' && c != '>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::{Templates, sample_notice};
    use tocsin_core::EventKind;

    fn formatted(notice: &Notice, opening: Option<&str>) -> String {
        let rendered = Templates::defaults().render(notice).unwrap();
        let from: Mailbox = "Acme Status <status@acme.test>".parse().unwrap();
        let to: Mailbox = "ada@example.test".parse().unwrap();
        let compose = Compose {
            from: &from,
            to: &to,
            domain: "acme.test",
            opening_message_id: opening,
        };
        let message = build(notice, &rendered, &compose).unwrap();
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn message_id_comes_from_the_delivery_key() {
        let notice = sample_notice(EventKind::Updated);
        assert_eq!(
            message_id(&notice.delivery_key, "acme.test"),
            "<dlv_0123456789abcdef0123456789abcdef@acme.test>"
        );
        let mail = formatted(&notice, None);
        assert!(
            mail.contains("Message-ID: <dlv_0123456789abcdef0123456789abcdef@acme.test>\r\n"),
            "{mail}"
        );
        // Built twice, the same id: a resend is recognisably the same message.
        assert_eq!(
            mail.lines().find(|l| l.starts_with("Message-ID")),
            formatted(&notice, None)
                .lines()
                .find(|l| l.starts_with("Message-ID"))
        );
    }

    #[test]
    fn headers_mark_an_automated_notice_with_one_click_unsubscribe() {
        let notice = sample_notice(EventKind::Opened);
        let mail = formatted(&notice, None);
        for header in [
            "From: \"Acme Status\" <status@acme.test>\r\n",
            "To: ada@example.test\r\n",
            "Subject: [Acme] Partial outage: Payments API errors\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "List-Unsubscribe: <https://status.acme.test/unsubscribe/u1>\r\n",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            "Content-Type: multipart/alternative",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
        ] {
            assert!(mail.contains(header), "missing {header:?} in\n{mail}");
        }
        assert!(mail.contains(&format!("X-Tocsin-Incident: {}\r\n", notice.incident_id)));
        assert!(
            !mail.contains("In-Reply-To"),
            "the opening email starts the thread"
        );

        let quiet = Notice {
            unsubscribe_url: None,
            ..notice
        };
        assert!(!formatted(&quiet, None).contains("List-Unsubscribe"));
    }

    #[test]
    fn updates_thread_under_the_opening_email() {
        let notice = sample_notice(EventKind::Resolved);
        let opening = message_id("dlv_opening", "acme.test");
        let mail = formatted(&notice, Some(&opening));
        assert!(
            mail.contains("In-Reply-To: <dlv_opening@acme.test>\r\n"),
            "{mail}"
        );
        assert!(
            mail.contains("References: <dlv_opening@acme.test>\r\n"),
            "{mail}"
        );

        // The opening itself, given its own id, does not reply to itself.
        let own = message_id(&notice.delivery_key, "acme.test");
        assert!(!formatted(&notice, Some(&own)).contains("In-Reply-To"));
    }

    #[test]
    fn a_url_that_would_break_the_header_is_refused() {
        let notice = Notice {
            unsubscribe_url: Some("https://x.test/>\r\nBcc: eve@evil.test".into()),
            ..sample_notice(EventKind::Opened)
        };
        let rendered = Templates::defaults().render(&notice).unwrap();
        let mbox: Mailbox = "a@b.test".parse().unwrap();
        let compose = Compose {
            from: &mbox,
            to: &mbox,
            domain: "b.test",
            opening_message_id: None,
        };
        assert!(matches!(
            build(&notice, &rendered, &compose),
            Err(Error::Invalid(_))
        ));
    }
}
