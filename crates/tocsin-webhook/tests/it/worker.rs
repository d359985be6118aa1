//! The webhook worker end to end: real PostgreSQL, NATS and resolver (through the testkit's
//! pipeline), the `tocsin-delivery` worker with [`WebhookCourier`], and the local Standard
//! Webhooks receiver verifying every request with the subscriber's secret.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_bus::{DeliveryJob, WorkQueue};
use tocsin_core::Delivery;
use tocsin_core::network::UrlPolicy;
use tocsin_core::{
    Channel, Contacts, DeliveryKey, EventKind, RecordedEvent, RetryPolicy, Subscriber,
};
use tocsin_delivery::{Handled, Worker, WorkerConfig};
use tocsin_local_providers::{Fault, FaultRule, WebhookReceiver, WebhookReceiverConfig};
use tocsin_testkit::pipeline::{Pipeline, follow_up, opened, preferences};
use tocsin_webhook::{ClientConfig, WebhookCourier};

/// Retries fast enough for a test: 100 ms, 200 ms, … with jitter.
pub(crate) fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        max_attempts,
        max_age: Duration::from_secs(3600),
    }
}

pub(crate) fn loopback() -> UrlPolicy {
    UrlPolicy::strict().allow("127.0.0.1").unwrap()
}

pub(crate) struct Harness {
    pub(crate) pipeline: Pipeline,
    pub(crate) receiver: WebhookReceiver,
    pub(crate) worker: Worker<WebhookCourier>,
    pub(crate) queue: WorkQueue,
}

impl Harness {
    pub(crate) async fn start(pool: PgPool, policy: UrlPolicy, retry: RetryPolicy) -> Harness {
        let config = WorkerConfig {
            batch: 16,
            lease: Duration::from_secs(10),
            ..WorkerConfig::default()
        };
        Harness::start_configured(pool, policy, retry, config).await
    }

    pub(crate) async fn start_configured(
        pool: PgPool,
        policy: UrlPolicy,
        retry: RetryPolicy,
        config: WorkerConfig,
    ) -> Harness {
        tocsin_runtime::tls::install_crypto_provider();
        let pipeline = Pipeline::start(pool).await;
        let receiver = WebhookReceiver::start(WebhookReceiverConfig::default())
            .await
            .unwrap();
        let courier = WebhookCourier::new(
            ClientConfig {
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(3),
                policy,
                ..ClientConfig::default()
            },
            retry,
        )
        .unwrap();
        let worker = Worker::new(
            pipeline.store.clone(),
            pipeline.bus.clone(),
            courier,
            config,
        );
        let queue = worker.queue(tocsin_core::Lane::Small).await.unwrap();
        Harness {
            pipeline,
            receiver,
            worker,
            queue,
        }
    }

    /// A webhook subscriber at the receiver's endpoint `name`, registered there with the
    /// secret Tocsin generated for them.
    pub(crate) async fn subscribe(&self, external_id: &str, name: &str) -> Subscriber {
        self.subscribe_at(external_id, name, self.receiver.url_for(name))
            .await
    }

    /// A webhook subscriber whose stored URL is `url` (written straight to the store, so
    /// only the worker's guard judges it); the receiver knows their secret as `name`.
    async fn subscribe_at(&self, external_id: &str, name: &str, url: String) -> Subscriber {
        let contacts = Contacts {
            email: None,
            phone: None,
            webhook_url: Some(url),
        };
        let (subscriber, created) = self
            .pipeline
            .subscribe(external_id, contacts, preferences(&[Channel::Webhook]))
            .await;
        // A new subscriber's secret is shown once; a changed URL keeps the stored one.
        let secret = match created {
            Some(secret) => secret,
            None => self
                .pipeline
                .store
                .subscriber_by_id(subscriber.id)
                .await
                .unwrap()
                .unwrap()
                .1
                .unwrap(),
        };
        self.receiver.register(name, &secret).unwrap();
        subscriber
    }

    /// Opens an incident and fans it out.
    pub(crate) async fn open(&self) -> RecordedEvent {
        let event = self.pipeline.publish("open", None, opened()).await;
        self.pipeline.resolve_all().await;
        event
    }

