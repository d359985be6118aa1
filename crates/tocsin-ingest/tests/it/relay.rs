//! The outbox relay against real JetStream: order, exactly-once, outages, late commits.

use std::collections::HashMap;

use sqlx::PgPool;
use tocsin_bus::EventEnvelope;
use tocsin_ingest::relay::{publish_in_order, republish};
use tocsin_ingest::{Relay, RelayConfig};
use tocsin_proto::v1::EventKind;
use tocsin_testkit::nats::NatsServer;

use crate::app::{Options, TestApp, event, eventually};

/// Every event id appears once, and each incident's versions arrive in order.
fn assert_once_and_in_order(envelopes: &[EventEnvelope], expected: usize) {
    assert_eq!(
        envelopes.len(),
        expected,
        "stream holds each event exactly once"
    );
    let mut ids: Vec<_> = envelopes.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), expected, "no event id twice");
    let mut last: HashMap<uuid::Uuid, u64> = HashMap::new();
    for e in envelopes {
        let previous = last.insert(e.incident_id, e.version).unwrap_or(0);
        assert_eq!(
            e.version,
            previous + 1,
            "incident {} out of order",
            e.incident_id
        );
    }
}

/// Publishes `updates` updates to each of `incidents` new incidents, with idempotency keys
/// starting with `batch`. Returns the event count.
async fn publish_some(app: &TestApp, batch: &str, incidents: usize, updates: usize) -> usize {
    for i in 0..incidents {
        let open = app.open(&format!("{batch}-open-{i}")).await;
        assert!(!open.duplicate);
        for u in 0..updates {
            let reply = app
                .publish(event(
                    &format!("{batch}-u-{i}-{u}"),
                    &open.incident_id,
                    EventKind::Updated,
                ))
                .await
                .unwrap();
            assert!(!reply.duplicate);
        }
    }
    incidents * (updates + 1)
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn events_reach_jetstream_once_and_in_order(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let expected = publish_some(&app, "a", 4, 5).await;
    eventually("the outbox to drain", || async {
        app.store.outbox_backlog().await.unwrap() == 0
    })
    .await;
    let envelopes = app.bus.read_all_events().await.unwrap();
    assert_once_and_in_order(&envelopes, expected);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_crash_between_ack_and_mark_still_publishes_once(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Options {
            relay: false,
            ..Options::default()
        },
    )
    .await;
    let expected = publish_some(&app, "a", 3, 2).await;
    app.bus.ensure_events_stream().await.unwrap();

    // The relay's first half: JetStream acknowledges, then the process dies before marking.
    let pending = app.store.unpublished_events(1000).await.unwrap();
    let (acked, error) = publish_in_order(&app.bus, &pending).await;
    assert!(error.is_none());
    assert_eq!(acked.len(), expected);
    assert_eq!(app.store.outbox_backlog().await.unwrap(), expected as i64);

    // A restarted relay publishes everything again; JetStream drops the copies by event id.
    let relay = Relay::new(app.store.clone(), app.bus.clone(), RelayConfig::default());
    assert_eq!(relay.relay_once().await.unwrap(), expected);
    assert_eq!(app.store.outbox_backlog().await.unwrap(), 0);
    assert_once_and_in_order(&app.bus.read_all_events().await.unwrap(), expected);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_event_committed_out_of_order_is_never_skipped(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool.clone(),
        Options {
            relay: false,
            ..Options::default()
        },
    )
    .await;
    app.bus.ensure_events_stream().await.unwrap();
    let relay = Relay::new(app.store.clone(), app.bus.clone(), RelayConfig::default());

    // A long transaction takes a position first and commits last.
    let late_incident = uuid::Uuid::now_v7();
    let late_event = uuid::Uuid::now_v7();
    let mut long_tx = pool.begin().await.unwrap();
    let change = serde_json::json!({"kind": "opened", "severity": "minor", "components": ["db"],
                                    "title": "Slow", "message": "Committed late"});
    let (late_position,): (i64,) = sqlx::query_as(
        "INSERT INTO events (event_id, incident_id, version, kind, publisher, idempotency_key,
                             occurred_at, recorded_at, data)
         VALUES ($1, $2, 1, 'opened', 'test', 'late', now(), now(), $3) RETURNING position",
    )
    .bind(late_event)
    .bind(late_incident)
    .bind(&change)
    .fetch_one(&mut *long_tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO outbox (position, incident_id) VALUES ($1, $2)")
        .bind(late_position)
        .bind(late_incident)
        .execute(&mut *long_tx)
        .await
        .unwrap();

    // A short transaction takes a later position and commits first; the relay sends it.
    let early = app.open("early").await;
    assert!(
        early.position > late_position,
        "the scenario needs out-of-order commits"
    );
    assert_eq!(relay.relay_once().await.unwrap(), 1);

    long_tx.commit().await.unwrap();
    assert_eq!(
        relay.relay_once().await.unwrap(),
        1,
        "the late commit is relayed, not skipped"
    );
    let ids: Vec<uuid::Uuid> = app
        .bus
        .read_all_events()
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&late_event));
    assert!(ids.contains(&early.event_id.parse().unwrap()));
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn ingest_keeps_accepting_while_nats_is_down_and_relays_when_back(pool: PgPool) {
    let mut nats = NatsServer::start().await.unwrap();
    let app = TestApp::spawn_with(
        pool,
        Options {
            nats_url: nats.url(),
            ..Options::default()
        },
    )
    .await;
    let before = publish_some(&app, "before", 1, 1).await;
    eventually("the first events to be relayed", || async {
        app.store.outbox_backlog().await.unwrap() == 0
    })
    .await;

    nats.stop().await;
    let during = publish_some(&app, "during", 3, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.store.outbox_backlog().await.unwrap(),
        during as i64,
        "held in the outbox meanwhile"
    );

    nats.start_again().await.unwrap();
    eventually("the outbox to drain after NATS returns", || async {
        app.store
            .outbox_backlog()
            .await
            .map(|n| n == 0)
            .unwrap_or(false)
    })
    .await;
    assert_once_and_in_order(&app.bus.read_all_events().await.unwrap(), before + during);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_lost_stream_is_rebuilt_from_the_log(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let expected = publish_some(&app, "a", 2, 3).await;
    eventually("the outbox to drain", || async {
        app.store.outbox_backlog().await.unwrap() == 0
    })
    .await;
    app.bus.delete_events_stream().await.unwrap();

    let report = republish(&app.store, &app.bus, 1).await.unwrap();
    assert_eq!(report.events, expected as u64);
    assert_once_and_in_order(&app.bus.read_all_events().await.unwrap(), expected);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_relay_wakes_on_appends_not_on_its_poll(pool: PgPool) {
    let poll = std::time::Duration::from_secs(120);
    let app = TestApp::spawn_with(
        pool,
        Options {
            relay_poll: poll,
            ..Options::default()
        },
    )
    .await;
    // Let the relay finish its first (empty) round and go to sleep on its poll.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let expected = publish_some(&app, "a", 1, 2).await;
    eventually(
        "the relay to publish without waiting for its poll",
        || async { app.store.outbox_backlog().await.unwrap() == 0 },
    )
    .await;
    assert!(
        started.elapsed() < poll / 10,
        "woken by the announcement, not the poll"
    );
    assert_once_and_in_order(&app.bus.read_all_events().await.unwrap(), expected);
    app.stop().await;
}
