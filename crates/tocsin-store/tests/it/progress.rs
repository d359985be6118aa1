//! What operators read of the ledger: progress per channel, the fan-out watermark, listings.

use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use tocsin_core::Delivery;
use tocsin_core::{Channel, DeliveryState, Severity};
use tocsin_store::{DeliveryFilter, FanoutRecord, Store};

use super::open_request;
use super::subscribers::write;

fn preferences() -> tocsin_core::Preferences {
    tocsin_core::Preferences {
        channels: [Channel::Email, Channel::Webhook].into_iter().collect(),
        components: tocsin_core::ComponentFilter::All,
        min_severity: Severity::Minor,
        kinds: Default::default(),
        quiet_hours: None,
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn progress_listings_and_the_fanout_watermark_read_the_ledger(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let event = store
        .append("p", &open_request("k"), OffsetDateTime::now_utc())
        .await
        .unwrap()
        .event;
    let subscribers = store
        .upsert_subscribers(&[
            write("ann", preferences()),
            write("bob", preferences()),
            write("cat", preferences()),
        ])
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for (i, up) in subscribers.iter().enumerate() {
        for channel in [Channel::Email, Channel::Webhook] {
            deliveries.push(Delivery {
                delivery_key: format!("dlv_{}_{i}", channel.as_str()),
                incident_id: event.incident_id,
                event_id: event.event_id,
                event_version: 1,
                subscriber_id: up.subscriber.id,
                channel,
                // cat's webhook waits for quiet hours to end.
                send_after: (i == 2 && channel == Channel::Webhook)
                    .then(|| OffsetDateTime::now_utc() + Duration::hours(3)),
                lane: tocsin_core::Lane::Bulk,
            });
        }
    }
    store.record_deliveries(&deliveries).await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET state = 'dead', attempts = 12 WHERE delivery_key = 'dlv_webhook_0'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        store.fanned_out_version(event.incident_id).await.unwrap(),
        0
    );

    let progress = store.delivery_progress(event.incident_id).await.unwrap();
    let channels: Vec<Channel> = progress.iter().map(|p| p.channel).collect();
    assert_eq!(channels, [Channel::Email, Channel::Webhook]);
    assert_eq!(progress[0].count(DeliveryState::Pending), 3);
    assert_eq!(progress[0].held, 0);
    let webhook = &progress[1];
    assert_eq!(
        (
            webhook.count(DeliveryState::Pending),
            webhook.count(DeliveryState::Dead),
            webhook.held
        ),
        (2, 1, 1)
    );

    // Pages of two walk every delivery once, in (version, channel, key) order.
    let everything = DeliveryFilter::default();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_deliveries(event.incident_id, &everything, after.as_ref(), 2)
            .await
            .unwrap();
        seen.extend(page.iter().map(|d| d.delivery_key.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.cursor()),
            _ => break,
        }
    }
    let mut expected: Vec<String> = deliveries.iter().map(|d| d.delivery_key.clone()).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let dead = store
        .list_deliveries(
            event.incident_id,
            &DeliveryFilter {
                states: vec![DeliveryState::Dead],
                ..DeliveryFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].external_id.as_deref(), Some("ann"));
    assert_eq!((dead[0].channel, dead[0].attempts), (Channel::Webhook, 12));

    let cats_email = store
        .list_deliveries(
            event.incident_id,
            &DeliveryFilter {
                channel: Some(Channel::Email),
                external_id: Some("cat".into()),
                event_version: Some(1),
                ..DeliveryFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(cats_email.len(), 1);
    assert_eq!(cats_email[0].delivery_key, "dlv_email_2");
    let version_two = DeliveryFilter {
        event_version: Some(2),
        ..DeliveryFilter::default()
    };
    assert!(
        store
            .list_deliveries(event.incident_id, &version_two, None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // A deleted subscriber's deliveries stay, without the external id.
    assert!(store.delete_subscriber("bob").await.unwrap());
    let bobs = store
        .list_deliveries(event.incident_id, &everything, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.subscriber_id == subscribers[1].subscriber.id)
        .collect::<Vec<_>>();
    assert_eq!(bobs.len(), 2);
    assert!(bobs.iter().all(|d| d.external_id.is_none()));

    store
        .record_fanout(
            event.incident_id,
            event.event_id,
            &FanoutRecord {
                event_version: 1,
                ..FanoutRecord::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.fanned_out_version(event.incident_id).await.unwrap(),
        1
    );
}
