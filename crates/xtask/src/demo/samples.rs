//! The messages one customer of each kind actually received in the demo, as the provider
//! servers recorded them: the email text bodies of a subscriber who gets every email, and the
//! texts of one who gets texts. Written to `target/demo/messages.md` (the README quotes it).

use std::fmt;
use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use crate::stack::Ports;

/// Gets every kind of email (the "mail" persona).
pub(super) const EMAIL_READER: &str = "mail-01@customers.example";
/// Gets texts when an incident opens and resolves (the "mail-and-text" persona).
const SMS_READER: &str = "+14155552601";

#[derive(Debug, Deserialize)]
struct Mail {
    recipients: Vec<String>,
    subject: Option<String>,
    data: String,
}

#[derive(Debug, Deserialize)]
struct Sms {
    to: String,
    body: String,
}

pub(super) struct Samples {
    emails: Vec<(String, String)>,
    /// The one-click unsubscribe URL of the email reader's last email.
    pub(super) unsubscribe_url: Option<String>,
    texts: Vec<String>,
    path: PathBuf,
}

/// Reads what the demo's two sample readers received and writes it to the samples file.
pub(super) async fn collect(http: &reqwest::Client, ports: Ports) -> anyhow::Result<Samples> {
    let get = |port: u16| format!("http://127.0.0.1:{port}/_control/messages");
    let mails: Vec<Mail> = http
        .get(get(ports.smtp_control))
        .send()
        .await?
        .json()
        .await
        .context("reading the SMTP server's messages")?;
    let texts: Vec<Sms> = http
        .get(get(ports.twilio))
        .send()
        .await?
        .json()
        .await
        .context("reading the Twilio server's messages")?;
    let mails: Vec<Mail> = mails
        .into_iter()
        .filter(|m| m.recipients.iter().any(|r| r == EMAIL_READER))
        .collect();
    let unsubscribe_url = mails.last().and_then(|m| list_unsubscribe(&m.data));
    let emails: Vec<(String, String)> = mails
        .into_iter()
        .map(|m| (m.subject.unwrap_or_default(), text_part(&m.data)))
        .collect();
    let texts: Vec<String> = texts
        .into_iter()
        .filter(|t| t.to == SMS_READER)
        .map(|t| t.body)
        .collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/demo/messages.md");
    let mut file = String::from("# Messages one reader of each kind received in the demo\n");
    for (subject, body) in &emails {
        file.push_str(&format!("\n## {subject}\n\n```text\n{body}```\n"));
    }
    file.push_str("\n## Texts\n\n");
    for text in &texts {
        file.push_str(&format!("```text\n{text}\n```\n\n"));
    }
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    std::fs::write(&path, file).with_context(|| format!("writing {}", path.display()))?;
    let path = path.canonicalize().unwrap_or(path);
    Ok(Samples {
        emails,
        unsubscribe_url,
        texts,
        path,
    })
}

impl fmt::Display for Samples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "what {EMAIL_READER} received by email, by subject:")?;
        for (subject, _) in &self.emails {
            writeln!(f, "  {subject}")?;
        }
        writeln!(f, "what {SMS_READER} received by text:")?;
        for text in &self.texts {
            writeln!(f, "  {text}")?;
        }
        write!(f, "every body in full: {}", self.path.display())
    }
}

/// `HH:MM` in UTC.
pub(super) fn hhmm(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{:02}:{:02}", at.hour(), at.minute())
}

/// The `text/plain` part of a MIME message, its quoted-printable decoded.
/// The URL in a raw message's `List-Unsubscribe` header (unfolded).
fn list_unsubscribe(data: &str) -> Option<String> {
    let headers = data.split("\r\n\r\n").next()?;
    let unfolded = headers.replace("\r\n ", " ").replace("\r\n\t", " ");
    let value = unfolded
        .lines()
        .find_map(|line| line.strip_prefix("List-Unsubscribe:"))?;
    let (_, rest) = value.split_once('<')?;
    let (url, _) = rest.split_once('>')?;
    Some(url.trim().to_owned())
}

fn text_part(data: &str) -> String {
    let Some(start) = data.find("Content-Type: text/plain") else {
        return String::new();
    };
    let part = &data[start..];
    let (headers, body) = part.split_once("\r\n\r\n").unwrap_or((part, ""));
    // The part ends at the next boundary line (`--` and the boundary), not at a signature
    // separator (`--` alone on its line) inside the text.
    let boundary = data
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|b| format!("\r\n--{b}"));
    let body = match &boundary {
        Some(boundary) => body.split(boundary.as_str()).next().unwrap_or(body),
        None => body,
    };
    let body = if headers.contains("quoted-printable") {
        quoted_printable(body)
    } else {
        body.to_owned()
    };
    body.replace("\r\n", "\n")
}

fn quoted_printable(encoded: &str) -> String {
    let joined = encoded.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_part_is_found_and_decoded() {
        let mail = "Subject: x\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\n\
                    Content-Type: text/plain; charset=utf-8\r\n\
                    Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                    Caf=C3=A9 is =\r\nopen.\r\n--\r\nSigned\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--";
        assert_eq!(text_part(mail), "Café is open.\n--\nSigned");
    }
}
