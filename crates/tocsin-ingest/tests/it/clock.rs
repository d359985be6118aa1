//! The maintenance clock on a real database: reminders, start and completion recorded once,
//! in order, whatever the number of replicas ticking.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::maintenance::PUBLISHER;
use tocsin_core::{Change, EventKind, IncidentStatus, MaintenanceWindow, PublishRequest};
use tocsin_ingest::clock::MaintenanceClock;
use tocsin_store::Store;

fn kinds(events: &[tocsin_core::RecordedEvent]) -> Vec<(EventKind, String)> {
    events
        .iter()
        .map(|e| (e.change.kind, e.publisher.clone()))
        .collect()
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_clock_reminds_starts_and_completes_a_maintenance_once(pool: PgPool) {
    tocsin_testkit::init_tracing();
    let store = Store::from_pool(pool);
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let starts_at = now + time::Duration::days(2);
    let ends_at = starts_at + time::Duration::minutes(90);
    let scheduled = store
        .append(
            "ops",
            &PublishRequest {
                idempotency_key: "schedule".into(),
                incident_id: None,
                change: Change {
                    title: Some("Database upgrade".into()),
                    components: vec!["db".into()],
                    window: Some(MaintenanceWindow { starts_at, ends_at }),
                    labels: BTreeMap::new(),
                    ..Change::new(
                        EventKind::MaintenanceScheduled,
                        "Writes pause for a minute.",
                    )
                },
                occurred_at: None,
                expected_version: None,
            },
            now,
        )
        .await
        .unwrap();
    let id = scheduled.event.incident_id;
    // Two replicas, as with `--scale tocsin-ingest=2`.
    let clocks = [
        MaintenanceClock::new(store.clone(), Duration::from_secs(15)),
        MaintenanceClock::new(store.clone(), Duration::from_secs(15)),
    ];
    let tick_both = |at: OffsetDateTime| {
        let clocks = clocks.clone();
        async move {
            let (a, b) = tokio::join!(clocks[0].tick(at), clocks[1].tick(at));
            a.unwrap() + b.unwrap()
        }
    };

    assert_eq!(
        tick_both(now + time::Duration::hours(1)).await,
        0,
        "nothing due yet"
    );
    let day_before = starts_at - time::Duration::hours(24);
    assert_eq!(
        tick_both(day_before).await,
        1,
        "the day-before reminder, once"
    );
    assert_eq!(tick_both(day_before + time::Duration::hours(1)).await, 0);
    let hour_before = starts_at - time::Duration::minutes(60);
    assert_eq!(
        tick_both(hour_before).await,
        1,
        "the hour-before reminder, once"
    );
    assert_eq!(
        tick_both(hour_before + time::Duration::minutes(30)).await,
        0
    );
    // The clock was down through the whole window: the start and the completion come in
    // one tick, in order.
    assert_eq!(tick_both(ends_at + time::Duration::minutes(5)).await, 2);
    assert_eq!(tick_both(ends_at + time::Duration::hours(1)).await, 0);

    let events = store.incident_events(id, 0, 100).await.unwrap();
    let tocsin = PUBLISHER.to_owned();
    assert_eq!(
        kinds(&events),
        vec![
            (EventKind::MaintenanceScheduled, "ops".to_owned()),
            (EventKind::MaintenanceReminder, tocsin.clone()),
            (EventKind::MaintenanceReminder, tocsin.clone()),
            (EventKind::MaintenanceStarted, tocsin.clone()),
            (EventKind::MaintenanceCompleted, tocsin),
        ]
    );
    assert_eq!(events[1].change.message, "Writes pause for a minute.");
    let maintenance = store.incident(id).await.unwrap().unwrap();
    assert_eq!(maintenance.status, IncidentStatus::Completed);
    assert!(store.open_maintenances(PUBLISHER).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_publisher_who_starts_the_work_first_is_not_contradicted(pool: PgPool) {
    tocsin_testkit::init_tracing();
    let store = Store::from_pool(pool);
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let starts_at = now + time::Duration::minutes(30);
    let ends_at = starts_at + time::Duration::minutes(30);
    let publish = |key: &str, incident_id, change: Change| {
        let store = store.clone();
        let request = PublishRequest {
            idempotency_key: key.into(),
            incident_id,
            change,
            occurred_at: None,
            expected_version: None,
        };
        async move { store.append("ops", &request, now).await.unwrap() }
    };
    let scheduled = publish(
        "schedule",
        None,
        Change {
            title: Some("Cache flush".into()),
            components: vec!["cache".into()],
            window: Some(MaintenanceWindow { starts_at, ends_at }),
            ..Change::new(
                EventKind::MaintenanceScheduled,
                "Slower pages for a few minutes.",
            )
        },
    )
    .await;
    let id = scheduled.event.incident_id;
    let clock = MaintenanceClock::new(store.clone(), Duration::from_secs(15));
    // Announced 30 minutes ahead: no one-hour or one-day reminder.
    assert_eq!(
        clock
            .tick(starts_at - time::Duration::minutes(10))
            .await
            .unwrap(),
        0
    );
    publish(
        "started-early",
        Some(id),
        Change::new(EventKind::MaintenanceStarted, "We started a little early."),
    )
    .await;
    assert_eq!(
        clock.tick(starts_at).await.unwrap(),
        0,
        "already started: the clock says nothing"
    );
    publish(
        "done",
        Some(id),
        Change::new(EventKind::MaintenanceCompleted, "All done."),
    )
    .await;
    assert_eq!(clock.tick(ends_at).await.unwrap(), 0);
    let events = store.incident_events(id, 0, 100).await.unwrap();
    assert!(
        events.iter().all(|e| e.publisher == "ops"),
        "{:?}",
        kinds(&events)
    );
}
