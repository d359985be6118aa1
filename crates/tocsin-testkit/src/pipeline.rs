//! A pipeline in a test: a per-test database and bus prefix, subscribers, events appended to
//! the log and put on the stream as ingest and relay would, and the real resolver fanning
//! them out. Channel tests build on it to get real delivery jobs for their workers.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use tocsin_bus::{Bus, BusConfig, QueueSettings};
use tocsin_core::{
    Change, Channel, ComponentFilter, Contacts, EventKind, IncidentId, Preferences, PublishRequest,
    RecordedEvent, Severity, Subscriber,
};
use tocsin_resolver::{Resolver, ResolverConfig};
use tocsin_store::{Store, SubscriberWrite};

/// Store, bus and resolver for one test.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub store: Store,
    pub bus: Bus,
    pub resolver: Resolver,
}

impl Pipeline {
    /// On the test's database (`#[sqlx::test]`'s pool) and a fresh bus prefix on `NATS_URL`.
    pub async fn start(pool: PgPool) -> Pipeline {
        crate::init_tracing();
        let store = Store::from_pool(pool);
        let bus = Bus::connect(
            &crate::nats::nats_url(),
            BusConfig::new(crate::nats::unique_prefix()).expect("a valid prefix"),
        )
        .await
        .expect("NATS is reachable at NATS_URL");
        bus.ensure_events_stream().await.expect("the events stream");
        bus.ensure_deliveries_stream()
            .await
            .expect("the deliveries stream");
        let config = ResolverConfig {
            queue: QueueSettings {
                ack_wait: Duration::from_secs(2),
                ..QueueSettings::resolver()
            },
            ordering_delay: Duration::from_millis(20),
            ..ResolverConfig::default()
        };
        let resolver = Resolver::new(store.clone(), bus.clone(), config);
        Pipeline {
            store,
            bus,
            resolver,
        }
    }

    /// Creates or updates one subscriber; returns it with its new webhook secret, if any.
    pub async fn subscribe(
        &self,
        external_id: &str,
        contacts: Contacts,
        preferences: Preferences,
    ) -> (Subscriber, Option<String>) {
        let write = SubscriberWrite {
            external_id: external_id.to_owned(),
            preferences,
            contacts,
            candidate_webhook_secret: tocsin_webhook::signature::WebhookSecret::generate().expose(),
            consent: None,
        };
        let mut upserted = self
            .store
            .upsert_subscribers(&[write])
            .await
            .expect("upsert");
        let upserted = upserted.remove(0);
        (upserted.subscriber, upserted.new_webhook_secret)
    }

    /// Appends an event to the log and publishes it to the events stream.
    pub async fn publish(
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
            .expect("append")
            .event;
        for published in self.bus.publish_events(std::slice::from_ref(&event)).await {
            published.expect("publish to JetStream");
        }
        event
    }

    /// Runs the resolver until no event is left to fan out.
    pub async fn resolve_all(&self) {
        let queue = self
            .resolver
            .queue()
            .await
            .expect("the resolver's consumer");
        loop {
            let batch = queue
                .fetch(16, Duration::from_millis(300))
                .await
                .expect("fetch events");
            if batch.is_empty() {
                return;
            }
            for work in batch {
                self.resolver.handle(work).await;
            }
        }
    }

    /// A delivery's ledger state.
    pub async fn delivery_state(&self, delivery_key: &str) -> Option<String> {
        sqlx::query_scalar("SELECT state FROM deliveries WHERE delivery_key = $1")
            .bind(delivery_key)
            .fetch_optional(self.store.pool())
            .await
            .expect("read the ledger")
    }

    /// The kinds of an incident's trail entries, in order.
    pub async fn trail_kinds(&self, incident: IncidentId) -> Vec<String> {
        self.store
            .delivery_trail(incident, 0, 10_000)
            .await
            .expect("read the trail")
            .into_iter()
            .map(|entry| entry.kind)
            .collect()
    }
}

/// Preferences for `channels`, every component, every severity, default kinds.
pub fn preferences(channels: &[Channel]) -> Preferences {
    Preferences {
        channels: channels.iter().copied().collect(),
        components: ComponentFilter::All,
        min_severity: Severity::Minor,
        kinds: BTreeMap::new(),
        quiet_hours: None,
    }
}

/// An opening of a major incident on `api`.
pub fn opened() -> Change {
    Change {
        severity: Some(Severity::Major),
        components: vec!["api".into()],
        title: Some("Elevated API error rates".into()),
        ..Change::new(
            EventKind::Opened,
            "Some API requests are failing. We are investigating.",
        )
    }
}

pub fn follow_up(kind: EventKind, message: &str) -> Change {
    Change::new(kind, message)
}
