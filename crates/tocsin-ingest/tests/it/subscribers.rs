//! SubscriberService over real gRPC: upsert, get, list, delete, import, secrets, preview.

use sqlx::PgPool;
use tocsin_proto::v1::{self, subscriber_service_client::SubscriberServiceClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::app::{OPERATOR_TOKEN, TestApp, authed};

async fn client(app: &TestApp) -> SubscriberServiceClient<Channel> {
    SubscriberServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap()
}

fn subscriber(
    external_id: &str,
    channels: &[v1::Channel],
    components: &[&str],
) -> v1::UpsertSubscriberRequest {
    v1::UpsertSubscriberRequest {
        consent: String::new(),
        external_id: external_id.into(),
        contacts: Some(v1::Contacts {
            email: format!("{external_id}@example.com"),
            phone: "+14155552671".into(),
            webhook_url: format!("https://93.184.216.34/hooks/{external_id}"),
        }),
        preferences: Some(v1::Preferences {
            channels: channels.iter().map(|c| *c as i32).collect(),
            components: components.iter().map(|c| (*c).to_owned()).collect(),
            min_severity: v1::Severity::Minor as i32,
            ..Default::default()
        }),
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn subscribers_are_upserted_read_listed_rotated_and_deleted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut c = client(&app).await;

    let created = c
        .upsert_subscriber(authed(
            subscriber("acme", &[v1::Channel::Email, v1::Channel::Webhook], &[]),
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    assert!(
        created.webhook_secret.starts_with("whsec_"),
        "the secret is shown once: {created:?}"
    );
    let again = c
        .upsert_subscriber(authed(
            subscriber(
                "acme",
                &[v1::Channel::Email, v1::Channel::Webhook],
                &["api"],
            ),
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert!(again.webhook_secret.is_empty(), "never shown again");

    let got = c
        .get_subscriber(authed(
            v1::GetSubscriberRequest {
                external_id: "acme".into(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.preferences.unwrap().components, ["api"]);
    assert_eq!(got.contacts.unwrap().phone, "+14155552671");

    let mut beta = subscriber("beta", &[v1::Channel::Sms], &[]);
    beta.contacts.as_mut().unwrap().webhook_url.clear();
    c.upsert_subscriber(authed(beta, OPERATOR_TOKEN))
        .await
        .unwrap();
    let page = c
        .list_subscribers(authed(
            v1::ListSubscribersRequest {
                page_size: 1,
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.subscribers[0].external_id, "acme");
    let next = c
        .list_subscribers(authed(
            v1::ListSubscribersRequest {
                page_size: 1,
                page_token: page.next_page_token,
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.subscribers[0].external_id, "beta");
    assert!(next.next_page_token.is_empty());
    let sms = c
        .list_subscribers(authed(
            v1::ListSubscribersRequest {
                channel: v1::Channel::Sms as i32,
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sms.subscribers.len(), 1);

    let rotated = c
        .rotate_webhook_secret(authed(
            v1::RotateWebhookSecretRequest {
                external_id: "acme".into(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.webhook_secret.starts_with("whsec_"));
    assert_ne!(rotated.webhook_secret, created.webhook_secret);
    let no_webhook = c
        .rotate_webhook_secret(authed(
            v1::RotateWebhookSecretRequest {
                external_id: "beta".into(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        no_webhook.code(),
        Code::FailedPrecondition,
        "{no_webhook:?}"
    );

    c.delete_subscriber(authed(
        v1::DeleteSubscriberRequest {
            external_id: "acme".into(),
        },
        OPERATOR_TOKEN,
    ))
    .await
    .unwrap();
    for status in [
        c.get_subscriber(authed(
            v1::GetSubscriberRequest {
                external_id: "acme".into(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err(),
        c.delete_subscriber(authed(
            v1::DeleteSubscriberRequest {
                external_id: "acme".into(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn bad_input_gets_invalid_argument_naming_the_field_and_no_token_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut c = client(&app).await;
    let mut no_phone = subscriber("x", &[v1::Channel::Sms], &[]);
    no_phone.contacts.as_mut().unwrap().phone.clear();
    let mut private_hook = subscriber("x", &[v1::Channel::Webhook], &[]);
    private_hook.contacts.as_mut().unwrap().webhook_url = "https://10.1.2.3/hook".into();
    let mut bad_email = subscriber("x", &[v1::Channel::Email], &[]);
    bad_email.contacts.as_mut().unwrap().email = "not an address".into();
    let no_channels = subscriber("x", &[], &[]);
    let no_id = subscriber(" ", &[v1::Channel::Email], &[]);
    for (request, field) in [
        (no_phone, "contacts.phone"),
        (private_hook, "contacts.webhook_url"),
        (bad_email, "contacts.email"),
        (no_channels, "preferences.channels"),
        (no_id, "external_id"),
    ] {
        let status = c
            .upsert_subscriber(authed(request, OPERATOR_TOKEN))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let status = c
        .upsert_subscriber(tonic::Request::new(subscriber(
            "x",
            &[v1::Channel::Email],
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_bulk_import_reports_bad_rows_one_by_one_and_writes_the_rest(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut c = client(&app).await;
    let rows: Vec<v1::UpsertSubscriberRequest> = (1..=2_500u32)
        .map(|i| {
            let mut row = subscriber(
                &format!("cust-{i:05}"),
                &[v1::Channel::Email, v1::Channel::Webhook],
                &[],
            );
            if i % 500 == 0 {
                row.contacts.as_mut().unwrap().email = format!("broken-{i}");
            }
            row
        })
        // The last row repeats the first: an update, not a second subscriber.
        .chain(std::iter::once(subscriber(
            "cust-00001",
            &[v1::Channel::Sms],
            &[],
        )))
        .collect();
    let summary = c
        .import_subscribers(authed(futures::stream::iter(rows), OPERATOR_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.received, 2_501);
    assert_eq!(summary.rejected, 5);
    assert_eq!(summary.created, 2_495);
    assert_eq!(summary.updated, 1);
    let rows: Vec<u64> = summary.errors.iter().map(|e| e.row).collect();
    assert_eq!(rows, [500, 1_000, 1_500, 2_000, 2_500]);
    assert!(
        summary
            .errors
            .iter()
            .all(|e| e.field == "contacts.email" && e.message.contains("broken"))
    );
    assert_eq!(
        summary.webhook_secrets.len(),
        2_495,
        "each new webhook secret is shown once"
    );

    let first = c
        .get_subscriber(authed(
            v1::GetSubscriberRequest {
                external_id: "cust-00001".into(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.preferences.unwrap().channels,
        [v1::Channel::Sms as i32],
        "the later row won"
    );
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_operator_s_write_records_how_consent_was_obtained(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut c = client(&app).await;
    let mut stated = subscriber("ann", &[v1::Channel::Email], &[]);
    stated.consent = "  opted in at checkout  ".into();
    let silent = subscriber("bob", &[v1::Channel::Email], &[]);
    let summary = c
        .import_subscribers(authed(
            futures::stream::iter([stated, silent]),
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.created, 2);
    for (who, note) in [("ann", "opted in at checkout"), ("bob", "not stated")] {
        let id = app.store.subscriber(who).await.unwrap().unwrap().id;
        let history = app.store.consent_history(id).await.unwrap();
        let steps: Vec<(&str, &str, Option<&str>)> = history
            .iter()
            .map(|r| (r.action.as_str(), r.source.as_str(), r.detail.as_deref()))
            .collect();
        assert_eq!(steps, [("import", "operator_import", Some(note))], "{who}");
    }

    for (consent, says) in [
        ("x".repeat(501), "longer than 500"),
        ("line one\nline two".to_owned(), "control character"),
    ] {
        let mut request = subscriber("cat", &[v1::Channel::Email], &[]);
        request.consent = consent;
        let refused = c
            .upsert_subscriber(authed(request, OPERATOR_TOKEN))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().contains("consent") && refused.message().contains(says),
            "{}",
            refused.message()
        );
    }
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn preview_counts_reach_per_channel_and_component_without_publishing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut c = client(&app).await;
    for request in [
        subscriber("all", &[v1::Channel::Email, v1::Channel::Sms], &[]),
        subscriber("api", &[v1::Channel::Email], &["api"]),
        subscriber("billing", &[v1::Channel::Webhook], &["billing"]),
    ] {
        c.upsert_subscriber(authed(request, OPERATOR_TOKEN))
            .await
            .unwrap();
    }
    let preview = c
        .preview_fanout(authed(
            v1::PreviewFanoutRequest {
                kind: v1::EventKind::Opened as i32,
                severity: v1::Severity::Major as i32,
                components: vec!["api".into(), "search".into()],
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.recipients, 2);
    let channels: Vec<(i32, u64)> = preview
        .channels
        .iter()
        .map(|c| (c.channel, c.deliveries))
        .collect();
    assert_eq!(
        channels,
        [(v1::Channel::Email as i32, 2), (v1::Channel::Sms as i32, 1)]
    );
    let components: Vec<(&str, u64)> = preview
        .components
        .iter()
        .map(|c| (c.component.as_str(), c.recipients))
        .collect();
    assert_eq!(components, [("api", 2), ("search", 1)]);
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(ledger, 0, "a preview records nothing");

    // A scheduled send counts as held.
    let in_an_hour = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let scheduled_opening = c
        .preview_fanout(authed(
            v1::PreviewFanoutRequest {
                kind: v1::EventKind::Opened as i32,
                severity: v1::Severity::Major as i32,
                components: vec!["api".into()],
                deliver_at: Some(tocsin_proto::timestamp(in_an_hour)),
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled_opening.held, 3, "{scheduled_opening:?}");

    // A maintenance: the preview lists what the clock will send, each with its reach.
    let starts_at = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let maintenance = c
        .preview_fanout(authed(
            v1::PreviewFanoutRequest {
                kind: v1::EventKind::MaintenanceScheduled as i32,
                severity: v1::Severity::Minor as i32,
                components: vec!["api".into()],
                window: Some(v1::MaintenanceWindow {
                    starts_at: Some(tocsin_proto::timestamp(starts_at)),
                    ends_at: Some(tocsin_proto::timestamp(
                        starts_at + time::Duration::hours(1),
                    )),
                }),
                ..Default::default()
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // (kind, seconds from the start, deliveries per channel) of each step.
    type Step = (i32, i64, Vec<(i32, u64)>);
    let steps: Vec<Step> = maintenance
        .scheduled
        .iter()
        .map(|s| {
            (
                s.kind,
                s.at.unwrap().seconds - tocsin_proto::timestamp(starts_at).seconds,
                s.channels
                    .iter()
                    .map(|c| (c.channel, c.deliveries))
                    .collect(),
            )
        })
        .collect();
    let email_only = vec![(v1::Channel::Email as i32, 2)];
    assert_eq!(
        steps,
        vec![
            (
                v1::EventKind::MaintenanceReminder as i32,
                -86_400,
                email_only.clone()
            ),
            (
                v1::EventKind::MaintenanceReminder as i32,
                -3_600,
                email_only.clone()
            ),
            (
                v1::EventKind::MaintenanceStarted as i32,
                0,
                email_only.clone()
            ),
            (
                v1::EventKind::MaintenanceCompleted as i32,
                3_600,
                email_only
            ),
        ],
        "the day and the hour before, the start and the end; by email (texts only announce)"
    );
    assert_eq!(
        maintenance
            .channels
            .iter()
            .map(|c| (c.channel, c.deliveries))
            .collect::<Vec<_>>(),
        [(v1::Channel::Email as i32, 2), (v1::Channel::Sms as i32, 1)]
    );

    let status = c
        .preview_fanout(authed(v1::PreviewFanoutRequest::default(), OPERATOR_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn get_incident_shows_delivery_progress_and_dead_letters_replay(pool: PgPool) {
    use tocsin_proto::v1::incident_service_client::IncidentServiceClient;
    let app = TestApp::spawn(pool).await;
    let opened = app.open("k").await;
    let incident_id: tocsin_core::IncidentId = opened.incident_id.parse().unwrap();
    let event_id: tocsin_core::EventId = opened.event_id.parse().unwrap();
    let deliveries: Vec<tocsin_core::Delivery> = (0..3)
        .map(|i| tocsin_core::Delivery {
            delivery_key: format!("dlv_{i}"),
            incident_id,
            event_id,
            event_version: 1,
            subscriber_id: tocsin_core::SubscriberId::new(),
            channel: if i == 0 {
                tocsin_core::Channel::Sms
            } else {
                tocsin_core::Channel::Email
            },
            send_after: None,
            lane: tocsin_core::Lane::Small,
        })
        .collect();
    app.store.record_deliveries(&deliveries).await.unwrap();
    // Two emails died; the SMS is still pending.
    sqlx::query("UPDATE deliveries SET state = 'dead', attempts = 12 WHERE channel = 'email'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let mut incidents = IncidentServiceClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap();
    let get = |mut c: IncidentServiceClient<Channel>| {
        let incident_id = opened.incident_id.clone();
        async move {
            c.get_incident(authed(
                v1::GetIncidentRequest { incident_id },
                OPERATOR_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner()
            .delivery
        }
    };
    let progress = get(incidents.clone()).await;
    assert_eq!(
        progress,
        [
            v1::ChannelProgress {
                channel: v1::Channel::Email as i32,
                dead: 2,
                ..Default::default()
            },
            v1::ChannelProgress {
                channel: v1::Channel::Sms as i32,
                pending: 1,
                ..Default::default()
            },
        ]
    );

    app.bus.ensure_deliveries_stream().await.unwrap();
    let replayed = incidents
        .replay_dead_letters(authed(
            v1::ReplayDeadLettersRequest {
                incident_id: String::new(),
                channel: v1::Channel::Email as i32,
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replayed, 2);
    let progress = get(incidents.clone()).await;
    assert_eq!(progress[0].pending, 2, "{progress:?}");
    assert_eq!(progress[0].dead, 0);
    let jobs = app
        .bus
        .take_jobs(tocsin_core::Channel::Email)
        .await
        .unwrap();
    let mut keys: Vec<String> = jobs.into_iter().map(|j| j.delivery_key).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["dlv_1", "dlv_2"],
        "the replayed jobs are back on the queue"
    );
    let attempts: i64 =
        sqlx::query_scalar("SELECT sum(attempts) FROM deliveries WHERE channel = 'email'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(attempts, 0, "a replay starts the retry schedule afresh");
    app.stop().await;
}
