//! The SMS worker end to end: real PostgreSQL (a database per test), NATS (a prefix per
//! test), the real resolver, the local Twilio double, and our callback endpoint served on a
//! loopback port, so Twilio's signed status callbacks settle the ledger as in production.

use std::time::Duration;

use secrecy::SecretString;
use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_bus::{DeliveryJob, WorkQueue};
use tocsin_core::{Channel, Contacts, DeliveryKey, IncidentId, RetryPolicy};
use tocsin_delivery::{Handled, Worker, WorkerConfig};
use tocsin_local_providers::{Fault, FaultRule, TwilioServer};
use tocsin_runtime::Shutdown;
use tocsin_sms::{Callbacks, Sender, SmsCourier, Templates, TwilioClient, TwilioConfig};
use tocsin_store::{ClaimPolicy, TrailEntry};
use tocsin_testkit::pipeline::{Pipeline, opened, preferences};
use url::Url;

const PHONE: &str = "+14155550123";
const MAX_SEGMENTS: usize = 2;

struct Fixture {
    pipeline: Pipeline,
    twilio: TwilioServer,
    worker: Worker<SmsCourier>,
    queue: WorkQueue,
    /// The URL Twilio is given, without the delivery parameter.
    callback_url: Url,
    incident: IncidentId,
    key: String,
    /// Stops the callback server when the test ends.
    _stop: StopOnDrop,
}

struct StopOnDrop(Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

struct Options {
    /// The double's wait before each callback (`sent`, then the final one).
    callback_delay: Duration,
    /// The Twilio client's whole-request timeout.
    timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        // Long enough that the worker records its own outcome before the final callback.
        Options {
            callback_delay: Duration::from_millis(250),
            timeout: Duration::from_secs(5),
        }
    }
}

