//! Resolver tests on real PostgreSQL (a database per test) and NATS (a prefix per test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_bus::{Bus, BusConfig, DeliveryJob, QueueSettings};
use tocsin_core::{
    Change, Channel, ComponentFilter, Contacts, EventKind, IncidentId, Preferences, PublishRequest,
    QuietHours, RecordedEvent, Severity, SubscriberId,
};
use tocsin_resolver::requeue::{RequeueConfig, requeue_stale};
use tocsin_resolver::{FanoutConfig, Handled, Resolution, Resolver, ResolverConfig};
use tocsin_store::{Store, SubscriberWrite};

struct Harness {
    store: Store,
    bus: Bus,
    resolver: Resolver,
}

async fn harness(pool: PgPool, page_size: u32) -> Harness {
    tocsin_testkit::init_tracing();
    let store = Store::from_pool(pool);
    let bus = Bus::connect(
        &tocsin_testkit::nats::nats_url(),
        BusConfig::new(tocsin_testkit::nats::unique_prefix()).unwrap(),
    )
    .await
    .unwrap();
    bus.ensure_events_stream().await.unwrap();
    let config = ResolverConfig {
        fanout: FanoutConfig {
            page_size,
            small_page: page_size,
        },
        ordering_delay: Duration::from_millis(50),
        queue: QueueSettings {
            ack_wait: Duration::from_secs(1),
            ..QueueSettings::resolver()
        },
        ..ResolverConfig::default()
    };
    let resolver = Resolver::new(store.clone(), bus.clone(), config);
    Harness {
        store,
        bus,
        resolver,
    }
}

fn prefs(channels: &[Channel], min: Severity, components: Option<&[&str]>) -> Preferences {
    Preferences {
        channels: channels.iter().copied().collect(),
        components: components.map_or(ComponentFilter::All, |c| {
            ComponentFilter::Only(c.iter().map(|s| (*s).to_owned()).collect())
        }),
        min_severity: min,
        kinds: BTreeMap::new(),
        quiet_hours: None,
    }
}

impl Harness {
    /// Creates subscribers; returns their ids by external id.
    async fn subscribe(
        &self,
        subscribers: Vec<(&str, Preferences)>,
    ) -> HashMap<String, SubscriberId> {
        let writes: Vec<SubscriberWrite> = subscribers
            .into_iter()
            .map(|(name, preferences)| SubscriberWrite {
                external_id: name.to_owned(),
                contacts: Contacts {
                    email: Some(format!("{name}@example.com")),
                    phone: Some("+14155550100".into()),
                    webhook_url: Some(format!("https://hooks.example.com/{name}")),
                },
                preferences,
                candidate_webhook_secret: "whsec_dGVzdA==".into(),
                consent: None,
            })
            .collect();
        self.store
            .upsert_subscribers(&writes)
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.subscriber.external_id.clone(), u.subscriber.id))
            .collect()
    }

    /// Appends an event to the log and puts it on the stream, as ingest and relay do.
    async fn publish(
        &self,
        key: &str,
        incident: Option<IncidentId>,
        change: Change,
    ) -> RecordedEvent {
        let request = PublishRequest {
            idempotency_key: key.into(),
            incident_id: incident,
            change,
            occurred_at: None,
            expected_version: None,
        };
        let event = self
            .store
            .append("test", &request, OffsetDateTime::now_utc())
            .await
            .unwrap()
            .event;
        for published in self.bus.publish_events(std::slice::from_ref(&event)).await {
            published.unwrap();
        }
        event
    }

    /// Handles every message the resolver's consumer hands out until none is left.
    async fn drain(&self) -> Vec<Handled> {
        let queue = self.resolver.queue().await.unwrap();
        let mut handled = Vec::new();
        loop {
            let batch = queue.fetch(10, Duration::from_millis(400)).await.unwrap();
            if batch.is_empty() {
                return handled;
            }
            for work in batch {
                handled.push(self.resolver.handle(work).await);
            }
        }
    }

    async fn jobs(&self) -> Vec<DeliveryJob> {
        let mut jobs = Vec::new();
        for channel in Channel::ALL {
            jobs.extend(self.bus.take_jobs(channel).await.unwrap());
        }
        jobs
    }
}

