//! Every bad input gets its precise status, with a message naming the problem.

use sqlx::PgPool;
use tocsin_proto::v1::{self, EventKind};
use tonic::Code;

use crate::app::{OPERATOR_TOKEN, Options, TOKEN, TestApp, authed, event, opened};

async fn expect_code(app: &TestApp, request: v1::PublishEventRequest, code: Code, needle: &str) {
    let status = app
        .publish(request)
        .await
        .expect_err("the request must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} should mention {needle:?}",
        status.message()
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn malformed_fields_are_invalid_arguments_naming_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let cases: Vec<(v1::PublishEventRequest, &str)> = vec![
        (
            v1::PublishEventRequest {
                idempotency_key: String::new(),
                ..opened("x")
            },
            "idempotency_key",
        ),
        (
            v1::PublishEventRequest {
                idempotency_key: "k".repeat(256),
                ..opened("x")
            },
            "idempotency_key",
        ),
        (
            v1::PublishEventRequest {
                kind: 0,
                ..opened("k1")
            },
            "kind",
        ),
        (
            v1::PublishEventRequest {
                kind: 99,
                ..opened("k2")
            },
            "kind",
        ),
        (
            v1::PublishEventRequest {
                severity: 0,
                ..opened("k3")
            },
            "severity",
        ),
        (
            v1::PublishEventRequest {
                title: String::new(),
                ..opened("k4")
            },
            "title",
        ),
        (
            v1::PublishEventRequest {
                title: "t".repeat(201),
                ..opened("k5")
            },
            "title",
        ),
        (
            v1::PublishEventRequest {
                message: " ".into(),
                ..opened("k6")
            },
            "message",
        ),
        (
            v1::PublishEventRequest {
                message: "m".repeat(4001),
                ..opened("k7")
            },
            "message",
        ),
        (
            v1::PublishEventRequest {
                components: vec![],
                ..opened("k8")
            },
            "components",
        ),
        (
            v1::PublishEventRequest {
                incident_id: "not-a-uuid".into(),
                ..opened("k9")
            },
            "incident_id",
        ),
        (event("k10", "", EventKind::Updated), "incident_id"),
        (
            v1::PublishEventRequest {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..opened("k11")
            },
            "occurred_at",
        ),
        (
            v1::PublishEventRequest {
                status: v1::IncidentStatus::Completed.into(),
                ..opened("k12")
            },
            "status",
        ),
        (
            v1::PublishEventRequest {
                kind: EventKind::MaintenanceScheduled.into(),
                ..opened("k13")
            },
            "window",
        ),
    ];
    for (request, field) in cases {
        expect_code(&app, request, Code::InvalidArgument, field).await;
    }
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn lifecycle_violations_get_their_codes(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    expect_code(
        &app,
        event("u0", &unknown, EventKind::Updated),
        Code::NotFound,
        &unknown,
    )
    .await;

    let open = app.open("open").await;
    let mut stale = event("u1", &open.incident_id, EventKind::Updated);
    stale.expected_version = Some(5);
    expect_code(&app, stale, Code::Aborted, "expected incident version 5").await;

    let mut fresh = event("u2", &open.incident_id, EventKind::Updated);
    fresh.expected_version = Some(1);
    assert_eq!(app.publish(fresh).await.unwrap().incident_version, 2);

    expect_code(
        &app,
        event("re0", &open.incident_id, EventKind::Reopened),
        Code::FailedPrecondition,
        "reopened",
    )
    .await;
    app.publish(event("r1", &open.incident_id, EventKind::Resolved))
        .await
        .unwrap();
    expect_code(
        &app,
        event("u3", &open.incident_id, EventKind::Updated),
        Code::FailedPrecondition,
        "resolved",
    )
    .await;
    expect_code(
        &app,
        event("r2", &open.incident_id, EventKind::Resolved),
        Code::FailedPrecondition,
        "resolved",
    )
    .await;
    let reopened = app
        .publish(event("re1", &open.incident_id, EventKind::Reopened))
        .await
        .unwrap();
    assert_eq!(reopened.incident_version, 4);

    let mut again = opened("open-again");
    again.incident_id = open.incident_id.clone();
    expect_code(&app, again, Code::FailedPrecondition, "already exists").await;
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_reused_key_with_another_payload_already_exists(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.open("same-key").await;
    let mut different = opened("same-key");
    different.title = "Another title".into();
    expect_code(&app, different, Code::AlreadyExists, "same-key").await;
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn missing_or_wrong_tokens_are_unauthenticated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let status = app
        .client
        .clone()
        .publish_event(opened("k"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app
        .client
        .clone()
        .publish_event(authed(opened("k"), "wrong-token-0123456789"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(v1::GetIncidentRequest {
        incident_id: uuid::Uuid::now_v7().to_string(),
    });
    request
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    let status = app.client.clone().get_incident(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 0);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn oversized_messages_are_resource_exhausted(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Options {
            max_message_bytes: 8 * 1024,
            ..Options::default()
        },
    )
    .await;
    let mut big = opened("big");
    big.labels.insert("blob".into(), "x".repeat(16 * 1024));
    let status = app.publish(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The server is still fine afterwards.
    app.open("small").await;
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn reads_of_unknown_incidents_are_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let id = uuid::Uuid::now_v7().to_string();
    let status = app
        .client
        .clone()
        .get_incident(authed(
            v1::GetIncidentRequest {
                incident_id: id.clone(),
            },
            crate::app::TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .client
        .clone()
        .get_incident(authed(
            v1::GetIncidentRequest {
                incident_id: "nope".into(),
            },
            crate::app::TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("incident_id"));
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn publisher_tokens_may_not_do_what_operators_do(pool: PgPool) {
    use tocsin_proto::v1::operations_service_client::OperationsServiceClient;
    use tocsin_proto::v1::subscriber_service_client::SubscriberServiceClient;

    let app = TestApp::spawn(pool).await;
    let open = app.open("open").await;
    let endpoint = format!("http://{}", app.addr);
    let mut subscribers = SubscriberServiceClient::connect(endpoint.clone())
        .await
        .unwrap();
    let mut operations = OperationsServiceClient::connect(endpoint).await.unwrap();
    let mut incidents = app.client.clone();
    let denied = |status: tonic::Status, action: &str| {
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{action}: {status:?}"
        );
        assert!(
            status.message().contains("operator") && status.message().contains("monitoring"),
            "{action}: {status:?}"
        );
    };

    let list = v1::ListSubscribersRequest::default();
    denied(
        subscribers
            .list_subscribers(authed(list.clone(), TOKEN))
            .await
            .unwrap_err(),
        "ListSubscribers",
    );
    denied(
        operations
            .rebuild_projections(authed(v1::RebuildProjectionsRequest::default(), TOKEN))
            .await
            .unwrap_err(),
        "RebuildProjections",
    );
    let deliveries = v1::ListDeliveriesRequest {
        incident_id: open.incident_id.clone(),
        ..Default::default()
    };
    denied(
        incidents
            .list_deliveries(authed(deliveries.clone(), TOKEN))
            .await
            .unwrap_err(),
        "ListDeliveries",
    );
    denied(
        incidents
            .replay_dead_letters(authed(v1::ReplayDeadLettersRequest::default(), TOKEN))
            .await
            .unwrap_err(),
        "ReplayDeadLetters",
    );

    // The operator may do all of it, and publish and read incidents too.
    subscribers
        .list_subscribers(authed(list, OPERATOR_TOKEN))
        .await
        .unwrap();
    incidents
        .list_deliveries(authed(deliveries, OPERATOR_TOKEN))
        .await
        .unwrap();
    let updated = incidents
        .publish_event(authed(
            event("oncall-update", &open.incident_id, EventKind::Updated),
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.incident_version, 2);
    let events = incidents
        .list_incident_events(authed(
            v1::ListIncidentEventsRequest {
                incident_id: open.incident_id.clone(),
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        events
            .iter()
            .map(|e| e.publisher.as_str())
            .collect::<Vec<_>>(),
        ["monitoring", "oncall"],
        "each event records who published it"
    );
    app.stop().await;
}

/// What a client the project did not write found (a corpus of odd calls): a NUL character,
/// the nil UUID, an over-large page or a huge id must each get INVALID_ARGUMENT (or
/// NOT_FOUND) with a short message, never INTERNAL or "retry".
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn odd_input_is_refused_precisely_and_briefly(pool: PgPool) {
    use tocsin_proto::v1::subscriber_service_client::SubscriberServiceClient;
    let app = TestApp::spawn(pool).await;
    let opened = app.publish(opened("nul-1")).await.unwrap();
    let mut incidents = app.client.clone();
    let mut subscribers = SubscriberServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();

    let listed = incidents
        .list_deliveries(authed(
            v1::ListDeliveriesRequest {
                incident_id: opened.incident_id.clone(),
                external_id: "a\0b".into(),
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::InvalidArgument, "{listed:?}");
    assert!(listed.message().contains("NUL"), "{}", listed.message());

    let page = subscribers
        .list_subscribers(authed(
            v1::ListSubscribersRequest {
                page_token: "a\0b".into(),
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(page.code(), Code::InvalidArgument, "{page:?}");

    let too_big = subscribers
        .list_subscribers(authed(
            v1::ListSubscribersRequest {
                page_size: 50_000,
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(
        too_big.message().starts_with("page_size"),
        "{}",
        too_big.message()
    );

    let preview = subscribers
        .preview_fanout(authed(
            v1::PreviewFanoutRequest {
                kind: EventKind::Opened as i32,
                severity: v1::Severity::Major as i32,
                components: vec!["api\0".into()],
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(preview.code(), Code::InvalidArgument, "{preview:?}");

    let nil = incidents
        .get_incident(authed(
            v1::GetIncidentRequest {
                incident_id: uuid::Uuid::nil().to_string(),
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(nil.code(), Code::InvalidArgument);
    assert!(nil.message().contains("nil UUID"), "{}", nil.message());

    let huge = subscribers
        .get_subscriber(authed(
            v1::GetSubscriberRequest {
                external_id: "x".repeat(60_000),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert!(
        huge.message().len() < 1_000,
        "{} bytes",
        huge.message().len()
    );
    app.stop().await;
}
