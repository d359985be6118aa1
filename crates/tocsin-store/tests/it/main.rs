//! Store tests on a fresh PostgreSQL database each (`#[sqlx::test]`).

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::{Change, EventKind, PublishRequest, Severity};
use tocsin_store::{Store, StoreError};

pub(crate) fn open_request(key: &str) -> PublishRequest {
    PublishRequest {
        idempotency_key: key.into(),
        incident_id: None,
        change: Change {
            severity: Some(Severity::Major),
            components: vec!["api".into()],
            title: Some("API errors".into()),
            ..Change::new(EventKind::Opened, "Investigating.")
        },
        occurred_at: None,
        expected_version: None,
    }
}

fn update_request(key: &str, incident: tocsin_core::IncidentId) -> PublishRequest {
    let mut r = open_request(key);
    r.incident_id = Some(incident);
    r.change = Change {
        kind: EventKind::Updated,
        title: None,
        severity: None,
        components: vec![],
        message: format!("update {key}"),
        ..r.change
    };
    r
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_database_refuses_to_change_the_log(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    store
        .append("p", &open_request("k"), OffsetDateTime::now_utc())
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET kind = 'resolved'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn racing_retries_of_one_key_record_one_event(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let now = OffsetDateTime::now_utc();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.append("p", &open_request("same"), now).await })
        })
        .collect();
    let mut event_ids = Vec::new();
    let mut fresh = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(appended) => {
                fresh += usize::from(!appended.duplicate);
                event_ids.push(appended.event.event_id);
            }
            // A racer that saw the key claimed by a transaction still running may be told to retry.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(fresh, 1);
    event_ids.dedup();
    assert_eq!(event_ids.len(), 1);
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn rebuilt_projections_equal_the_live_ones(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let now = OffsetDateTime::now_utc();
    for i in 0..7 {
        let open = store
            .append("p", &open_request(&format!("o{i}")), now)
            .await
            .unwrap();
        for u in 0..i {
            store
                .append(
                    "p",
                    &update_request(&format!("u{i}-{u}"), open.event.incident_id),
                    now,
                )
                .await
                .unwrap();
        }
    }
    let live = store.all_incidents().await.unwrap();
    assert_eq!(live.len(), 7);

    let dry = store.rebuild_projections(true).await.unwrap();
    assert_eq!((dry.incidents, dry.events, dry.drifted), (7, 28, 0));

    // Damage the projection; the rebuild notices and repairs it from the log.
    sqlx::query("UPDATE incidents SET state = jsonb_set(state, '{title}', '\"tampered\"')")
        .execute(&pool)
        .await
        .unwrap();
    let report = store.rebuild_projections(false).await.unwrap();
    assert_eq!((report.incidents, report.drifted), (7, 7));
    assert_eq!(store.all_incidents().await.unwrap(), live);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn group_commit_keeps_versions_gapless_and_answers_each_request(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let appender = tocsin_store::Appender::start(store.clone());
    let now = OffsetDateTime::now_utc();
    let mut incidents = Vec::new();
    for i in 0..4 {
        incidents.push(
            appender
                .append("p", open_request(&format!("o{i}")), now)
                .await
                .unwrap()
                .event
                .incident_id,
        );
    }
    // Many concurrent publishes: they share transactions while earlier ones commit.
    let tasks: Vec<_> = (0..80)
        .map(|n| {
            let appender = appender.clone();
            let incident = incidents[n % 4];
            tokio::spawn(async move {
                appender
                    .append("p", update_request(&format!("u{n}"), incident), now)
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().duplicate);
    }
    for incident in &incidents {
        let (versions,): (Vec<i64>,) = sqlx::query_as(
            "SELECT array_agg(version ORDER BY version) FROM events WHERE incident_id = $1",
        )
        .bind(incident.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(versions, (1..=21).collect::<Vec<i64>>());
    }
    let dry = store.rebuild_projections(true).await.unwrap();
    assert_eq!(
        dry.drifted, 0,
        "batched projections equal the fold of the log"
    );

    // A batch holding a retry and a refused request falls back and answers each precisely.
    let retry = appender.append("p", update_request("u0", incidents[0]), now);
    let unknown = appender.append(
        "p",
        update_request("x", tocsin_core::IncidentId::new()),
        now,
    );
    let fresh = appender.append("p", update_request("fresh", incidents[1]), now);
    let (retry, unknown, fresh) = tokio::join!(retry, unknown, fresh);
    assert!(retry.unwrap().duplicate);
    assert!(matches!(
        unknown,
        Err(StoreError::Domain(tocsin_core::DomainError::NotFound(_)))
    ));
    assert_eq!(fresh.unwrap().event.version, 22);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn one_relay_lease_at_a_time_and_freed_when_its_holder_goes(pool: PgPool) {
    let store = Store::from_pool(pool);
    let mut first = store
        .try_relay_lease()
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert!(first.is_held().await);
    assert!(
        store.try_relay_lease().await.unwrap().is_none(),
        "a second relay stays idle"
    );
    drop(first);
    // The lock goes with its connection; PostgreSQL notices the closed socket promptly.
    let mut taken = None;
    for _ in 0..50 {
        taken = store.try_relay_lease().await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        taken.is_some(),
        "the lease is free again once its holder is gone"
    );
}

mod components;
mod dispatch;
mod progress;
mod provider_status;
mod subscribers;

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn store_sessions_plan_each_statement_for_the_data_as_it_is(pool: PgPool) {
    // A generic plan frozen while the tables were empty kept scanning every idempotency key.
    let store = Store::connect_with((*pool.connect_options()).clone(), 1)
        .await
        .unwrap();
    let (plan_cache_mode, jit): (String, String) =
        sqlx::query_as("SELECT current_setting('plan_cache_mode'), current_setting('jit')")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(plan_cache_mode, "force_custom_plan");
    assert_eq!(jit, "off");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_connected_store_reports_its_pool_use(
    _pool_options: sqlx::postgres::PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let metrics = tocsin_runtime::recorder::install();
    let store = Store::connect_with(options, 3).await.unwrap();
    store.ping().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rendered = metrics.render();
        let reported = rendered.contains("tocsin_db_pool_max_connections 3\n")
            && rendered.contains("tocsin_db_pool_connections{state=\"idle\"}");
        if reported {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pool metrics within 10 s:\n{rendered}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    store.pool().close().await;
}
