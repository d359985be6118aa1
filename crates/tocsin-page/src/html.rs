//! The pages' HTML: small, server-rendered, usable without JavaScript, and accessible (a
//! language, a landmark, one heading per page, labelled controls, contrast above 7:1).

use tocsin_core::Channel;

/// Escapes text for HTML content and attribute values.
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

fn page(company: &str, title: &str, body: &str) -> String {
    let company = escape(company);
    let title = escape(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · {company}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;color:#18181b;background:#fff;\
         max-width:36rem;margin:3rem auto;padding:0 1rem}}h1{{font-size:1.5rem}}\
         button{{font:inherit;padding:.5rem 1rem;margin:.25rem .5rem .25rem 0;border:2px solid #18181b;\
         background:#18181b;color:#fff;border-radius:4px;cursor:pointer}}\
         button.secondary{{background:#fff;color:#18181b}}\
         button:focus-visible{{outline:3px solid #2563eb;outline-offset:2px}}</style>\
         </head><body><main><h1>{title}</h1>{body}</main></body></html>\n"
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

/// Asks to confirm; the form POSTs back to the same URL.
pub fn confirm(company: &str, channel: Option<Channel>) -> String {
    let what = channel_words(channel);
    let c = escape(company);
    page(
        company,
        "Unsubscribe",
        &format!(
            "<p>Stop {c}'s service status {what} to this address? You will no longer hear \
             from us there about outages or maintenance.</p>\
             <form method=\"post\">\
             <button type=\"submit\" name=\"scope\" value=\"channel\">Stop {what}</button>\
             <button type=\"submit\" name=\"scope\" value=\"all\" class=\"secondary\">\
             Stop every message from {c}</button></form>"
        ),
    )
}

/// Done: what stopped, and how to come back.
pub fn done(company: &str, channels: &[Channel]) -> String {
    let what = if channels.len() == 1 {
        channel_words(channels.first().copied())
    } else {
        "messages"
    };
    let c = escape(company);
    page(
        company,
        "You are unsubscribed",
        &format!(
            "<p>{c} will send no more service status {what} to this address. A message \
             already on its way may still arrive in the next minute.</p>\
             <p>Changed your mind? Ask {c} to add you again, or reply START to one of our \
             texts to get texts again.</p>"
        ),
    )
}

pub fn not_found(company: &str) -> String {
    page(
        company,
        "Not found",
        "<p>There is no such incident. <a href=\"/\">See the current status</a>.</p>",
    )
}

pub fn invalid_link(company: &str) -> String {
    page(
        company,
        "This link does not work",
        "<p>The link is incomplete or was not made by us. Copy the whole link from the \
         message, or use the unsubscribe link in a more recent one.</p>",
    )
}

pub fn expired_link(company: &str) -> String {
    page(
        company,
        "This link has expired",
        "<p>Unsubscribe links work for a year. Use the link in a more recent message: every \
         one carries a fresh link.</p>",
    )
}

pub fn unavailable(company: &str) -> String {
    page(
        company,
        "Please try again",
        "<p>We could not record your request just now, and nothing was changed. Please try \
         again in a minute.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_complete_accessible_documents_and_escape_the_company() {
        let html = confirm("A&B <Cloud>", Some(Channel::Email));
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("<main><h1>Unsubscribe</h1>"));
        assert!(html.contains("Stop A&amp;B &lt;Cloud&gt;'s service status emails"));
        assert!(!html.contains("<Cloud>"));
        assert!(html.contains("<form method=\"post\">"));
        assert!(done("Acme", &[Channel::Sms]).contains("no more service status text messages"));
        assert!(done("Acme", &Channel::ALL).contains("no more service status messages"));
    }
}
