//! SIGTERM in the middle of work, as an orchestrator stops a service: the process exits 0,
//! and after a restart nothing is lost and nothing is done twice.
//!
//! The resolver is stopped mid-fan-out, once with no grace period (the fan-out is dropped
//! and its event handed back for a replay) and once with one (the fan-out finishes before
//! the exit). Each channel worker (email, SMS, webhook) is stopped mid-batch: the batch
//! finishes, the jobs it had pulled but not started are handed back at once, and the
//! restarted worker sends each of them once, well before a stranded job's ack wait could
//! have ended.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tocsin_core::{Channel, Contacts, DeliveryKey, EventId, SubscriberId};
use tocsin_local_providers::{
    Fault, FaultRule, Faults, SmtpConfig, SmtpServer, Summary, TwilioConfig, TwilioServer,
    WebhookReceiver, WebhookReceiverConfig,
};
use tocsin_store::SubscriberWrite;
use tocsin_testkit::database::TestDatabase;
use tocsin_testkit::pipeline::{Pipeline, opened, preferences};
use tocsin_testkit::process::{ServiceProcess, free_port};

/// Subscribers of the resolver tests, each on email and SMS: pages of [`PAGE_SIZE`] make a
/// fan-out of many rounds, long enough to be caught in the middle.
const SUBSCRIBERS: usize = 3_000;
const PAGE_SIZE: &str = "50";

fn env(db: &TestDatabase, pipeline: &Pipeline, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", tocsin_testkit::nats::nats_url()),
        (
            "TOCSIN_BUS_PREFIX",
            pipeline.bus.config().prefix().to_owned(),
        ),
        ("TOCSIN_METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// Inserts `count` subscribers on email and SMS through the store's batch upsert.
async fn subscribe_many(pipeline: &Pipeline, count: usize) -> Vec<SubscriberId> {
    let mut ids = Vec::with_capacity(count);
    let writes: Vec<SubscriberWrite> = (0..count)
        .map(|i| SubscriberWrite {
            external_id: format!("sub-{i}"),
            preferences: preferences(&[Channel::Email, Channel::Sms]),
            contacts: Contacts {
                email: Some(format!("sub-{i}@example.com")),
                phone: Some(format!("+1415555{i:04}")),
                webhook_url: None,
            },
            candidate_webhook_secret: String::new(),
            consent: None,
        })
        .collect();
    for chunk in writes.chunks(1_000) {
        let upserted = pipeline
            .store
            .upsert_subscribers(chunk)
            .await
            .expect("upsert");
        ids.extend(upserted.into_iter().map(|u| u.subscriber.id));
    }
    ids
}

async fn ledger_count(db: &TestDatabase, event: EventId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
        .bind(event.as_uuid())
        .fetch_one(db.pool())
        .await
        .expect("count the ledger")
}

async fn fanout_entries(db: &TestDatabase, event: EventId) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM delivery_trail WHERE event_id = $1 AND kind = 'recipients_resolved'",
    )
    .bind(event.as_uuid())
    .fetch_one(db.pool())
    .await
    .expect("read the trail")
}

