use serde::Serialize;

use crate::inbox::Record;

/// One mail whose data reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets; empty for a null sender.
    pub from: String,
    /// The accepted envelope recipients (`RCPT TO`).
    pub recipients: Vec<String>,
    /// The message as sent, dot-unstuffed, without the terminating `.` line (empty when the
    /// server was told not to keep data).
    pub data: String,
    /// The `Message-ID` header, as written (angle brackets included).
    pub message_id: Option<String>,
    pub subject: Option<String>,
    /// The `To` header (the envelope recipients are in `recipients`).
    pub to: Option<String>,
    /// True when the server replied 250, or took the mail and dropped the connection (`drop`).
    pub accepted: bool,
    /// The reply code sent after the data; `None` when no reply was sent.
    pub reply_code: Option<u16>,
    /// The number of the connection it came over (1 for the first accepted), so tests can see
    /// a pooled client reuse a connection.
    pub connection: u64,
    pub received_at_unix_ms: u64,
}

impl Record for ReceivedMail {
    fn dedupe_key(&self) -> Option<String> {
        self.message_id.clone()
    }

    fn accepted(&self) -> bool {
        self.accepted
    }
}

/// The headers the tests look at, read from the header section (up to the first empty line),
/// with folded lines joined as RFC 5322 says.
pub(crate) struct Headers {
    pub(crate) message_id: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) to: Option<String>,
}

pub(crate) fn parse_headers(data: &[u8]) -> Headers {
    let mut headers = Headers {
        message_id: None,
        subject: None,
        to: None,
    };
    let text = String::from_utf8_lossy(data);
    let mut unfolded: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = unfolded.last_mut() {
                last.push_str(line);
            }
            continue;
        }
        unfolded.push(line.to_owned());
    }
    for line in unfolded {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_owned());
        match name.trim().to_ascii_lowercase().as_str() {
            "message-id" => headers.message_id = value,
            "subject" => headers.subject = value,
            "to" => headers.to = value,
            _ => {}
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_unfolded_and_matched_without_case() {
        let data =
            b"message-ID: <a@b>\r\nSubject: Disk\r\n full\r\nTo: x@y\r\n\r\nSubject: body\r\n";
        let headers = parse_headers(data);
        assert_eq!(headers.message_id.as_deref(), Some("<a@b>"));
        assert_eq!(headers.subject.as_deref(), Some("Disk full"));
        assert_eq!(headers.to.as_deref(), Some("x@y"));
    }
}
