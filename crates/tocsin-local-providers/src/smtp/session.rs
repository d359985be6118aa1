//! One SMTP conversation: commands in, replies out, a transaction per mail. Several mails may
//! share a connection (lettre's pool does this), so every transaction ends in a clean state.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::Shared;
use super::mail::{ReceivedMail, parse_headers};
use crate::fault::{Fault, SmtpStage};

/// RFC 5321 allows 512 octets per command line; be lenient, but bounded.
const MAX_COMMAND_LINE: u64 = 4096;
/// Data lines may be long (RFC 5322 says 998); longer chunks are read in pieces.
const MAX_DATA_CHUNK: u64 = 64 * 1024;

/// The mail being built between `MAIL FROM` and the end of `DATA`.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<String>,
    /// The first fault picked up by a recipient, applied after the data.
    fault: Option<Fault>,
}

struct Conversation<'a> {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    shared: &'a Shared,
    connection: u64,
}

pub(crate) async fn converse(
    stream: TcpStream,
    connection: u64,
    shared: &Shared,
) -> io::Result<()> {
    let (read, write) = stream.into_split();
    let mut c = Conversation {
        reader: BufReader::new(read),
        writer: BufWriter::new(write),
        shared,
        connection,
    };
    c.reply(&format!(
        "220 {} ESMTP tocsin-local-providers",
        shared.config.hostname
    ))
    .await?;
    let mut greeted = false;
    let mut txn = Transaction::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            read = read_line(&mut c.reader, &mut line, MAX_COMMAND_LINE) => read?,
            () = shared.shutdown.wait() => {
                return c.reply("421 4.3.2 Service shutting down").await;
            }
        };
        if read == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            // An overlong line: discard the rest of it so the next read starts on a command.
            skip_line(&mut c.reader).await?;
            c.reply("500 5.5.2 Line too long").await?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, argument) = text.split_once(' ').unwrap_or((text, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                greeted = true;
                txn = Transaction::default();
                let host = &shared.config.hostname;
                let size = shared.config.max_message_bytes;
                c.reply(&format!(
                    "250-{host} greets {argument}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE {size}\r\n250 ENHANCEDSTATUSCODES"
                ))
                .await?;
            }
            "HELO" => {
                greeted = true;
                txn = Transaction::default();
                c.reply(&format!("250 {}", shared.config.hostname)).await?;
            }
            "MAIL" => {
                if !greeted {
                    c.reply("503 5.5.1 Send EHLO or HELO first").await?;
                } else if txn.from.is_some() {
                    c.reply("503 5.5.1 Nested MAIL command").await?;
                } else if let Some(path) = path_after(argument, "FROM:") {
                    txn.from = Some(path);
                    c.reply("250 2.1.0 Ok").await?;
                } else {
                    c.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                }
            }
            "RCPT" => {
                if txn.from.is_none() {
                    c.reply("503 5.5.1 Need MAIL before RCPT").await?;
                } else if let Some(path) = path_after(argument, "TO:").filter(|p| !p.is_empty()) {
                    c.recipient(&mut txn, path).await?;
                } else {
                    c.reply("501 5.5.4 Syntax: RCPT TO:<address>").await?;
                }
            }
            "DATA" => {
                if txn.recipients.is_empty() {
                    c.reply("503 5.5.1 Need RCPT before DATA").await?;
                } else {
                    c.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                    let transaction = std::mem::take(&mut txn);
                    if !c.data(transaction).await? {
                        return Ok(());
                    }
                }
            }
            "RSET" => {
                txn = Transaction::default();
                c.reply("250 2.0.0 Ok").await?;
            }
            "NOOP" => c.reply("250 2.0.0 Ok").await?,
            "VRFY" => {
                c.reply("252 2.1.5 Cannot verify, will attempt delivery")
                    .await?
            }
            "QUIT" => return c.reply("221 2.0.0 Bye").await,
            _ => c.reply("500 5.5.2 Command not recognized").await?,
        }
    }
}

