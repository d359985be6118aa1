//! The preference centre over real HTTP.

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::links::{LinkClaims, LinkSecret, Purpose};
use tocsin_core::{Channel, Component, ComponentFilter, Severity, SubscriberId};

use crate::{App, SECRET, spawn};

fn link(app: &App, subscriber_id: SubscriberId, purpose: Purpose) -> String {
    let token = LinkSecret::new(SECRET).unwrap().sign(&LinkClaims {
        subscriber_id,
        purpose,
        channel: None,
        expires_at: OffsetDateTime::now_utc() + time::Duration::days(90),
    });
    let path = match purpose {
        Purpose::Preferences => "preferences",
        Purpose::Unsubscribe => "unsubscribe",
        other => panic!("no page for {other:?} links here"),
    };
    format!("http://{}/{path}/{token}", app.addr)
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn readers_choose_channels_components_severity_and_quiet_hours_themselves(pool: PgPool) {
    let app = spawn(pool).await;
    for (id, name) in [("api", "Public API"), ("dashboard", "Dashboard")] {
        app.store
            .put_component(&Component {
                id: id.into(),
                name: name.into(),
                group: None,
                description: None,
            })
            .await
            .unwrap();
    }
    let ada = app.subscriber("ada", "ada@example.com").await;
    let before = app.store.subscriber("ada").await.unwrap().unwrap();
    let url = link(&app, ada, Purpose::Preferences);
    let http = reqwest::Client::new();

    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<label for=\"channel-email\">Email to a•••@example.com</label>"),
        "{html}"
    );
    assert!(html.contains("value=\"sms\" checked"), "{html}");
    assert!(
        !html.contains("ada@example.com"),
        "the address is half hidden"
    );
    assert!(
        html.contains("<label for=\"component-api\">Public API</label>"),
        "{html}"
    );

    // Texts off, only the API, major and up, quiet at night in Paris.
    let saved = http
        .post(&url)
        .form(&[
            ("channel", "email"),
            ("components", "only"),
            ("component", "api"),
            ("min_severity", "major"),
            ("quiet_tz", "Europe/Paris"),
            ("quiet_from", "22:00"),
            ("quiet_to", "07:00"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    assert!(saved.text().await.unwrap().contains("Saved."));
    let after = app.store.subscriber("ada").await.unwrap().unwrap();
    assert_eq!(
        after.opted_out.iter().copied().collect::<Vec<_>>(),
        [Channel::Sms]
    );
    assert_eq!(
        after.preferences.components,
        ComponentFilter::Only(["api".to_owned()].into())
    );
    assert_eq!(after.preferences.min_severity, Severity::Major);
    let quiet = after.preferences.quiet_hours.clone().unwrap();
    assert_eq!(
        (
            quiet.time_zone.as_str(),
            quiet.start_minute,
            quiet.end_minute
        ),
        ("Europe/Paris", 1320, 420)
    );
    assert!(after.revision > before.revision, "a new revision");

    // A time zone nobody knows: told what to fix, nothing saved.
    let refused = http
        .post(&url)
        .form(&[
            ("channel", "email"),
            ("min_severity", "critical"),
            ("quiet_tz", "Mars/Olympus"),
            ("quiet_from", "22:00"),
            ("quiet_to", "07:00"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("role=\"alert\""));
    let unchanged = app.store.subscriber("ada").await.unwrap().unwrap();
    assert_eq!(unchanged.preferences.min_severity, Severity::Major);

    // Ticking texts again is the reader opting back in.
    let back = http
        .post(&url)
        .form(&[
            ("channel", "email"),
            ("channel", "sms"),
            ("components", "all"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);
    let again = app.store.subscriber("ada").await.unwrap().unwrap();
    assert!(again.opted_out.is_empty());
    assert_eq!(again.preferences.components, ComponentFilter::All);

    // An unsubscribe link does not open the preference centre.
    let wrong = link(&app, ada, Purpose::Unsubscribe).replace("/unsubscribe/", "/preferences/");
    assert_eq!(http.get(&wrong).send().await.unwrap().status(), 404);
}
