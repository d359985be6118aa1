//! ComponentService over real gRPC, and the catalogue's part in publishes, preferences and
//! previews.

use sqlx::PgPool;
use tocsin_proto::v1::{
    self, component_service_client::ComponentServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::app::{OPERATOR_TOKEN, TOKEN, TestApp, authed, event, opened};

async fn client(app: &TestApp) -> ComponentServiceClient<Channel> {
    ComponentServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap()
}

fn component(id: &str, name: &str, group: &str) -> v1::PutComponentRequest {
    v1::PutComponentRequest {
        component: Some(v1::Component {
            id: id.into(),
            name: name.into(),
            group: group.into(),
            description: String::new(),
        }),
    }
}

fn impact(component: &str, impact: v1::Impact) -> v1::ComponentImpact {
    v1::ComponentImpact {
        component: component.into(),
        impact: impact as i32,
        name: String::new(),
    }
}

/// An opening that names its components through its impacts alone.
fn named_by_impacts() -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        components: Vec::new(),
        impacts: vec![
            impact("api", v1::Impact::MajorOutage),
            impact("dashboard", v1::Impact::DegradedPerformance),
        ],
        ..opened("named")
    }
}

async fn catalogue(app: &TestApp) {
    let mut c = client(app).await;
    for (id, name) in [("api", "Payments API"), ("dashboard", "Dashboard")] {
        c.put_component(authed(component(id, name, "Platform"), OPERATOR_TOKEN))
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn operators_keep_the_catalogue_and_publishers_cannot(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut c = client(&app).await;
    let put = c
        .put_component(authed(
            component("api", "  Payments API ", "Platform"),
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(put.created);
    assert_eq!(put.component.unwrap().name, "Payments API", "trimmed");
    let renamed = c
        .put_component(authed(component("api", "Public API", ""), OPERATOR_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(!renamed.created);

    let refused = c
        .put_component(authed(component("Bad Id", "x", ""), OPERATOR_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("id:"),
        "{}",
        refused.message()
    );
    let publisher = c
        .put_component(authed(component("db", "Database", ""), TOKEN))
        .await
        .unwrap_err();
    assert_eq!(publisher.code(), Code::PermissionDenied);

    let listed = c
        .list_components(authed(v1::ListComponentsRequest {}, OPERATOR_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .components;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].group.as_str()),
        ("Public API", "")
    );

    // In use by an open incident: kept until it is resolved.
    let open = app
        .publish(v1::PublishEventRequest {
            components: vec!["api".into()],
            ..opened("open")
        })
        .await
        .unwrap();
    let in_use = c
        .delete_component(authed(
            v1::DeleteComponentRequest { id: "api".into() },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    assert!(
        in_use.message().contains(&open.incident_id),
        "{}",
        in_use.message()
    );
    app.publish(event("resolve", &open.incident_id, v1::EventKind::Resolved))
        .await
        .unwrap();
    let deleted = c
        .delete_component(authed(
            v1::DeleteComponentRequest { id: "api".into() },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn publishes_take_catalogue_names_and_refuse_unknown_components(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // Before any catalogue, components are free-form (opened() names api and dashboard).
    let free = app.open("free").await;
    catalogue(&app).await;

    let typo = app
        .publish(v1::PublishEventRequest {
            components: vec!["API".into()],
            ..opened("typo")
        })
        .await
        .unwrap_err();
    assert_eq!(typo.code(), Code::InvalidArgument);
    assert!(
        typo.message()
            .contains("\"API\" not in the component catalogue"),
        "{}",
        typo.message()
    );

    let open = app.publish(named_by_impacts()).await.unwrap();
    let incident = app
        .client
        .clone()
        .get_incident(authed(
            v1::GetIncidentRequest {
                incident_id: open.incident_id.clone(),
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let affected: Vec<(&str, &str, i32)> = incident
        .affected
        .iter()
        .map(|a| (a.component.as_str(), a.name.as_str(), a.impact))
        .collect();
    assert_eq!(
        affected,
        [
            ("api", "Payments API", v1::Impact::MajorOutage as i32),
            (
                "dashboard",
                "Dashboard",
                v1::Impact::DegradedPerformance as i32
            )
        ]
    );

    // A rename between a publish and its retry leaves the retry the same request.
    client(&app)
        .await
        .put_component(authed(component("api", "Public API", ""), OPERATOR_TOKEN))
        .await
        .unwrap();
    let retried = app.publish(named_by_impacts()).await.unwrap();
    assert!(retried.duplicate);

    // An update may rate the incident's own components only.
    let elsewhere = app
        .publish(v1::PublishEventRequest {
            impacts: vec![impact("billing", v1::Impact::MajorOutage)],
            ..event("elsewhere", &free.incident_id, v1::EventKind::Updated)
        })
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::InvalidArgument);
    let unstated = app
        .publish(v1::PublishEventRequest {
            impacts: vec![impact("api", v1::Impact::Unspecified)],
            ..event("unstated", &free.incident_id, v1::EventKind::Updated)
        })
        .await
        .unwrap_err();
    assert_eq!(unstated.code(), Code::InvalidArgument);
    assert!(
        unstated.message().starts_with("impacts:"),
        "{}",
        unstated.message()
    );
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn preferences_and_previews_speak_the_catalogue(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    catalogue(&app).await;
    let mut subscribers = SubscriberServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    let follower = |components: &[&str]| v1::UpsertSubscriberRequest {
        consent: String::new(),
        external_id: "follower".into(),
        contacts: Some(v1::Contacts {
            email: "follower@example.com".into(),
            ..Default::default()
        }),
        preferences: Some(v1::Preferences {
            channels: vec![v1::Channel::Email as i32],
            components: components.iter().map(|c| (*c).to_owned()).collect(),
            min_severity: v1::Severity::Minor as i32,
            ..Default::default()
        }),
    };
    let unknown = subscribers
        .upsert_subscriber(authed(follower(&["payments"]), OPERATOR_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().starts_with("preferences.components:"),
        "{}",
        unknown.message()
    );
    subscribers
        .upsert_subscriber(authed(follower(&["api"]), OPERATOR_TOKEN))
        .await
        .unwrap();

    let preview = subscribers
        .preview_fanout(authed(
            v1::PreviewFanoutRequest {
                kind: v1::EventKind::Opened as i32,
                severity: v1::Severity::Major as i32,
                impacts: vec![impact("api", v1::Impact::PartialOutage)],
                components: vec!["api".into(), "dashboard".into()],
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<(&str, &str, i32, u64)> = preview
        .components
        .iter()
        .map(|c| {
            (
                c.component.as_str(),
                c.name.as_str(),
                c.impact,
                c.recipients,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("api", "Payments API", v1::Impact::PartialOutage as i32, 1),
            ("dashboard", "Dashboard", v1::Impact::Unspecified as i32, 0)
        ]
    );
    let unknown = subscribers
        .preview_fanout(authed(
            v1::PreviewFanoutRequest {
                kind: v1::EventKind::Opened as i32,
                severity: v1::Severity::Major as i32,
                components: vec!["payments".into()],
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    app.stop().await;
}
