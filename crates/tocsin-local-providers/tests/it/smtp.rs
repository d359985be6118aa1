use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tocsin_local_providers::{Fault, FaultRule, SmtpConfig, SmtpServer, SmtpStage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn transport(server: &SmtpServer, pool_size: u32) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr().port())
        .timeout(Some(Duration::from_secs(2)))
        .pool_config(PoolConfig::new().max_size(pool_size))
        .build()
}

fn mail(to: &str, n: usize) -> Message {
    Message::builder()
        .from("Tocsin <alerts@tocsin.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(format!("Incident {n}: disk full"))
        .message_id(Some(format!("<incident-{n}@tocsin.test>")))
        .header(ContentType::TEXT_PLAIN)
        .body(format!(
            "Disk full on db-{n}.\n.hidden line starts with a dot\nend\n"
        ))
        .unwrap()
}

#[tokio::test]
async fn pooled_client_sends_several_mails_over_one_connection() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let transport = transport(&server, 1);
    for n in 0..5 {
        let response = transport.send(mail("oncall@example.com", n)).await.unwrap();
        assert!(response.is_positive());
    }
    let mails = server.mails();
    assert_eq!(mails.len(), 5);
    // lettre hands a connection back to its pool from a spawned task, so a quick second send
    // may open another; what matters is that mails follow each other on one connection.
    assert!(
        server.connections() <= 2,
        "{} connections for 5 mails",
        server.connections()
    );
    let on_first = mails
        .iter()
        .filter(|m| m.connection == mails[0].connection)
        .count();
    assert!(
        on_first >= 2,
        "the first connection carried only {on_first} mail(s)"
    );
    let first = &mails[0];
    assert_eq!(first.from, "alerts@tocsin.test");
    assert_eq!(first.recipients, vec!["oncall@example.com".to_owned()]);
    assert_eq!(
        first.message_id.as_deref(),
        Some("<incident-0@tocsin.test>")
    );
    assert_eq!(first.subject.as_deref(), Some("Incident 0: disk full"));
    assert_eq!(first.to.as_deref(), Some("oncall@example.com"));
    assert!(first.accepted);
    // lettre dot-stuffs the leading dot; the server must remove it again.
    assert!(
        first
            .data
            .contains("\r\n.hidden line starts with a dot\r\n"),
        "{}",
        first.data
    );
    assert!(!first.data.contains("..hidden"));
    let summary = server.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (5, 5, 0)
    );
}

#[tokio::test]
async fn the_same_message_id_twice_counts_as_a_duplicate() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let transport = transport(&server, 1);
    transport.send(mail("a@example.com", 7)).await.unwrap();
    transport.send(mail("a@example.com", 7)).await.unwrap();
    transport.send(mail("a@example.com", 8)).await.unwrap();
    let summary = server.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (3, 2, 1)
    );
}

#[tokio::test]
async fn a_451_at_rcpt_is_transient_and_a_550_after_data_is_permanent() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    server.faults().push(
        FaultRule::for_target(
            "busy@example.com",
            Fault::Reject {
                code: 451,
                stage: SmtpStage::Rcpt,
                message: None,
            },
        )
        .times(1),
    );
    server.faults().push(FaultRule::for_target(
        "gone@example.com",
        Fault::Reject {
            code: 550,
            stage: SmtpStage::Data,
            message: None,
        },
    ));
    let transport = transport(&server, 2);

    let error = transport
        .send(mail("busy@example.com", 1))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.status().map(u16::from), Some(451));
    // The rule was for one use only: the retry goes through.
    transport.send(mail("busy@example.com", 1)).await.unwrap();

    let error = transport
        .send(mail("gone@example.com", 2))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(error.status().map(u16::from), Some(550));

    let mails = server.mails();
    assert_eq!(
        mails.len(),
        2,
        "the RCPT refusal sends no data; the 550 mail is kept as refused"
    );
    assert!(mails[0].accepted);
    assert!(!mails[1].accepted);
    assert_eq!(mails[1].reply_code, Some(550));
    let summary = server.summary();
    assert_eq!((summary.received, summary.rejected), (1, 1));
}

