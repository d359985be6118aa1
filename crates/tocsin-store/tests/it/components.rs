//! The component catalogue.

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::{Change, Component, DomainError, EventKind};
use tocsin_store::{ComponentPut, Store, StoreError};

use crate::open_request;

fn component(id: &str, name: &str) -> Component {
    Component {
        id: id.into(),
        name: name.into(),
        group: Some("Platform".into()),
        description: None,
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn components_are_added_renamed_and_listed_in_order(pool: PgPool) {
    let store = Store::from_pool(pool);
    assert_eq!(
        store.put_component(&component("api", "API")).await.unwrap(),
        ComponentPut::Created
    );
    store
        .put_component(&component("dashboard", "Dashboard"))
        .await
        .unwrap();
    assert_eq!(
        store
            .put_component(&component("api", "Payments API"))
            .await
            .unwrap(),
        ComponentPut::Updated
    );
    let listed = store.components().await.unwrap();
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(names, [("api", "Payments API"), ("dashboard", "Dashboard")]);
    assert_eq!(listed[0].group.as_deref(), Some("Platform"));
    assert!(store.delete_component("dashboard").await.unwrap());
    assert!(!store.delete_component("dashboard").await.unwrap());
    assert_eq!(store.components().await.unwrap().len(), 1);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_component_of_an_open_incident_cannot_be_deleted(pool: PgPool) {
    let store = Store::from_pool(pool);
    store
        .put_component(&component("api", "Payments API"))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let opened = store
        .append("ops", &open_request("open").validate(now).unwrap(), now)
        .await
        .unwrap();
    let refused = store.delete_component("api").await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Domain(DomainError::InvalidTransition(why)) if why.contains("open incident")),
        "{refused:?}"
    );

    let mut resolve = open_request("resolve");
    resolve.incident_id = Some(opened.event.incident_id);
    resolve.change = Change::new(EventKind::Resolved, "Fixed.");
    store
        .append("ops", &resolve.validate(now).unwrap(), now)
        .await
        .unwrap();
    assert!(store.delete_component("api").await.unwrap());
}