fn opened(severity: Severity, components: &[&str]) -> Change {
    Change {
        severity: Some(severity),
        components: components.iter().map(|c| (*c).to_owned()).collect(),
        title: Some("Payments API errors".into()),
        ..Change::new(
            EventKind::Opened,
            "Some payments fail. We are investigating.",
        )
    }
}

fn update(kind: EventKind, severity: Option<Severity>, components: &[&str]) -> Change {
    Change {
        severity,
        components: components.iter().map(|c| (*c).to_owned()).collect(),
        ..Change::new(kind, "News.")
    }
}

/// Quiet hours that are on right now, wherever the test runs: the two hours around now, UTC.
fn quiet_now() -> QuietHours {
    let now = OffsetDateTime::now_utc();
    let minute = u16::from(now.hour()) * 60 + u16::from(now.minute());
    QuietHours {
        time_zone: "UTC".into(),
        start_minute: (minute + 1440 - 60) % 1440,
        end_minute: (minute + 60) % 1440,
    }
}

fn by_subscriber(
    jobs: &[DeliveryJob],
    ids: &HashMap<String, SubscriberId>,
) -> BTreeMap<String, BTreeSet<Channel>> {
    let names: HashMap<uuid::Uuid, &String> =
        ids.iter().map(|(n, id)| (*id.as_uuid(), n)).collect();
    let mut out: BTreeMap<String, BTreeSet<Channel>> = BTreeMap::new();
    for job in jobs {
        out.entry(names[&job.subscriber_id].clone())
            .or_default()
            .insert(job.channel);
    }
    out
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn preferences_decide_who_hears_on_which_channel_and_when(pool: PgPool) {
    let h = harness(pool, 2).await;
    let mut sms_updates = prefs(&[Channel::Sms], Severity::Minor, None);
    sms_updates
        .kinds
        .insert(Channel::Sms, BTreeSet::from([EventKind::Updated]));
    let mut sleeper = prefs(&[Channel::Email], Severity::Minor, None);
    sleeper.quiet_hours = Some(quiet_now());
    let ids = h
        .subscribe(vec![
            (
                "everything",
                prefs(
                    &[Channel::Email, Channel::Sms, Channel::Webhook],
                    Severity::Minor,
                    None,
                ),
            ),
            (
                "api-major",
                prefs(&[Channel::Email], Severity::Major, Some(&["api"])),
            ),
            (
                "api-critical",
                prefs(&[Channel::Email], Severity::Critical, Some(&["api"])),
            ),
            (
                "billing",
                prefs(&[Channel::Email], Severity::Minor, Some(&["billing"])),
            ),
            ("sms-updates-only", sms_updates),
            ("sleeper", sleeper),
        ])
        .await;

    let open = h
        .publish("open", None, opened(Severity::Major, &["api", "search"]))
        .await;
    let handled = h.drain().await;
    let Handled::Resolved(Resolution::Resolved(record)) = &handled[0] else {
        panic!("expected a fan-out, got {handled:?}");
    };
    let jobs = h.jobs().await;
    let expected = BTreeMap::from([
        (
            "everything".to_owned(),
            BTreeSet::from([Channel::Email, Channel::Sms, Channel::Webhook]),
        ),
        ("api-major".to_owned(), BTreeSet::from([Channel::Email])),
        ("sleeper".to_owned(), BTreeSet::from([Channel::Email])),
    ]);
    assert_eq!(by_subscriber(&jobs, &ids), expected);
    assert_eq!(
        record.jobs,
        BTreeMap::from([
            (Channel::Email, 3),
            (Channel::Sms, 1),
            (Channel::Webhook, 1)
        ])
    );
    assert_eq!(record.recipients, 3);
    assert_eq!(
        record.held,
        BTreeMap::from([(Channel::Email, 1)]),
        "quiet hours hold the sleeper's email"
    );
    let held: Vec<&DeliveryJob> = jobs.iter().filter(|j| j.send_after.is_some()).collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].subscriber_id, *ids["sleeper"].as_uuid());
    assert!(
        held[0].send_after.unwrap() > OffsetDateTime::now_utc(),
        "held until the window ends"
    );

    // Every job has its ledger row, under the same key.
    let ledger: Vec<String> = sqlx::query_scalar("SELECT delivery_key FROM deliveries ORDER BY 1")
        .fetch_all(h.store.pool())
        .await
        .unwrap();
    let mut keys: Vec<String> = jobs.iter().map(|j| j.delivery_key.clone()).collect();
    keys.sort();
    assert_eq!(ledger, keys);

    // Critical bypasses quiet hours and reaches the critical-only follower; SMS gets updates
    // only for the subscriber who asked.
    let escalate = h
        .publish(
            "escalate",
            Some(open.incident_id),
            update(EventKind::Updated, Some(Severity::Critical), &[]),
        )
        .await;
    h.drain().await;
    let jobs = h.jobs().await;
    assert!(
        jobs.iter()
            .all(|j| j.event_id == *escalate.event_id.as_uuid())
    );
    assert!(
        jobs.iter().all(|j| j.send_after.is_none()),
        "critical is never held"
    );
    let expected = BTreeMap::from([
        (
            "everything".to_owned(),
            BTreeSet::from([Channel::Email, Channel::Webhook]),
        ),
        ("api-major".to_owned(), BTreeSet::from([Channel::Email])),
        ("api-critical".to_owned(), BTreeSet::from([Channel::Email])),
        (
            "sms-updates-only".to_owned(),
            BTreeSet::from([Channel::Sms]),
        ),
        ("sleeper".to_owned(), BTreeSet::from([Channel::Email])),
    ]);
    assert_eq!(by_subscriber(&jobs, &ids), expected);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn follow_ups_reach_everyone_told_and_never_overtake_the_opening(pool: PgPool) {
    let h = harness(pool, 100).await;
    let ids = h
        .subscribe(vec![
            (
                "api-major",
                prefs(
                    &[Channel::Email, Channel::Sms],
                    Severity::Major,
                    Some(&["api"]),
                ),
            ),
            (
                "latecomer",
                prefs(&[Channel::Email], Severity::Minor, Some(&["search"])),
            ),
        ])
        .await;
    let open = h
        .publish("open", None, opened(Severity::Major, &["api"]))
        .await;
    // Downgraded and moved before the opening is even fanned out: the stream holds both.
    let moved = h
        .publish(
            "moved",
            Some(open.incident_id),
            update(EventKind::Updated, Some(Severity::Minor), &["search"]),
        )
        .await;
    let resolved = h
        .publish(
            "resolved",
            Some(open.incident_id),
            update(EventKind::Resolved, None, &[]),
        )
        .await;

    // The update arrives first at this resolver: it must wait for the opening.
    let queue = h.resolver.queue().await.unwrap();
    let mut batch = queue.fetch(3, Duration::from_millis(400)).await.unwrap();
    assert_eq!(batch.len(), 3);
    let update_first = batch.remove(1);
    assert_eq!(
        h.resolver.handle(update_first).await,
        Handled::Resolved(Resolution::Waiting { earlier: 1 })
    );
    for work in batch {
        h.resolver.handle(work).await;
    }
    h.drain().await;

    let jobs = h.jobs().await;
    let mut per_event: BTreeMap<u64, Vec<DeliveryJob>> = BTreeMap::new();
    for job in jobs {
        per_event.entry(job.event_version).or_default().push(job);
    }
    let per_event: BTreeMap<u64, BTreeMap<String, BTreeSet<Channel>>> = per_event
        .iter()
        .map(|(v, jobs)| (*v, by_subscriber(jobs, &ids)))
        .collect();
    assert_eq!(
        per_event[&1],
        BTreeMap::from([(
            "api-major".to_owned(),
            BTreeSet::from([Channel::Email, Channel::Sms])
        )])
    );
    // The move to "search" reaches the latecomer, and api-major still hears about it by email
    // (SMS takes no updates by default).
    assert_eq!(
        per_event[&2],
        BTreeMap::from([
            ("api-major".to_owned(), BTreeSet::from([Channel::Email])),
            ("latecomer".to_owned(), BTreeSet::from([Channel::Email])),
        ])
    );
    // The resolution reaches both on every channel that takes resolutions.
    assert_eq!(
        per_event[&3],
        BTreeMap::from([
            (
                "api-major".to_owned(),
                BTreeSet::from([Channel::Email, Channel::Sms])
            ),
            ("latecomer".to_owned(), BTreeSet::from([Channel::Email])),
        ])
    );
    // The trail records each fan-out in event order, with its follow-ups counted.
    let trail = h
        .store
        .delivery_trail(open.incident_id, 0, 10)
        .await
        .unwrap();
    let order: Vec<_> = trail.iter().map(|t| t.event_id).collect();
    assert_eq!(
        order,
        vec![open.event_id, moved.event_id, resolved.event_id]
    );
    assert_eq!(
        trail[1].data["follow_ups"], 1,
        "api-major was reached as a follow-up"
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_resolver_killed_mid_fan_out_resumes_with_exactly_one_job_per_key(pool: PgPool) {
    let h = harness(pool, 10).await;
    let subscribers: Vec<(String, Preferences)> = (0..95)
        .map(|i| {
            (
                format!("s{i:03}"),
                prefs(&[Channel::Email, Channel::Sms], Severity::Minor, None),
            )
        })
        .collect();
    h.subscribe(
        subscribers
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect(),
    )
    .await;
    let open = h
        .publish("open", None, opened(Severity::Critical, &["api"]))
        .await;

    // Kill the fan-out after three of its ten pages: the task is dropped mid-flight, as a
    // SIGKILL would leave it, with the event neither acknowledged nor recorded.
    let queue = h.resolver.queue().await.unwrap();
    let work = queue
        .fetch(1, Duration::from_millis(400))
        .await
        .unwrap()
        .remove(0);
    let (pages_tx, mut pages_rx) = tokio::sync::mpsc::unbounded_channel();
    let store = h.store.clone();
    let bus = h.bus.clone();
    let event = open.clone();
    let fanout = tokio::spawn(async move {
        tocsin_resolver::fanout::resolve_paged(
            &store,
            &bus,
            FanoutConfig {
                page_size: 10,
                small_page: 10,
            },
            &event,
            || {
                let pages_tx = pages_tx.clone();
                async move {
                    let _ = pages_tx.send(());
                    // Slow enough that the kill lands here.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        )
        .await
    });
    for _ in 0..3 {
        pages_rx.recv().await.unwrap();
    }
    fanout.abort();
    assert!(fanout.await.unwrap_err().is_cancelled());
    drop(work);
    let partial: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert!(
        (60..190).contains(&partial),
        "killed part-way: {partial} rows"
    );
    assert!(
        h.store
            .fanout_record(open.event_id)
            .await
            .unwrap()
            .is_none()
    );

    // JetStream redelivers the unacknowledged event after its ack wait; the fan-out reruns.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let handled = h.drain().await;
    assert!(
        matches!(handled[..], [Handled::Resolved(Resolution::Resolved(_))]),
        "{handled:?}"
    );
    // A later redelivery (say, a republished stream) does nothing again.
    h.bus.publish_events(std::slice::from_ref(&open)).await;

    let jobs = h.jobs().await;
    let keys: BTreeSet<&str> = jobs.iter().map(|j| j.delivery_key.as_str()).collect();
    assert_eq!(
        jobs.len(),
        190,
        "one job per subscriber and channel, none twice"
    );
    assert_eq!(keys.len(), 190);
    let rows: i64 = sqlx::query_scalar("SELECT count(DISTINCT delivery_key) FROM deliveries")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 190);
    let record = h.store.fanout_record(open.event_id).await.unwrap().unwrap();
    assert_eq!(
        record.jobs,
        BTreeMap::from([(Channel::Email, 95), (Channel::Sms, 95)])
    );
    assert_eq!(record.considered, 95);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_replayed_event_is_acknowledged_without_a_second_fan_out(pool: PgPool) {
    let h = harness(pool, 100).await;
    h.subscribe(vec![(
        "one",
        prefs(&[Channel::Email], Severity::Minor, None),
    )])
    .await;
    let open = h
        .publish("open", None, opened(Severity::Minor, &["api"]))
        .await;
    h.drain().await;
    assert_eq!(h.jobs().await.len(), 1);

    // Outside JetStream's duplicate window a republish is a new message: the trail stops it.
    let mut republished = open.clone();
    republished.version = open.version;
    h.bus.delete_events_stream().await.unwrap();
    h.bus.ensure_events_stream().await.unwrap();
    h.bus
        .publish_events(std::slice::from_ref(&republished))
        .await;
    let resolver = Resolver::new(h.store.clone(), h.bus.clone(), ResolverConfig::default());
    let queue = resolver.queue().await.unwrap();
    let work = queue
        .fetch(1, Duration::from_millis(400))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        resolver.handle(work).await,
        Handled::Resolved(Resolution::AlreadyResolved)
    );
    assert!(h.jobs().await.is_empty());
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn readiness_needs_the_durable_consumer(pool: PgPool) {
    use tocsin_runtime::Readiness;
    let h = harness(pool, 100).await;
    let readiness = h.resolver.readiness();
    // PostgreSQL and NATS answer, but the consumer is created only when the resolver starts.
    let not_yet = readiness.check().await.unwrap_err();
    assert!(not_yet.contains("resolver"), "{not_yet}");
    h.resolver.queue().await.unwrap();
    readiness.check().await.unwrap();
    assert_eq!(h.bus.resolver_pending().await.unwrap(), 0);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn jobs_lost_from_jetstream_are_put_back_from_the_ledger_once_per_sweep(pool: PgPool) {
    let h = harness(pool.clone(), 100).await;
    h.subscribe(vec![
        (
            "one",
            prefs(&[Channel::Email, Channel::Sms], Severity::Minor, None),
        ),
        ("two", prefs(&[Channel::Webhook], Severity::Minor, None)),
    ])
    .await;
    h.publish("open", None, opened(Severity::Minor, &["api"]))
        .await;
    h.drain().await;
    // JetStream acknowledged the jobs, then lost them (or an operator purged the stream).
    let published: BTreeSet<String> = h.jobs().await.into_iter().map(|j| j.delivery_key).collect();
    assert_eq!(published.len(), 3);
    assert!(h.jobs().await.is_empty());

    // Fresh deliveries are left alone: their jobs are presumably on their way.
    let patient = RequeueConfig {
        stale_after: Duration::from_secs(600),
        ..RequeueConfig::default()
    };
    assert_eq!(requeue_stale(&h.store, &h.bus, &patient).await.unwrap(), 0);
    assert!(h.jobs().await.is_empty());

    // Past their due time, every unsettled delivery's job is published again, once.
    let eager = RequeueConfig {
        stale_after: Duration::ZERO,
        batch: 2,
        ..RequeueConfig::default()
    };
    assert_eq!(requeue_stale(&h.store, &h.bus, &eager).await.unwrap(), 3);
    let requeued: BTreeSet<String> = h.jobs().await.into_iter().map(|j| j.delivery_key).collect();
    assert_eq!(requeued, published);
    // Just requeued: the next sweep waits another `stale_after`.
    assert_eq!(requeue_stale(&h.store, &h.bus, &patient).await.unwrap(), 0);

    // A settled delivery is never requeued, however old.
    sqlx::query(
        "UPDATE deliveries SET state = 'delivered', finished_at = now() WHERE channel = 'sms'",
    )
    .execute(&pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(requeue_stale(&h.store, &h.bus, &eager).await.unwrap(), 2);
    let again: Vec<DeliveryJob> = h.jobs().await;
    assert!(again.iter().all(|j| j.channel != Channel::Sms), "{again:?}");

    // Each requeue is in the trail.
    let (requeues,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM delivery_trail WHERE kind = 'requeued'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(requeues, 5);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_page_with_more_jobs_than_acks_in_flight_is_published_whole(pool: PgPool) {
    // 1,500 subscribers on two channels make 3,000 jobs in one page, well past the bus's
    // 1,024 acknowledgements in flight: the publish must pace itself, never wait for ever.
    let h = harness(pool, 5_000).await;
    let subscribers: Vec<(String, Preferences)> = (0..1_500)
        .map(|n| {
            (
                format!("s{n}"),
                prefs(&[Channel::Email, Channel::Webhook], Severity::Minor, None),
            )
        })
        .collect();
    h.subscribe(
        subscribers
            .iter()
            .map(|(name, p)| (name.as_str(), p.clone()))
            .collect(),
    )
    .await;
    h.publish("open", None, opened(Severity::Minor, &["api"]))
        .await;
    let handled = tokio::time::timeout(Duration::from_secs(60), h.drain())
        .await
        .expect("the fan-out finishes");
    assert!(
        matches!(
            handled.as_slice(),
            [Handled::Resolved(Resolution::Resolved(_))]
        ),
        "{handled:?}"
    );
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 3_000);
    let keys: BTreeSet<&str> = jobs.iter().map(|j| j.delivery_key.as_str()).collect();
    assert_eq!(keys.len(), 3_000);
}

/// A burst: three incidents, eight events, published at once, fanned out by the resolver's
/// own loop with a publish window far smaller than one page of jobs. Every event is fanned
/// out, each incident's in order, and every job is published once: concurrent fan-outs
/// never wait on one another for the window, and an incident's later events wait behind its
/// running one without taking the slots the others need.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_burst_of_events_across_incidents_is_fanned_out_by_the_loop(pool: PgPool) {
    let store = Store::from_pool(pool);
    let mut bus_config = BusConfig::new(tocsin_testkit::nats::unique_prefix()).unwrap();
    bus_config.max_ack_inflight = 8;
    let bus = Bus::connect(&tocsin_testkit::nats::nats_url(), bus_config)
        .await
        .unwrap();
    bus.ensure_events_stream().await.unwrap();
    let config = ResolverConfig {
        fanout: FanoutConfig {
            page_size: 40,
            small_page: 40,
        },
        concurrency: 2,
        ..ResolverConfig::default()
    };
    let h = Harness {
        store: store.clone(),
        bus: bus.clone(),
        resolver: Resolver::new(store.clone(), bus.clone(), config),
    };
    let names: Vec<String> = (0..150).map(|i| format!("s{i:03}")).collect();
    h.subscribe(
        names
            .iter()
            .map(|n| {
                let channels = [Channel::Email, Channel::Sms, Channel::Webhook];
                (n.as_str(), prefs(&channels, Severity::Minor, None))
            })
            .collect(),
    )
    .await;

    let mut events = Vec::new();
    let first = h
        .publish("a1", None, opened(Severity::Major, &["api"]))
        .await;
    events.push(first.clone());
    for (i, kind) in [EventKind::Updated, EventKind::Updated, EventKind::Resolved]
        .into_iter()
        .enumerate()
    {
        let key = format!("a{}", i + 2);
        events.push(
            h.publish(&key, Some(first.incident_id), update(kind, None, &[]))
                .await,
        );
    }
    for incident in ["b", "c"] {
        let open = h
            .publish(
                &format!("{incident}1"),
                None,
                opened(Severity::Critical, &["db"]),
            )
            .await;
        let resolve = update(EventKind::Resolved, None, &[]);
        let resolved = h
            .publish(&format!("{incident}2"), Some(open.incident_id), resolve)
            .await;
        events.extend([open, resolved]);
    }

    let shutdown = tocsin_runtime::Shutdown::new();
    let running = tokio::spawn(h.resolver.clone().run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for event in &events {
            if h.store
                .fanout_record(event.event_id)
                .await
                .unwrap()
                .is_some()
            {
                done += 1;
            }
        }
        if done == events.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {} events fanned out after a minute",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    running.await.unwrap().unwrap();

    // SMS takes opened and resolved only: 8 events to email and webhook, 6 to SMS.
    let jobs = h.jobs().await;
    let keys: BTreeSet<&str> = jobs.iter().map(|j| j.delivery_key.as_str()).collect();
    assert_eq!(jobs.len(), 150 * (8 + 8 + 6));
    assert_eq!(keys.len(), jobs.len(), "no job twice");
    // Each incident's fan-outs were recorded in version order.
    let order: Vec<(String, i64)> = sqlx::query_as(
        "SELECT incident_id::text, (data->>'event_version')::int8 FROM delivery_trail
         WHERE kind = 'recipients_resolved' ORDER BY position",
    )
    .fetch_all(h.store.pool())
    .await
    .unwrap();
    let mut last: HashMap<String, i64> = HashMap::new();
    for (incident, version) in order {
        let previous = last.insert(incident, version).unwrap_or(0);
        assert_eq!(version, previous + 1, "fanned out in order");
    }
}

/// The first page decides the lane of every job of a fan-out: one that fits in the small
/// first page goes to the small lane whatever its severity; a bigger one goes to `critical`
/// or `bulk` by the incident's severity, its first page included.
#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_fan_out_s_size_and_severity_choose_its_lane(pool: PgPool) {
    let h = harness(pool, 10).await;
    let names: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
    h.subscribe(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                // Five follow billing; everyone follows api.
                let components: &[&str] = if i < 5 { &["api", "billing"] } else { &["api"] };
                (
                    n.as_str(),
                    prefs(&[Channel::Email], Severity::Minor, Some(components)),
                )
            })
            .collect(),
    )
    .await;
    let small = h
        .publish("small", None, opened(Severity::Minor, &["billing"]))
        .await;
    let big_critical = h
        .publish("critical", None, opened(Severity::Critical, &["api"]))
        .await;
    let big_major = h
        .publish("major", None, opened(Severity::Major, &["api"]))
        .await;
    h.drain().await;

    let jobs = h.jobs().await;
    let lanes = |event: &RecordedEvent| -> BTreeSet<tocsin_core::Lane> {
        jobs.iter()
            .filter(|j| j.event_id == *event.event_id.as_uuid())
            .map(|j| j.lane)
            .collect()
    };
    assert_eq!(lanes(&small), BTreeSet::from([tocsin_core::Lane::Small]));
    assert_eq!(
        lanes(&big_critical),
        BTreeSet::from([tocsin_core::Lane::Critical])
    );
    assert_eq!(lanes(&big_major), BTreeSet::from([tocsin_core::Lane::Bulk]));
    let per_event = |event: &RecordedEvent| {
        jobs.iter()
            .filter(|j| j.event_id == *event.event_id.as_uuid())
            .count()
    };
    assert_eq!(
        (
            per_event(&small),
            per_event(&big_critical),
            per_event(&big_major)
        ),
        (5, 25, 25)
    );
    // The ledger keeps the lane, for the dispatchers and replays.
    let ledger: Vec<(String, i64)> =
        sqlx::query_as("SELECT lane, count(*) FROM deliveries GROUP BY lane ORDER BY lane")
            .fetch_all(h.store.pool())
            .await
            .unwrap();
    assert_eq!(
        ledger,
        [
            ("bulk".to_owned(), 25),
            ("critical".to_owned(), 25),
            ("small".to_owned(), 5)
        ]
    );
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn a_scheduled_review_waits_for_its_time_and_reaches_only_those_told(pool: PgPool) {
    let h = harness(pool, 100).await;
    let ids = h
        .subscribe(vec![(
            "told",
            prefs(
                &[Channel::Email, Channel::Sms, Channel::Webhook],
                Severity::Minor,
                None,
            ),
        )])
        .await;
    let open = h
        .publish("open", None, opened(Severity::Major, &["api"]))
        .await;
    h.publish(
        "resolved",
        Some(open.incident_id),
        Change {
            review_to_follow: true,
            ..update(EventKind::Resolved, None, &[])
        },
    )
    .await;
    h.drain().await;
    h.jobs().await;
    // Subscribed after the incident ended: the review would be their first word of it.
    let late = h
        .subscribe(vec![(
            "late",
            prefs(&[Channel::Email], Severity::Minor, None),
        )])
        .await;
    let thursday = (OffsetDateTime::now_utc() + time::Duration::days(3))
        .replace_nanosecond(0)
        .unwrap();
    let review = h
        .publish(
            "review",
            Some(open.incident_id),
            Change {
                link: Some("https://status.example.com/reviews/1".into()),
                deliver_at: Some(thursday),
                ..update(EventKind::Review, None, &[])
            },
        )
        .await;
    h.drain().await;
    let jobs: Vec<DeliveryJob> = h
        .jobs()
        .await
        .into_iter()
        .filter(|j| j.event_id == *review.event_id.as_uuid())
        .collect();
    let mut all_ids = ids.clone();
    all_ids.extend(late);
    assert_eq!(
        by_subscriber(&jobs, &all_ids),
        BTreeMap::from([(
            "told".to_owned(),
            BTreeSet::from([Channel::Email, Channel::Webhook])
        )]),
        "email and webhook by default, no text unless asked, nobody never told"
    );
    for job in &jobs {
        assert_eq!(job.send_after, Some(thursday), "{job:?}");
    }
    let incident = h.store.incident(open.incident_id).await.unwrap().unwrap();
    assert!(incident.review_to_follow);
    assert_eq!(incident.status, tocsin_core::IncidentStatus::Resolved);
}
