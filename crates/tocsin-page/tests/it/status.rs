//! The status page, its incident pages, the feed and the JSON summary, over real HTTP.

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::{
    Change, Component, EventKind, Impact, IncidentId, IncidentStatus, MaintenanceWindow,
    PublishRequest, Severity,
};
use tocsin_store::Store;

use crate::spawn;

/// An opening of `title` on `components`.
fn opening(title: &str, severity: Severity, components: &[&str], message: &str) -> Change {
    Change {
        title: Some(title.into()),
        severity: Some(severity),
        components: components.iter().map(|c| (*c).to_owned()).collect(),
        ..Change::new(EventKind::Opened, message)
    }
}

async fn publish(
    store: &Store,
    key: &str,
    incident: Option<IncidentId>,
    change: Change,
) -> IncidentId {
    let now = OffsetDateTime::now_utc();
    let request = PublishRequest {
        idempotency_key: key.into(),
        incident_id: incident,
        change,
        occurred_at: None,
        expected_version: None,
    }
    .validate(now)
    .unwrap();
    store
        .append("ops", &request, now)
        .await
        .unwrap()
        .event
        .incident_id
}

async fn catalogue(store: &Store) {
    for (id, name, group) in [
        ("api", "Public API", "Platform"),
        ("dashboard", "Dashboard", "Platform"),
        ("billing", "Billing", "Money"),
    ] {
        store
            .put_component(&Component {
                id: id.into(),
                name: name.into(),
                group: Some(group.into()),
                description: None,
            })
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_page_says_what_is_wrong_per_component_with_every_update_and_the_history(pool: PgPool) {
    let app = spawn(pool).await;
    let store = &app.store;
    catalogue(store).await;
    let open = publish(
        store,
        "open",
        None,
        Change {
            title: Some("Elevated API errors".into()),
            severity: Some(Severity::Major),
            components: vec!["api".into(), "dashboard".into()],
            impacts: [("api".to_owned(), Impact::PartialOutage)].into(),
            ..Change::new(EventKind::Opened, "Some API calls fail.")
        },
    )
    .await;
    publish(
        store,
        "identified",
        Some(open),
        Change {
            status: Some(IncidentStatus::Identified),
            ..Change::new(EventKind::Updated, "A bad deploy; rolling back.")
        },
    )
    .await;
    let old = publish(
        store,
        "old",
        None,
        opening(
            "Slow billing exports",
            Severity::Minor,
            &["billing"],
            "Exports are slow.",
        ),
    )
    .await;
    publish(
        store,
        "old-fixed",
        Some(old),
        Change::new(EventKind::Resolved, "Exports are fast again."),
    )
    .await;
    // A review scheduled for next week is not public yet.
    publish(
        store,
        "old-review",
        Some(old),
        Change {
            deliver_at: Some(OffsetDateTime::now_utc() + time::Duration::days(7)),
            ..Change::new(EventKind::Review, "What went wrong with exports.")
        },
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let maintenance = publish(
        store,
        "mnt",
        None,
        Change {
            title: Some("Database upgrade".into()),
            components: vec!["billing".into()],
            window: Some(MaintenanceWindow {
                starts_at: now + time::Duration::hours(1),
                ends_at: now + time::Duration::hours(2),
            }),
            reminders: Some(Vec::new()),
            ..Change::new(
                EventKind::MaintenanceScheduled,
                "Billing is read-only for an hour.",
            )
        },
    )
    .await;

    let page = app.get("/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    // A document readers and screen readers can find their way in.
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("<main>") && html.contains("<h1>Acme Cloud status</h1>"));
    assert!(
        html.contains("role=\"status\">Partial outage</p>"),
        "{html}"
    );
    // Components by group, by name, with their state in words.
    assert!(
        html.contains("<th scope=\"rowgroup\" colspan=\"2\">Platform</th>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<tr><td>Public API</td><td class=\"state partial_outage\">Partial outage</td></tr>"
        ),
        "{html}"
    );
    assert!(
        html.contains(
            "<tr><td>Dashboard</td><td class=\"state partial_outage\">Partial outage</td></tr>"
        ),
        "a major incident's unrated component counts as a partial outage: {html}"
    );
    assert!(
        html.contains("<tr><td>Billing</td><td class=\"state operational\">Operational</td></tr>"),
        "a scheduled maintenance changes nothing yet: {html}"
    );
    // The current incident with its updates, newest first.
    let identified = html
        .find("A bad deploy; rolling back.")
        .expect("the update");
    let opened = html.find("Some API calls fail.").expect("the opening");
    assert!(identified < opened, "newest first");
    assert!(
        html.contains("Public API (partial outage) and Dashboard"),
        "{html}"
    );
    // The maintenance, and the history.
    assert!(html.contains("Database upgrade"), "{html}");
    assert!(html.contains(&format!(
        "<a href=\"/incidents/{old}\">Slow billing exports</a>"
    )));
    assert!(
        !html.contains("What went wrong with exports."),
        "not before its time"
    );

    let incident = app.get(&format!("/incidents/{open}")).await;
    assert_eq!(incident.status(), 200);
    let html = incident.text().await.unwrap();
    assert!(html.contains("<h1 id=\"i-"), "{html}");
    assert!(html.contains("<strong>Identified</strong>"), "{html}");
    for missing in [IncidentId::new().to_string(), "nonsense".to_owned()] {
        let answer = app.get(&format!("/incidents/{missing}")).await;
        assert_eq!(answer.status(), 404);
    }

    let summary: serde_json::Value = app.get("/api/v1/summary.json").await.json().await.unwrap();
    assert_eq!(summary["status"]["indicator"], "partial_outage");
    assert_eq!(summary["page"]["name"], "Acme Cloud");
    let states: Vec<(String, String)> = summary["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("api".to_owned(), "partial_outage".to_owned()),
            ("dashboard".to_owned(), "partial_outage".to_owned()),
            ("billing".to_owned(), "operational".to_owned()),
        ]
    );
    assert_eq!(summary["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(summary["incidents"][0]["updates"][0]["label"], "Identified");
    assert_eq!(summary["maintenances"][0]["id"], maintenance.to_string());

    let feed = app.get("/feed.atom").await;
    assert_eq!(
        feed.headers()["content-type"],
        "application/atom+xml; charset=utf-8"
    );
    let xml = feed.text().await.unwrap();
    assert!(xml.starts_with(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">"
    ));
    assert_eq!(
        xml.matches("<entry>").count(),
        5,
        "every public event, not the review: {xml}"
    );
    assert!(
        xml.contains("<title>Identified: Elevated API errors</title>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("href=\"http://{}/incidents/{open}\"", app.addr)),
        "{xml}"
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_quiet_day_says_so_and_free_form_components_still_show(pool: PgPool) {
    let app = spawn(pool).await;
    let html = app.page("/").await;
    assert!(
        html.contains("role=\"status\">All systems operational</p>"),
        "{html}"
    );
    assert!(html.contains("No incidents in the last 90 days."));

    // No catalogue: the incident's own component names are listed.
    publish(
        &app.store,
        "open",
        None,
        opening(
            "Checkout down",
            Severity::Critical,
            &["checkout"],
            "Checkout fails.",
        ),
    )
    .await;
    let html = app.page("/").await;
    assert!(html.contains("role=\"status\">Major outage</p>"), "{html}");
    assert!(
        html.contains(
            "<tr><td>checkout</td><td class=\"state major_outage\">Major outage</td></tr>"
        ),
        "{html}"
    );
}

/// A crowd of readers shares one read of PostgreSQL per interval: within it the page is the
/// snapshot already read; after it, the news.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn readers_share_a_snapshot_for_its_short_lifetime(pool: PgPool) {
    let app = crate::spawn_configured(
        pool,
        tocsin_page::signup::SignupConfig::default(),
        std::time::Duration::from_millis(700),
    )
    .await;
    assert!(app.page("/").await.contains("All systems operational"));
    publish(
        &app.store,
        "open",
        None,
        opening(
            "Checkout down",
            Severity::Critical,
            &["checkout"],
            "Checkout fails.",
        ),
    )
    .await;
    let shared = app.page("/api/v1/summary.json").await;
    assert!(
        !shared.contains("Checkout down"),
        "still the shared snapshot: {shared}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let fresh = app.page("/").await;
    assert!(fresh.contains("Checkout down"), "{fresh}");
}
