//! The happy paths of the API: lifecycle, idempotent retries, concurrency, paging, watching.

use futures::StreamExt;
use sqlx::PgPool;
use tocsin_proto::v1::{self, EventKind};

use crate::app::{OTHER_TOKEN, TOKEN, TestApp, authed, event, opened};

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn incident_lifecycle_is_recorded_and_folded(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let open = app.open("open-1").await;
    assert_eq!(open.incident_version, 1);
    assert!(!open.duplicate);

    let mut update = event("update-1", &open.incident_id, EventKind::Updated);
    update.status = v1::IncidentStatus::Identified.into();
    update.severity = v1::Severity::Critical.into();
    let updated = app.publish(update).await.unwrap();
    assert_eq!(updated.incident_version, 2);
    let resolved = app
        .publish(event("resolve-1", &open.incident_id, EventKind::Resolved))
        .await
        .unwrap();
    assert_eq!(resolved.incident_version, 3);
    assert!(resolved.position > updated.position && updated.position > open.position);

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
    assert_eq!(incident.version, 3);
    assert_eq!(incident.status(), v1::IncidentStatus::Resolved);
    assert_eq!(incident.severity(), v1::Severity::Critical);
    assert_eq!(incident.title, "Elevated API error rates");
    assert!(incident.resolved_at.is_some());

    let events = app
        .client
        .clone()
        .list_incident_events(authed(
            v1::ListIncidentEventsRequest {
                incident_id: open.incident_id.clone(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [EventKind::Opened, EventKind::Updated, EventKind::Resolved]
    );
    assert!(events.iter().all(|e| e.publisher == "monitoring"));
    assert_eq!(events[0].event_id, open.event_id);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_retried_publish_returns_the_original_reply(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let first = app.open("retry-me").await;
    let again = app.publish(opened("retry-me")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (
            again.event_id.as_str(),
            again.incident_id.as_str(),
            again.incident_version,
            again.position
        ),
        (
            first.event_id.as_str(),
            first.incident_id.as_str(),
            first.incident_version,
            first.position
        )
    );
    // The same key from another publisher is a different request, not a duplicate.
    let other = app
        .client
        .clone()
        .publish_event(authed(opened("retry-me"), OTHER_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.duplicate);
    assert_ne!(other.incident_id, first.incident_id);
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 2);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn concurrent_publishers_get_gapless_versions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let open = app.open("open").await;
    let publishers: Vec<_> = (0..24)
        .map(|i| {
            let client = app.client.clone();
            let request = event(
                &format!("update-{i}"),
                &open.incident_id,
                EventKind::Updated,
            );
            let token = if i % 2 == 0 { TOKEN } else { OTHER_TOKEN };
            tokio::spawn(async move { client.clone().publish_event(authed(request, token)).await })
        })
        .collect();
    let mut versions = Vec::new();
    for p in publishers {
        versions.push(p.await.unwrap().unwrap().into_inner().incident_version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=25).collect::<Vec<u64>>());
    let stored: Vec<(i64,)> = sqlx::query_as("SELECT version FROM events ORDER BY version")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        stored.into_iter().map(|(v,)| v as u64).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<u64>>()
    );
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn events_are_listed_a_page_at_a_time(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let open = app.open("open").await;
    for i in 0..6 {
        app.publish(event(
            &format!("u{i}"),
            &open.incident_id,
            EventKind::Updated,
        ))
        .await
        .unwrap();
    }
    let mut versions = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .client
            .clone()
            .list_incident_events(authed(
                v1::ListIncidentEventsRequest {
                    incident_id: open.incident_id.clone(),
                    page_size: 3,
                    page_token: token.clone(),
                },
                TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        versions.extend(page.events.iter().map(|e| e.version));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(versions, (1..=7).collect::<Vec<u64>>());
    assert_eq!(pages, 3);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn watch_sends_history_then_new_events(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let open = app.open("open").await;
    app.publish(event("u1", &open.incident_id, EventKind::Updated))
        .await
        .unwrap();

    let mut stream = app
        .client
        .clone()
        .watch_incident(authed(
            v1::WatchIncidentRequest {
                incident_id: open.incident_id.clone(),
                from_version: 2,
            },
            TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!((first.version, first.kind()), (2, EventKind::Updated));

    app.publish(event("r1", &open.incident_id, EventKind::Resolved))
        .await
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("the resolve arrives on the watch")
        .unwrap()
        .unwrap();
    assert_eq!((next.version, next.kind()), (3, EventKind::Resolved));
    // Shutdown ends open watches instead of waiting for them forever.
    tokio::time::timeout(std::time::Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown completes while a watch is open");
    assert!(matches!(stream.next().await, None | Some(Err(_))));
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn health_and_reflection_are_served(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: tocsin_ingest::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a list of services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&tocsin_ingest::SERVICE_NAME.to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    drop(replies);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn incidents_are_listed_newest_first_filtered_and_paged(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut ids = Vec::new();
    for (key, severity, components) in [
        ("a", v1::Severity::Minor, vec!["api"]),
        ("b", v1::Severity::Critical, vec!["billing"]),
        ("c", v1::Severity::Major, vec!["api", "dashboard"]),
    ] {
        let open = app
            .publish(v1::PublishEventRequest {
                severity: severity.into(),
                components: components.into_iter().map(str::to_owned).collect(),
                ..opened(key)
            })
            .await
            .unwrap();
        ids.push(open.incident_id);
    }
    app.publish(event("b-resolved", &ids[1], v1::EventKind::Resolved))
        .await
        .unwrap();
    let list = |request: v1::ListIncidentsRequest| {
        let mut client = app.client.clone();
        async move {
            client
                .list_incidents(authed(request, TOKEN))
                .await
                .map(|r| r.into_inner())
        }
    };
    let titles = |r: &v1::ListIncidentsResponse| -> Vec<String> {
        r.incidents.iter().map(|i| i.incident_id.clone()).collect()
    };

    let all = list(v1::ListIncidentsRequest::default()).await.unwrap();
    assert_eq!(
        titles(&all),
        [ids[2].clone(), ids[1].clone(), ids[0].clone()],
        "newest first"
    );
    assert!(all.next_page_token.is_empty());

    let on_api = list(v1::ListIncidentsRequest {
        component: "api".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(titles(&on_api), [ids[2].clone(), ids[0].clone()]);
    let serious_and_open = list(v1::ListIncidentsRequest {
        min_severity: v1::Severity::Major.into(),
        statuses: vec![v1::IncidentStatus::Investigating.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(titles(&serious_and_open), [ids[2].clone()]);

    // Two pages of two and one, with nothing lost or repeated between them.
    let first = list(v1::ListIncidentsRequest {
        page_size: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(first.incidents.len(), 2);
    let second = list(v1::ListIncidentsRequest {
        page_size: 2,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(titles(&second), [ids[0].clone()]);
    assert!(second.next_page_token.is_empty());

    let bad = list(v1::ListIncidentsRequest {
        page_token: "garbage".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    app.stop().await;
}
