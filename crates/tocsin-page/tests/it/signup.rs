//! Self-service sign-up over real HTTP: the form, its anti-forgery field, the messages it
//! queues (read from PostgreSQL, as the workers would), confirmation by link and by code,
//! the limits, and expiry.

use sqlx::PgPool;
use tocsin_core::account::AccountNotice;
use tocsin_core::{Channel, Component, ComponentFilter, Severity};

use crate::{App, spawn, spawn_with};

/// A visitor's browser: the page's cookie and form field, then POSTs with them.
struct Visitor {
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

impl Visitor {
    async fn open(app: &App) -> Visitor {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http
            .get(format!("http://{}/subscribe", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let set_cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let html = page.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the form carries its anti-forgery field")
            .to_owned();
        Visitor { http, cookie, csrf }
    }

    async fn submit(&self, app: &App, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        self.http
            .post(format!("http://{}/subscribe", app.addr))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    }
}

/// The account messages queued, oldest first: (channel, address, notice).
async fn queued(app: &App) -> Vec<(String, String, AccountNotice)> {
    let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT channel, address, content FROM account_messages ORDER BY message_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(c, a, v)| (c, a, serde_json::from_value(v).unwrap()))
        .collect()
}

fn path_of(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    url.path().to_owned()
}

/// The subscriber that has `address`, and whether it opted out there.
async fn subscribed(
    app: &App,
    channel: Channel,
    address: &str,
) -> Option<(tocsin_core::SubscriberId, bool)> {
    app.store
        .subscriber_with_address(channel, address)
        .await
        .unwrap()
}

/// The confirmation link of the `index`th queued message, pointed at this app.
async fn confirm_link(app: &App, index: usize) -> String {
    match &queued(app).await[index].2 {
        AccountNotice::ConfirmEmail { confirm_url, .. } => {
            format!("http://{}{}", app.addr, path_of(confirm_url))
        }
        other => panic!("a confirmation link was expected, not {other:?}"),
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_email_sign_up_is_confirmed_by_its_link_and_only_then_subscribed(pool: PgPool) {
    let app = spawn(pool).await;
    app.store
        .put_component(&Component {
            id: "api".into(),
            name: "Public API".into(),
            group: None,
            description: None,
        })
        .await
        .unwrap();
    let visitor = Visitor::open(&app).await;
    let done = visitor
        .submit(
            &app,
            &[
                ("channel", "email"),
                ("email", " Grace@Example.com "),
                ("components", "only"),
                ("component", "api"),
                ("min_severity", "major"),
            ],
        )
        .await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Check your inbox"));

    // Nothing subscribed yet; one confirmation queued for the workers.
    assert_eq!(
        subscribed(&app, Channel::Email, "grace@example.com").await,
        None
    );
    let messages = queued(&app).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (channel, address, notice) = &messages[0];
    assert_eq!(
        (channel.as_str(), address.as_str()),
        ("email", "Grace@Example.com")
    );
    let AccountNotice::ConfirmEmail {
        company,
        confirm_url,
        ..
    } = notice
    else {
        panic!("{notice:?}");
    };
    assert_eq!(company, "Acme Cloud");

    // A link scanner's GET confirms nothing; the button's POST does.
    let confirm = format!("http://{}{}", app.addr, path_of(confirm_url));
    let page = visitor.http.get(&confirm).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Confirm my subscription")
    );
    assert_eq!(
        subscribed(&app, Channel::Email, "grace@example.com").await,
        None
    );
    let confirmed = visitor.http.post(&confirm).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    let html = confirmed.text().await.unwrap();
    assert!(html.contains("You are subscribed"), "{html}");
    // minijinja escapes the slashes in attributes; browsers read them back.
    assert!(
        html.replace("&#x2f;", "/").contains("/preferences/"),
        "the way to the preference centre: {html}"
    );

    let (id, opted_out) = app
        .store
        .subscriber_with_address(Channel::Email, "grace@example.com")
        .await
        .unwrap()
        .expect("subscribed once confirmed");
    assert!(!opted_out);
    let (subscriber, _) = app.store.subscriber_by_id(id).await.unwrap().unwrap();
    assert_eq!(subscriber.external_id, format!("self-service:{id}"));
    assert_eq!(subscriber.contacts.phone, None);
    let p = &subscriber.preferences;
    assert_eq!(
        p.channels.iter().copied().collect::<Vec<_>>(),
        [Channel::Email]
    );
    assert_eq!(
        p.components,
        ComponentFilter::Only(["api".to_owned()].into())
    );
    assert_eq!(p.min_severity, Severity::Major);

    // Confirming twice is harmless; the consent log tells the story.
    assert_eq!(
        visitor.http.post(&confirm).send().await.unwrap().status(),
        200
    );
    let history = app.store.consent_history(id).await.unwrap();
    let steps: Vec<(&str, &str)> = history
        .iter()
        .map(|r| (r.action.as_str(), r.source.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("subscribe", "status_page"),
            ("confirm", "status_page_link"),
            ("confirm", "status_page_link")
        ]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_phone_is_confirmed_by_the_texted_code_within_five_tries(pool: PgPool) {
    let app = spawn(pool).await;
    let visitor = Visitor::open(&app).await;
    let done = visitor
        .submit(&app, &[("channel", "sms"), ("phone", "+1 415 555 2671")])
        .await;
    assert_eq!(done.status(), 303, "to the code form");
    let verify = format!(
        "http://{}{}",
        app.addr,
        done.headers()["location"].to_str().unwrap()
    );
    let messages = queued(&app).await;
    let [(channel, address, AccountNotice::PhoneCode { code, .. })] = &messages[..] else {
        panic!("{messages:?}");
    };
    assert_eq!(
        (channel.as_str(), address.as_str()),
        ("sms", "+14155552671")
    );
    assert_eq!(code.len(), 6);
    let form = visitor.http.get(&verify).send().await.unwrap();
    assert!(form.text().await.unwrap().contains("six-digit code"));

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = visitor
        .http
        .post(&verify)
        .form(&[("code", wrong)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("4 tries left"));
    assert_eq!(subscribed(&app, Channel::Sms, "+14155552671").await, None);
    // Typed with a space, as people do.
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let ok = visitor
        .http
        .post(&verify)
        .form(&[("code", spaced.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("will text you"));
    let (id, _) = app
        .store
        .subscriber_with_address(Channel::Sms, "+14155552671")
        .await
        .unwrap()
        .unwrap();
    let (subscriber, _) = app.store.subscriber_by_id(id).await.unwrap().unwrap();
    assert_eq!(
        subscriber
            .preferences
            .channels
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [Channel::Sms]
    );

    // Another sign-up's code is spent after five wrong tries, even the right one after.
    let other = Visitor::open(&app).await;
    let done = other
        .submit(&app, &[("channel", "sms"), ("phone", "+1 415 555 2672")])
        .await;
    let verify = format!(
        "http://{}{}",
        app.addr,
        done.headers()["location"].to_str().unwrap()
    );
    let code = match &queued(&app).await.last().unwrap().2 {
        AccountNotice::PhoneCode { code, .. } => code.clone(),
        other => panic!("{other:?}"),
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        other
            .http
            .post(&verify)
            .form(&[("code", wrong)])
            .send()
            .await
            .unwrap();
    }
    let late = other
        .http
        .post(&verify)
        .form(&[("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 410);
    assert_eq!(subscribed(&app, Channel::Sms, "+14155552672").await, None);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_page_never_tells_whether_an_address_is_subscribed(pool: PgPool) {
    let app = spawn(pool).await;
    app.subscriber("ada", "ada@example.com").await;
    let visitor = Visitor::open(&app).await;
    let known = visitor
        .submit(&app, &[("channel", "email"), ("email", "ADA@example.com")])
        .await;
    let new = visitor
        .submit(&app, &[("channel", "email"), ("email", "bob@example.com")])
        .await;
    assert_eq!((known.status().as_u16(), new.status().as_u16()), (200, 200));
    let (known, new) = (known.text().await.unwrap(), new.text().await.unwrap());
    let strip = |html: &str| html.split("Updated ").next().unwrap().to_owned();
    assert_eq!(strip(&known), strip(&new), "the same page either way");

    // The known address gets its preference link instead of a second subscription.
    let messages = queued(&app).await;
    assert!(
        matches!(&messages[0].2, AccountNotice::AlreadySubscribed { preferences_url: Some(url), .. } if url.contains("/preferences/")),
        "{messages:?}"
    );
    assert!(matches!(&messages[1].2, AccountNotice::ConfirmEmail { .. }));
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn forged_forms_bad_input_and_floods_are_refused(pool: PgPool) {
    let app = spawn(pool).await;
    let visitor = Visitor::open(&app).await;

    // Another site's form: no cookie, or a field that does not match it.
    let no_cookie = reqwest::Client::new()
        .post(format!("http://{}/subscribe", app.addr))
        .form(&[
            ("csrf", visitor.csrf.as_str()),
            ("channel", "email"),
            ("email", "a@example.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), 403);
    let forged = Visitor {
        csrf: "00".repeat(32),
        ..Visitor::open(&app).await
    };
    let refused = forged
        .submit(&app, &[("channel", "email"), ("email", "a@example.com")])
        .await;
    assert_eq!(refused.status(), 403);

    for (fields, says) in [
        (vec![], "Choose at least one way"),
        (
            vec![("channel", "email"), ("email", "not an address")],
            "does not look like an email address",
        ),
        (
            vec![("channel", "sms"), ("phone", "07700 900123")],
            "with + and the country code",
        ),
        (
            vec![
                ("channel", "email"),
                ("email", "a@example.com"),
                ("components", "only"),
            ],
            "at least one part",
        ),
    ] {
        let answer = visitor.submit(&app, &fields).await;
        assert_eq!(answer.status(), 400, "{fields:?}");
        let html = answer.text().await.unwrap();
        assert!(html.contains(says), "{fields:?}: {html}");
    }
    assert!(
        queued(&app).await.is_empty(),
        "nothing recorded for bad input"
    );

    // One address: three messages a day, then silence behind the same answer.
    for _ in 0..4 {
        let answer = visitor
            .submit(
                &app,
                &[("channel", "email"), ("email", "flood@example.com")],
            )
            .await;
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(queued(&app).await.len(), 3);

    // One client: ten sign-ups an hour (the four above count, the silenced one too), then
    // 429.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let email = format!("person{i}@example.com");
        let answer = visitor
            .submit(&app, &[("channel", "email"), ("email", email.as_str())])
            .await;
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_opted_out_address_that_signs_up_again_is_heard_once_confirmed(pool: PgPool) {
    let app = spawn(pool).await;
    app.subscriber("ada", "ada@example.com").await;
    app.store
        .opt_out_address(Channel::Email, "ada@example.com", "unsubscribe_page")
        .await
        .unwrap();
    let visitor = Visitor::open(&app).await;
    visitor
        .submit(&app, &[("channel", "email"), ("email", "ada@example.com")])
        .await;
    // An opted-out address must confirm, not be told it is subscribed.
    let confirm = confirm_link(&app, 0).await;
    // Still opted out until the owner confirms.
    let ada = app.store.subscriber("ada").await.unwrap().unwrap();
    assert_eq!(
        ada.opted_out.iter().copied().collect::<Vec<_>>(),
        [Channel::Email]
    );
    assert_eq!(
        visitor.http.post(&confirm).send().await.unwrap().status(),
        200
    );
    // The existing subscriber hears again; no second subscriber for the same address.
    let ada = app.store.subscriber("ada").await.unwrap().unwrap();
    assert!(ada.opted_out.is_empty());
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM subscriber_contacts WHERE lower(email) = 'ada@example.com'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn expired_sign_ups_are_deleted_with_their_addresses(pool: PgPool) {
    let app = spawn(pool).await;
    let visitor = Visitor::open(&app).await;
    visitor
        .submit(&app, &[("channel", "email"), ("email", "late@example.com")])
        .await;
    let confirm = confirm_link(&app, 0).await;
    sqlx::query("UPDATE signups SET expires_at = now() - interval '1 second'")
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(app.store.expire_signups().await.unwrap(), 1);
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM signups")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let gone = visitor.http.post(&confirm).send().await.unwrap();
    assert_eq!(gone.status(), 410);
    assert_eq!(
        subscribed(&app, Channel::Email, "late@example.com").await,
        None
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_webhook_is_confirmed_through_its_email_and_its_secret_shown_once(pool: PgPool) {
    let app = spawn_with(
        pool,
        tocsin_page::signup::SignupConfig {
            channels: vec![Channel::Email, Channel::Webhook],
            webhook_policy: tocsin_core::network::UrlPolicy::from_list("127.0.0.1").unwrap(),
            ..Default::default()
        },
    )
    .await;
    let visitor = Visitor::open(&app).await;
    for (fields, says) in [
        (
            vec![
                ("channel", "webhook"),
                ("webhook_url", "http://127.0.0.1:9/hook"),
            ],
            "confirmed through an email address",
        ),
        (
            vec![
                ("channel", "email"),
                ("channel", "webhook"),
                ("email", "ops@example.com"),
                ("webhook_url", "https://10.1.2.3/hook"),
            ],
            "We cannot call",
        ),
    ] {
        let answer = visitor.submit(&app, &fields).await;
        assert_eq!(answer.status(), 400, "{fields:?}");
        let html = answer.text().await.unwrap();
        assert!(html.contains(says), "{fields:?}: {html}");
    }
    let done = visitor
        .submit(
            &app,
            &[
                ("channel", "email"),
                ("channel", "webhook"),
                ("email", "ops@example.com"),
                ("webhook_url", "http://127.0.0.1:9/hook"),
            ],
        )
        .await;
    assert_eq!(done.status(), 200);
    let confirm = confirm_link(&app, 0).await;
    let html = visitor
        .http
        .post(&confirm)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret = html
        .split("<code id=\"webhook-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the secret is shown");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (id, _) = app
        .store
        .subscriber_with_address(Channel::Email, "ops@example.com")
        .await
        .unwrap()
        .unwrap();
    let (subscriber, stored_secret) = app.store.subscriber_by_id(id).await.unwrap().unwrap();
    assert_eq!(
        subscriber.contacts.webhook_url.as_deref(),
        Some("http://127.0.0.1:9/hook")
    );
    assert_eq!(
        subscriber
            .preferences
            .channels
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [Channel::Email, Channel::Webhook]
    );
    // As a browser reads it: minijinja escapes the slashes of base64.
    assert_eq!(
        stored_secret.as_deref(),
        Some(secret.replace("&#x2f;", "/").as_str())
    );
    // Confirming again shows no secret: it was shown once.
    let again = visitor
        .http
        .post(&confirm)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!again.contains("whsec_"), "{again}");
}
