//! What the fan-out benchmarks share: subscribers seeded in batches, processes waited for
//! until their consumers exist, an incident opened on the bus as the relay would, and peak
//! memory read from `/proc`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use time::OffsetDateTime;
use tocsin_bus::Bus;
use tocsin_core::{
    Change, Channel, ComponentFilter, EventKind, Preferences, PublishRequest, RecordedEvent,
    Severity,
};
use tocsin_store::{Store, SubscriberWrite};

use crate::stack::Stack;

/// Subscribers written per `upsert_subscribers` call (one transaction each).
const SEED_BATCH: usize = 5_000;
/// Seeding progress is printed every this many subscribers.
const SEED_PROGRESS: usize = 20_000;

/// Preferences that make an opening of a minor incident on `api` reach `channels`.
pub(super) fn everything_on(channels: &[Channel]) -> Preferences {
    following(channels, ComponentFilter::All)
}

/// Preferences for every incident, of any severity, on `components`, by `channels`.
pub(super) fn following(channels: &[Channel], components: ComponentFilter) -> Preferences {
    Preferences {
        channels: channels.iter().copied().collect(),
        components,
        min_severity: Severity::Minor,
        kinds: BTreeMap::new(),
        quiet_hours: None,
    }
}

/// Writes subscribers `0..recipients`, made by `make`, in batches; returns the jobs an
/// opening reaching all of them makes, per channel.
pub(super) async fn seed(
    store: &Store,
    recipients: usize,
    make: impl Fn(usize) -> SubscriberWrite,
) -> anyhow::Result<BTreeMap<Channel, u64>> {
    eprintln!("seeding {recipients} subscribers");
    let started = Instant::now();
    let mut expected: BTreeMap<Channel, u64> = Channel::ALL.into_iter().map(|c| (c, 0)).collect();
    let mut written = 0;
    while written < recipients {
        let batch: Vec<SubscriberWrite> = (written..recipients.min(written + SEED_BATCH))
            .map(&make)
            .collect();
        for write in &batch {
            for channel in &write.preferences.channels {
                *expected.entry(*channel).or_default() += 1;
            }
        }
        store
            .upsert_subscribers(&batch)
            .await
            .context("seeding subscribers")?;
        let before = written;
        written += batch.len();
        if written / SEED_PROGRESS > before / SEED_PROGRESS || written == recipients {
            eprintln!(
                "  {written} subscribers written ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(expected)
}

/// Waits until each `(stream, consumer)` exists, so that no clock includes start-up.
pub(super) async fn wait_for_consumers(
    bus: &Bus,
    stack: &mut Stack,
    consumers: &[(String, String)],
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(bus.client().clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    for (stream, consumer) in consumers {
        loop {
            stack.check_alive()?;
            let stream_handle = js.get_stream(stream).await?;
            if stream_handle.consumer_info(consumer).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("consumer {consumer} on {stream} did not appear within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A consumer is made just before its first pull; let that go out too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Appends the opening of a minor incident on `api` to the log and publishes it as the relay
/// would. Returns the event and the instant just before the publish.
pub(super) async fn open_incident(
    store: &Store,
    bus: &Bus,
    idempotency_key: &str,
) -> anyhow::Result<(RecordedEvent, Instant)> {
    eprintln!("publishing the opening event");
    open(store, bus, idempotency_key, Severity::Minor, "api").await
}

/// Appends the opening of an incident of `severity` on `component` and publishes it as the
/// relay would. Returns the event and the instant just before the publish.
pub(super) async fn open(
    store: &Store,
    bus: &Bus,
    idempotency_key: &str,
    severity: Severity,
    component: &str,
) -> anyhow::Result<(RecordedEvent, Instant)> {
    let request = PublishRequest {
        idempotency_key: idempotency_key.into(),
        incident_id: None,
        change: Change {
            severity: Some(severity),
            components: vec![component.into()],
            title: Some("Benchmark incident".into()),
            ..Change::new(
                EventKind::Opened,
                "A benchmark incident, opened by cargo xtask bench.",
            )
        },
        occurred_at: None,
        expected_version: None,
    };
    let event = store
        .append("xtask", &request, OffsetDateTime::now_utc())
        .await
        .context("appending the opening event")?
        .event;
    let t0 = Instant::now();
    for published in bus.publish_events(std::slice::from_ref(&event)).await {
        published.context("publishing the opening event")?;
    }
    Ok((event, t0))
}

/// The process's high-water resident set (`VmHWM`), in MiB.
pub(super) fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM line in {path}"))?;
    Ok(kib as f64 / 1024.0)
}
