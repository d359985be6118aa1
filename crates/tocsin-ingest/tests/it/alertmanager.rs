//! A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`, which `cargo xtask
//! test` installs) sends its webhook notifications to the ingest's HTTP receiver: a firing
//! alert opens an incident, its resolution resolves it, an internal alert reaches nobody,
//! and Alertmanager's re-sends record nothing twice.

use std::time::Duration;

use sqlx::PgPool;
use tocsin_core::{EventKind, IncidentStatus, Severity};
use tocsin_store::IncidentFilter;

use crate::app::{Options, TOKEN, TestApp, eventually};

const RULES: &str = r#"{"rules": [
    {"match": {"team": "internal"}, "public": false},
    {"match": {"service": "payments"}, "components": ["api"], "public": true}
]}"#;

/// A private Alertmanager, killed when dropped.
struct Alertmanager {
    child: tokio::process::Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Alertmanager {
    async fn start(webhook: &str) -> Alertmanager {
        let port = tocsin_testkit::process::free_port();
        let dir = std::env::temp_dir().join(format!("tocsin-alertmanager-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "route:\n  receiver: tocsin\n  group_by: [alertname]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: tocsin\n    webhook_configs:\n      - url: {webhook}\n        \
             send_resolved: true\n        http_config:\n          authorization:\n            \
             credentials: {TOKEN}\n"
        );
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let child = tokio::process::Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // One instance: no cluster to gossip with.
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "prometheus-alertmanager is needed for this test and could not run ({e}); \
                     install it with `apt-get install -y --no-install-recommends \
                     prometheus-alertmanager` (cargo xtask test does it)"
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("Alertmanager to be ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(format!("{url}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        Alertmanager { child, url, dir }
    }

    /// Posts alerts to Alertmanager's API, as Prometheus would.
    async fn post(&self, alerts: serde_json::Value) {
        let answer = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&alerts)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "{status}: {body}\n{alerts}");
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The alert as Prometheus posts it: it began a minute ago, and has ended at `ends_at`.
fn alert(labels: serde_json::Value, ends_at: Option<&str>) -> serde_json::Value {
    let mut alert = serde_json::json!({
        "labels": labels,
        "annotations": {
            "summary": "Payments API errors",
            "description": "5% of API requests fail with 500",
            "customer_message": "Some card payments fail. We are working on it."
        },
        "startsAt": rfc3339(
            time::OffsetDateTime::now_utc().replace_second(0).unwrap()
                - time::Duration::minutes(1)
        ),
    });
    if let Some(ends_at) = ends_at {
        alert["endsAt"] = ends_at.into();
    }
    alert
}

/// The ingest with its HTTP receivers, under [`RULES`].
async fn with_receivers(pool: PgPool) -> TestApp {
    tocsin_runtime::tls::install_crypto_provider();
    TestApp::spawn_with(
        pool,
        Options {
            alert_rules: Some(tocsin_alerts::Mapping::parse(RULES).unwrap()),
            ..Options::default()
        },
    )
    .await
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn alertmanager_opens_and_resolves_an_incident_and_keeps_internal_alerts_in(pool: PgPool) {
    let app = with_receivers(pool).await;
    let webhook = format!("http://{}/v1/alerts/alertmanager", app.http_addr.unwrap());
    let am = Alertmanager::start(&webhook).await;
    let firing = serde_json::json!({
        "alertname": "HighErrorRate", "service": "payments", "severity": "critical"
    });
    am.post(serde_json::json!([
        alert(firing.clone(), None),
        alert(
            serde_json::json!({"alertname": "DiskFull", "team": "internal"}),
            None
        ),
    ]))
    .await;

    let store = app.store.clone();
    let incidents = || {
        let store = store.clone();
        async move {
            store
                .list_incidents(&IncidentFilter::default(), None, 10)
                .await
                .unwrap()
        }
    };
    eventually(
        "Alertmanager's notification to open an incident",
        || async { !incidents().await.is_empty() },
    )
    .await;
    let opened = incidents().await;
    assert_eq!(
        opened.len(),
        1,
        "the internal alert reached nobody: {opened:?}"
    );
    let incident = &opened[0];
    assert_eq!(incident.title, "Payments API errors");
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.components, ["api"]);
    assert_eq!(
        incident.message,
        "Some card payments fail. We are working on it."
    );

    // Resolved: Alertmanager sends the group's resolution.
    let past = rfc3339(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
    am.post(serde_json::json!([alert(firing, Some(&past))]))
        .await;
    let id = incident.id;
    eventually("the resolution to resolve the incident", || {
        let store = store.clone();
        async move {
            store
                .incident(id)
                .await
                .unwrap()
                .is_some_and(|i| i.status == IncidentStatus::Resolved)
        }
    })
    .await;
    // A little longer, for any re-send to arrive: none may add an event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = app.store.incident_events(id, 0, 100).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.change.kind).collect();
    assert_eq!(kinds, [EventKind::Opened, EventKind::Resolved], "{kinds:?}");
    assert!(events.iter().all(|e| e.publisher == "monitoring"));
    app.stop().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_receiver_says_what_is_wrong_with_a_request(pool: PgPool) {
    let app = with_receivers(pool).await;
    let url = format!("http://{}/v1/alerts/alertmanager", app.http_addr.unwrap());
    let http = reqwest::Client::new();
    let unauthenticated = http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let garbage = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body(r#"{"version": "3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let body: serde_json::Value = garbage.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not an alert webhook notification"),
        "{body}"
    );

    // Grafana's webhook contact point: the same shape, version 1, on its own route.
    let grafana = serde_json::json!({
        "receiver": "tocsin", "status": "firing", "orgId": 1, "version": "1",
        "groupKey": "{}/{alertname=\"Checkout latency\"}:{alertname=\"Checkout latency\"}",
        "groupLabels": {"alertname": "Checkout latency"},
        "commonLabels": {"alertname": "Checkout latency", "service": "payments", "severity": "warning"},
        "commonAnnotations": {"summary": "Checkout is slow", "description": "Paying takes longer than usual."},
        "externalURL": "https://grafana.example/", "truncatedAlerts": 0,
        "title": "[FIRING:1] Checkout latency", "state": "alerting", "message": "",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "Checkout latency", "service": "payments"},
            "annotations": {}, "startsAt": "2026-12-07T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "c6eadffa33fcdf37",
            "values": {"B": 2.4}
        }]
    });
    let wrong_route = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&grafana)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_route.status(), 400, "version 1 is Grafana's");
    let opened = http
        .post(format!(
            "http://{}/v1/alerts/grafana",
            app.http_addr.unwrap()
        ))
        .bearer_auth(TOKEN)
        .json(&grafana)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let body: serde_json::Value = opened.json().await.unwrap();
    assert_eq!(body["event"], "opened", "{body}");
    assert_eq!(body["duplicate"], false);
    let incident_id: tocsin_core::IncidentId =
        body["incident_id"].as_str().unwrap().parse().unwrap();
    let incident = app.store.incident(incident_id).await.unwrap().unwrap();
    assert_eq!(incident.severity, Severity::Major);
    assert_eq!(incident.message, "Paying takes longer than usual.");
    app.stop().await;
}

