//! Parked deliveries and the dispatchers: due selection, and the races between a dispatch
//! committing and a worker meeting the job it just published.

use std::time::Duration;

use sqlx::PgPool;
use tocsin_core::{Channel, Delivery, EventId, IncidentId, SubscriberId};
use tocsin_store::{ClaimPolicy, ClaimResult, Store};

fn delivery(key: &str, incident: IncidentId, version: u64, subscriber: SubscriberId) -> Delivery {
    Delivery {
        delivery_key: key.to_owned(),
        incident_id: incident,
        event_id: EventId::new(),
        event_version: version,
        subscriber_id: subscriber,
        channel: Channel::Webhook,
        send_after: None,
        lane: tocsin_core::Lane::Small,
    }
}

async fn parked(store: &Store, key: &str) -> bool {
    sqlx::query_scalar("SELECT parked FROM deliveries WHERE delivery_key = $1")
        .bind(key)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

const POLICY: ClaimPolicy = ClaimPolicy {
    channel: Channel::Webhook,
    lease: Duration::from_secs(10),
    supersede_stale: false,
    resend_unknown: false,
};

/// A dispatcher publishes a job before it commits the delivery as dispatched; a worker can
/// meet the job first and find the row locked. The claim waits for the dispatcher's commit
/// and takes the delivery: parking it again would answer the job and leave the recipient's
/// message waiting for the next dispatch round.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_job_met_while_its_dispatch_commits_is_claimed_once_it_commits(pool: PgPool) {
    let store = Store::from_pool(pool);
    let row = delivery("dlv_a", IncidentId::new(), 1, SubscriberId::new());
    store
        .record_deliveries(std::slice::from_ref(&row))
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET parked = true")
        .execute(store.pool())
        .await
        .unwrap();

    let due = store
        .due_deliveries(Channel::Webhook, false, 10)
        .await
        .unwrap();
    assert_eq!(due.deliveries.len(), 1);
    assert_eq!(due.deliveries[0].1, 1, "the first dispatch");
    let claiming = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_deliveries(&["dlv_a".to_owned()], "worker", POLICY)
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !claiming.is_finished(),
        "the claim waits for the dispatcher's commit"
    );
    assert_eq!(due.dispatched().await.unwrap(), 1);
    let (claims, _) = claiming.await.unwrap();
    assert!(
        matches!(claims[..], [ClaimResult::Claimed(_)]),
        "{claims:?}"
    );
    assert!(!parked(&store, "dlv_a").await, "claimed, not parked");
    let again = store
        .due_deliveries(Channel::Webhook, false, 10)
        .await
        .unwrap();
    assert!(again.deliveries.is_empty(), "nothing left to dispatch");
}

/// A job met while its delivery waits behind an earlier message to the same recipient is
/// parked, whatever locks it met: the dispatcher publishes it again once its turn comes.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_job_behind_an_earlier_message_is_parked(pool: PgPool) {
    let store = Store::from_pool(pool);
    let (incident, subscriber) = (IncidentId::new(), SubscriberId::new());
    let rows = [
        delivery("dlv_first", incident, 1, subscriber),
        delivery("dlv_second", incident, 2, subscriber),
    ];
    store.record_deliveries(&rows).await.unwrap();
    let (claims, _) = store
        .claim_deliveries(&["dlv_second".to_owned()], "worker", POLICY)
        .await
        .unwrap();
    assert!(matches!(claims[..], [ClaimResult::Parked]), "{claims:?}");
    assert!(parked(&store, "dlv_second").await);
}

/// Only what may go now is due: not a message behind an earlier one still on its way to the
/// same recipient, and not one whose retry time has not come.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn due_deliveries_wait_for_their_time_and_their_turn(pool: PgPool) {
    let store = Store::from_pool(pool);
    let (incident, subscriber) = (IncidentId::new(), SubscriberId::new());
    let rows = [
        delivery("dlv_first", incident, 1, subscriber),
        delivery("dlv_second", incident, 2, subscriber),
        delivery("dlv_later", IncidentId::new(), 1, subscriber),
    ];
    store.record_deliveries(&rows).await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET parked = true,
             next_attempt_at = CASE WHEN delivery_key = 'dlv_later'
                                    THEN now() + interval '1 hour' END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let due = store
        .due_deliveries(Channel::Webhook, false, 10)
        .await
        .unwrap();
    let keys: Vec<&str> = due
        .deliveries
        .iter()
        .map(|(d, _)| d.delivery_key.as_str())
        .collect();
    assert_eq!(keys, ["dlv_first"]);
    due.release().await.unwrap();
    // For a channel that supersedes, a pending earlier message holds nothing back: claiming
    // the later one supersedes it.
    let due = store
        .due_deliveries(Channel::Webhook, true, 10)
        .await
        .unwrap();
    assert_eq!(due.deliveries.len(), 2);
}