    async fn follow_up(&self, key: &str, opened: &RecordedEvent, kind: EventKind) -> RecordedEvent {
        let change = follow_up(kind, &format!("{} at {key}", kind.as_str()));
        self.pipeline
            .publish(key, Some(opened.incident_id), change)
            .await
    }

    /// One round: the dispatcher's step (parked deliveries come due go back on the queue),
    /// then whatever the queue has within `wait`, processed as one batch.
    pub(crate) async fn process_once(&self, wait: Duration) -> Vec<Handled> {
        self.worker.dispatch_due().await.unwrap();
        let works = self.queue.fetch(16, wait).await.unwrap();
        if works.is_empty() {
            return Vec::new();
        }
        self.worker.process(works).await.unwrap()
    }

    /// Processes jobs until every delivery in `keys` is in a final state.
    pub(crate) async fn drain(&self, keys: &[&str]) -> Vec<Handled> {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut handled = Vec::new();
        loop {
            let mut states = Vec::new();
            for key in keys {
                states.push(self.pipeline.delivery_state(key).await);
            }
            let finished = states.iter().all(|state| {
                state
                    .as_deref()
                    .is_some_and(|s| tocsin_store::ledger::FINAL_STATES.contains(&s))
            });
            if finished {
                return handled;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries not finished: {states:?}"
            );
            handled.extend(self.process_once(Duration::from_millis(200)).await);
        }
    }

    /// The ledger row's state, last error and next attempt.
    async fn ledger(&self, key: &str) -> (String, Option<String>, Option<OffsetDateTime>) {
        sqlx::query_as(
            "SELECT state, last_error, next_attempt_at FROM deliveries WHERE delivery_key = $1",
        )
        .bind(key)
        .fetch_one(self.pipeline.store.pool())
        .await
        .unwrap()
    }

    /// Trail entries of one delivery: (kind, attempt).
    async fn attempts(&self, opened: &RecordedEvent, key: &str) -> Vec<(String, i64)> {
        self.pipeline
            .store
            .delivery_trail(opened.incident_id, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|entry| entry.delivery_key.as_deref() == Some(key))
            .map(|entry| (entry.kind, entry.data["attempt"].as_i64().unwrap_or(-1)))
            .collect()
    }
}

pub(crate) fn key(event: &RecordedEvent, subscriber: &Subscriber) -> String {
    DeliveryKey::derive(event.event_id, subscriber.id, Channel::Webhook)
        .as_str()
        .to_owned()
}

fn job_for(event: &RecordedEvent, subscriber: &Subscriber) -> DeliveryJob {
    DeliveryJob::from(&Delivery {
        delivery_key: key(event, subscriber),
        incident_id: event.incident_id,
        event_id: event.event_id,
        event_version: event.version,
        subscriber_id: subscriber.id,
        channel: Channel::Webhook,
        send_after: None,
        lane: tocsin_core::Lane::Small,
    })
}

