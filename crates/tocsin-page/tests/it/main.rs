//! The pages over real HTTP, in-process on `127.0.0.1:0`, against a fresh PostgreSQL
//! database per test (`#[sqlx::test]`).

use std::net::SocketAddr;

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_core::links::{LinkClaims, LinkSecret, Purpose};
use tocsin_core::{Channel, Contacts, SubscriberId};
use tocsin_page::PageConfig;
use tocsin_runtime::Shutdown;
use tocsin_store::Store;
use tocsin_testkit::pipeline::preferences;

mod preferences;
mod signup;
mod status;

pub(crate) const SECRET: &[u8] = b"a link secret of at least 32 bytes, for tests";

pub(crate) struct App {
    pub(crate) addr: SocketAddr,
    pub(crate) store: Store,
    shutdown: Shutdown,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub(crate) async fn spawn(pool: PgPool) -> App {
    spawn_with(pool, tocsin_page::signup::SignupConfig::default()).await
}

/// The pages with the given sign-up settings.
pub(crate) async fn spawn_with(pool: PgPool, signup: tocsin_page::signup::SignupConfig) -> App {
    // Every test reads what it just wrote: no shared snapshot.
    spawn_configured(pool, signup, std::time::Duration::ZERO).await
}

/// The pages with the given sign-up settings and status snapshot lifetime.
pub(crate) async fn spawn_configured(
    pool: PgPool,
    signup: tocsin_page::signup::SignupConfig,
    snapshot_ttl: std::time::Duration,
) -> App {
    tocsin_testkit::init_tracing();
    tocsin_runtime::tls::install_crypto_provider();
    let store = Store::from_pool(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let config = PageConfig {
        link_secret: LinkSecret::new(SECRET).unwrap(),
        company: "Acme Cloud".into(),
        public_url: format!("http://{addr}"),
        logo_url: None,
        accent: "#1d4ed8".into(),
        signup,
        snapshot_ttl,
    };
    tokio::spawn(tocsin_page::run(
        config,
        store.clone(),
        listener,
        shutdown.clone(),
    ));
    App {
        addr,
        store,
        shutdown,
    }
}

impl App {
    /// GETs `path` from the pages.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` and reads the body.
    pub(crate) async fn page(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// A subscriber on email and SMS.
    pub(crate) async fn subscriber(&self, external_id: &str, email: &str) -> SubscriberId {
        let upserted = self
            .store
            .upsert_subscribers(&[tocsin_store::SubscriberWrite {
                external_id: external_id.into(),
                preferences: preferences(&[Channel::Email, Channel::Sms]),
                contacts: Contacts {
                    email: Some(email.into()),
                    phone: Some("+14155550123".into()),
                    webhook_url: None,
                },
                candidate_webhook_secret: "whsec_unused".into(),
                consent: None,
            }])
            .await
            .unwrap();
        upserted[0].subscriber.id
    }

    fn link(&self, subscriber_id: SubscriberId, expires_in: time::Duration) -> String {
        let token = LinkSecret::new(SECRET).unwrap().sign(&LinkClaims {
            subscriber_id,
            purpose: Purpose::Unsubscribe,
            channel: Some(Channel::Email),
            expires_at: OffsetDateTime::now_utc() + expires_in,
        });
        format!("http://{}/unsubscribe/{token}", self.addr)
    }

    async fn opted_out(&self, external_id: &str) -> Vec<Channel> {
        let s = self.store.subscriber(external_id).await.unwrap().unwrap();
        s.opted_out.into_iter().collect()
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_one_click_post_unsubscribes_the_address_and_a_get_never_does(pool: PgPool) {
    let app = spawn(pool).await;
    let ada = app.subscriber("ada", "Ada@Example.com").await;
    let link = app.link(ada, time::Duration::days(365));
    let http = reqwest::Client::new();

    // A link scanner's GET changes nothing; the page asks to confirm.
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Stop service status emails from Acme Cloud to this address?")
            && html.contains("<html lang=\"en\">")
            && html.contains("<main>")
            && html.contains("<h1>Unsubscribe</h1>"),
        "{html}"
    );
    assert!(
        !html.contains("ada@example.com") && !html.contains("Ada@Example.com"),
        "no address shown"
    );
    assert!(app.opted_out("ada").await.is_empty());

    // RFC 8058: the mail provider POSTs List-Unsubscribe=One-Click to the header's URL.
    let one_click = http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), 200);
    assert_eq!(app.opted_out("ada").await, [Channel::Email], "email only");

    // By address: a second subscriber with the same address (any case) is opted out too,
    // and an operator's rewrite of the first does not undo it.
    app.subscriber("ada-work", "ada@example.com").await;
    assert_eq!(app.opted_out("ada-work").await, [Channel::Email]);
    app.subscriber("ada", "Ada@Example.com").await;
    assert_eq!(app.opted_out("ada").await, [Channel::Email]);

    // The form's "stop everything" takes the phone too.
    let all = http
        .post(&link)
        .form(&[("scope", "all")])
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
    assert!(all.text().await.unwrap().contains("You are unsubscribed"));
    assert_eq!(app.opted_out("ada").await, [Channel::Email, Channel::Sms]);

    let log: Vec<(String, String, String)> =
        sqlx::query_as("SELECT channel, action, source FROM consent_log ORDER BY id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        log,
        [
            (
                "email".into(),
                "opt_out".into(),
                "one_click_unsubscribe".into()
            ),
            ("email".into(), "opt_out".into(), "unsubscribe_page".into()),
            ("sms".into(), "opt_out".into(), "unsubscribe_page".into()),
        ]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn forged_and_expired_links_change_nothing(pool: PgPool) {
    let app = spawn(pool).await;
    let ada = app.subscriber("ada", "ada@example.com").await;
    let http = reqwest::Client::new();

    let forged = LinkSecret::new(&[9u8; 32]).unwrap().sign(&LinkClaims {
        subscriber_id: ada,
        purpose: Purpose::Unsubscribe,
        channel: None,
        expires_at: OffsetDateTime::now_utc() + time::Duration::days(1),
    });
    let forged = format!("http://{}/unsubscribe/{forged}", app.addr);
    let refused = http
        .post(&forged)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("This link does not work")
    );

    let expired = app.link(ada, time::Duration::seconds(-1));
    let gone = http
        .post(&expired)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    assert_eq!(http.get(&expired).send().await.unwrap().status(), 410);
    assert!(app.opted_out("ada").await.is_empty());

    // A subscriber deleted since: answered as done, nothing to change.
    let link = app.link(
        SubscriberId::from_uuid(uuid::Uuid::now_v7()),
        time::Duration::days(1),
    );
    let nobody = http
        .post(&link)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(nobody.status(), 200);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn requests_are_counted_by_route_pattern_never_by_token(pool: PgPool) {
    let metrics = tocsin_runtime::recorder::install();
    let app = spawn(pool).await;
    assert_eq!(app.get("/unsubscribe/not-a-token-xyz").await.status(), 404);
    assert_eq!(app.get("/").await.status(), 200);
    let rendered = metrics.render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("tocsin_http_requests_total{")
                && l.contains("route=\"/unsubscribe/{token}\"")
                && l.contains("status=\"404\"")),
        "{rendered}"
    );
    assert!(
        rendered.lines().any(
            |l| l.starts_with("tocsin_http_request_duration_seconds_count{")
                && l.contains("route=\"/\"")
        ),
        "{rendered}"
    );
    assert!(!rendered.contains("not-a-token-xyz"), "no token in a label");
}