/// An Alertmanager notification (version 4) about `group`, as it posts one.
fn notification(group: &str, status: &str, message: &str) -> serde_json::Value {
    let labels =
        serde_json::json!({"alertname": group, "service": "payments", "severity": "critical"});
    serde_json::json!({
        "version": "4", "receiver": "tocsin", "status": status, "truncatedAlerts": 0,
        "groupKey": format!("{{}}:{{alertname=\"{group}\"}}"),
        "groupLabels": {"alertname": group},
        "commonLabels": labels,
        "commonAnnotations": {"summary": format!("{group} on payments"), "customer_message": message},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status, "labels": labels, "annotations": {},
            "startsAt": "2026-12-07T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "f1"
        }]
    })
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn held_alerts_wait_as_drafts_for_an_operator(pool: PgPool) {
    use tocsin_proto::v1;
    use tonic::Code;

    use crate::app::{OPERATOR_TOKEN, authed};
    tocsin_runtime::tls::install_crypto_provider();
    let app = TestApp::spawn_with(
        pool,
        Options {
            alert_rules: Some(
                tocsin_alerts::Mapping::parse(
                    r#"{"rules": [{"match": {"service": "payments"}, "components": ["api"], "public": true, "hold": true}]}"#,
                )
                .unwrap(),
            ),
            ..Options::default()
        },
    )
    .await;
    let url = format!("http://{}/v1/alerts/alertmanager", app.http_addr.unwrap());
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<serde_json::Value>().await.unwrap()
        }
    };
    let mut client = app.client.clone();
    let drafts = |client: &mut tocsin_proto::v1::incident_service_client::IncidentServiceClient<
        tonic::transport::Channel,
    >| {
        let mut client = client.clone();
        async move {
            client
                .list_drafts(authed(v1::ListDraftsRequest::default(), OPERATOR_TOKEN))
                .await
                .unwrap()
                .into_inner()
                .drafts
        }
    };

    // Held: no incident, one draft, refreshed by the next notification.
    let held = post(notification(
        "HighErrorRate",
        "firing",
        "Some card payments fail.",
    ))
    .await;
    let id = held["held"].as_str().expect("held").to_owned();
    let again = post(notification(
        "HighErrorRate",
        "firing",
        "Most card payments fail.",
    ))
    .await;
    assert_eq!(again["notifications"], 2);
    let waiting = drafts(&mut client).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].incident_id, id);
    assert_eq!(waiting[0].message, "Most card payments fail.");
    assert_eq!(waiting[0].source, "monitoring");
    let listed = app
        .store
        .list_incidents(&IncidentFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(listed.is_empty(), "nothing reached the log: {listed:?}");
    // Only operators see or decide drafts.
    let refused = client
        .list_drafts(authed(v1::ListDraftsRequest::default(), TOKEN))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Published: an opening in the alert source's name; the resolution then flows as usual.
    let published = client
        .publish_draft(authed(
            v1::PublishDraftRequest {
                incident_id: id.clone(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.incident_id, id);
    assert!(drafts(&mut client).await.is_empty());
    let resolved = post(notification("HighErrorRate", "resolved", "")).await;
    assert_eq!(resolved["event"], "resolved", "{resolved}");
    let incident_id: tocsin_core::IncidentId = id.parse().unwrap();
    let events = app.store.incident_events(incident_id, 0, 10).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.change.kind).collect();
    assert_eq!(kinds, [EventKind::Opened, EventKind::Resolved]);
    assert!(events.iter().all(|e| e.publisher == "monitoring"));

    // A flap: resolved before anyone looked, its draft is withdrawn.
    post(notification("Flapping", "firing", "Brief errors.")).await;
    let withdrawn = post(notification("Flapping", "resolved", "")).await;
    assert_eq!(withdrawn["draft_was"], "pending", "{withdrawn}");
    assert!(drafts(&mut client).await.is_empty());

    // Discarded: later notifications of the occurrence are ignored; nothing to publish.
    let noise = post(notification("Noise", "firing", "Noise.")).await;
    let noise_id = noise["held"].as_str().unwrap().to_owned();
    client
        .discard_draft(authed(
            v1::DiscardDraftRequest {
                incident_id: noise_id.clone(),
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap();
    let ignored = post(notification("Noise", "firing", "Still noise.")).await;
    assert!(
        ignored["ignored"].as_str().unwrap().contains("discarded"),
        "{ignored}"
    );
    let gone = client
        .publish_draft(authed(
            v1::PublishDraftRequest {
                incident_id: noise_id,
            },
            OPERATOR_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    app.stop().await;
}