fn status(status: u16, retry_after_secs: Option<u64>) -> Fault {
    Fault::Status {
        status,
        code: None,
        retry_after_secs,
    }
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn webhooks_arrive_signed_once_each_and_in_order(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    let opened = h.open().await;
    let first = key(&opened, &subscriber);

    h.drain(&[&first]).await;

    assert_eq!(
        h.pipeline.delivery_state(&first).await.as_deref(),
        Some("delivered")
    );
    let received = h.receiver.deliveries();
    assert_eq!(received.len(), 1);
    let hook = &received[0];
    assert!(hook.verified, "{:?}", hook.verification_error);
    assert!(hook.accepted);
    assert_eq!(hook.webhook_id.as_deref(), Some(first.as_str()));
    assert_eq!(hook.body["type"], "incident.opened");
    assert_eq!(hook.body["data"]["delivery_id"], first.as_str());
    assert_eq!(
        hook.body["data"]["incident"]["id"],
        opened.incident_id.to_string()
    );
    assert_eq!(hook.body["data"]["event"]["version"], 1);
    // The body's timestamp is the event's, not the attempt's: resends are identical.
    let stamped = OffsetDateTime::parse(
        hook.body["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        stamped.unix_timestamp(),
        opened.recorded_at.unix_timestamp()
    );

    // Two more events, fanned out together: the worker sends them in version order even
    // when both jobs arrive in one batch.
    let updated = h.follow_up("update", &opened, EventKind::Updated).await;
    let resolved = h.follow_up("resolve", &opened, EventKind::Resolved).await;
    h.pipeline.resolve_all().await;
    let (second, third) = (key(&updated, &subscriber), key(&resolved, &subscriber));
    h.drain(&[&second, &third]).await;

    let received = h.receiver.deliveries();
    let versions: Vec<u64> = received
        .iter()
        .map(|r| r.body["data"]["event"]["version"].as_u64().unwrap())
        .collect();
    let types: Vec<&str> = received
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(
        types,
        ["incident.opened", "incident.updated", "incident.resolved"]
    );
    assert!(received.iter().all(|r| r.verified && r.accepted));
    let summary = h.receiver.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (3, 3, 0)
    );
    for key in [&second, &third] {
        assert_eq!(
            h.pipeline.delivery_state(key).await.as_deref(),
            Some("delivered")
        );
    }
}

/// One batch holding two messages to the same subscriber (two incidents at once) sends
/// both: the subscriber's details serve every job addressed to them.
/// Subscribers sharing one endpoint get at most the per-endpoint bound of sends in flight
/// there, as many more wait their turn, and the rest are put off (parked, their attempt
/// given back) rather than held; another endpoint's message goes out meanwhile. Each
/// message still arrives once.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn subscribers_sharing_a_slow_endpoint_get_a_bounded_share_of_the_sends(pool: PgPool) {
    let config = WorkerConfig {
        batch: 16,
        lease: Duration::from_secs(10),
        per_destination: Some(2),
        ..WorkerConfig::default()
    };
    let h = Harness::start_configured(pool, loopback(), quick_retries(3), config).await;
    let mut shared = Vec::new();
    for n in 0..8 {
        // One server for all eight; a token in the query tells them apart.
        let url = format!("{}?subscriber={n}", h.receiver.url_for("shared"));
        shared.push(h.subscribe_at(&format!("tenant-{n}"), "shared", url).await);
    }
    // The receiver checks one secret per endpoint: the eight share the last one registered.
    let secret: String = sqlx::query_scalar(
        "SELECT webhook_secret FROM subscriber_contacts WHERE subscriber_id = $1",
    )
    .bind(shared[7].id.as_uuid())
    .fetch_one(h.pipeline.store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE subscriber_contacts SET webhook_secret = $1 WHERE webhook_url LIKE '%/hooks/shared?%'")
        .bind(&secret)
        .execute(h.pipeline.store.pool())
        .await
        .unwrap();
    let other = h.subscribe("other", "other").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("shared", Fault::Delay { ms: 300 }));
    let opened = h.open().await;

    let first = h.process_once(Duration::from_secs(2)).await;
    assert_eq!(first.len(), 9, "one batch: {first:?}");
    let put_off = first
        .iter()
        .filter(|handled| matches!(handled, Handled::Parked { .. }))
        .count();
    assert_eq!(
        put_off, 4,
        "two sending and two waiting at the shared endpoint, the other four put off: {first:?}"
    );
    assert_eq!(
        h.pipeline
            .delivery_state(&key(&opened, &other))
            .await
            .as_deref(),
        Some("delivered"),
        "another endpoint is not held up"
    );

    let mut keys: Vec<String> = shared.iter().map(|s| key(&opened, s)).collect();
    keys.push(key(&opened, &other));
    h.drain(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    for key in &keys {
        let (state, _, _) = h.ledger(key).await;
        assert_eq!(state, "delivered", "{key}");
    }
    assert_eq!(
        h.receiver.peak_in_flight("shared"),
        2,
        "never more than the bound at once, and the bound used"
    );
    let summary = h.receiver.summary();
    assert_eq!((summary.unique, summary.duplicates), (9, 0));
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM deliveries ORDER BY 1")
        .fetch_all(h.pipeline.store.pool())
        .await
        .unwrap();
    assert_eq!(
        attempts, [1; 9],
        "a delivery put off has its attempt given back: waiting never uses up retries"
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn two_messages_to_one_subscriber_in_one_batch_both_go_out(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    let first = h.pipeline.publish("first", None, opened()).await;
    let second = h.pipeline.publish("second", None, opened()).await;
    h.pipeline.resolve_all().await;
    let keys = [key(&first, &subscriber), key(&second, &subscriber)];

    let handled = h.process_once(Duration::from_secs(2)).await;
    assert_eq!(handled.len(), 2, "both jobs in one batch: {handled:?}");
    for (key, handled) in keys.iter().zip(&handled) {
        assert!(
            matches!(
                handled,
                Handled::Attempted {
                    state: "delivered",
                    ..
                }
            ),
            "{key}: {handled:?}"
        );
        assert_eq!(
            h.pipeline.delivery_state(key).await.as_deref(),
            Some("delivered")
        );
    }
    let summary = h.receiver.summary();
    assert_eq!((summary.unique, summary.duplicates), (2, 0));
}

/// A burst of one incident's events reaches an endpoint in order, each message leaving as
/// soon as the one before it settled: later ones wait parked in the ledger, not on the bus.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_burst_of_updates_goes_out_in_order_as_each_settles(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    let opened = h.pipeline.publish("open", None, opened()).await;
    let mut keys = vec![key(&opened, &subscriber)];
    for i in 0..5 {
        let update = h
            .follow_up(&format!("update-{i}"), &opened, EventKind::Updated)
            .await;
        keys.push(key(&update, &subscriber));
    }
    h.pipeline.resolve_all().await;

    let handled = h
        .drain(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(
        handled.iter().any(|h| matches!(h, Handled::Parked { .. })),
        "later messages waited parked: {handled:?}"
    );
    let versions: Vec<u64> = h
        .receiver
        .deliveries()
        .iter()
        .map(|r| r.body["data"]["event"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE parked")
        .fetch_one(h.pipeline.store.pool())
        .await
        .unwrap();
    assert_eq!(parked, 0, "nothing left parked");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_500_is_retried_and_the_resend_is_the_same_message(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(500, None)).times(1));
    let opened = h.open().await;
    let key = key(&opened, &subscriber);

    h.drain(&[&key]).await;

    assert_eq!(
        h.pipeline.delivery_state(&key).await.as_deref(),
        Some("delivered")
    );
    let received = h.receiver.deliveries();
    assert_eq!(received.len(), 2, "one refused attempt and one accepted");
    assert_eq!(received[0].response_status, Some(500));
    assert_eq!(received[1].response_status, Some(204));
    assert_eq!(
        h.receiver.summary().received,
        1,
        "exactly one accepted delivery"
    );
    assert_eq!(received[0].webhook_id, received[1].webhook_id);
    assert_eq!(
        received[0].body, received[1].body,
        "a resend carries the same body"
    );
    assert_eq!(
        h.attempts(&opened, &key).await,
        [("retrying".to_owned(), 1), ("delivered".to_owned(), 2)]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_429_retry_after_is_honoured(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(429, Some(1))).times(1));
    let opened = h.open().await;
    let key = key(&opened, &subscriber);

    let before = OffsetDateTime::now_utc();
    let handled = h.process_once(Duration::from_secs(2)).await;
    assert!(
        matches!(
            &handled[..],
            [Handled::Attempted {
                state: "retrying",
                ..
            }]
        ),
        "{handled:?}"
    );
    let (state, error, next) = h.ledger(&key).await;
    assert_eq!(state, "retrying");
    assert!(error.unwrap_or_default().contains("429"));
    let next = next.expect("a retry time");
    assert!(
        next - before >= time::Duration::seconds(1),
        "retry at {next}, only {} after the attempt",
        next - before
    );

    // The ledger holds the delivery back for the Retry-After: nothing is offered before then.
    assert!(h.process_once(Duration::from_millis(700)).await.is_empty());
    assert_eq!(h.receiver.deliveries().len(), 1);

    h.drain(&[&key]).await;
    assert_eq!(
        h.pipeline.delivery_state(&key).await.as_deref(),
        Some("delivered")
    );
    let received = h.receiver.deliveries();
    assert_eq!(received.len(), 2);
    let gap = received[1].received_at_unix_ms - received[0].received_at_unix_ms;
    assert!(gap >= 1000, "resent {gap} ms after a Retry-After of 1 s");
}

/// A copy of the job offered before its retry time (a replay, a redelivery) is parked until
/// then, not sent.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_job_offered_before_its_retry_time_is_parked(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(429, Some(2))).times(1));
    let opened = h.open().await;
    let handled = h.process_once(Duration::from_secs(2)).await;
    assert!(
        matches!(
            &handled[..],
            [Handled::Attempted {
                state: "retrying",
                ..
            }]
        ),
        "{handled:?}"
    );

    for published in h
        .pipeline
        .bus
        .republish_jobs(&[job_for(&opened, &subscriber)], "early")
        .await
    {
        published.unwrap();
    }
    let handled = h.process_once(Duration::from_secs(1)).await;

    assert!(
        matches!(&handled[..], [Handled::Parked { .. }]),
        "expected it parked: {handled:?}"
    );
    assert_eq!(h.receiver.deliveries().len(), 1, "nothing sent early");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_400_fails_without_retry(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(400, None)));
    let opened = h.open().await;
    let key = key(&opened, &subscriber);

    h.drain(&[&key]).await;

    let (state, error, next) = h.ledger(&key).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains("400"));
    assert_eq!(next, None);
    // Nothing comes back to retry it.
    assert!(h.process_once(Duration::from_millis(700)).await.is_empty());
    assert_eq!(h.receiver.deliveries().len(), 1);
    assert_eq!(h.attempts(&opened, &key).await, [("failed".to_owned(), 1)]);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_410_disables_the_endpoint(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(410, None)));
    // Two events fanned out before the first send: the second is already queued when the
    // endpoint says it is gone.
    let opened = h.pipeline.publish("open", None, opened()).await;
    let updated = h.follow_up("update", &opened, EventKind::Updated).await;
    h.pipeline.resolve_all().await;
    let (first, second) = (key(&opened, &subscriber), key(&updated, &subscriber));

    let handled = h.drain(&[&first, &second]).await;

    assert_eq!(
        h.pipeline.delivery_state(&first).await.as_deref(),
        Some("failed")
    );
    assert_eq!(
        h.pipeline.delivery_state(&second).await.as_deref(),
        Some("skipped")
    );
    assert!(
        handled
            .iter()
            .any(|h| matches!(h, Handled::Skipped { key, reason }
            if *key == second && reason.contains("disabled"))),
        "{handled:?}"
    );
    assert!(
        h.pipeline
            .trail_kinds(opened.incident_id)
            .await
            .contains(&"endpoint_disabled".to_owned())
    );
    let stored = h.pipeline.store.subscriber("acme").await.unwrap().unwrap();
    assert!(stored.webhook_disabled.unwrap_or_default().contains("410"));
    assert_eq!(h.receiver.deliveries().len(), 1, "nothing after the 410");

    // Later events are not even planned for the disabled endpoint.
    let resolved = h.follow_up("resolve", &opened, EventKind::Resolved).await;
    h.pipeline.resolve_all().await;
    assert_eq!(
        h.pipeline
            .delivery_state(&key(&resolved, &subscriber))
            .await,
        None
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_dead_delivery_a_lost_worker_left_untold_is_told_by_the_sweep(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(2)).await;
    h.subscribe("acme", "acme").await;
    let (subscriber, _) = h
        .pipeline
        .subscribe(
            "acme",
            Contacts {
                email: Some("ops@acme.test".into()),
                phone: None,
                webhook_url: Some(h.receiver.url_for("acme")),
            },
            preferences(&[Channel::Webhook, Channel::Email]),
        )
        .await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(500, None)));
    let opened = h.open().await;
    let dead = key(&opened, &subscriber);
    h.drain(&[&dead]).await;
    assert_eq!(
        h.pipeline.delivery_state(&dead).await.as_deref(),
        Some("dead")
    );
    // The worker that recorded it dead was lost before its second write: no notice, and
    // the endpoint still enabled.
    let pool = h.pipeline.store.pool();
    sqlx::query("DELETE FROM deliveries WHERE notice IS NOT NULL")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE subscriber_contacts SET webhook_disabled_at = NULL, webhook_disabled_reason = NULL",
    )
    .execute(pool)
    .await
    .unwrap();
    // Within the grace the worker is given, the sweep leaves it alone.
    assert_eq!(h.worker.tell_untold_failures().await.unwrap(), 0);

    assert_eq!(
        h.worker
            .tell_untold_failures_after(Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    let fallback = tocsin_core::fallback::fallback_key(
        opened.incident_id,
        subscriber.id,
        Channel::Webhook,
        Channel::Email,
    );
    let notice: serde_json::Value =
        sqlx::query_scalar("SELECT notice FROM deliveries WHERE delivery_key = $1")
            .bind(fallback.as_str())
            .fetch_one(pool)
            .await
            .expect("the sweep planned the notice");
    assert_eq!(notice["failed_channel"], "webhook");
    assert!(
        notice["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("failed through every retry"),
        "{notice}"
    );
    let stored = h.pipeline.store.subscriber("acme").await.unwrap().unwrap();
    assert!(
        stored.webhook_disabled.is_some(),
        "disabled as the worker would have"
    );
    // Told once: the next sweep finds nothing.
    assert_eq!(
        h.worker
            .tell_untold_failures_after(Duration::ZERO)
            .await
            .unwrap(),
        0
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_dead_letter_is_delivered_after_a_replay(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(2)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(500, None)));
    let opened = h.open().await;
    let key = key(&opened, &subscriber);

    h.drain(&[&key]).await;

    assert_eq!(
        h.pipeline.delivery_state(&key).await.as_deref(),
        Some("dead")
    );
    assert_eq!(h.receiver.deliveries().len(), 2, "max_attempts is 2");
    assert_eq!(h.receiver.summary().received, 0);
    assert_eq!(
        h.attempts(&opened, &key).await,
        [("retrying".to_owned(), 1), ("dead".to_owned(), 2)]
    );
    // A whole failed schedule disables the endpoint too; the subscriber re-enables it by
    // registering their fixed URL (here: another endpoint on the receiver, same secret).
    assert!(
        h.pipeline
            .trail_kinds(opened.incident_id)
            .await
            .contains(&"endpoint_disabled".to_owned())
    );
    h.receiver.faults().clear();
    let fixed = h
        .subscribe_at("acme", "acme-fixed", h.receiver.url_for("acme-fixed"))
        .await;
    assert_eq!(fixed.webhook_disabled, None);

    let revived = h
        .pipeline
        .store
        .revive_dead_letters(Some(opened.incident_id), Some(Channel::Webhook))
        .await
        .unwrap();
    assert_eq!(revived.len(), 1);
    let jobs: Vec<DeliveryJob> = revived.iter().map(DeliveryJob::from).collect();
    for published in h.pipeline.bus.republish_jobs(&jobs, "replay1").await {
        published.unwrap();
    }
    h.drain(&[&key]).await;

    assert_eq!(
        h.pipeline.delivery_state(&key).await.as_deref(),
        Some("delivered")
    );
    let accepted = h.receiver.inbox().accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].endpoint, "acme-fixed");
    assert_eq!(accepted[0].webhook_id.as_deref(), Some(key.as_str()));
    assert!(accepted[0].verified);
}

