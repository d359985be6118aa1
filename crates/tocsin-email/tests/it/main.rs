//! The email channel against a real SMTP server: `tocsin-local-providers`' loopback server,
//! with faults injected to reach every outcome.

use std::time::Duration;

use lettre::message::Mailbox;
use time::macros::datetime;
use tocsin_core::{EventKind, IncidentId, IncidentStatus, Notice, SendOutcome};
use tocsin_email::{Compose, SmtpConfig, SmtpSender, Templates, TlsMode, build, message_id};
use tocsin_local_providers::{Fault, FaultRule, SmtpServer, SmtpStage};

mod worker;

const RECIPIENT: &str = "ada@example.test";

fn notice(kind: EventKind, key: &str) -> Notice {
    let [example, _] = Notice::examples(kind);
    Notice {
        incident_id: IncidentId::new(),
        status: IncidentStatus::Identified,
        components: vec!["Payments API".into()],
        message: "Some card payments fail.".into(),
        occurred_at: datetime!(2026-11-23 14:35 UTC),
        resolved_at: None,
        window: None,
        unsubscribe_url: Some("https://status.acme.test/u/ada".into()),
        delivery_key: key.into(),
        ..example
    }
}

fn email(notice: &Notice, opening: Option<&str>) -> lettre::Message {
    let rendered = Templates::defaults().render(notice).unwrap();
    let from: Mailbox = "Acme Status <status@acme.test>".parse().unwrap();
    let to: Mailbox = RECIPIENT.parse().unwrap();
    let compose = Compose {
        from: &from,
        to: &to,
        domain: "acme.test",
        opening_message_id: opening,
    };
    build(notice, &rendered, &compose).unwrap()
}

async fn server() -> SmtpServer {
    let config = tocsin_local_providers::SmtpConfig {
        control_addr: None,
        ..Default::default()
    };
    SmtpServer::start(config).await.unwrap()
}

fn sender(server: &SmtpServer, send_timeout: Duration) -> SmtpSender {
    let mut config = SmtpConfig::new("127.0.0.1", server.addr().port(), TlsMode::None);
    config.send_timeout = send_timeout;
    SmtpSender::new(config).unwrap()
}

#[tokio::test]
async fn an_update_arrives_with_its_headers_and_threads_under_the_opening() {
    let server = server().await;
    let sender = sender(&server, Duration::from_secs(10));
    let opening = message_id("dlv_opening", "acme.test");

    let outcome = sender
        .send(email(
            &notice(EventKind::Updated, "dlv_update"),
            Some(&opening),
        ))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    // A second message reuses the pooled connection. lettre returns a connection to the pool
    // from a spawned task, so give it a moment first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let outcome = sender
        .send(email(
            &notice(EventKind::Updated, "dlv_update2"),
            Some(&opening),
        ))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(server.connections(), 1, "the pool kept one connection");

    let mails = server.mails();
    assert_eq!(mails.len(), 2);
    let mail = &mails[0];
    assert!(mail.accepted);
    assert_eq!(mail.recipients, vec![RECIPIENT.to_owned()]);
    assert_eq!(mail.message_id.as_deref(), Some("<dlv_update@acme.test>"));
    assert_eq!(
        mail.subject.as_deref(),
        Some("[Acme] Identified: Payments API errors")
    );
    for header in [
        "In-Reply-To: <dlv_opening@acme.test>",
        "References: <dlv_opening@acme.test>",
        "List-Unsubscribe: <https://status.acme.test/u/ada>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Auto-Submitted: auto-generated",
        "X-Tocsin-Incident: ",
        "multipart/alternative",
    ] {
        assert!(
            mail.data.contains(header),
            "missing {header:?}:\n{}",
            mail.data
        );
    }
    sender.shutdown().await;
}

#[tokio::test]
async fn refusals_map_to_permanent_and_transient() {
    let server = server().await;
    let sender = sender(&server, Duration::from_secs(10));
    server.faults().push(
        FaultRule::for_target(
            RECIPIENT,
            Fault::Reject {
                code: 550,
                stage: SmtpStage::Rcpt,
                message: Some("no such user".into()),
            },
        )
        .times(1),
    );
    let outcome = sender
        .send(email(&notice(EventKind::Opened, "dlv_a"), None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );

    server.faults().push(
        FaultRule::for_target(
            RECIPIENT,
            Fault::Reject {
                code: 451,
                stage: SmtpStage::Data,
                message: None,
            },
        )
        .times(1),
    );
    let outcome = sender
        .send(email(&notice(EventKind::Opened, "dlv_b"), None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );

    // The faults are used up: the next send goes through on the same sender.
    let outcome = sender
        .send(email(&notice(EventKind::Opened, "dlv_c"), None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(server.summary().received, 1);
}

#[tokio::test]
async fn a_lost_reply_is_unknown_and_the_resend_keeps_the_message_id() {
    let server = server().await;
    let sender = sender(&server, Duration::from_secs(10));
    server
        .faults()
        .push(FaultRule::for_target(RECIPIENT, Fault::Drop).times(1));
    let n = notice(EventKind::Opened, "dlv_lost");

    let outcome = sender.send(email(&n, None)).await;
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    // The email policy: resend once, with the same Message-ID, so receivers can collapse it.
    let outcome = sender.send(email(&n, None)).await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome:?}"
    );

    let summary = server.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (2, 1, 1)
    );
    assert!(
        server
            .mails()
            .iter()
            .all(|m| m.message_id.as_deref() == Some("<dlv_lost@acme.test>"))
    );
}

#[tokio::test]
async fn a_server_that_hangs_after_the_data_is_unknown_and_the_pool_recovers() {
    let server = server().await;
    let sender = sender(&server, Duration::from_millis(500));
    server
        .faults()
        .push(FaultRule::for_target(RECIPIENT, Fault::Hang).times(1));

    let outcome = sender
        .send(email(&notice(EventKind::Opened, "dlv_hang"), None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    // The stuck connection is not reused: the next send opens a fresh one and succeeds.
    let outcome = sender
        .send(email(&notice(EventKind::Opened, "dlv_after"), None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_stopped_server_is_transient() {
    let server = server().await;
    let sender = sender(&server, Duration::from_secs(5));
    server.shutdown().await;
    let outcome = sender
        .send(email(&notice(EventKind::Opened, "dlv_x"), None))
        .await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );
}
