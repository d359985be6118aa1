//! One event becomes one delivery job per recipient and channel.
//!
//! Subscribers are read page by page in id order, never all at once. Each page's jobs are
//! written to the ledger (one `UNNEST` statement) and then published with their delivery key
//! as `Nats-Msg-Id`; the fan-out is recorded in the trail only after the last page, and the
//! event acknowledged only after that. A resolver killed anywhere in between replays the
//! event from the start: the ledger keeps the rows it has, JetStream drops the jobs it has
//! seen, and the workers' ledger check catches any that come back after the duplicate window.
//!
//! Each fan-out done here (not a redelivery found done) records `tocsin_fanout_jobs{channel}`
//! (a histogram of jobs per event, zero included) and `tocsin_fanout_duration_seconds`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;
use tocsin_bus::{Bus, DeliveryJob};
use tocsin_core::{
    Channel, Delivery, DeliveryKey, Incident, Lane, Planned, RecordedEvent, SubscriberId, Timing,
    plan,
};
use tocsin_store::{Candidate, FanoutRecord, Store};
use tracing::{debug, info, instrument};

use crate::ResolveError;

/// Tuning of a fan-out.
#[derive(Debug, Clone, Copy)]
pub struct FanoutConfig {
    /// Subscribers read, planned, recorded and published per round.
    pub page_size: u32,
    /// The first round's size: a fan-out to no more subscribers than this is small, goes to
    /// the small lane, and never waits for a slot a big fan-out holds.
    pub small_page: u32,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            page_size: 20_000,
            small_page: 1_000,
        }
    }
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Fanned out now; the record was appended to the trail.
    Resolved(FanoutRecord),
    /// Fanned out before (a redelivery); nothing was done again.
    AlreadyResolved,
    /// Earlier events of the incident are not fanned out yet; try again shortly, so that an
    /// update never overtakes the opening.
    Waiting { earlier: i64 },
}

/// Reach of a candidate event, per channel and per component, for `PreviewFanout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    pub per_channel: BTreeMap<Channel, u64>,
    /// Recipients (subscribers with at least one delivery) who follow each affected
    /// component, by name or by following all.
    pub per_component: BTreeMap<String, u64>,
    pub recipients: u64,
    pub held: u64,
}

/// The deliveries planned for one page of candidates.
struct PlannedPage {
    deliveries: Vec<(SubscriberId, Planned)>,
    recipients: u64,
    follow_ups: u64,
    webhook_disabled: u64,
}

/// Applies [`plan`] to a page of candidates, leaving out disabled webhook endpoints.
fn plan_page(
    candidates: &[Candidate],
    incident: &Incident,
    event: &RecordedEvent,
    now: OffsetDateTime,
) -> PlannedPage {
    let mut page = PlannedPage {
        deliveries: Vec::with_capacity(candidates.len() * 2),
        recipients: 0,
        follow_ups: 0,
        webhook_disabled: 0,
    };
    for candidate in candidates {
        let before = page.deliveries.len();
        for planned in plan(
            &candidate.preferences,
            incident,
            event,
            candidate.already_told,
            now,
        ) {
            if planned.channel == Channel::Webhook && candidate.webhook_disabled {
                page.webhook_disabled += 1;
                continue;
            }
            page.deliveries.push((candidate.subscriber_id, planned));
        }
        if page.deliveries.len() > before {
            page.recipients += 1;
            let concerned = incident.severity >= candidate.preferences.min_severity
                && candidate
                    .preferences
                    .components
                    .matches(&incident.components);
            if !concerned {
                page.follow_ups += 1;
            }
        }
    }
    page
}

/// Fans out one event. A long fan-out takes seconds; the caller keeps its message in hand
/// meanwhile.
pub async fn resolve(
    store: &Store,
    bus: &Bus,
    config: FanoutConfig,
    event: &RecordedEvent,
) -> Result<Resolution, ResolveError> {
    resolve_paged(store, bus, config, event, || async {}).await
}