/// Production's strict policy: a stored loopback URL is refused by the worker's guard, and
/// the endpoint listening there never sees a request.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn the_strict_policy_refuses_a_loopback_endpoint(pool: PgPool) {
    let h = Harness::start(pool, UrlPolicy::strict(), quick_retries(5)).await;
    let port = h.receiver.addr().port();
    let literal = h
        .subscribe_at(
            "literal",
            "literal",
            format!("http://127.0.0.1:{port}/hooks/literal"),
        )
        .await;
    let named = h
        .subscribe_at(
            "named",
            "named",
            format!("http://localhost:{port}/hooks/named"),
        )
        .await;
    let opened = h.open().await;
    let (literal_key, named_key) = (key(&opened, &literal), key(&opened, &named));

    h.drain(&[&literal_key, &named_key]).await;

    let (state, error, _) = h.ledger(&literal_key).await;
    assert_eq!(state, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("loopback (127.0.0.0/8)"), "{error}");
    let (state, error, _) = h.ledger(&named_key).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains("private network"));
    assert!(
        h.receiver.deliveries().is_empty(),
        "the receiver was reached"
    );
}

/// `localhost` allow-listed by name only: the URL check passes, so the connect-time resolver
/// is what refuses it, as it would a public name rebound to 127.0.0.1.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time(pool: PgPool) {
    let by_name_only = UrlPolicy::strict().allow("localhost").unwrap();
    let h = Harness::start(pool, by_name_only, quick_retries(5)).await;
    let port = h.receiver.addr().port();
    let subscriber = h
        .subscribe_at(
            "acme",
            "acme",
            format!("http://localhost:{port}/hooks/acme"),
        )
        .await;
    let opened = h.open().await;
    let key = key(&opened, &subscriber);

    h.drain(&[&key]).await;

    let (state, error, _) = h.ledger(&key).await;
    assert_eq!(state, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("SSRF guard") && error.contains("loopback"),
        "{error}"
    );
    assert!(
        h.receiver.deliveries().is_empty(),
        "the receiver was reached"
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_delivered_job_published_again_is_not_sent_again(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let subscriber = h.subscribe("acme", "acme").await;
    let opened = h.open().await;
    let key = key(&opened, &subscriber);
    h.drain(&[&key]).await;
    assert_eq!(h.receiver.deliveries().len(), 1);

    for published in h
        .pipeline
        .bus
        .republish_jobs(&[job_for(&opened, &subscriber)], "again")
        .await
    {
        published.unwrap();
    }
    let handled = h.process_once(Duration::from_secs(2)).await;

    assert_eq!(
        handled,
        [Handled::AlreadyDone {
            key: key.clone(),
            state: "delivered".into()
        }]
    );
    assert_eq!(h.receiver.deliveries().len(), 1);
    assert_eq!(h.receiver.summary().duplicates, 0);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_disabled_endpoint_is_told_to_its_subscriber_by_email_once(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(5)).await;
    let secret_holder = h.subscribe("acme", "acme").await;
    // The same subscriber also chose email.
    let (subscriber, _) = h
        .pipeline
        .subscribe(
            "acme",
            Contacts {
                email: Some("ops@acme.test".into()),
                phone: None,
                webhook_url: Some(h.receiver.url_for("acme")),
            },
            preferences(&[Channel::Webhook, Channel::Email]),
        )
        .await;
    assert_eq!(subscriber.id, secret_holder.id);
    h.receiver
        .faults()
        .push(FaultRule::for_target("acme", status(410, None)));
    let opened = h.pipeline.publish("open", None, opened()).await;
    let updated = h.follow_up("update", &opened, EventKind::Updated).await;
    h.pipeline.resolve_all().await;
    let (first, second) = (key(&opened, &subscriber), key(&updated, &subscriber));
    h.drain(&[&first, &second]).await;
    assert_eq!(
        h.pipeline.delivery_state(&first).await.as_deref(),
        Some("failed")
    );

    let fallback = tocsin_core::fallback::fallback_key(
        opened.incident_id,
        subscriber.id,
        Channel::Webhook,
        Channel::Email,
    );
    let (channel, state, parked, notice): (String, String, bool, serde_json::Value) =
        sqlx::query_as(
            "SELECT channel, state, parked, notice FROM deliveries WHERE delivery_key = $1",
        )
        .bind(fallback.as_str())
        .fetch_one(h.pipeline.store.pool())
        .await
        .expect("the fallback notice is in the ledger");
    assert_eq!(
        (channel.as_str(), state.as_str(), parked),
        ("email", "pending", true)
    );
    assert_eq!(notice["kind"], "channel_failed");
    assert_eq!(notice["failed_channel"], "webhook");
    assert!(
        notice["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("410"),
        "{notice}"
    );
    let trail = h.pipeline.trail_kinds(opened.incident_id).await;
    assert_eq!(
        trail.iter().filter(|k| *k == "fallback_planned").count(),
        1,
        "{trail:?}"
    );
    // Once per cause: asked again (a second failure, a retried write), nothing new.
    let again = h
        .pipeline
        .store
        .plan_fallback(
            &tocsin_store::FailedDelivery {
                incident_id: opened.incident_id,
                event_id: updated.event_id,
                event_version: updated.version,
                subscriber_id: subscriber.id,
                channel: Channel::Webhook,
            },
            "again",
        )
        .await
        .unwrap();
    assert_eq!(again, tocsin_store::FallbackPlanned::AlreadyPlanned);
    // The email dispatcher has it to publish: parked, due, and held back by none of the
    // incident's own emails (it lives beside them, not in their sequence).
    let due = h
        .pipeline
        .store
        .due_deliveries(Channel::Email, true, 10)
        .await
        .unwrap();
    assert!(
        due.deliveries
            .iter()
            .any(|(d, _)| d.delivery_key == fallback.as_str()),
        "{:?}",
        due.deliveries
    );
    due.release().await.unwrap();
}
