//! NATS killed in the middle of a fan-out, its JetStream store wiped, and started again
//! empty: every service recreates what it needs, and the events and jobs the lost store held
//! flow again from PostgreSQL, with no restart and no operator command.

use std::time::Duration;

use time::OffsetDateTime;
use tocsin_core::{Channel, Contacts, EventKind, PublishRequest};
use tocsin_local_providers::{Fault, FaultRule, WebhookReceiver, WebhookReceiverConfig};
use tocsin_testkit::database::TestDatabase;
use tocsin_testkit::nats::{NatsServer, unique_prefix};
use tocsin_testkit::pipeline::{Pipeline, follow_up, opened, preferences};
use tocsin_testkit::process::{ServiceProcess, free_port, wait_for_tcp};

const SUBSCRIBERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_empty_mid_fan_out_heals_from_postgres() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    // The pipeline's store writes subscribers and appends events; its own bus (on the shared
    // NATS) is not used: the services below talk to the private server.
    let pipeline = Pipeline::start(db.pool().clone()).await;
    let mut nats = NatsServer::start().await.unwrap();
    let receiver = WebhookReceiver::start(WebhookReceiverConfig::default())
        .await
        .unwrap();
    for i in 0..SUBSCRIBERS {
        let name = format!("s{i:02}");
        let contacts = Contacts {
            webhook_url: Some(receiver.url_for(&name)),
            ..Contacts::default()
        };
        let (_, secret) = pipeline
            .subscribe(&name, contacts, preferences(&[Channel::Webhook]))
            .await;
        receiver.register(&name, &secret.unwrap()).unwrap();
    }
    // Every request takes a while, so deliveries are still going out when NATS dies.
    receiver
        .faults()
        .push(FaultRule::always(Fault::Delay { ms: 150 }));

    let port = free_port();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", nats.url()),
        ("TOCSIN_BUS_PREFIX", unique_prefix()),
        ("TOCSIN_GRPC_ADDR", format!("127.0.0.1:{port}")),
        (
            "TOCSIN_PUBLISHER_TOKENS",
            "heal=heal-test-token-0123".to_owned(),
        ),
        ("TOCSIN_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".to_owned()),
        ("TOCSIN_WORKER_BATCH", "4".to_owned()),
        ("TOCSIN_WORKER_CONCURRENCY", "4".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut services = Vec::new();
    for (name, args) in [
        ("tocsin-ingest", &["serve"][..]),
        ("tocsin-resolver", &[]),
        ("tocsin-webhook", &[]),
    ] {
        services.push((name, ServiceProcess::spawn(name, args, &env).await.unwrap()));
    }
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(30))
        .await
        .unwrap();

    let append = |key: &str, incident, change| {
        let request = PublishRequest {
            idempotency_key: key.into(),
            incident_id: incident,
            change,
            occurred_at: None,
            expected_version: None,
        };
        let store = pipeline.store.clone();
        async move {
            store
                .append("heal", &request, OffsetDateTime::now_utc())
                .await
                .unwrap()
                .event
        }
    };
    let open = append("open", None, opened()).await;
    wait_until(Duration::from_secs(30), "a few webhooks arrive", || {
        receiver.summary().unique >= 4
    })
    .await;

    nats.wipe_store().await.unwrap();
    nats.start_again().await.unwrap();
    // An update arrives while the services find out; it must go through too.
    let update = append(
        "update",
        Some(open.incident_id),
        follow_up(EventKind::Updated, "Still working on it."),
    )
    .await;

    let expected = 2 * SUBSCRIBERS;
    wait_until(
        Duration::from_secs(60),
        "every subscriber gets both messages",
        || receiver.summary().unique >= expected,
    )
    .await;
    // The last answers are being recorded: the ledger settles right after.
    let settled = tokio::time::Instant::now() + Duration::from_secs(10);
    let states = loop {
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM deliveries GROUP BY state")
                .fetch_all(db.pool())
                .await
                .unwrap();
        if states.len() == 1 || tokio::time::Instant::now() > settled {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(states, vec![("delivered".to_owned(), expected as i64)]);
    let summary = receiver.summary();
    assert_eq!((summary.unique, summary.duplicates), (expected, 0));
    for event in [&open, &update] {
        assert!(
            pipeline
                .store
                .fanout_record(event.event_id)
                .await
                .unwrap()
                .is_some(),
            "event {} fanned out",
            event.version
        );
    }
    for (name, service) in &mut services {
        let status = service.terminate().await.unwrap();
        assert!(status.success(), "{name} exits 0 on SIGTERM: {status:?}");
    }
}

async fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
