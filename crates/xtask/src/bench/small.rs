//! The small incident first: critical incidents for a handful of subscribers, published while
//! a big fan-out is under way, and how long their messages took to reach the providers.
//!
//! Three subscribers (one per channel) follow only `payments`; the big fan-out's subscribers
//! follow only `api`. From 2 s into the big fan-out, one critical `payments` incident a second
//! is opened; each of its three messages is timed from the moment before its event was put on
//! JetStream to the provider's receipt (both on this machine's clock).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use time::OffsetDateTime;
use tocsin_bus::Bus;
use tocsin_core::{
    Channel, ComponentFilter, Contacts, DeliveryKey, EventId, Severity, SubscriberId,
};
use tocsin_store::{Store, SubscriberWrite};

use super::scenario::{following, open};
use crate::received::received;
use crate::stack::Ports;

/// The component only the small incidents touch.
const COMPONENT: &str = "payments";
/// The first small incident this long after the big one.
const FIRST_AFTER: Duration = Duration::from_secs(2);
/// And one more every this often.
const EVERY: Duration = Duration::from_secs(1);

/// The receiver's endpoint name of the small incidents' webhook subscriber.
pub(super) const ENDPOINT: &str = "bench-small";

/// The three small-incident subscribers, one per channel.
pub(super) async fn seed(
    store: &Store,
    webhook_port: u16,
    secret: &str,
) -> anyhow::Result<Vec<(SubscriberId, Channel)>> {
    let writes: Vec<SubscriberWrite> = Channel::ALL
        .into_iter()
        .map(|channel| {
            let contacts = match channel {
                Channel::Email => Contacts {
                    email: Some("small@example.com".into()),
                    ..Contacts::default()
                },
                Channel::Sms => Contacts {
                    phone: Some("+14159990000".into()),
                    ..Contacts::default()
                },
                Channel::Webhook => Contacts {
                    webhook_url: Some(format!("http://127.0.0.1:{webhook_port}/hooks/{ENDPOINT}")),
                    ..Contacts::default()
                },
            };
            SubscriberWrite {
                external_id: format!("bench-small-{channel}"),
                preferences: following(
                    &[channel],
                    ComponentFilter::Only([COMPONENT.to_owned()].into()),
                ),
                contacts,
                candidate_webhook_secret: secret.into(),
                consent: None,
            }
        })
        .collect();
    let upserted = store
        .upsert_subscribers(&writes)
        .await
        .context("seeding the small incidents' subscribers")?;
    Ok(upserted
        .iter()
        .zip(Channel::ALL)
        .map(|(u, channel)| (u.subscriber.id, channel))
        .collect())
}

/// One small incident's opening, and when it was put on JetStream.
pub(super) struct Published {
    event: EventId,
    at_unix_ms: u64,
}

/// Opens `count` small critical incidents, the first 2 s after `t0`, then one a second.
pub(super) async fn publish(
    store: Store,
    bus: Bus,
    count: usize,
    t0: Instant,
) -> anyhow::Result<Vec<Published>> {
    let mut published = Vec::with_capacity(count);
    for i in 0..count {
        let due = t0 + FIRST_AFTER + EVERY * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let at_unix_ms = now_unix_ms();
        let (event, _) = open(
            &store,
            &bus,
            &format!("bench-small-{i}"),
            Severity::Critical,
            COMPONENT,
        )
        .await
        .context("opening a small incident")?;
        published.push(Published {
            event: event.event_id,
            at_unix_ms,
        });
    }
    Ok(published)
}

/// The small incidents' messages as they arrived: each one's time from publish to the
/// provider and where that time went, with how many never arrived.
pub(super) struct Timings {
    /// (channel, ms from publish to the provider, its stages), sorted by the ms.
    pub(super) arrived: Vec<(Channel, f64, Stages)>,
    pub(super) missing: usize,
}

/// Where one message's time went, in ms, read from the ledger's own timestamps.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stages {
    /// From the publish to its ledger row (the resolver's fan-out).
    pub(super) resolved: f64,
    /// From the ledger row to the send's start (the job's way to a worker, and its claim).
    pub(super) claimed: f64,
    /// From the send's start to the provider's receipt.
    pub(super) sent: f64,
}

impl Timings {
    /// The `q` quantile of the total time, over every channel or one.
    pub(super) fn quantile(&self, q: f64, channel: Option<Channel>) -> f64 {
        let times: Vec<f64> = self
            .arrived
            .iter()
            .filter(|(c, _, _)| channel.is_none_or(|want| *c == want))
            .map(|(_, ms, _)| *ms)
            .collect();
        quantile(&times, q)
    }

    /// The median of each stage, over every channel.
    pub(super) fn median_stages(&self) -> Stages {
        let median = |stage: fn(&Stages) -> f64| {
            let mut values: Vec<f64> = self.arrived.iter().map(|(_, _, s)| stage(s)).collect();
            values.sort_by(f64::total_cmp);
            quantile(&values, 0.5)
        };
        Stages {
            resolved: median(|s| s.resolved),
            claimed: median(|s| s.claimed),
            sent: median(|s| s.sent),
        }
    }
}

/// The value at quantile `q` of sorted `values` (nearest rank); NaN when empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    values
        .get(((values.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Each small-incident message's time from publish to the provider, and its stages.
pub(super) async fn latencies(
    http: &reqwest::Client,
    store: &Store,
    ports: Ports,
    subscribers: &[(SubscriberId, Channel)],
    published: &[Published],
) -> anyhow::Result<Timings> {
    let arrived: std::collections::HashMap<String, u64> = received(http, ports)
        .await?
        .into_iter()
        .filter_map(|r| r.key.map(|key| (key, r.received_at_unix_ms)))
        .collect();
    let mut timings = Timings {
        arrived: Vec::new(),
        missing: 0,
    };
    for incident in published {
        for (subscriber, channel) in subscribers {
            let key = DeliveryKey::derive(incident.event, *subscriber, *channel);
            let Some(at) = arrived.get(key.as_str()) else {
                timings.missing += 1;
                continue;
            };
            let (created, started): (OffsetDateTime, Option<OffsetDateTime>) = sqlx::query_as(
                "SELECT created_at, send_started_at FROM deliveries WHERE delivery_key = $1",
            )
            .bind(key.as_str())
            .fetch_one(store.pool())
            .await
            .context("reading a small incident's delivery")?;
            let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as f64;
            let (published_ms, at_ms) = (incident.at_unix_ms as f64, *at as f64);
            let started = started.map_or(f64::NAN, ms);
            let stages = Stages {
                resolved: ms(created) - published_ms,
                claimed: started - ms(created),
                sent: at_ms - started,
            };
            timings
                .arrived
                .push((*channel, at_ms - published_ms, stages));
        }
    }
    timings.arrived.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(timings)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
