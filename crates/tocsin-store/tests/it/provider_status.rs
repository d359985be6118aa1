//! Providers' final words (Twilio status callbacks), recorded many to a statement.

use sqlx::PgPool;
use tocsin_core::{Channel, Delivery, EventId, IncidentId, SubscriberId};
use tocsin_store::{ProviderStatus, Store};

fn delivery(key: &str) -> Delivery {
    Delivery {
        delivery_key: key.to_owned(),
        incident_id: IncidentId::new(),
        event_id: EventId::new(),
        event_version: 1,
        subscriber_id: SubscriberId::new(),
        channel: Channel::Sms,
        send_after: None,
        lane: tocsin_core::Lane::Small,
    }
}

fn status(key: Option<&str>, provider_id: &str, state: &'static str) -> ProviderStatus {
    ProviderStatus {
        delivery_key: key.map(str::to_owned),
        provider_id: Some(provider_id.to_owned()),
        state,
        detail: serde_json::json!({ "status": state, "provider_id": provider_id }),
    }
}

async fn state_of(store: &Store, key: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT state, provider_id FROM deliveries WHERE delivery_key = $1")
        .bind(key)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn callback_trail(store: &Store, key: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT kind FROM delivery_trail
         WHERE delivery_key = $1 AND data->>'source' = 'provider callback' ORDER BY position",
    )
    .bind(key)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Statuses found by key, by the provider's id, or not at all, in one statement: each gets
/// its own answer, each delivery its own state, and each word its trail entry.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn each_status_of_a_batch_settles_its_own_delivery(pool: PgPool) {
    let store = Store::from_pool(pool);
    store
        .record_deliveries(&[
            delivery("dlv_by_key"),
            delivery("dlv_by_sid"),
            delivery("dlv_twice"),
        ])
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET provider_id = 'SM_sid' WHERE delivery_key = 'dlv_by_sid'")
        .execute(store.pool())
        .await
        .unwrap();

    let found = store
        .record_provider_statuses(&[
            status(Some("dlv_by_key"), "SM_key", "delivered"),
            status(None, "SM_nobody", "failed"),
            status(None, "SM_sid", "failed"),
            status(Some("dlv_twice"), "SM_twice", "failed"),
            status(Some("dlv_unknown"), "SM_sid", "delivered"),
            status(Some("dlv_twice"), "SM_twice", "delivered"),
        ])
        .await
        .unwrap();
    assert_eq!(
        found,
        [true, false, true, true, false, true],
        "a key that names no delivery is not looked up by the provider's id"
    );
    assert_eq!(
        state_of(&store, "dlv_by_key").await,
        ("delivered".to_owned(), Some("SM_key".to_owned()))
    );
    assert_eq!(state_of(&store, "dlv_by_sid").await.0, "failed");
    assert_eq!(
        state_of(&store, "dlv_twice").await.0,
        "delivered",
        "the later of two words on one delivery stands"
    );
    assert_eq!(callback_trail(&store, "dlv_by_key").await, ["delivered"]);
    assert_eq!(callback_trail(&store, "dlv_by_sid").await, ["failed"]);
    assert_eq!(
        callback_trail(&store, "dlv_twice").await,
        ["failed", "delivered"],
        "both words are in the trail, in the order they came"
    );
    assert!(
        store
            .record_provider_statuses(&[])
            .await
            .unwrap()
            .is_empty()
    );
}
