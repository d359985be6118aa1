//! Channel workers killed with SIGKILL in the middle of a send, then restarted: nothing is
//! lost, and no key is sent twice except where the outcome was unknown and the channel's
//! policy allows a resend (webhooks resend with the same `webhook-id`; SMS asks Twilio first and
//! never resends blindly).

use std::time::Duration;

use tocsin_core::{Channel, Contacts, DeliveryKey};
use tocsin_local_providers::{
    Fault, FaultRule, TwilioConfig, TwilioServer, WebhookReceiver, WebhookReceiverConfig,
};
use tocsin_testkit::database::TestDatabase;
use tocsin_testkit::pipeline::{Pipeline, opened, preferences};
use tocsin_testkit::process::ServiceProcess;

fn worker_env(
    db: &TestDatabase,
    pipeline: &Pipeline,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", tocsin_testkit::nats::nats_url()),
        (
            "TOCSIN_BUS_PREFIX",
            pipeline.bus.config().prefix().to_owned(),
        ),
        // A short lease: the killed worker's claim expires, and JetStream redelivers, soon.
        ("TOCSIN_WORKER_LEASE_SECONDS", "3".to_owned()),
        ("TOCSIN_RETRY_BASE_SECONDS", "1".to_owned()),
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// Polls the ledger until the delivery reaches `state`; panics after `within`.
async fn wait_for_state(pipeline: &Pipeline, key: &str, state: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = pipeline.delivery_state(key).await;
        if now.as_deref() == Some(state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} is {now:?}, not {state}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_worker_killed_mid_send_resends_with_the_same_webhook_id() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let pipeline = Pipeline::start(db.pool().clone()).await;
    let receiver = WebhookReceiver::start(WebhookReceiverConfig::default())
        .await
        .unwrap();
    let (subscriber, secret) = pipeline
        .subscribe(
            "acme",
            Contacts {
                webhook_url: Some(receiver.url_for("acme")),
                ..Contacts::default()
            },
            preferences(&[Channel::Webhook]),
        )
        .await;
    receiver.register("acme", &secret.unwrap()).unwrap();
    // The first request is held long enough to kill the worker while it waits.
    receiver
        .faults()
        .push(FaultRule::for_target("acme", Fault::Delay { ms: 5_000 }).times(1));
    let event = pipeline.publish("open", None, opened()).await;
    pipeline.resolve_all().await;
    let key = DeliveryKey::derive(event.event_id, subscriber.id, Channel::Webhook);

    let env = worker_env(
        &db,
        &pipeline,
        &[("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".to_owned())],
    );
    let mut worker = ServiceProcess::spawn("tocsin-webhook", &[], &env)
        .await
        .unwrap();
    wait_for_state(&pipeline, key.as_str(), "sending", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill().await;

    let mut restarted = ServiceProcess::spawn("tocsin-webhook", &[], &env)
        .await
        .unwrap();
    wait_for_state(
        &pipeline,
        key.as_str(),
        "delivered",
        Duration::from_secs(30),
    )
    .await;
    restarted.terminate().await.unwrap();

    let accepted: Vec<_> = receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.accepted)
        .collect();
    assert!(!accepted.is_empty());
    assert!(
        accepted
            .iter()
            .all(|d| d.webhook_id.as_deref() == Some(key.as_str()) && d.verified),
        "every copy carries the same webhook-id, so the receiver deduplicates: {accepted:?}"
    );
    assert_eq!(receiver.summary().unique, 1);
    let trail = pipeline.trail_kinds(event.incident_id).await;
    assert_eq!(
        trail.iter().filter(|k| *k == "delivered").count(),
        1,
        "{trail:?}"
    );
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_worker_killed_mid_send_is_reconciled_never_resent_blindly() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let pipeline = Pipeline::start(db.pool().clone()).await;
    let twilio = TwilioServer::start(TwilioConfig::default()).await.unwrap();
    let (subscriber, _) = pipeline
        .subscribe(
            "acme",
            Contacts {
                phone: Some("+14155552671".into()),
                ..Contacts::default()
            },
            preferences(&[Channel::Sms]),
        )
        .await;
    twilio
        .faults()
        .push(FaultRule::always(Fault::Delay { ms: 5_000 }).times(1));
    let event = pipeline.publish("open", None, opened()).await;
    pipeline.resolve_all().await;
    let key = DeliveryKey::derive(event.event_id, subscriber.id, Channel::Sms);

    let env = worker_env(
        &db,
        &pipeline,
        &[
            ("TOCSIN_TWILIO_BASE_URL", twilio.base_url()),
            ("TOCSIN_TWILIO_ACCOUNT_SID", twilio.account_sid().to_owned()),
            ("TOCSIN_TWILIO_AUTH_TOKEN", twilio.auth_token().to_owned()),
            ("TOCSIN_TWILIO_FROM", "+15005550006".to_owned()),
            // Twilio is asked about the lost attempt 20 s after it began: long enough for the
            // double, on a loaded machine, to have taken the request the killed worker sent.
            ("TOCSIN_TWILIO_TIMEOUT_SECONDS", "10".to_owned()),
            (
                "TOCSIN_SMS_CALLBACK_ADDR",
                format!("127.0.0.1:{}", tocsin_testkit::process::free_port()),
            ),
        ],
    );
    let mut worker = ServiceProcess::spawn("tocsin-sms", &[], &env)
        .await
        .unwrap();
    wait_for_state(&pipeline, key.as_str(), "sending", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill().await;

    let mut restarted = ServiceProcess::spawn("tocsin-sms", &[], &env)
        .await
        .unwrap();
    // The lost attempt may have reached Twilio: the next holder asks Twilio before anything
    // else, and sends only if Twilio has no such message. Either way one text exists.
    wait_for_state(
        &pipeline,
        key.as_str(),
        "delivered",
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    restarted.terminate().await.unwrap();
    let summary = twilio.summary();
    assert_eq!(
        (summary.unique, summary.duplicates),
        (1, 0),
        "no blind resend: {:?}",
        twilio.messages()
    );
    db.drop_database().await.unwrap();
}