impl Conversation<'_> {
    async fn reply(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await?;
        self.writer.flush().await
    }

    async fn recipient(&mut self, txn: &mut Transaction, path: String) -> io::Result<()> {
        match self.shared.faults.take(&path) {
            Some(Fault::Reject {
                code,
                stage: SmtpStage::Rcpt,
                message,
            }) => {
                tracing::debug!(recipient = %path, code, "RCPT refused by a fault");
                return self.reply(&fault_reply(code, message.as_deref())).await;
            }
            Some(
                fault @ (Fault::Status { .. } | Fault::Redirect { .. } | Fault::Undelivered { .. }),
            ) => {
                tracing::warn!(?fault, "fault has no meaning for SMTP; ignored");
            }
            Some(fault) => {
                txn.fault.get_or_insert(fault);
            }
            None => {}
        }
        txn.recipients.push(path);
        self.reply("250 2.1.5 Ok").await
    }

    /// Reads the data up to the terminating dot line and answers it. Returns false when the
    /// connection must end (client gone, `hang` or `drop` fault).
    async fn data(&mut self, txn: Transaction) -> io::Result<bool> {
        let max = self.shared.config.max_message_bytes;
        let mut data = Vec::new();
        let mut too_big = false;
        let mut chunk = Vec::new();
        let mut at_line_start = true;
        loop {
            chunk.clear();
            if read_line(&mut self.reader, &mut chunk, MAX_DATA_CHUNK).await? == 0 {
                return Ok(false);
            }
            let line_start = at_line_start;
            at_line_start = chunk.ends_with(b"\n");
            if line_start && (chunk == b".\r\n" || chunk == b".\n") {
                break;
            }
            // Dot-unstuffing: a leading dot was doubled by the sender (RFC 5321 4.5.2).
            let content = if line_start && chunk.starts_with(b".") {
                &chunk[1..]
            } else {
                &chunk[..]
            };
            if data.len() + content.len() > max {
                too_big = true;
            } else {
                data.extend_from_slice(content);
            }
        }
        if too_big {
            self.reply(&format!("552 5.3.4 Message exceeds {max} bytes"))
                .await?;
            return Ok(true);
        }
        let headers = parse_headers(&data);
        let mut mail = ReceivedMail {
            from: txn.from.unwrap_or_default(),
            recipients: txn.recipients,
            data: if self.shared.config.keep_data {
                String::from_utf8_lossy(&data).into_owned()
            } else {
                String::new()
            },
            message_id: headers.message_id,
            subject: headers.subject,
            to: headers.to,
            accepted: true,
            reply_code: Some(250),
            connection: self.connection,
            received_at_unix_ms: crate::now_unix_ms(),
        };
        match txn.fault {
            Some(Fault::Reject { code, message, .. }) => {
                mail.accepted = false;
                mail.reply_code = Some(code);
                self.shared.inbox.push(mail);
                self.reply(&fault_reply(code, message.as_deref())).await?;
            }
            Some(Fault::Hang) => {
                // Never acknowledged: the server made no promise to deliver it.
                mail.accepted = false;
                mail.reply_code = None;
                self.shared.inbox.push(mail);
                tracing::debug!("hanging after DATA as the fault plan says");
                // Silent until the client gives up or the server stops.
                let mut sink = [0u8; 1024];
                loop {
                    tokio::select! {
                        read = self.reader.read(&mut sink) => if read? == 0 { break },
                        () = self.shared.shutdown.wait() => break,
                    }
                }
                return Ok(false);
            }
            Some(Fault::Drop) => {
                mail.reply_code = None;
                self.shared.inbox.push(mail);
                tracing::debug!("dropping the connection after DATA as the fault plan says");
                return Ok(false);
            }
            Some(Fault::Delay { ms }) => {
                self.shared.inbox.push(mail);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.reply("250 2.0.0 Ok: queued").await?;
            }
            _ => {
                self.shared.inbox.push(mail);
                self.reply("250 2.0.0 Ok: queued").await?;
            }
        }
        Ok(true)
    }
}

/// Reads up to a newline or `limit` bytes, whichever comes first.
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    limit: u64,
) -> io::Result<usize> {
    if reader.buffer().is_empty() {
        quick_ack(reader.get_ref());
    }
    (&mut *reader).take(limit).read_until(b'\n', line).await
}

/// Asks the kernel to acknowledge what arrives next at once. lettre writes the message and the
/// terminating `\r\n.\r\n` as two writes without `TCP_NODELAY`: Nagle holds the second until the
/// first is acknowledged, and a delayed ACK would cost 40 ms per mail. The flag does not stick,
/// so it is set again before every read that reaches the socket.
fn quick_ack(stream: &OwnedReadHalf) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let tcp: &tokio::net::TcpStream = stream.as_ref();
        let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

async fn skip_line(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<()> {
    let mut discard = Vec::new();
    loop {
        discard.clear();
        if read_line(reader, &mut discard, MAX_COMMAND_LINE).await? == 0 || discard.ends_with(b"\n")
        {
            return Ok(());
        }
    }
}

/// The address in `FROM:<a@b> SIZE=10` or `TO:<a@b>`, without brackets.
fn path_after(argument: &str, keyword: &str) -> Option<String> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start();
    let path = rest.split_whitespace().next().unwrap_or("");
    let path = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path);
    Some(path.to_owned())
}

fn fault_reply(code: u16, message: Option<&str>) -> String {
    let class = code / 100;
    let text = message.unwrap_or(match code {
        421 => "Service not available (fault injected)",
        450 | 451 => "Local error in processing (fault injected)",
        452 => "Insufficient system storage (fault injected)",
        550 => "Mailbox unavailable (fault injected)",
        552 => "Message size exceeds limit (fault injected)",
        554 => "Transaction failed (fault injected)",
        _ => "Refused (fault injected)",
    });
    format!("{code} {class}.0.0 {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_with_parameters_and_any_case() {
        assert_eq!(
            path_after("FROM:<a@b.c> SIZE=100 BODY=8BITMIME", "FROM:").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(
            path_after("from: <a@b.c>", "FROM:").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(path_after("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_after("TO:<x@y>", "FROM:"), None);
    }
}
