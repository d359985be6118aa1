//! The worker at its shutdown deadline: a send in flight is dropped and left leased (its
//! outcome is unknown), and claimed jobs not yet sent are recorded as due again and handed
//! back to JetStream at once.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tocsin_core::{Channel, DeliveryKey};
use tocsin_delivery::{Handled, Worker, WorkerConfig};
use tocsin_local_providers::{Fault, FaultRule};
use tocsin_runtime::Shutdown;
use tocsin_webhook::{ClientConfig, WebhookCourier};

use crate::worker::{Harness, loopback, quick_retries};

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn at_the_deadline_unsent_jobs_are_handed_back_and_a_send_in_flight_stays_leased(
    pool: PgPool,
) {
    let h = Harness::start(pool, loopback(), quick_retries(3)).await;
    let mut subscribers = Vec::new();
    for name in ["a", "b", "c"] {
        subscribers.push(h.subscribe(name, name).await);
    }
    // The first request to arrive is held far longer than the test runs.
    h.receiver
        .faults()
        .push(FaultRule::always(Fault::Delay { ms: 60_000 }).times(1));
    let opened = h.open().await;
    let keys: Vec<String> = subscribers
        .iter()
        .map(|s| {
            DeliveryKey::derive(opened.event_id, s.id, Channel::Webhook)
                .as_str()
                .to_owned()
        })
        .collect();

    // One send at a time, so two of the three claimed jobs wait behind the held one.
    let courier = WebhookCourier::new(
        ClientConfig {
            timeout: Duration::from_secs(120),
            policy: loopback(),
            ..ClientConfig::default()
        },
        quick_retries(3),
    )
    .unwrap();
    let worker = Worker::new(
        h.pipeline.store.clone(),
        h.pipeline.bus.clone(),
        courier,
        WorkerConfig {
            batch: 3,
            concurrency: 1,
            lease: Duration::from_secs(10),
            ..WorkerConfig::default()
        },
    );
    let queue = worker.queue(tocsin_core::Lane::Small).await.unwrap();
    let works = queue.fetch(3, Duration::from_secs(2)).await.unwrap();
    assert_eq!(works.len(), 3);

    let deadline = Shutdown::new();
    let trigger = deadline.clone();
    let faults = h.receiver.faults().clone();
    tokio::spawn(async move {
        // The held request has reached the receiver once its one-time rule is used up.
        let until = Instant::now() + Duration::from_secs(10);
        while !faults.rules().is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trigger();
    });
    let handled = worker.process_until(works, &deadline).await.unwrap();

    let abandoned: Vec<&Handled> = handled
        .iter()
        .filter(|h| matches!(h, Handled::Abandoned { .. }))
        .collect();
    let handed_back: Vec<&Handled> = handled
        .iter()
        .filter(|h| matches!(h, Handled::HandedBack { .. }))
        .collect();
    assert_eq!(abandoned.len(), 1, "{handled:?}");
    assert_eq!(handed_back.len(), 2, "{handled:?}");
    let Handled::Abandoned { key: in_flight } = abandoned[0] else {
        unreachable!()
    };
    for key in &keys {
        let state = h.pipeline.delivery_state(key).await;
        if key == in_flight {
            assert_eq!(state.as_deref(), Some("sending"), "left leased: {key}");
        } else {
            assert_eq!(state.as_deref(), Some("retrying"), "due again: {key}");
        }
    }
    let trail = h.pipeline.trail_kinds(opened.incident_id).await;
    assert_eq!(
        trail.iter().filter(|k| *k == "retrying").count(),
        2,
        "{trail:?}"
    );

    // The two handed back are offered again at once; the one in flight is not, until its
    // ack wait (the lease) ends.
    let again = queue.fetch(3, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|w| w.delivered() == 2));
    let handled = worker.process(again).await.unwrap();
    assert!(
        handled.iter().all(|h| matches!(
            h,
            Handled::Attempted {
                state: "delivered",
                ..
            }
        )),
        "the handed-back jobs are sent by the next claim: {handled:?}"
    );
}