/// [`resolve`], calling `on_page` after each page is recorded and published: a fan-out can
/// then be watched, or stopped part-way as a crash would stop it.
pub async fn resolve_paged<F, Fut>(
    store: &Store,
    bus: &Bus,
    config: FanoutConfig,
    event: &RecordedEvent,
    mut on_page: F,
) -> Result<Resolution, ResolveError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut fanout = match Fanout::begin(store, bus, event).await? {
        Begun::Ready(fanout) => fanout,
        Begun::Done(resolution) => return Ok(resolution),
    };
    let mut page_size = config.small_page;
    while !fanout.page(page_size).await? {
        on_page().await;
        page_size = config.page_size;
    }
    on_page().await;
    Ok(Resolution::Resolved(fanout.finish().await?))
}

/// How [`Fanout::begin`] found an event.
#[derive(Debug)]
pub enum Begun<'a> {
    /// To be walked, page by page.
    Ready(Box<Fanout<'a>>),
    /// Nothing to walk: fanned out before, or an earlier event of the incident is not yet.
    Done(Resolution),
}

/// One event's fan-out in progress: the subscribers are walked page by page in id order.
/// The first page decides the lane of every job: a walk that ends within a small first page
/// is small; a longer one is big, critical or bulk by the incident's severity. The resolver
/// walks a big one in a slot of its own once its first page shows it is big.
#[derive(Debug)]
pub struct Fanout<'a> {
    store: &'a Store,
    bus: &'a Bus,
    event: &'a RecordedEvent,
    incident: Incident,
    record: FanoutRecord,
    after: Option<SubscriberId>,
    lane: Option<Lane>,
    started: std::time::Instant,
}

impl<'a> Fanout<'a> {
    /// Starts `event`'s fan-out, unless it was done before or must wait for an earlier event
    /// of its incident.
    #[instrument(skip_all, fields(incident_id = %event.incident_id, event_id = %event.event_id, version = event.version))]
    pub async fn begin(
        store: &'a Store,
        bus: &'a Bus,
        event: &'a RecordedEvent,
    ) -> Result<Begun<'a>, ResolveError> {
        // Three independent reads, at once: each is a round trip to PostgreSQL, and an
        // incident's first message waits for all of them.
        let (record, earlier, as_of) = tokio::try_join!(
            store.fanout_record(event.event_id),
            store.unresolved_before(event.incident_id, event.version),
            store.incident_as_of(event.incident_id, event.version),
        )?;
        if record.is_some() {
            return Ok(Begun::Done(Resolution::AlreadyResolved));
        }
        if earlier > 0 {
            return Ok(Begun::Done(Resolution::Waiting { earlier }));
        }
        let incident = as_of
            .filter(|as_of| as_of.event.event_id == event.event_id)
            .ok_or_else(|| ResolveError::UnknownEvent(event.event_id.to_string()))?
            .incident;
        Ok(Begun::Ready(Box::new(Fanout {
            store,
            bus,
            event,
            incident,
            record: FanoutRecord {
                event_version: event.version,
                ..FanoutRecord::default()
            },
            after: None,
            lane: None,
            started: std::time::Instant::now(),
        })))
    }

    /// The lane its jobs go to, once the first page has decided it.
    pub fn lane(&self) -> Option<Lane> {
        self.lane
    }

    /// Reads, plans, records and publishes the next `page_size` subscribers; true once the
    /// walk is over.
    #[instrument(skip_all, fields(incident_id = %self.event.incident_id, version = self.event.version))]
    pub async fn page(&mut self, page_size: u32) -> Result<bool, ResolveError> {
        let (event, record) = (self.event, &mut self.record);
        let candidates = self
            .store
            .fanout_candidates(&self.incident, self.after, page_size)
            .await?;
        let last_page = candidates.len() < page_size as usize;
        let lane = *self
            .lane
            .get_or_insert_with(|| Lane::of_fanout(last_page, self.incident.severity));
        let Some(last) = candidates.last() else {
            return Ok(true);
        };
        self.after = Some(last.subscriber_id);
        record.considered += candidates.len() as u64;
        record.preferences_revision = candidates
            .iter()
            .map(|c| c.revision)
            .fold(record.preferences_revision, i64::max);

        let page = plan_page(
            &candidates,
            &self.incident,
            event,
            OffsetDateTime::now_utc(),
        );
        record.recipients += page.recipients;
        record.follow_ups += page.follow_ups;
        record.webhook_disabled += page.webhook_disabled;
        let (deliveries, jobs): (Vec<Delivery>, Vec<DeliveryJob>) = page
            .deliveries
            .iter()
            .map(|(subscriber_id, planned)| {
                let key = DeliveryKey::derive(event.event_id, *subscriber_id, planned.channel);
                let send_after = match planned.timing {
                    Timing::Now => None,
                    Timing::HeldUntil(at) => Some(at),
                };
                *record.jobs.entry(planned.channel).or_default() += 1;
                if send_after.is_some() {
                    *record.held.entry(planned.channel).or_default() += 1;
                }
                let delivery = Delivery {
                    delivery_key: key.as_str().to_owned(),
                    incident_id: event.incident_id,
                    event_id: event.event_id,
                    event_version: event.version,
                    subscriber_id: *subscriber_id,
                    channel: planned.channel,
                    send_after,
                    lane,
                };
                let job = DeliveryJob::from(&delivery);
                (delivery, job)
            })
            .unzip();
        // The ledger first: a job on the bus always has its row, so a worker never meets a
        // job it cannot claim.
        self.store.record_deliveries(&deliveries).await?;
        for published in self.bus.publish_jobs(&jobs).await {
            published?;
        }
        debug!(
            candidates = candidates.len(),
            jobs = jobs.len(),
            %lane,
            "page fanned out"
        );
        Ok(last_page)
    }

    /// Records the fan-out in the trail (once: a concurrent resolver may have recorded it
    /// meanwhile, both having planned the same keys) and returns the record.
    pub async fn finish(self) -> Result<FanoutRecord, ResolveError> {
        let (event, record) = (self.event, self.record);
        self.store
            .record_fanout(event.incident_id, event.event_id, &record)
            .await?;
        let elapsed = self.started.elapsed();
        for channel in Channel::ALL {
            let jobs = record.jobs.get(&channel).copied().unwrap_or(0);
            metrics::histogram!("tocsin_fanout_jobs", "channel" => channel.as_str())
                .record(jobs as f64);
        }
        metrics::histogram!("tocsin_fanout_duration_seconds").record(elapsed.as_secs_f64());
        info!(
            incident_id = %event.incident_id,
            version = event.version,
            recipients = record.recipients,
            jobs = record.jobs.values().sum::<u64>(),
            held = record.held.values().sum::<u64>(),
            follow_ups = record.follow_ups,
            lane = self.lane.map(Lane::as_str),
            elapsed_ms = elapsed.as_millis() as u64,
            "event fanned out"
        );
        Ok(record)
    }
}