#[tokio::test]
async fn dropping_after_data_fails_the_client_but_the_server_kept_the_mail() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    server
        .faults()
        .push(FaultRule::always(Fault::Drop).times(1));
    let transport = transport(&server, 1);
    let error = transport
        .send(mail("oncall@example.com", 1))
        .await
        .unwrap_err();
    assert!(
        !error.is_transient() && !error.is_permanent(),
        "no reply code was sent: {error:?}"
    );
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].accepted);
    assert_eq!(mails[0].reply_code, None);
    assert_eq!(
        mails[0].message_id.as_deref(),
        Some("<incident-1@tocsin.test>")
    );
    // The sender retries, as it must: the receiver now holds a duplicate.
    transport.send(mail("oncall@example.com", 1)).await.unwrap();
    assert_eq!(server.summary().duplicates, 1);
}

#[tokio::test]
async fn hang_after_data_times_the_client_out_and_delay_only_slows_it() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    server
        .faults()
        .push(FaultRule::for_target("slow@example.com", Fault::Delay { ms: 300 }).times(1));
    server
        .faults()
        .push(FaultRule::for_target("stuck@example.com", Fault::Hang).times(1));
    // lettre's own timeout covers only connecting, so the sender bounds the whole send.
    let transport = transport(&server, 1);

    let started = Instant::now();
    transport.send(mail("slow@example.com", 1)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_millis(700),
        transport.send(mail("stuck@example.com", 2)),
    )
    .await;
    assert!(outcome.is_err(), "the server answered: {outcome:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));
    let stuck = server
        .mails()
        .into_iter()
        .find(|m| m.recipients == ["stuck@example.com"])
        .unwrap();
    assert!(!stuck.accepted && stuck.reply_code.is_none());
}

/// Replies to a raw conversation, one reply (possibly multi-line) per command.
async fn raw_reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end().to_owned();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return lines;
        }
    }
}

#[tokio::test]
async fn raw_protocol_greeting_ehlo_and_out_of_order_commands() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let (read, mut write) = TcpStream::connect(server.addr())
        .await
        .unwrap()
        .into_split();
    let mut reader = BufReader::new(read);
    assert!(raw_reply(&mut reader).await[0].starts_with("220 "));
    let mut say = async |command: &str| {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        raw_reply(&mut reader).await
    };
    assert!(say("MAIL FROM:<a@b.c>").await[0].starts_with("503"));
    let ehlo = say("EHLO client.test").await;
    assert!(ehlo.len() > 1 && ehlo.iter().all(|l| l.starts_with("250")));
    for extension in ["PIPELINING", "8BITMIME", "SIZE"] {
        assert!(
            ehlo.iter().any(|l| l[4..].starts_with(extension)),
            "{extension} missing from {ehlo:?}"
        );
    }
    assert!(say("RCPT TO:<x@y.z>").await[0].starts_with("503"));
    assert!(say("DATA").await[0].starts_with("503"));
    assert!(say("FROBNICATE").await[0].starts_with("500"));
    assert!(say("NOOP").await[0].starts_with("250"));
    assert!(say("mail from:<a@b.c> SIZE=100").await[0].starts_with("250"));
    assert!(say("RCPT TO:<x@y.z>").await[0].starts_with("250"));
    assert!(say("RSET").await[0].starts_with("250"));
    assert!(
        say("DATA").await[0].starts_with("503"),
        "RSET forgets the transaction"
    );
    assert!(say("MAIL FROM:<a@b.c>").await[0].starts_with("250"));
    assert!(say("RCPT TO:<x@y.z>").await[0].starts_with("250"));
    assert!(say("DATA").await[0].starts_with("354"));
    assert!(say("Subject: raw\r\n\r\n..dotted\r\n.").await[0].starts_with("250"));
    assert!(say("QUIT").await[0].starts_with("221"));
    let mail = &server.mails()[0];
    assert_eq!(mail.data, "Subject: raw\r\n\r\n.dotted\r\n");
    assert_eq!(mail.subject.as_deref(), Some("raw"));
}

#[tokio::test]
async fn a_pooled_client_sends_thousands_of_mails() {
    let server = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let transport = transport(&server, 8);
    let total = 2_000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let transport = transport.clone();
        tasks.spawn(async move {
            for n in (worker..total).step_by(8) {
                transport.send(mail("bulk@example.com", n)).await.unwrap();
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let elapsed = started.elapsed();
    let summary = server.summary();
    assert_eq!((summary.received, summary.unique), (total, total));
    // Pooling, not a connection per mail (lettre may briefly open a few more than its size).
    assert!(
        server.connections() <= 32,
        "{} connections",
        server.connections()
    );
    eprintln!(
        "{total} mails in {elapsed:?} ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
}
