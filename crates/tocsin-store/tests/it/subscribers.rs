//! Subscribers, contacts, the ledger and the trail.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::Delivery;
use tocsin_core::{
    Channel, ComponentFilter, Contacts, EventId, Incident, Preferences, Severity, SubscriberId,
};
use tocsin_store::{FanoutRecord, Store, SubscriberFilter, SubscriberWrite};

use super::open_request;

fn prefs(channels: &[Channel], min: Severity, components: Option<&[&str]>) -> Preferences {
    Preferences {
        channels: channels.iter().copied().collect(),
        components: components.map_or(ComponentFilter::All, |c| {
            ComponentFilter::Only(c.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>())
        }),
        min_severity: min,
        kinds: BTreeMap::new(),
        quiet_hours: None,
    }
}

pub(crate) fn write(external_id: &str, preferences: Preferences) -> SubscriberWrite {
    let contacts = Contacts {
        email: preferences
            .channels
            .contains(&Channel::Email)
            .then(|| format!("{external_id}@example.com")),
        phone: preferences
            .channels
            .contains(&Channel::Sms)
            .then(|| "+14155550100".to_owned()),
        webhook_url: preferences
            .channels
            .contains(&Channel::Webhook)
            .then(|| format!("https://hooks.example.com/{external_id}")),
    };
    SubscriberWrite {
        external_id: external_id.to_owned(),
        preferences,
        contacts,
        candidate_webhook_secret: format!("whsec_{}", uuid::Uuid::new_v4().simple()),
        consent: None,
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn upsert_creates_then_updates_and_shows_a_webhook_secret_once(pool: PgPool) {
    let store = Store::from_pool(pool);
    let first = write(
        "cust-1",
        prefs(&[Channel::Email, Channel::Webhook], Severity::Minor, None),
    );
    let created = store
        .upsert_subscribers(std::slice::from_ref(&first))
        .await
        .unwrap()
        .remove(0);
    assert!(created.created);
    assert_eq!(
        created.new_webhook_secret.as_deref(),
        Some(first.candidate_webhook_secret.as_str())
    );
    assert_eq!(
        created.subscriber.contacts.email.as_deref(),
        Some("cust-1@example.com")
    );

    let mut second = write(
        "cust-1",
        prefs(&[Channel::Email, Channel::Webhook], Severity::Major, None),
    );
    second.contacts.email = Some("new@example.com".into());
    let updated = store.upsert_subscribers(&[second]).await.unwrap().remove(0);
    assert!(!updated.created);
    assert_eq!(
        updated.subscriber.id, created.subscriber.id,
        "same subscriber, same id"
    );
    assert!(
        updated.new_webhook_secret.is_none(),
        "an existing secret is never replaced or shown again"
    );
    assert!(updated.subscriber.revision > created.subscriber.revision);
    assert_eq!(updated.subscriber.preferences.min_severity, Severity::Major);
    assert_eq!(
        updated.subscriber.contacts.email.as_deref(),
        Some("new@example.com")
    );

    // The preference history keeps both revisions.
    let before = store
        .preferences_at(created.subscriber.id, created.subscriber.revision)
        .await
        .unwrap();
    assert_eq!(before.flatten().unwrap().min_severity, Severity::Minor);

    assert!(
        store
            .rotate_webhook_secret("cust-1", "whsec_rotated")
            .await
            .unwrap()
    );
    assert!(
        !store
            .rotate_webhook_secret("nobody", "whsec_x")
            .await
            .unwrap()
    );
    let (_, secret) = store
        .subscriber_by_id(created.subscriber.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.as_deref(), Some("whsec_rotated"));
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn deleting_erases_contact_details_and_keeps_an_anonymised_trail(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let up = store
        .upsert_subscribers(&[write(
            "alice@example.com",
            prefs(&[Channel::Email, Channel::Sms], Severity::Minor, None),
        )])
        .await
        .unwrap()
        .remove(0);
    let id = up.subscriber.id;
    store
        .record_deliveries(&[Delivery {
            delivery_key: "dlv_test".into(),
            incident_id: tocsin_core::IncidentId::new(),
            event_id: EventId::new(),
            event_version: 1,
            subscriber_id: id,
            channel: Channel::Email,
            send_after: None,
            lane: tocsin_core::Lane::Small,
        }])
        .await
        .unwrap();

    assert!(store.delete_subscriber("alice@example.com").await.unwrap());
    assert!(
        !store.delete_subscriber("alice@example.com").await.unwrap(),
        "deleting twice finds nothing"
    );
    assert!(
        store
            .subscriber("alice@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.subscriber_by_id(id).await.unwrap().is_none());

    // No contact detail or external id is left anywhere; the ledger keeps the id only.
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM subscriber_contacts WHERE subscriber_id = $1)
              + (SELECT count(*) FROM subscribers WHERE subscriber_id = $1 AND external_id IS NOT NULL)",
    )
    .bind(id.as_uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
    let dump: String = sqlx::query_scalar(
        "SELECT concat_ws(' ', (SELECT string_agg(s::text, ' ') FROM subscribers s),
                               (SELECT string_agg(r::text, ' ') FROM subscriber_revisions r),
                               (SELECT string_agg(d::text, ' ') FROM deliveries d))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        !dump.contains("alice"),
        "personal data survived deletion: {dump}"
    );
    assert!(
        !dump.contains("+1415"),
        "personal data survived deletion: {dump}"
    );
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE subscriber_id = $1")
            .bind(id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(ledger, 1, "the anonymised ledger row stays");
    assert_eq!(
        store.preferences_at(id, i64::MAX).await.unwrap(),
        Some(None),
        "the deletion is a revision"
    );

    // The external id is free again.
    let again = store
        .upsert_subscribers(&[write(
            "alice@example.com",
            prefs(&[Channel::Email], Severity::Minor, None),
        )])
        .await
        .unwrap()
        .remove(0);
    assert!(again.created);
    assert_ne!(again.subscriber.id, id);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn listing_pages_and_filters(pool: PgPool) {
    let store = Store::from_pool(pool);
    let writes: Vec<SubscriberWrite> = (0..7)
        .map(|i| {
            let channels: &[Channel] = if i % 2 == 0 {
                &[Channel::Email]
            } else {
                &[Channel::Sms]
            };
            let components: Option<&[&str]> = if i < 3 { Some(&["api"]) } else { None };
            write(
                &format!("c{i}"),
                prefs(channels, Severity::Minor, components),
            )
        })
        .collect();
    store.upsert_subscribers(&writes).await.unwrap();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_subscribers(&SubscriberFilter::default(), after.as_deref(), 3)
            .await
            .unwrap();
        seen.extend(page.subscribers.iter().map(|s| s.external_id.clone()));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    let sms = store
        .list_subscribers(
            &SubscriberFilter {
                channel: Some(Channel::Sms),
                component: None,
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        sms.subscribers
            .iter()
            .map(|s| s.external_id.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c3", "c5"]
    );
    let billing = store
        .list_subscribers(
            &SubscriberFilter {
                channel: None,
                component: Some("billing".into()),
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        billing.subscribers.len(),
        4,
        "only those following all components"
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn candidates_filter_on_severity_and_components_and_include_those_told_before(pool: PgPool) {
    let store = Store::from_pool(pool);
    let up = store
        .upsert_subscribers(&[
            write("all-minor", prefs(&[Channel::Email], Severity::Minor, None)),
            write(
                "api-major",
                prefs(&[Channel::Email], Severity::Major, Some(&["api"])),
            ),
            write(
                "billing",
                prefs(&[Channel::Email], Severity::Minor, Some(&["billing"])),
            ),
            write(
                "critical-only",
                prefs(&[Channel::Email], Severity::Critical, None),
            ),
        ])
        .await
        .unwrap();
    let appended = store
        .append("p", &open_request("k"), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let mut incident: Incident = store
        .incident(appended.event.incident_id)
        .await
        .unwrap()
        .unwrap();
    let names = |candidates: Vec<tocsin_store::Candidate>| -> Vec<String> {
        candidates
            .iter()
            .map(|c| {
                up.iter()
                    .find(|u| u.subscriber.id == c.subscriber_id)
                    .unwrap()
                    .subscriber
                    .external_id
                    .clone()
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    // Major on "api".
    let major = store.fanout_candidates(&incident, None, 100).await.unwrap();
    assert_eq!(names(major), ["all-minor", "api-major"]);

    // Paging by id returns each candidate once.
    let first = store.fanout_candidates(&incident, None, 1).await.unwrap();
    let rest = store
        .fanout_candidates(&incident, Some(first[0].subscriber_id), 100)
        .await
        .unwrap();
    assert_eq!(first.len() + rest.len(), 2);

    // "api-major" was told; a downgrade to minor on another component still includes them.
    let told: SubscriberId = up[1].subscriber.id;
    store
        .record_deliveries(&[Delivery {
            delivery_key: "dlv_told".into(),
            incident_id: incident.id,
            event_id: appended.event.event_id,
            event_version: 1,
            subscriber_id: told,
            channel: Channel::Email,
            send_after: None,
            lane: tocsin_core::Lane::Small,
        }])
        .await
        .unwrap();
    incident.severity = Severity::Minor;
    incident.components = vec!["search".into()];
    let minor = store.fanout_candidates(&incident, None, 100).await.unwrap();
    assert!(
        minor
            .iter()
            .any(|c| c.subscriber_id == told && c.already_told)
    );
    assert_eq!(names(minor), ["all-minor", "api-major"]);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn ledger_and_trail_are_idempotent_and_the_trail_is_append_only(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let appended = store
        .append("p", &open_request("k"), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let event = appended.event;
    let delivery = Delivery {
        delivery_key: "dlv_1".into(),
        incident_id: event.incident_id,
        event_id: event.event_id,
        event_version: 1,
        subscriber_id: SubscriberId::new(),
        channel: Channel::Sms,
        send_after: None,
        lane: tocsin_core::Lane::Small,
    };
    assert_eq!(
        store
            .record_deliveries(std::slice::from_ref(&delivery))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.record_deliveries(&[delivery]).await.unwrap(),
        0,
        "a replay adds nothing"
    );

    assert_eq!(
        store.unresolved_before(event.incident_id, 2).await.unwrap(),
        1
    );
    let record = FanoutRecord {
        event_version: 1,
        jobs: BTreeMap::from([(Channel::Sms, 1)]),
        recipients: 1,
        considered: 1,
        ..FanoutRecord::default()
    };
    assert!(
        store
            .record_fanout(event.incident_id, event.event_id, &record)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_fanout(event.incident_id, event.event_id, &record)
            .await
            .unwrap()
    );
    assert_eq!(
        store.fanout_record(event.event_id).await.unwrap(),
        Some(record)
    );
    assert_eq!(
        store.unresolved_before(event.incident_id, 2).await.unwrap(),
        0
    );
    let trail = store
        .delivery_trail(event.incident_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].kind, "recipients_resolved");

    for sql in [
        "UPDATE delivery_trail SET kind = 'x'",
        "DELETE FROM delivery_trail",
        "TRUNCATE delivery_trail",
    ] {
        assert!(
            sqlx::query(sql).execute(&pool).await.is_err(),
            "{sql} must be refused"
        );
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_fallback_notice_skips_a_channel_whose_address_opted_out(pool: PgPool) {
    let store = Store::from_pool(pool);
    let all = [Channel::Email, Channel::Sms, Channel::Webhook];
    let upserted = store
        .upsert_subscribers(&[write("ada", prefs(&all, Severity::Minor, None))])
        .await
        .unwrap();
    let ada = upserted[0].subscriber.id;
    let failed = tocsin_store::FailedDelivery {
        incident_id: tocsin_core::IncidentId::new(),
        event_id: tocsin_core::EventId::new(),
        event_version: 1,
        subscriber_id: ada,
        channel: Channel::Webhook,
    };
    // Email first, as a rule; but Ada unsubscribed her email, so she is told by text.
    store
        .opt_out_address(Channel::Email, "ADA@example.com", "unsubscribe_page")
        .await
        .unwrap();
    let planned = store.plan_fallback(&failed, "410 Gone").await.unwrap();
    assert!(
        matches!(
            planned,
            tocsin_store::FallbackPlanned::Planned {
                channel: Channel::Sms,
                ..
            }
        ),
        "{planned:?}"
    );
}