/// One subscriber with a phone number, one incident opened and fanned out by the resolver:
/// one SMS delivery job waiting for the worker.
async fn fixture(pool: PgPool, options: Options) -> Fixture {
    tocsin_runtime::tls::install_crypto_provider();
    let pipeline = Pipeline::start(pool).await;
    let twilio = TwilioServer::start(tocsin_local_providers::twilio::TwilioConfig {
        callback_delay: options.callback_delay,
        ..Default::default()
    })
    .await
    .unwrap();
    let auth_token = SecretString::from(twilio.auth_token().to_owned());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback_url = Url::parse(&format!(
        "http://{}/twilio/status",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let shutdown = Shutdown::new();
    let callbacks = Callbacks::new(
        pipeline.store.clone(),
        callback_url.clone(),
        auth_token.clone(),
    );
    tokio::spawn(tocsin_sms::callbacks::serve(
        listener,
        callbacks,
        shutdown.clone(),
    ));

    let mut config = TwilioConfig::new(
        twilio.account_sid(),
        auth_token.clone(),
        Sender::From("+15005550006".into()),
    );
    config.base_url = Url::parse(&twilio.base_url()).unwrap();
    config.status_callback = Some(callback_url.clone());
    config.timeout = options.timeout;
    // A short base, so a provider's Retry-After is what sets the first delay.
    let retry = RetryPolicy {
        base: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let courier = SmsCourier::new(
        TwilioClient::new(config).unwrap(),
        Templates::defaults(),
        MAX_SEGMENTS,
        retry,
    )
    .recording_opt_outs(pipeline.store.clone());
    let worker = Worker::new(
        pipeline.store.clone(),
        pipeline.bus.clone(),
        courier,
        WorkerConfig {
            lease: Duration::from_secs(5),
            ..WorkerConfig::default()
        },
    );
    let queue = worker.queue(tocsin_core::Lane::Small).await.unwrap();

    let (subscriber, _) = pipeline
        .subscribe(
            "alice",
            Contacts {
                phone: Some(PHONE.into()),
                ..Contacts::default()
            },
            preferences(&[Channel::Sms]),
        )
        .await;
    let mut change = opened();
    // Far more than two segments, so the template must shorten it.
    change.message =
        "Some API requests are failing with errors and timeouts in every region. ".repeat(8);
    let event = pipeline.publish("open-1", None, change).await;
    pipeline.resolve_all().await;
    let key = DeliveryKey::derive(event.event_id, subscriber.id, Channel::Sms).to_string();
    assert_eq!(
        pipeline.delivery_state(&key).await.as_deref(),
        Some("pending")
    );

    Fixture {
        pipeline,
        twilio,
        worker,
        queue,
        callback_url,
        incident: event.incident_id,
        key,
        _stop: StopOnDrop(shutdown),
    }
}

impl Fixture {
    /// Fetches what the queue offers now (one job at a time) and has the worker handle it.
    async fn process(&self, wait: Duration) -> Vec<Handled> {
        let works = self.queue.fetch(1, wait).await.unwrap();
        if works.is_empty() {
            return Vec::new();
        }
        self.worker.process(works).await.unwrap()
    }

    /// Waits until the unknown delivery is due to be reconciled, lets the dispatcher publish
    /// it, and processes it.
    async fn after_reconcile_delay(&self) -> Vec<Handled> {
        let due = self
            .next_attempt_at()
            .await
            .expect("a reconciliation is scheduled");
        let wait = due - OffsetDateTime::now_utc();
        assert!(
            wait > time::Duration::seconds(5),
            "not asked too soon: {wait}"
        );
        tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
        assert_eq!(self.worker.dispatch_due().await.unwrap(), 1);
        self.process(Duration::from_secs(3)).await
    }

    /// Puts the delivery's job on the stream again, as a redelivery would.
    async fn redeliver(&self, job: &DeliveryJob, tag: &str) {
        for published in self
            .pipeline
            .bus
            .republish_jobs(std::slice::from_ref(job), tag)
            .await
        {
            published.unwrap();
        }
    }

    async fn state(&self) -> String {
        self.pipeline.delivery_state(&self.key).await.unwrap()
    }

    async fn provider_id(&self) -> Option<String> {
        sqlx::query_scalar("SELECT provider_id FROM deliveries WHERE delivery_key = $1")
            .bind(&self.key)
            .fetch_one(self.pipeline.store.pool())
            .await
            .unwrap()
    }

    async fn next_attempt_at(&self) -> Option<OffsetDateTime> {
        sqlx::query_scalar("SELECT next_attempt_at FROM deliveries WHERE delivery_key = $1")
            .bind(&self.key)
            .fetch_one(self.pipeline.store.pool())
            .await
            .unwrap()
    }

    /// This delivery's trail entries.
    async fn trail(&self) -> Vec<TrailEntry> {
        self.pipeline
            .store
            .delivery_trail(self.incident, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|entry| entry.delivery_key.as_deref() == Some(self.key.as_str()))
            .collect()
    }

    /// Trail entries written by a provider callback.
    async fn callback_entries(&self) -> Vec<TrailEntry> {
        self.trail()
            .await
            .into_iter()
            .filter(|entry| entry.data["source"] == "provider callback")
            .collect()
    }

    /// Waits (up to 5 s) until a provider callback has been recorded for the delivery.
    async fn wait_for_callback_entry(&self) -> TrailEntry {
        for _ in 0..100 {
            if let Some(entry) = self.callback_entries().await.pop() {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no status callback was recorded; the double sent {:?}",
            self.twilio.callbacks()
        );
    }

    /// Posts a status callback to our endpoint, signed with `token`.
    async fn post_callback(
        &self,
        delivery_key: &str,
        params: &[(&str, &str)],
        token: &str,
    ) -> reqwest::StatusCode {
        let mut url = self.callback_url.clone();
        url.query_pairs_mut().append_pair("delivery", delivery_key);
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = tocsin_local_providers::twilio::signature(token, url.as_str(), &params);
        reqwest::Client::new()
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await
            .unwrap()
            .status()
    }
}

impl Fixture {
    /// Posts a text from `from` to our incoming-message webhook, signed with `token` as
    /// Twilio signs it (by the double's own signing code).
    async fn post_inbound(&self, from: &str, body: &str, token: &str) -> reqwest::Response {
        let mut url = self.callback_url.clone();
        url.set_path(tocsin_sms::callbacks::INBOUND_PATH);
        let params: Vec<(String, String)> = [
            ("MessageSid", "SM00000000000000000000000000000001"),
            ("AccountSid", self.twilio.account_sid()),
            ("From", from),
            ("To", "+15005550006"),
            ("Body", body),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let signature = tocsin_local_providers::twilio::signature(token, url.as_str(), &params);
        reqwest::Client::new()
            .post(url)
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await
            .unwrap()
    }

    async fn opted_out(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT opted_out FROM subscriber_contacts WHERE phone = $1")
            .bind(PHONE)
            .fetch_one(self.pipeline.store.pool())
            .await
            .unwrap()
    }

    async fn consent_log(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT action, source FROM consent_log ORDER BY id")
            .fetch_all(self.pipeline.store.pool())
            .await
            .unwrap()
    }
}

fn attempted(key: &str, outcome: &'static str, state: &'static str) -> Handled {
    Handled::Attempted {
        key: key.to_owned(),
        outcome,
        state,
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_sms_is_sent_within_its_budget_and_its_callback_is_recorded(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;

    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "delivered", "delivered")]);

    let sms = f.twilio.messages();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, PHONE);
    assert_eq!(sms[0].from.as_deref(), Some("+15005550006"));
    assert!(
        tocsin_sms::segments::segments(&sms[0].body) <= MAX_SEGMENTS,
        "within the budget: {:?}",
        sms[0].body
    );
    assert!(
        sms[0]
            .body
            .starts_with("[Tocsin] Partial outage: api. Some API requests"),
        "{}",
        sms[0].body
    );
    assert!(
        sms[0].body.ends_with("Reply STOP to opt out."),
        "the frame survives shortening: {}",
        sms[0].body
    );
    let expected_callback = format!("{}?delivery={}", f.callback_url, f.key);
    assert_eq!(
        sms[0].status_callback.as_deref(),
        Some(expected_callback.as_str())
    );

    // The worker's own record: accepted by Twilio, with Twilio's sid.
    assert_eq!(f.state().await, "delivered");
    assert_eq!(f.provider_id().await.as_deref(), Some(sms[0].sid.as_str()));
    assert!(
        f.callback_entries().await.is_empty(),
        "the callback has not come yet"
    );

    // Then the handset's confirmation, signed by the double and verified by our endpoint.
    let entry = f.wait_for_callback_entry().await;
    assert_eq!(entry.kind, "delivered");
    assert_eq!(entry.data["status"], "delivered");
    assert_eq!(entry.data["provider_id"], sms[0].sid.as_str());
    assert_eq!(f.state().await, "delivered");
    let answered: Vec<_> = f
        .twilio
        .callbacks()
        .iter()
        .map(|c| (c.status.clone(), c.response_status))
        .collect();
    assert_eq!(
        answered,
        vec![("sent".into(), Some(200)), ("delivered".into(), Some(200))]
    );
    assert_eq!(f.twilio.summary().received, 1);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_rate_limit_is_retried_after_its_retry_after_and_sent_once(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    f.twilio.faults().push(
        FaultRule::for_target(
            PHONE,
            Fault::Status {
                status: 429,
                code: Some(20429),
                retry_after_secs: Some(1),
            },
        )
        .times(1),
    );

    let works = f.queue.fetch(1, Duration::from_secs(2)).await.unwrap();
    let job = DeliveryJob::decode(works[0].payload()).unwrap();
    let before = OffsetDateTime::now_utc();
    let handled = f.worker.process(works).await.unwrap();
    assert_eq!(handled, vec![attempted(&f.key, "transient", "retrying")]);
    assert_eq!(f.state().await, "retrying");
    let next = f.next_attempt_at().await.expect("a retry is scheduled");
    assert!(
        next >= before + Duration::from_secs(1),
        "Retry-After is a floor: {next} vs {before}"
    );
    assert!(
        next <= before + Duration::from_secs(3),
        "but not much more: {next} vs {before}"
    );

    // The same job offered again before then is parked again, not sent.
    f.redeliver(&job, "early").await;
    let handled = f.process(Duration::from_secs(1)).await;
    assert_eq!(handled, vec![Handled::Parked { key: f.key.clone() }]);
    assert_eq!(f.twilio.summary().received, 0);
    // The dispatcher leaves it parked until its time, then publishes it once.
    assert_eq!(f.worker.dispatch_due().await.unwrap(), 0);
    let until = next - OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::try_from(until).unwrap_or_default()).await;
    assert_eq!(f.worker.dispatch_due().await.unwrap(), 1);
    assert_eq!(f.worker.dispatch_due().await.unwrap(), 0);
    let mut handled = f.process(Duration::from_secs(3)).await;
    handled.extend(f.process(Duration::from_millis(500)).await);
    assert_eq!(handled, vec![attempted(&f.key, "delivered", "delivered")]);
    assert_eq!(f.state().await, "delivered");
    let summary = f.twilio.summary();
    assert_eq!(
        (summary.received, summary.rejected),
        (1, 1),
        "one SMS, after one refusal"
    );
    // The worker's own attempts (Twilio's status callback adds its word to the trail too,
    // whenever it arrives).
    let kinds: Vec<String> = f
        .trail()
        .await
        .into_iter()
        .filter(|e| e.data["source"] != "provider callback")
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.ends_with(&["retrying".into(), "delivered".into()]),
        "{kinds:?}"
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_invalid_number_fails_at_once(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    f.twilio.faults().push(FaultRule::for_target(
        PHONE,
        Fault::Status {
            status: 400,
            code: Some(21211),
            retry_after_secs: None,
        },
    ));

    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "permanent", "failed")]);
    assert_eq!(f.state().await, "failed");
    assert_eq!(f.next_attempt_at().await, None);
    // Acknowledged: nothing comes back to try again.
    assert!(f.process(Duration::from_millis(500)).await.is_empty());
    let summary = f.twilio.summary();
    assert_eq!((summary.received, summary.rejected), (0, 1));
    let last = f.trail().await.pop().unwrap();
    assert_eq!(last.kind, "failed");
    assert!(
        last.data["reason"].as_str().unwrap().contains("21211"),
        "{}",
        last.data
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_lost_reply_is_never_resent_and_the_callback_settles_it(pool: PgPool) {
    // The reply is lost and the client gives up at 300 ms; the double's callbacks come later.
    let f = fixture(
        pool,
        Options {
            callback_delay: Duration::from_millis(600),
            timeout: Duration::from_millis(300),
        },
    )
    .await;
    f.twilio
        .faults()
        .push(FaultRule::for_target(PHONE, Fault::Drop).times(1));

    let works = f.queue.fetch(1, Duration::from_secs(2)).await.unwrap();
    let job = DeliveryJob::decode(works[0].payload()).unwrap();
    let handled = f.worker.process(works).await.unwrap();
    assert_eq!(handled, vec![attempted(&f.key, "unknown", "unknown")]);
    assert_eq!(f.state().await, "unknown");
    assert_eq!(f.provider_id().await, None, "we never saw the sid");

    // Processing again sends nothing: the job was answered, and a redelivered copy before the
    // time to ask Twilio is parked, not sent.
    assert!(f.process(Duration::from_millis(300)).await.is_empty());
    f.redeliver(&job, "again").await;
    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![Handled::Parked { key: f.key.clone() }]);
    assert_eq!(f.twilio.messages().len(), 1, "still one SMS at Twilio");

    // Twilio had it after all: the callback names the delivery and settles it.
    let entry = f.wait_for_callback_entry().await;
    assert_eq!(entry.kind, "delivered");
    assert_eq!(f.state().await, "delivered");
    let sid = f.twilio.messages()[0].sid.clone();
    assert_eq!(
        f.provider_id().await,
        Some(sid),
        "the sid comes from the callback"
    );
    assert_eq!(f.twilio.summary().received, 1);
}

/// Another worker claimed the delivery with a short lease and was lost; whether its send had
/// begun decides what the next holder may do.
async fn lost_worker(f: &Fixture, send_begun: bool) {
    let policy = ClaimPolicy {
        channel: Channel::Sms,
        lease: Duration::from_millis(200),
        supersede_stale: true,
        resend_unknown: false,
    };
    let store = &f.pipeline.store;
    let (claims, _) = store
        .claim_deliveries(std::slice::from_ref(&f.key), "lost-worker", policy)
        .await
        .unwrap();
    assert!(
        matches!(claims[0], tocsin_store::ClaimResult::Claimed(_)),
        "{claims:?}"
    );
    if send_begun {
        let started = store.start_sends("lost-worker", &[&f.key]).await.unwrap();
        assert_eq!(started, vec![f.key.clone()]);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
}

/// A worker lost after its send began: the next holder asks Twilio before anything else,
/// and sends only because Twilio has no such message.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_send_cut_short_by_a_lost_worker_is_sent_only_once_twilio_says_it_has_none(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    lost_worker(&f, true).await;

    // Too soon to ask Twilio: the lost request might still be in progress there.
    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "unknown", "unknown")]);
    assert!(f.twilio.messages().is_empty(), "nothing sent blindly");
    let mut handled = f.after_reconcile_delay().await;
    if handled == vec![attempted(&f.key, "unknown", "unknown")] {
        // The retry schedule came round before the time to ask did; once more.
        handled = f.after_reconcile_delay().await;
    }
    assert_eq!(handled, vec![attempted(&f.key, "delivered", "delivered")]);
    assert_eq!(f.twilio.summary().received, 1, "one text in all");
    let trail = f.trail().await;
    assert!(
        trail.iter().any(|e| e.data["after_lost_attempt"] == true),
        "the trail says an attempt was lost: {:?}",
        trail.iter().map(|e| &e.data).collect::<Vec<_>>()
    );
}

