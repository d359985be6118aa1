//! The email worker end to end: events appended and fanned out by the real resolver, jobs
//! pulled from the real JetStream consumer, the ledger in a real PostgreSQL database, and mail
//! handed over SMTP to the loopback server, which is told to fail where a test needs it.

use std::time::Duration;

use sqlx::PgPool;
use tocsin_bus::{DeliveryJob, WorkQueue};
use tocsin_core::links::LinkSecret;
use tocsin_core::{
    Channel, Contacts, DeliveryKey, EventKind, IncidentId, Lane, RecordedEvent, RetryPolicy,
    Subscriber,
};
use tocsin_delivery::{Handled, Worker, WorkerConfig};
use tocsin_email::courier::UnsubscribeLinks;
use tocsin_email::{EmailCourier, EmailSettings, SmtpConfig, SmtpSender, Templates, TlsMode};
use tocsin_local_providers::{Fault, FaultRule, ReceivedMail, SmtpServer, SmtpStage};
use tocsin_testkit::pipeline::{Pipeline, follow_up, opened, preferences};

const DOMAIN: &str = "status.acme.test";
const ADA: &str = "ada@example.test";
const LINK_SECRET: &[u8] = b"the link secret tocsin-page shares, 32+ bytes";

/// A short schedule, so a retry is due a fraction of a second later.
fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(1),
        max_attempts,
        max_age: Duration::from_secs(3600),
    }
}

struct Harness {
    pipeline: Pipeline,
    smtp: SmtpServer,
    worker: Worker<EmailCourier>,
    queue: WorkQueue,
    ada: Subscriber,
}

async fn harness(pool: PgPool, retry: RetryPolicy) -> Harness {
    tocsin_runtime::tls::install_crypto_provider();
    let pipeline = Pipeline::start(pool).await;
    let smtp = SmtpServer::start(tocsin_local_providers::SmtpConfig {
        control_addr: None,
        ..Default::default()
    })
    .await
    .expect("the local SMTP server starts");
    let mut smtp_config = SmtpConfig::new("127.0.0.1", smtp.addr().port(), TlsMode::None);
    smtp_config.send_timeout = Duration::from_secs(5);
    let settings = EmailSettings {
        from: "Acme Status <status@acme.test>".parse().unwrap(),
        message_id_domain: DOMAIN.into(),
        unsubscribe: Some(UnsubscribeLinks {
            url: "https://status.acme.test/unsubscribe/{token}".into(),
            secret: LinkSecret::new(LINK_SECRET).unwrap(),
            preferences_url: Some("https://status.acme.test/preferences/{token}".into()),
        }),
        retry,
    };
    let courier = EmailCourier::new(
        Templates::defaults(),
        SmtpSender::new(smtp_config).unwrap(),
        settings,
    );
    let config = WorkerConfig {
        company: "Acme".into(),
        lease: Duration::from_secs(10),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(
        pipeline.store.clone(),
        pipeline.bus.clone(),
        courier,
        config,
    );
    // A test fan-out is small: its jobs are in the small lane.
    let queue = worker.queue(Lane::Small).await.expect("the email consumer");
    let contacts = Contacts {
        email: Some(ADA.into()),
        phone: None,
        webhook_url: None,
    };
    let (ada, _) = pipeline
        .subscribe("ada", contacts, preferences(&[Channel::Email]))
        .await;
    Harness {
        pipeline,
        smtp,
        worker,
        queue,
        ada,
    }
}

impl Harness {
    /// Pulls up to `n` jobs (waiting at most 3 s for them, with the dispatcher publishing
    /// parked deliveries as they come due meanwhile) and handles them.
    async fn step(&self, n: usize) -> Vec<Handled> {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            self.worker.dispatch_due().await.expect("dispatch");
            let works = self
                .queue
                .fetch(n, Duration::from_millis(200))
                .await
                .expect("fetch jobs");
            if !works.is_empty() {
                return self.worker.process(works).await.expect("process a batch");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no job arrived within 3 s"
            );
        }
    }

    /// Pulls the next job, keeps its decoded payload, and handles it.
    async fn step_keeping_job(&self) -> (DeliveryJob, Vec<Handled>) {
        let works = self
            .queue
            .fetch(1, Duration::from_secs(3))
            .await
            .expect("fetch jobs");
        assert_eq!(works.len(), 1, "one job expected");
        let job = DeliveryJob::decode(works[0].payload()).expect("a delivery job");
        (
            job,
            self.worker.process(works).await.expect("process a batch"),
        )
    }

    /// Asserts that no job is waiting (for as long as a retry would take to come back).
    async fn assert_no_more_jobs(&self) {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            self.worker.dispatch_due().await.expect("dispatch"),
            0,
            "nothing parked is due"
        );
        let works = self
            .queue
            .fetch(1, Duration::from_millis(200))
            .await
            .expect("fetch jobs");
        assert!(works.is_empty(), "{} unexpected job(s)", works.len());
    }

    async fn open(&self, key: &str) -> RecordedEvent {
        self.pipeline.publish(key, None, opened()).await
    }

    async fn follow(&self, key: &str, incident: IncidentId, kind: EventKind) -> RecordedEvent {
        self.pipeline
            .publish(key, Some(incident), follow_up(kind, "An update."))
            .await
    }

    fn key(&self, event: &RecordedEvent) -> String {
        DeliveryKey::derive(event.event_id, self.ada.id, Channel::Email).to_string()
    }

    async fn state(&self, key: &str) -> String {
        self.pipeline
            .delivery_state(key)
            .await
            .unwrap_or_else(|| panic!("no ledger row for {key}"))
    }

    fn accepted(&self) -> Vec<ReceivedMail> {
        self.smtp.inbox().accepted()
    }

    fn fault(&self, fault: Fault, times: Option<u64>) {
        let rule = FaultRule::for_target(ADA, fault);
        self.smtp.faults().push(match times {
            Some(times) => rule.times(times),
            None => rule,
        });
    }
}