/// What `event` would reach if it happened to `incident` now: counts per channel and per
/// component, publishing and recording nothing.
#[instrument(skip_all, fields(incident_id = %incident.id))]
pub async fn preview(
    store: &Store,
    config: FanoutConfig,
    incident: &Incident,
    event: &RecordedEvent,
) -> Result<Reach, ResolveError> {
    let now = OffsetDateTime::now_utc();
    let mut reach = Reach::default();
    for component in &incident.components {
        reach.per_component.insert(component.clone(), 0);
    }
    let mut after = None;
    loop {
        let candidates = store
            .fanout_candidates(incident, after, config.page_size)
            .await?;
        let Some(last) = candidates.last() else { break };
        after = Some(last.subscriber_id);
        let page = plan_page(&candidates, incident, event, now);
        reach.recipients += page.recipients;
        let mut reached: BTreeSet<SubscriberId> = BTreeSet::new();
        for (subscriber_id, planned) in &page.deliveries {
            *reach.per_channel.entry(planned.channel).or_default() += 1;
            if matches!(planned.timing, Timing::HeldUntil(_)) {
                reach.held += 1;
            }
            reached.insert(*subscriber_id);
        }
        for candidate in candidates
            .iter()
            .filter(|c| reached.contains(&c.subscriber_id))
        {
            for component in &incident.components {
                if candidate
                    .preferences
                    .components
                    .matches(std::slice::from_ref(component))
                {
                    *reach.per_component.entry(component.clone()).or_default() += 1;
                }
            }
        }
        if candidates.len() < config.page_size as usize {
            break;
        }
    }
    Ok(reach)
}

/// How long to wait before retrying an event whose fan-out failed, by delivery count:
/// 1 s, 2 s, 4 s … up to 30 s.
pub fn retry_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.saturating_sub(1).clamp(0, 5)).unwrap_or(5);
    Duration::from_secs(1 << exponent).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
    }
}