/// The reply is lost after Twilio created the message, and its callbacks are slow: once it
/// is time to ask, the worker finds the message in Twilio's list and settles the delivery
/// from it, sending nothing again.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_unknown_sms_twilio_has_is_settled_by_asking_without_a_second_text(pool: PgPool) {
    let f = fixture(
        pool,
        Options {
            callback_delay: Duration::from_secs(60),
            timeout: Duration::from_millis(300),
        },
    )
    .await;
    f.twilio
        .faults()
        .push(FaultRule::for_target(PHONE, Fault::Drop).times(1));
    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "unknown", "unknown")]);

    let handled = f.after_reconcile_delay().await;
    assert_eq!(handled, vec![attempted(&f.key, "delivered", "delivered")]);
    assert_eq!(f.twilio.messages().len(), 1, "one text at Twilio");
    let sid = f.twilio.messages()[0].sid.clone();
    assert_eq!(
        f.provider_id().await,
        Some(sid),
        "the sid comes from Twilio's list"
    );
}

/// The request hangs at Twilio, which never creates the message: once it is time to ask,
/// the worker finds nothing in Twilio's list, so nothing went out, and sends it, once.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_unknown_sms_twilio_never_got_is_sent_once_it_is_known_to_be_missing(pool: PgPool) {
    let f = fixture(
        pool,
        Options {
            timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    f.twilio
        .faults()
        .push(FaultRule::for_target(PHONE, Fault::Hang).times(1));
    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "unknown", "unknown")]);
    assert!(f.twilio.messages().iter().all(|m| !m.accepted));

    let handled = f.after_reconcile_delay().await;
    assert_eq!(handled, vec![attempted(&f.key, "delivered", "delivered")]);
    let summary = f.twilio.summary();
    assert_eq!(
        (summary.unique, summary.duplicates),
        (1, 0),
        "one text created"
    );
}