/// Publishes an opening to [`SUBSCRIBERS`] subscribers, starts the resolver binary with
/// `grace` seconds, and SIGTERMs it once the ledger shows the fan-out under way. Returns
/// what the ledger held at the signal, and the rest of the fixture.
async fn sigterm_resolver_mid_fanout(
    grace: &str,
) -> (
    TestDatabase,
    Pipeline,
    EventId,
    Vec<SubscriberId>,
    Vec<(String, String)>,
) {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let pipeline = Pipeline::start(db.pool().clone()).await;
    let subscribers = subscribe_many(&pipeline, SUBSCRIBERS).await;
    let event = pipeline.publish("open", None, opened()).await;
    let expected = (SUBSCRIBERS * 2) as i64;
    let env = env(
        &db,
        &pipeline,
        &[
            ("TOCSIN_RESOLVER_PAGE_SIZE", PAGE_SIZE.to_owned()),
            ("TOCSIN_SHUTDOWN_GRACE_SECONDS", grace.to_owned()),
            // No sweep: every job on the stream comes from a fan-out.
            ("TOCSIN_RESOLVER_REQUEUE_INTERVAL_SECONDS", "0".to_owned()),
        ],
    );
    let mut resolver = ServiceProcess::spawn("tocsin-resolver", &[], &env)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_signal = loop {
        let count = ledger_count(&db, event.event_id).await;
        if count > 0 {
            break count;
        }
        assert!(
            Instant::now() < deadline,
            "the resolver never started the fan-out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let started = Instant::now();
    let status = resolver.terminate().await.unwrap();
    let took = started.elapsed();
    assert!(
        status.success(),
        "SIGTERM ends the resolver with status 0: {status:?}"
    );
    assert!(
        at_signal < expected,
        "caught in the middle: {at_signal} of {expected} recorded at the signal"
    );
    // The grace period, plus the end of the open pull request and a margin for a slow machine.
    let grace_secs: u64 = grace.parse().unwrap();
    assert!(
        took < Duration::from_secs(grace_secs + 8),
        "the resolver took {took:?} to stop"
    );
    (db, pipeline, event.event_id, subscribers, env)
}

/// Every expected delivery is in the ledger once, the fan-out is in the trail once, and
/// every delivery key is on the deliveries stream once.
async fn assert_fanned_out_once(
    db: &TestDatabase,
    pipeline: &Pipeline,
    event: EventId,
    subscribers: &[SubscriberId],
) {
    let expected: BTreeSet<String> = subscribers
        .iter()
        .flat_map(|s| {
            [Channel::Email, Channel::Sms]
                .map(|c| DeliveryKey::derive(event, *s, c).as_str().to_owned())
        })
        .collect();
    let ledger: Vec<String> =
        sqlx::query_scalar("SELECT delivery_key FROM deliveries WHERE event_id = $1")
            .bind(event.as_uuid())
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        ledger.len(),
        expected.len(),
        "one ledger row per recipient and channel"
    );
    assert_eq!(ledger.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        fanout_entries(db, event).await,
        1,
        "one recipients_resolved entry"
    );

    let mut on_stream = Vec::new();
    for channel in [Channel::Email, Channel::Sms] {
        let jobs = pipeline.bus.take_jobs(channel).await.unwrap();
        on_stream.extend(jobs.into_iter().map(|job| job.delivery_key));
    }
    let unique: BTreeSet<String> = on_stream.iter().cloned().collect();
    assert_eq!(
        on_stream.len(),
        unique.len(),
        "no delivery key twice on the stream"
    );
    assert_eq!(unique, expected, "every delivery key on the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_sigterm_mid_fanout_without_grace_hands_the_event_back_and_loses_nothing() {
    let (db, pipeline, event, subscribers, env) = sigterm_resolver_mid_fanout("0").await;
    // No grace: the fan-out was dropped unfinished.
    assert_eq!(
        fanout_entries(&db, event).await,
        0,
        "the fan-out did not finish before the exit"
    );
    let partial = ledger_count(&db, event).await;
    assert!(partial < (SUBSCRIBERS * 2) as i64, "{partial}");

    // The event was handed back, so the restarted resolver takes it at once; had it been
    // stranded, it would wait for its ack wait (30 s) first.
    let restarted_at = Instant::now();
    let mut restarted = ServiceProcess::spawn("tocsin-resolver", &[], &env)
        .await
        .unwrap();
    while fanout_entries(&db, event).await == 0 {
        assert!(
            restarted_at.elapsed() < Duration::from_secs(25),
            "the restarted resolver did not finish the fan-out before an ack wait could end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = restarted.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_fanned_out_once(&db, &pipeline, event, &subscribers).await;
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_sigterm_mid_fanout_finishes_it_within_the_grace_period() {
    let (db, pipeline, event, subscribers, env) = sigterm_resolver_mid_fanout("20").await;
    assert_eq!(
        fanout_entries(&db, event).await,
        1,
        "the fan-out finished before the exit"
    );
    assert_eq!(ledger_count(&db, event).await, (SUBSCRIBERS * 2) as i64);

    // A restart finds nothing left to do, and does nothing twice.
    let mut restarted = ServiceProcess::spawn("tocsin-resolver", &[], &env)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = restarted.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_fanned_out_once(&db, &pipeline, event, &subscribers).await;
    db.drop_database().await.unwrap();
}

/// The provider server a channel worker sends to in [`sigterm_worker_mid_batch`].
enum Provider {
    Smtp(SmtpServer),
    Twilio(TwilioServer),
    Webhook(WebhookReceiver),
}

impl Provider {
    async fn start(channel: Channel) -> Provider {
        match channel {
            Channel::Email => {
                Provider::Smtp(SmtpServer::start(SmtpConfig::default()).await.unwrap())
            }
            Channel::Sms => {
                Provider::Twilio(TwilioServer::start(TwilioConfig::default()).await.unwrap())
            }
            Channel::Webhook => Provider::Webhook(
                WebhookReceiver::start(WebhookReceiverConfig::default())
                    .await
                    .unwrap(),
            ),
        }
    }

    fn binary(&self) -> &'static str {
        match self {
            Provider::Smtp(_) => "tocsin-email",
            Provider::Twilio(_) => "tocsin-sms",
            Provider::Webhook(_) => "tocsin-webhook",
        }
    }

    fn faults(&self) -> &Faults {
        match self {
            Provider::Smtp(server) => server.faults(),
            Provider::Twilio(server) => server.faults(),
            Provider::Webhook(server) => server.faults(),
        }
    }

    fn summary(&self) -> Summary {
        match self {
            Provider::Smtp(server) => server.summary(),
            Provider::Twilio(server) => server.summary(),
            Provider::Webhook(server) => server.summary(),
        }
    }

    /// The worker's settings for reaching this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Provider::Smtp(server) => vec![
                ("TOCSIN_SMTP_HOST", "127.0.0.1".to_owned()),
                ("TOCSIN_SMTP_PORT", server.addr().port().to_string()),
            ],
            Provider::Twilio(server) => vec![
                ("TOCSIN_TWILIO_BASE_URL", server.base_url()),
                ("TOCSIN_TWILIO_ACCOUNT_SID", server.account_sid().to_owned()),
                ("TOCSIN_TWILIO_AUTH_TOKEN", server.auth_token().to_owned()),
                ("TOCSIN_TWILIO_FROM", "+15005550006".to_owned()),
                (
                    "TOCSIN_SMS_CALLBACK_ADDR",
                    format!("127.0.0.1:{}", free_port()),
                ),
            ],
            Provider::Webhook(_) => vec![("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".to_owned())],
        }
    }

    /// Subscribes recipient `i` on this provider's channel only.
    async fn subscribe(&self, pipeline: &Pipeline, i: usize) {
        let name = format!("r{i}");
        let (contacts, channel) = match self {
            Provider::Smtp(_) => (
                Contacts {
                    email: Some(format!("{name}@example.com")),
                    ..Contacts::default()
                },
                Channel::Email,
            ),
            Provider::Twilio(_) => (
                Contacts {
                    phone: Some(format!("+1415555{i:04}")),
                    ..Contacts::default()
                },
                Channel::Sms,
            ),
            Provider::Webhook(server) => (
                Contacts {
                    webhook_url: Some(server.url_for(&name)),
                    ..Contacts::default()
                },
                Channel::Webhook,
            ),
        };
        let (_, secret) = pipeline
            .subscribe(&name, contacts, preferences(&[channel]))
            .await;
        if let Provider::Webhook(server) = self {
            server.register(&name, &secret.unwrap()).unwrap();
        }
    }
}

/// Stops a channel worker with SIGTERM while a batch of slow sends is in flight: it exits 0
/// within the grace period, the batch finishes and is recorded, the jobs it had pulled but
/// not started are handed back, and a restarted worker sends each of the rest once, well
/// before a stranded job's ack wait could have ended.
async fn sigterm_worker_mid_batch(channel: Channel) {
    const RECIPIENTS: usize = 24;
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let pipeline = Pipeline::start(db.pool().clone()).await;
    let provider = Provider::start(channel).await;
    // Every answer takes a while, so the signal finds a batch in flight.
    provider
        .faults()
        .push(FaultRule::always(Fault::Delay { ms: 1_500 }));
    for i in 0..RECIPIENTS {
        provider.subscribe(&pipeline, i).await;
    }
    let event = pipeline.publish("open", None, opened()).await;
    pipeline.resolve_all().await;

    let mut extra = provider.env();
    extra.extend([
        ("TOCSIN_WORKER_BATCH", "4".to_owned()),
        ("TOCSIN_WORKER_CONCURRENCY", "4".to_owned()),
        // A long lease, which is also the jobs' ack wait: a job stranded by the stop
        // rather than handed back would not come back within this test's limits.
        ("TOCSIN_WORKER_LEASE_SECONDS", "60".to_owned()),
        ("TOCSIN_SHUTDOWN_GRACE_SECONDS", "10".to_owned()),
    ]);
    let env = env(&db, &pipeline, &extra);
    let states = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT state, count(*) FROM deliveries WHERE event_id = $1 GROUP BY state ORDER BY state",
        )
        .bind(event.event_id.as_uuid())
        .fetch_all(db.pool())
        .await
        .unwrap()
    };
    let count = |states: &[(String, i64)], state: &str| {
        states
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };

    let mut worker = ServiceProcess::spawn(provider.binary(), &[], &env)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&states().await, "sending") == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker never started a batch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Within the grace period.
    worker.stop_cleanly_within(Duration::from_secs(10)).await;

    let after_stop = states().await;
    assert_eq!(
        count(&after_stop, "sending"),
        0,
        "the batch in flight finished and was recorded: {after_stop:?}"
    );
    let delivered = count(&after_stop, "delivered");
    assert!(delivered >= 1, "{after_stop:?}");
    assert!(
        delivered < RECIPIENTS as i64,
        "stopped mid-way: {after_stop:?}"
    );
    assert_eq!(
        count(&after_stop, "pending"),
        RECIPIENTS as i64 - delivered,
        "{after_stop:?}"
    );

    let restarted_at = Instant::now();
    let mut restarted = ServiceProcess::spawn(provider.binary(), &[], &env)
        .await
        .unwrap();
    while count(&states().await, "delivered") < RECIPIENTS as i64 {
        assert!(
            restarted_at.elapsed() < Duration::from_secs(40),
            "the rest was not delivered before a stranded job's ack wait (60 s) could end: {:?}",
            states().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = restarted.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");

    let summary = provider.summary();
    assert_eq!(summary.unique, RECIPIENTS, "{summary:?}");
    assert_eq!(
        summary.duplicates, 0,
        "each message arrived once: {summary:?}"
    );
    // Every recipient's delivery is in the trail. (SMS also records Twilio's later status
    // callback saying "delivered", so entries are counted by delivery key.)
    let delivered_keys: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT delivery_key) FROM delivery_trail
         WHERE event_id = $1 AND kind = 'delivered'",
    )
    .bind(event.event_id.as_uuid())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(delivered_keys, RECIPIENTS as i64);
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_worker_sigterm_mid_batch_finishes_it_and_hands_back_the_rest() {
    sigterm_worker_mid_batch(Channel::Email).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_worker_sigterm_mid_batch_finishes_it_and_hands_back_the_rest() {
    sigterm_worker_mid_batch(Channel::Sms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_worker_sigterm_mid_batch_finishes_it_and_hands_back_the_rest() {
    sigterm_worker_mid_batch(Channel::Webhook).await;
}