/// An email whose first attempt's outcome was unknown is due for its one resend, but a newer
/// message about the incident has reached the same person meanwhile: resending the old one
/// now would tell them stale news after the fresh, so it is superseded instead.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_old_message_due_again_after_a_newer_one_went_out_is_superseded(pool: PgPool) {
    let store = Store::from_pool(pool);
    let (incident, subscriber) = (IncidentId::new(), SubscriberId::new());
    let mut old = delivery("dlv_old", incident, 1, subscriber);
    let mut new = delivery("dlv_new", incident, 3, subscriber);
    old.channel = Channel::Email;
    new.channel = Channel::Email;
    store.record_deliveries(&[old, new]).await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET
             state = CASE delivery_key WHEN 'dlv_old' THEN 'unknown' ELSE 'delivered' END,
             next_attempt_at = CASE delivery_key WHEN 'dlv_old' THEN now() END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let policy = ClaimPolicy {
        channel: Channel::Email,
        supersede_stale: true,
        resend_unknown: true,
        ..POLICY
    };
    let (claims, superseded) = store
        .claim_deliveries(&["dlv_old".to_owned()], "worker", policy)
        .await
        .unwrap();
    assert_eq!(superseded, 1);
    assert!(
        matches!(&claims[..], [ClaimResult::Finished { state }] if state == "superseded"),
        "{claims:?}"
    );
}

/// Where messages supersede, a job met while its dispatch commits is superseded, not sent,
/// when a newer message to the same recipient went out meanwhile: the claim that waits for
/// the dispatcher's lock must not skip the supersession that the first pass skipped for the
/// same lock. (The torture harness saw an opening text arrive after the resolution: the
/// opening's first attempt was unknown, the resolution went out, then the opening's resend
/// was claimed past its supersession.)
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_stale_message_met_while_its_dispatch_commits_is_superseded(pool: PgPool) {
    let store = Store::from_pool(pool);
    let (incident, subscriber) = (IncidentId::new(), SubscriberId::new());
    let rows = [
        delivery("dlv_opening", incident, 1, subscriber),
        delivery("dlv_resolved", incident, 3, subscriber),
    ];
    store.record_deliveries(&rows).await.unwrap();
    // The opening's attempt had an unknown outcome and a resend is due; the resolution has
    // been delivered since.
    sqlx::query(
        "UPDATE deliveries SET channel = 'sms',
             state = CASE delivery_key WHEN 'dlv_opening' THEN 'unknown' ELSE 'delivered' END,
             next_attempt_at = CASE delivery_key WHEN 'dlv_opening' THEN now() END,
             parked = (delivery_key = 'dlv_opening')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let policy = ClaimPolicy {
        channel: Channel::Sms,
        supersede_stale: true,
        resend_unknown: true,
        ..POLICY
    };

    let due = store.due_deliveries(Channel::Sms, true, 10).await.unwrap();
    assert_eq!(due.deliveries.len(), 1, "the opening's resend is due");
    let claiming = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_deliveries(&["dlv_opening".to_owned()], "worker", policy)
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(due.dispatched().await.unwrap(), 1);
    let (claims, superseded) = claiming.await.unwrap();
    assert!(
        matches!(&claims[..], [ClaimResult::Finished { state }] if state == "superseded"),
        "{claims:?}"
    );
    assert_eq!(superseded, 1);
    let state: String =
        sqlx::query_scalar("SELECT state FROM deliveries WHERE delivery_key = 'dlv_opening'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(state, "superseded");
}

/// An attempt lost mid-send (its worker died) is claimed again even where a newer message to
/// the same recipient went out since: it is no unsent message to supersede, and the
/// channel's policy for unknown outcomes decides it. (A guard that refused it left the row
/// `sending` and parked, published and refused again, round after round, with every later
/// message to that recipient stuck behind it.)
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_attempt_lost_mid_send_is_claimed_again_despite_a_newer_message(pool: PgPool) {
    let store = Store::from_pool(pool);
    let (incident, subscriber) = (IncidentId::new(), SubscriberId::new());
    let rows = [
        delivery("dlv_opening", incident, 1, subscriber),
        delivery("dlv_update", incident, 2, subscriber),
    ];
    store.record_deliveries(&rows).await.unwrap();
    sqlx::query(
        "UPDATE deliveries SET channel = 'email',
             state = CASE delivery_key WHEN 'dlv_opening' THEN 'sending' ELSE 'delivered' END,
             lease_owner = CASE delivery_key WHEN 'dlv_opening' THEN 'dead-worker' END,
             lease_expires_at = CASE delivery_key WHEN 'dlv_opening'
                                THEN now() - interval '1 second' END,
             send_started_at = CASE delivery_key WHEN 'dlv_opening'
                               THEN now() - interval '20 seconds' END,
             attempts = CASE delivery_key WHEN 'dlv_opening' THEN 1 ELSE 0 END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let policy = ClaimPolicy {
        channel: Channel::Email,
        supersede_stale: true,
        resend_unknown: true,
        ..POLICY
    };
    let (claims, _) = store
        .claim_deliveries(&["dlv_opening".to_owned()], "worker", policy)
        .await
        .unwrap();
    match &claims[..] {
        [ClaimResult::Claimed(claim)] => assert!(claim.after_lost_attempt, "{claim:?}"),
        other => panic!("expected the lost attempt claimed, got {other:?}"),
    }
}