/// A worker lost after claiming a batch but before its send began (waiting for the rate
/// limiter, say) sent nothing: the next holder sends it, once, and nothing is unknown.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_claim_lost_before_its_send_began_is_sent_by_the_next_worker(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    lost_worker(&f, false).await;

    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "delivered", "delivered")]);
    assert_eq!(f.twilio.summary().received, 1);
    let attempts: (i32, i32) =
        sqlx::query_as("SELECT attempts, unknowns FROM deliveries WHERE delivery_key = $1")
            .bind(&f.key)
            .fetch_one(f.pipeline.store.pool())
            .await
            .unwrap();
    assert_eq!(attempts, (1, 0), "the lost claim's attempt never happened");
}

/// Twilio's `delivered` can come before the worker has recorded its attempt (a slow
/// database, a lost reply): the provider's word settles the delivery at once, and the
/// worker's own record, arriving later, changes nothing.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_callback_while_the_attempt_is_still_sending_settles_it(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    lost_worker(&f, true).await;
    // The lease lapsed, yet the row is still `sending`: nobody took it over.
    assert_eq!(f.state().await, "sending");

    let params = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
        ("AccountSid", f.twilio.account_sid()),
    ];
    let token = f.twilio.auth_token().to_owned();
    assert_eq!(
        f.post_callback(&f.key, &params, &token).await,
        reqwest::StatusCode::OK
    );
    assert_eq!(f.state().await, "delivered");
    assert_eq!(
        f.provider_id().await.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );

    // The lost worker's record (its reply timed out: unknown) comes too late to matter.
    let (incident_id, event_id): (sqlx::types::Uuid, sqlx::types::Uuid) =
        sqlx::query_as("SELECT incident_id, event_id FROM deliveries WHERE delivery_key = $1")
            .bind(&f.key)
            .fetch_one(f.pipeline.store.pool())
            .await
            .unwrap();
    let late = tocsin_store::AttemptOutcome {
        delivery_key: f.key.clone(),
        incident_id: incident_id.into(),
        event_id: event_id.into(),
        state: "unknown",
        next_attempt_at: None,
        parked: false,
        unknown: true,
        not_attempted: false,
        provider_id: None,
        error: Some("timed out".into()),
        detail: serde_json::json!({ "outcome": "unknown" }),
    };
    let recorded = f
        .pipeline
        .store
        .record_attempts("lost-worker", &[late])
        .await
        .unwrap();
    assert_eq!(recorded.recorded, 0);
    assert_eq!(f.state().await, "delivered");
    // And its job, taken now, finds it finished: nothing is sent.
    assert_eq!(
        f.process(Duration::from_secs(2)).await,
        vec![Handled::AlreadyDone {
            key: f.key.clone(),
            state: "delivered".into()
        }]
    );
    assert!(f.twilio.messages().is_empty());
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn an_undelivered_callback_fails_the_delivery(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    f.twilio.faults().push(FaultRule::for_target(
        PHONE,
        Fault::Undelivered {
            error_code: Some(30003),
        },
    ));

    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(
        handled,
        vec![attempted(&f.key, "delivered", "delivered")],
        "accepted first"
    );
    assert_eq!(f.state().await, "delivered");

    let entry = f.wait_for_callback_entry().await;
    assert_eq!(entry.kind, "failed");
    assert_eq!(entry.data["status"], "undelivered");
    assert_eq!(entry.data["error_code"], 30003);
    assert_eq!(f.state().await, "failed");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn forged_callbacks_are_refused_and_change_nothing(pool: PgPool) {
    // The double's own callbacks come too late to matter here.
    let f = fixture(
        pool,
        Options {
            callback_delay: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        f.process(Duration::from_secs(2)).await,
        vec![attempted(&f.key, "delivered", "delivered")]
    );
    let sid = f.twilio.messages()[0].sid.clone();
    let token = f.twilio.auth_token().to_owned();
    let undelivered = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", f.twilio.account_sid()),
    ];

    // Signed with the wrong token, or unsigned.
    let status = f.post_callback(&f.key, &undelivered, "not-the-token").await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    let unsigned = reqwest::Client::new()
        .post(format!("{}?delivery={}", f.callback_url, f.key))
        .form(&undelivered)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), reqwest::StatusCode::FORBIDDEN);
    // A signature for another URL: the delivery key was swapped after signing.
    let mut other = f.callback_url.clone();
    other
        .query_pairs_mut()
        .append_pair("delivery", "dlv_someone_else");
    let params: Vec<(String, String)> = undelivered
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let swapped = reqwest::Client::new()
        .post(format!("{}?delivery={}", f.callback_url, f.key))
        .header(
            "X-Twilio-Signature",
            tocsin_local_providers::twilio::signature(&token, other.as_str(), &params),
        )
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status(), reqwest::StatusCode::FORBIDDEN);

    assert_eq!(f.state().await, "delivered", "nothing recorded");
    assert!(f.callback_entries().await.is_empty());

    // A genuine callback for a delivery we do not know is acknowledged, and changes nothing.
    assert_eq!(
        f.post_callback("dlv_nobody", &undelivered[..2], &token)
            .await,
        reqwest::StatusCode::OK
    );
    assert_eq!(f.state().await, "delivered");
    // The same callback, signed properly, is what changes the ledger.
    assert_eq!(
        f.post_callback(&f.key, &undelivered, &token).await,
        reqwest::StatusCode::OK
    );
    assert_eq!(f.state().await, "failed");
    assert_eq!(f.callback_entries().await.len(), 1);

    let health = reqwest::get(f.callback_url.join("/healthz").unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_stop_reply_opts_the_number_out_until_start_and_nothing_is_texted_meanwhile(
    pool: PgPool,
) {
    let f = fixture(pool, Options::default()).await;
    let token = f.twilio.auth_token().to_owned();

    // Forged or unsigned: refused, nothing recorded.
    let forged = f.post_inbound(PHONE, "STOP", "not-the-token").await;
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(f.opted_out().await.is_empty());

    let stop = f.post_inbound(PHONE, " Stop ", &token).await;
    assert_eq!(stop.status(), reqwest::StatusCode::OK);
    let twiml = stop.text().await.unwrap();
    assert!(
        twiml.contains("<Response></Response>"),
        "Twilio confirms STOP itself: {twiml}"
    );
    assert_eq!(f.opted_out().await, ["sms"]);

    // The pending text is skipped with the reason, and Twilio is never asked.
    let handled = f.process(Duration::from_secs(2)).await;
    assert!(
        matches!(&handled[..], [Handled::Skipped { key, reason }]
            if *key == f.key && reason.contains("opted out")),
        "{handled:?}"
    );
    assert_eq!(f.state().await, "skipped");
    assert!(f.twilio.messages().is_empty());

    // An operator's upsert does not undo the reader's choice.
    f.pipeline
        .subscribe(
            "alice",
            Contacts {
                phone: Some(PHONE.into()),
                ..Contacts::default()
            },
            preferences(&[Channel::Sms]),
        )
        .await;
    assert_eq!(f.opted_out().await, ["sms"]);
    // Nor is the number planned anything new.
    let later = f.pipeline.publish("open-2", None, opened()).await;
    f.pipeline.resolve_all().await;
    let subscriber = f.pipeline.store.subscriber("alice").await.unwrap().unwrap();
    let later_key = DeliveryKey::derive(later.event_id, subscriber.id, Channel::Sms).to_string();
    assert_eq!(f.pipeline.delivery_state(&later_key).await, None);

    // Any other text gets one line saying what the number is for, and changes nothing.
    let chatter = f.post_inbound(PHONE, "what is this?", &token).await;
    let answer = chatter.text().await.unwrap();
    assert!(
        answer.contains("<Message>") && answer.contains("Reply STOP"),
        "{answer}"
    );
    assert_eq!(f.opted_out().await, ["sms"]);

    let start = f.post_inbound(PHONE, "START", &token).await;
    assert_eq!(start.status(), reqwest::StatusCode::OK);
    assert!(f.opted_out().await.is_empty());
    assert_eq!(
        f.consent_log().await,
        [
            ("opt_out".to_owned(), "sms_stop".to_owned()),
            ("opt_in".to_owned(), "sms_start".to_owned())
        ]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_number_twilio_refuses_as_unsubscribed_is_recorded_as_opted_out(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    f.twilio.faults().push(FaultRule::for_target(
        PHONE,
        Fault::Status {
            status: 400,
            code: Some(21610),
            retry_after_secs: None,
        },
    ));
    let handled = f.process(Duration::from_secs(2)).await;
    assert_eq!(handled, vec![attempted(&f.key, "gone", "failed")]);
    assert_eq!(f.opted_out().await, ["sms"]);
    assert_eq!(
        f.consent_log().await,
        [("opt_out".to_owned(), "carrier_21610".to_owned())]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_sign_up_code_is_texted_once_without_a_status_callback(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    let notice = tocsin_core::account::AccountNotice::PhoneCode {
        company: "Acme".into(),
        code: "042917".into(),
        expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(30),
    };
    sqlx::query("INSERT INTO account_messages (channel, address, content) VALUES ('sms', $1, $2)")
        .bind("+14155550199")
        .bind(sqlx::types::Json(&notice))
        .execute(f.pipeline.store.pool())
        .await
        .unwrap();
    let sender = f.worker.account_sender();
    assert_eq!(sender.tick().await.unwrap(), 1);
    assert_eq!(sender.tick().await.unwrap(), 0, "texted once");
    let texts: Vec<_> = f
        .twilio
        .messages()
        .into_iter()
        .filter(|m| m.to == "+14155550199")
        .collect();
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0]
            .body
            .starts_with("Acme status: your code is 042917."),
        "{}",
        texts[0].body
    );
    assert_eq!(texts[0].status_callback, None, "no delivery tracks it");
    let (state,): (String,) = sqlx::query_as("SELECT state FROM account_messages")
        .fetch_one(f.pipeline.store.pool())
        .await
        .unwrap();
    assert_eq!(state, "sent");
}

/// A signed callback PostgreSQL cannot store (a NUL character) is malformed: 400, which
/// Twilio does not retry, never 503, which it would retry for good.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_signed_callback_with_a_nul_character_is_a_bad_request(pool: PgPool) {
    let f = fixture(pool, Options::default()).await;
    let token = f.twilio.auth_token().to_owned();
    let in_body = [
        ("MessageSid", "SM0123456789abcdef\u{0}0123456789abcde"),
        ("MessageStatus", "delivered"),
        ("AccountSid", f.twilio.account_sid()),
    ];
    assert_eq!(
        f.post_callback(&f.key, &in_body, &token).await,
        reqwest::StatusCode::BAD_REQUEST
    );
    let fine = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
        ("AccountSid", f.twilio.account_sid()),
    ];
    assert_eq!(
        f.post_callback("dlv_\u{0}", &fine, &token).await,
        reqwest::StatusCode::BAD_REQUEST
    );
}
