//! A PostgreSQL restart while a send is in flight: the outcome, once known, is recorded when
//! the database is back, and the message is never sent a second time.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tocsin_delivery::Handled;
use tocsin_local_providers::{Fault, FaultRule};
use tocsin_testkit::postgres::PostgresServer;

use crate::worker::{Harness, key, loopback, quick_retries};

#[tokio::test]
async fn an_outcome_known_during_a_database_restart_is_recorded_and_never_resent() {
    let mut postgres = PostgresServer::start()
        .await
        .expect("a private PostgreSQL (postgresql must be installed)");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&postgres.url("postgres"))
        .await
        .unwrap();
    tocsin_store::MIGRATOR.run(&pool).await.unwrap();
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    // The endpoint takes its time, so the database goes away while the request is out.
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", Fault::Delay { ms: 1_500 }).times(1));
    let opened = h.open().await;
    let key = key(&opened, &subscriber);

    let works = h.queue.fetch(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(works.len(), 1);
    let worker = h.worker.clone();
    let processing = tokio::spawn(async move { worker.process(works).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    postgres.stop().await.unwrap();

    // The endpoint has answered by now; the worker holds on to that answer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.receiver.summary().unique, 1, "the message went out once");
    assert!(
        !processing.is_finished(),
        "the worker keeps the outcome until it can record it"
    );

    postgres.start_again().await.unwrap();
    let handled = tokio::time::timeout(Duration::from_secs(20), processing)
        .await
        .expect("recorded once PostgreSQL is back")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            &handled[..],
            [Handled::Attempted {
                state: "delivered",
                ..
            }]
        ),
        "{handled:?}"
    );
    assert_eq!(
        h.pipeline.delivery_state(&key).await.as_deref(),
        Some("delivered")
    );

    // Past the lease, nothing comes back to be sent again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let again = h.process_once(Duration::from_secs(1)).await;
    assert!(again.is_empty(), "{again:?}");
    let summary = h.receiver.summary();
    assert_eq!((summary.unique, summary.duplicates), (1, 0));
}