fn reject(code: u16) -> Fault {
    Fault::Reject {
        code,
        stage: SmtpStage::Rcpt,
        message: None,
    }
}

fn attempted(handled: &[Handled]) -> Vec<(&str, &str)> {
    handled
        .iter()
        .map(|h| match h {
            Handled::Attempted { outcome, state, .. } => (*outcome, *state),
            other => panic!("expected an attempt, got {other:?}"),
        })
        .collect()
}

fn header<'a>(mail: &'a ReceivedMail, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}: ");
    mail.data
        .split("\r\n")
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix(prefix.as_str()))
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_opening_is_mailed_once_and_its_update_threads_under_it(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    let opening = h.open("open-1").await;
    h.pipeline.resolve_all().await;

    let handled = h.step(1).await;
    let key = h.key(&opening);
    assert_eq!(
        handled,
        [Handled::Attempted {
            key: key.clone(),
            outcome: "delivered",
            state: "delivered"
        }]
    );
    let mails = h.accepted();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let opening_id = format!("<{key}@{DOMAIN}>");
    assert_eq!(mails[0].message_id.as_deref(), Some(opening_id.as_str()));
    assert!(key.starts_with("dlv_"), "{key}");
    assert_eq!(mails[0].recipients, [ADA]);
    assert_eq!(
        header(&mails[0], "In-Reply-To"),
        None,
        "the opening starts the thread"
    );
    // A signed link naming Ada, which the page verifies with the same secret.
    let unsubscribe = header(&mails[0], "List-Unsubscribe").expect("a one-click link");
    let token = unsubscribe
        .strip_prefix("<https://status.acme.test/unsubscribe/")
        .and_then(|t| t.strip_suffix('>'))
        .expect("the page's URL with a token");
    let claims = LinkSecret::new(LINK_SECRET)
        .unwrap()
        .verify(token, time::OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(claims.subscriber_id, h.ada.id);
    assert_eq!(claims.channel, Some(Channel::Email));
    assert!(claims.expires_at > time::OffsetDateTime::now_utc() + time::Duration::days(300));
    // And the footer's preference-centre link, signed for Ada too.
    let text = body(&mails[0]);
    let start = text
        .find("https://status.acme.test/preferences/")
        .expect("a preference-centre link in the footer");
    let token: String = text[start + "https://status.acme.test/preferences/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    let claims = LinkSecret::new(LINK_SECRET)
        .unwrap()
        .verify(&token, time::OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(
        (claims.subscriber_id, claims.purpose),
        (h.ada.id, tocsin_core::links::Purpose::Preferences)
    );
    assert_eq!(h.state(&key).await, "delivered");
    assert_eq!(
        h.pipeline.trail_kinds(opening.incident_id).await,
        ["recipients_resolved", "delivered"]
    );

    let update = h
        .follow("update-1", opening.incident_id, EventKind::Updated)
        .await;
    h.pipeline.resolve_all().await;
    let handled = h.step(1).await;
    assert_eq!(attempted(&handled), [("delivered", "delivered")]);
    let mails = h.accepted();
    assert_eq!(mails.len(), 2);
    let update_id = format!("<{}@{DOMAIN}>", h.key(&update));
    assert_eq!(mails[1].message_id.as_deref(), Some(update_id.as_str()));
    assert_eq!(header(&mails[1], "In-Reply-To"), Some(opening_id.as_str()));
    assert_eq!(header(&mails[1], "References"), Some(opening_id.as_str()));
    assert_eq!(h.state(&h.key(&update)).await, "delivered");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_transient_refusal_is_retried_after_the_delay_and_delivered_once(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    h.fault(reject(451), Some(1));
    let opening = h.open("open-1").await;
    let key = h.key(&opening);
    h.pipeline.resolve_all().await;

    let handled = h.step(1).await;
    assert_eq!(attempted(&handled), [("transient", "retrying")]);
    assert_eq!(h.state(&key).await, "retrying");
    assert!(h.accepted().is_empty());

    // The job comes back after its nak delay (100 to 200 ms with this schedule).
    let handled = h.step(1).await;
    assert_eq!(attempted(&handled), [("delivered", "delivered")]);
    assert_eq!(h.state(&key).await, "delivered");
    assert_eq!(h.accepted().len(), 1);
    assert_eq!(
        h.pipeline.trail_kinds(opening.incident_id).await,
        ["recipients_resolved", "retrying", "delivered"]
    );
    h.assert_no_more_jobs().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_permanent_refusal_fails_without_a_retry(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    h.fault(reject(550), None);
    let opening = h.open("open-1").await;
    let key = h.key(&opening);
    h.pipeline.resolve_all().await;

    let handled = h.step(1).await;
    assert_eq!(attempted(&handled), [("permanent", "failed")]);
    assert_eq!(h.state(&key).await, "failed");
    h.assert_no_more_jobs().await;
    assert!(h.accepted().is_empty());
    assert_eq!(
        h.pipeline.trail_kinds(opening.incident_id).await,
        ["recipients_resolved", "failed"]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_dead_letter_is_replayed_once_the_cause_is_fixed(pool: PgPool) {
    let h = harness(pool, retry(2)).await;
    h.fault(reject(451), None);
    let opening = h.open("open-1").await;
    let key = h.key(&opening);
    h.pipeline.resolve_all().await;

    assert_eq!(attempted(&h.step(1).await), [("transient", "retrying")]);
    assert_eq!(attempted(&h.step(1).await), [("transient", "dead")]);
    assert_eq!(h.state(&key).await, "dead");
    h.assert_no_more_jobs().await;
    assert!(h.accepted().is_empty());

    // The operator fixes the relay and replays the dead letters of this incident.
    h.smtp.faults().clear();
    let revived = h
        .pipeline
        .store
        .revive_dead_letters(Some(opening.incident_id), Some(Channel::Email))
        .await
        .unwrap();
    assert_eq!(revived.len(), 1);
    let jobs: Vec<DeliveryJob> = revived.iter().map(DeliveryJob::from).collect();
    for published in h.pipeline.bus.republish_jobs(&jobs, "replay1").await {
        published.expect("republish");
    }
    assert_eq!(attempted(&h.step(1).await), [("delivered", "delivered")]);
    assert_eq!(h.state(&key).await, "delivered");
    assert_eq!(h.accepted().len(), 1);
    assert_eq!(
        h.pipeline.trail_kinds(opening.incident_id).await,
        [
            "recipients_resolved",
            "retrying",
            "dead",
            "replayed",
            "delivered"
        ]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_job_handled_twice_is_sent_once(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    let opening = h.open("open-1").await;
    let key = h.key(&opening);
    h.pipeline.resolve_all().await;

    let (job, handled) = h.step_keeping_job().await;
    assert_eq!(attempted(&handled), [("delivered", "delivered")]);
    assert_eq!(job.delivery_key, key);

    // The same job again, as a redelivery or a mistaken replay would bring it.
    for published in h.pipeline.bus.republish_jobs(&[job], "again").await {
        published.expect("republish");
    }
    let handled = h.step(1).await;
    assert_eq!(
        handled,
        [Handled::AlreadyDone {
            key: key.clone(),
            state: "delivered".into()
        }]
    );
    assert_eq!(h.accepted().len(), 1);
    assert_eq!(h.smtp.mails().len(), 1, "nothing even reached the server");
    assert_eq!(h.state(&key).await, "delivered");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_lost_reply_is_resent_once_with_the_same_message_id(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    h.fault(Fault::Drop, Some(1));
    let opening = h.open("open-1").await;
    let key = h.key(&opening);
    h.pipeline.resolve_all().await;

    assert_eq!(attempted(&h.step(1).await), [("unknown", "unknown")]);
    assert_eq!(h.state(&key).await, "unknown");

    assert_eq!(attempted(&h.step(1).await), [("delivered", "delivered")]);
    assert_eq!(h.state(&key).await, "delivered");
    h.assert_no_more_jobs().await;

    // The relay took both copies; receivers collapse them on their shared Message-ID.
    let mails = h.accepted();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let id = format!("<{key}@{DOMAIN}>");
    assert!(
        mails
            .iter()
            .all(|m| m.message_id.as_deref() == Some(id.as_str()))
    );
    let summary = h.smtp.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (2, 1, 1)
    );
    assert_eq!(
        h.pipeline.trail_kinds(opening.incident_id).await,
        ["recipients_resolved", "unknown", "delivered"]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_resolution_supersedes_an_opening_not_yet_sent(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    let opening = h.open("open-1").await;
    let resolved = h
        .follow("resolve-1", opening.incident_id, EventKind::Resolved)
        .await;
    h.pipeline.resolve_all().await;

    let handled = h.step(2).await;
    let resolved_key = h.key(&resolved);
    let opening_key = h.key(&opening);
    assert!(
        handled.contains(&Handled::Attempted {
            key: resolved_key.clone(),
            outcome: "delivered",
            state: "delivered"
        }),
        "{handled:?}"
    );
    assert_eq!(h.state(&opening_key).await, "superseded");
    assert_eq!(h.state(&resolved_key).await, "delivered");
    h.assert_no_more_jobs().await;

    let mails = h.accepted();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let resolved_id = format!("<{resolved_key}@{DOMAIN}>");
    assert_eq!(mails[0].message_id.as_deref(), Some(resolved_id.as_str()));
    // The opening never went out, so the resolution is the reader's first email about the
    // incident: it starts the thread rather than answering a message they never got.
    assert_eq!(header(&mails[0], "In-Reply-To"), None);

    let trail = h.pipeline.trail_kinds(opening.incident_id).await;
    assert_eq!(
        trail.iter().filter(|k| *k == "superseded").count(),
        1,
        "{trail:?}"
    );
    assert_eq!(
        trail.iter().filter(|k| *k == "delivered").count(),
        1,
        "{trail:?}"
    );
}

/// The email policy says a second unknown outcome is final. The ledger cannot tell it from a
/// first one, though, so a redelivered or replayed job is claimed and sent a third time.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_second_unknown_is_final_even_when_the_job_comes_back(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    h.fault(Fault::Drop, Some(2));
    let opening = h.open("open-1").await;
    h.pipeline.resolve_all().await;

    let (job, handled) = h.step_keeping_job().await;
    assert_eq!(attempted(&handled), [("unknown", "unknown")]);
    assert_eq!(attempted(&h.step(1).await), [("unknown", "unknown")]);
    h.assert_no_more_jobs().await;
    assert_eq!(h.accepted().len(), 2);

    // As a lost ack (JetStream redelivers after the ack wait) or a replay would bring it back.
    for published in h.pipeline.bus.republish_jobs(&[job], "again").await {
        published.expect("republish");
    }
    let handled = h.step(1).await;
    assert_eq!(
        handled,
        [Handled::AlreadyDone {
            key: h.key(&opening),
            state: "unknown".into()
        }]
    );
    assert_eq!(h.accepted().len(), 2, "a third copy was sent");
}

/// The body as a reader sees it: quoted-printable soft line breaks joined.
fn body(mail: &ReceivedMail) -> String {
    mail.data.replace("=\r\n", "")
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_reader_who_arrives_mid_incident_gets_the_story_so_far_and_a_thread_of_their_own(
    pool: PgPool,
) {
    let h = harness(pool, retry(5)).await;
    let opening = h.open("open-1").await;
    h.pipeline.resolve_all().await;
    assert_eq!(attempted(&h.step(1).await), [("delivered", "delivered")]);

    // Bea subscribes while the incident is under way.
    let bea_address = "bea@example.test";
    let (bea, _) = h
        .pipeline
        .subscribe(
            "bea",
            Contacts {
                email: Some(bea_address.into()),
                phone: None,
                webhook_url: None,
            },
            preferences(&[Channel::Email]),
        )
        .await;
    let update = h
        .follow("update-1", opening.incident_id, EventKind::Updated)
        .await;
    h.pipeline.resolve_all().await;
    let handled = h.step(2).await;
    assert_eq!(attempted(&handled), [("delivered", "delivered"); 2]);
    let mails = h.accepted();
    let to = |address: &str| -> Vec<&ReceivedMail> {
        mails.iter().filter(|m| m.recipients == [address]).collect()
    };
    let opening_id = format!("<{}@{DOMAIN}>", h.key(&opening));
    let ada_update = to(ADA)[1];
    assert_eq!(header(ada_update, "In-Reply-To"), Some(opening_id.as_str()));
    assert_eq!(
        ada_update.subject.as_deref(),
        Some("[Acme] Update: Elevated API error rates"),
        "Ada saw the opening: hers is a plain update"
    );
    let bea_first = to(bea_address)[0];
    assert_eq!(
        header(bea_first, "In-Reply-To"),
        None,
        "Bea never saw the opening: her first email starts her thread"
    );
    assert_eq!(
        bea_first.subject.as_deref(),
        Some("[Acme] Partial outage: Elevated API error rates"),
        "her first email says how bad it is, like an opening"
    );
    let text = body(bea_first);
    assert!(
        text.contains("It began before you started following it"),
        "{text}"
    );
    assert!(text.contains("What happened so far:"), "{text}");
    assert!(
        text.contains("Some API requests are failing. We are investigating."),
        "the opening's message is in the story: {text}"
    );
    assert!(text.contains("Where it stands:\r\nAn update."), "{text}");

    // Her next email threads under her catch-up, Ada's under the opening.
    let second = h
        .follow("update-2", opening.incident_id, EventKind::Updated)
        .await;
    h.pipeline.resolve_all().await;
    assert_eq!(attempted(&h.step(2).await), [("delivered", "delivered"); 2]);
    let mails = h.accepted();
    let bea_catch_up_id = format!(
        "<{}@{DOMAIN}>",
        DeliveryKey::derive(update.event_id, bea.id, Channel::Email)
    );
    let bea_second_id = format!(
        "<{}@{DOMAIN}>",
        DeliveryKey::derive(second.event_id, bea.id, Channel::Email)
    );
    let bea_second = mails
        .iter()
        .find(|m| m.message_id.as_deref() == Some(bea_second_id.as_str()))
        .expect("Bea's second email");
    assert_eq!(
        header(bea_second, "In-Reply-To"),
        Some(bea_catch_up_id.as_str())
    );
    assert_eq!(
        bea_second.subject.as_deref(),
        Some("[Acme] Update: Elevated API error rates")
    );
    assert!(!body(bea_second).contains("What happened so far"));
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_fallback_notice_is_mailed_beside_the_incident_s_own_emails(pool: PgPool) {
    let h = harness(pool, retry(5)).await;
    let opening = h.open("open-1").await;
    h.pipeline.resolve_all().await;
    // Ada's other channel (say, her webhook) stopped working on this incident.
    let planned = h
        .pipeline
        .store
        .plan_fallback(
            &tocsin_store::FailedDelivery {
                incident_id: opening.incident_id,
                event_id: opening.event_id,
                event_version: opening.version,
                subscriber_id: h.ada.id,
                channel: Channel::Webhook,
            },
            "the endpoint answered 410 Gone",
        )
        .await
        .unwrap();
    let tocsin_store::FallbackPlanned::Planned {
        delivery_key,
        channel,
    } = planned
    else {
        panic!("expected a planned notice, got {planned:?}");
    };
    assert_eq!(channel, Channel::Email);
    // The opening and the notice both go out: neither supersedes nor waits for the other.
    let mut handled = h.step(2).await;
    if handled.len() < 2 {
        handled.extend(h.step(2).await);
    }
    assert_eq!(attempted(&handled), [("delivered", "delivered"); 2]);
    assert_eq!(h.state(&delivery_key).await, "delivered");
    assert_eq!(h.state(&h.key(&opening)).await, "delivered");
    let mails = h.accepted();
    let notice = mails
        .iter()
        .find(|m| m.message_id.as_deref() == Some(format!("<{delivery_key}@{DOMAIN}>").as_str()))
        .expect("the notice was mailed");
    assert_eq!(
        notice.subject.as_deref(),
        Some("[Acme] We could not reach your webhook endpoint")
    );
    assert!(body(notice).contains("the endpoint answered 410 Gone"));
    h.assert_no_more_jobs().await;
}

/// Queues an account message for `address` straight into PostgreSQL, as the page does.
async fn queue_account(
    h: &Harness,
    address: &str,
    notice: &tocsin_core::account::AccountNotice,
) -> i64 {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO account_messages (channel, address, content) VALUES ('email', $1, $2)
         RETURNING message_id",
    )
    .bind(address)
    .bind(sqlx::types::Json(notice))
    .fetch_one(h.pipeline.store.pool())
    .await
    .unwrap();
    id
}

async fn account_state(h: &Harness, id: i64) -> (String, String, String, i32) {
    sqlx::query_as(
        "SELECT state, address, content::text, attempts FROM account_messages
         WHERE message_id = $1",
    )
    .bind(id)
    .fetch_one(h.pipeline.store.pool())
    .await
    .unwrap()
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn sign_up_confirmations_are_mailed_once_retried_when_refused_and_never_after_a_lost_send(
    pool: PgPool,
) {
    use tocsin_core::account::AccountNotice;
    let h = harness(pool, retry(5)).await;
    let sender = h.worker.account_sender();
    let confirm = AccountNotice::ConfirmEmail {
        company: "Acme".into(),
        confirm_url: "https://status.acme.test/subscribe/confirm/TOKEN123".into(),
        expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(1),
    };
    let first = queue_account(&h, ADA, &confirm).await;
    assert_eq!(sender.tick().await.unwrap(), 1);
    let mails = h.accepted();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        header(&mails[0], "Subject"),
        Some("Confirm your subscription to Acme status updates")
    );
    assert!(body(&mails[0]).contains("https://status.acme.test/subscribe/confirm/TOKEN123"));
    assert_eq!(
        header(&mails[0], "Message-ID").map(str::to_owned),
        Some(format!("<account-{first}@{DOMAIN}>"))
    );
    assert_eq!(header(&mails[0], "List-Unsubscribe"), None, "transactional");
    // Finished: neither the address nor the link is kept.
    let (state, address, content, attempts) = account_state(&h, first).await;
    assert_eq!(
        (state.as_str(), address.as_str(), attempts),
        ("sent", "", 1)
    );
    assert_eq!(content, "{}");
    assert_eq!(sender.tick().await.unwrap(), 0, "sent once");

    // A transient refusal: back to pending for later, then sent once.
    h.fault(reject(451), Some(1));
    let second = queue_account(&h, ADA, &confirm).await;
    assert_eq!(sender.tick().await.unwrap(), 1);
    let (state, _, _, attempts) = account_state(&h, second).await;
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert_eq!(sender.tick().await.unwrap(), 0, "not due yet");
    sqlx::query("UPDATE account_messages SET due_at = now() WHERE message_id = $1")
        .bind(second)
        .execute(h.pipeline.store.pool())
        .await
        .unwrap();
    assert_eq!(sender.tick().await.unwrap(), 1);
    assert_eq!(account_state(&h, second).await.0, "sent");
    assert_eq!(h.accepted().len(), 2);

    // A worker that vanished mid-send: unknown, never sent again. One that vanished after
    // claiming but before sending: claimed again once its lease is over, and sent.
    let lost_send = queue_account(&h, ADA, &confirm).await;
    let lost_claim = queue_account(&h, ADA, &confirm).await;
    sqlx::query(
        "UPDATE account_messages SET state = CASE WHEN message_id = $1 THEN 'sending' ELSE 'claimed' END,
             lease_until = now() - interval '1 second'
         WHERE message_id IN ($1, $2)",
    )
    .bind(lost_send)
    .bind(lost_claim)
    .execute(h.pipeline.store.pool())
    .await
    .unwrap();
    assert_eq!(
        h.pipeline
            .store
            .settle_vanished_account_messages()
            .await
            .unwrap(),
        1
    );
    assert_eq!(sender.tick().await.unwrap(), 1);
    assert_eq!(account_state(&h, lost_send).await.0, "unknown");
    assert_eq!(account_state(&h, lost_claim).await.0, "sent");
    assert_eq!(h.accepted().len(), 3);
}
