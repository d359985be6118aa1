//! `cargo xtask bench fanout-plan`: one incident opened for N subscribers.
//!
//! A release `tocsin-resolver` runs as its own process against a fresh database seeded with
//! N subscribers: a third by email, a third by email and SMS, a third by webhook, all
//! following every component from severity minor up, so each one gets at least one job. The
//! opening event is appended to the log and put on JetStream as the relay would; the clock
//! runs from that publish until the fan-out's `recipients_resolved` entry is in the trail,
//! which the resolver writes only after the last job is recorded and published. The counts
//! are then checked three ways (trail, ledger, deliveries stream) and the resolver's peak
//! resident memory read from `/proc/<pid>/status` (`VmHWM`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use time::OffsetDateTime;
use tocsin_bus::{Bus, BusConfig};
use tocsin_core::{
    Change, Channel, ComponentFilter, Contacts, EventKind, Preferences, PublishRequest,
    RecordedEvent, Severity,
};
use tocsin_store::{Store, SubscriberWrite};
use tokio::process::{Child, Command};

use super::{BenchArgs, Fresh, round2};
use crate::pipeline::terminate_named;
use crate::services::target_bin;

/// Subscribers written per `upsert_subscribers` call (one transaction each).
const SEED_BATCH: usize = 5_000;
/// Seeding progress is printed every this many subscribers.
const SEED_PROGRESS: usize = 20_000;
/// The resolver's own default, shown when `TOCSIN_RESOLVER_PAGE_SIZE` is not set.
const DEFAULT_PAGE_SIZE: u32 = 5_000;
/// How often the trail is polled for the fan-out's record.
const POLL: Duration = Duration::from_millis(10);
/// A fan-out still unfinished after this long is reported as a failure.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// The targets from the issue, on the project's 2-core machines.
const TARGET_SECONDS: f64 = 5.0;
const TARGET_RSS_MIB: f64 = 256.0;

/// What one run measured.
struct Measured {
    jobs: u64,
    seconds: f64,
    peak_rss_mib: f64,
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.recipients > 0, "--recipients must be at least 1");
    let page_size = match std::env::var("TOCSIN_RESOLVER_PAGE_SIZE") {
        Ok(raw) => raw
            .parse::<u32>()
            .context("TOCSIN_RESOLVER_PAGE_SIZE is not a number")?,
        Err(_) => DEFAULT_PAGE_SIZE,
    };
    let fresh = Fresh::create().await?;
    let outcome = measure(&fresh, args.recipients, page_size).await;
    fresh.cleanup().await;
    let measured = outcome?;

    let jobs_per_s = measured.jobs as f64 / measured.seconds;
    println!("| metric | value |\n|---|---|");
    println!("| recipients | {} |", args.recipients);
    println!("| jobs | {} |", measured.jobs);
    println!("| seconds | {:.2} |", measured.seconds);
    println!("| jobs/s | {jobs_per_s:.0} |");
    println!("| resolver peak RSS | {:.1} MiB |", measured.peak_rss_mib);
    println!("| resolver page size | {page_size} |");
    println!(
        "{}",
        serde_json::json!({
            "bench": "fanout-plan",
            "recipients": args.recipients,
            "jobs": measured.jobs,
            "seconds": round2(measured.seconds),
            "jobs_per_s": jobs_per_s.round(),
            "peak_rss_mb": round2(measured.peak_rss_mib),
            "page_size": page_size,
        })
    );
    if measured.seconds > TARGET_SECONDS || measured.peak_rss_mib > TARGET_RSS_MIB {
        eprintln!(
            "note: the target is at most {TARGET_SECONDS} s and {TARGET_RSS_MIB} MiB (for 100,000 recipients)"
        );
    }
    Ok(())
}

/// Seeds, starts the resolver, times the fan-out and checks it. The resolver is stopped
/// before returning, whatever happened; the caller drops the database and streams.
async fn measure(fresh: &Fresh, recipients: usize, page_size: u32) -> anyhow::Result<Measured> {
    let store = Store::connect(&fresh.database_url, 4)
        .await
        .context("connecting to the benchmark database")?;
    store
        .migrate()
        .await
        .context("migrating the benchmark database")?;
    let expected = seed(&store, recipients).await?;
    let total: u64 = expected.values().sum();

    let bus = Bus::connect(&fresh.services.nats_url, BusConfig::new(&fresh.prefix)?)
        .await
        .context("connecting to NATS")?;
    bus.ensure_events_stream().await?;
    bus.ensure_deliveries_stream().await?;

    let mut resolver = start_resolver(fresh, page_size)?;
    let outcome: anyhow::Result<Measured> = async {
        wait_for_consumer(&bus, &mut resolver).await?;
        let (event, seconds) = time_fanout(&store, &bus, &mut resolver).await?;
        let pid = resolver.id().context("the resolver has exited")?;
        let peak_rss_mib = peak_rss_mib(pid)?;
        check_counts(&store, &bus, &event, &expected, total).await?;
        Ok(Measured {
            jobs: total,
            seconds,
            peak_rss_mib,
        })
    }
    .await;
    let stopped = terminate_named(resolver, "tocsin-resolver").await;
    store.pool().close().await;
    let measured = outcome?;
    stopped?;
    Ok(measured)
}

/// Writes `recipients` subscribers in batches; returns the jobs an opening for component
/// `api` at severity minor must make, per channel.
async fn seed(store: &Store, recipients: usize) -> anyhow::Result<BTreeMap<Channel, u64>> {
    eprintln!("bench fanout-plan: seeding {recipients} subscribers");
    let started = Instant::now();
    let mut expected: BTreeMap<Channel, u64> = Channel::ALL.into_iter().map(|c| (c, 0)).collect();
    let mut written = 0;
    while written < recipients {
        let batch: Vec<SubscriberWrite> = (written..recipients.min(written + SEED_BATCH))
            .map(subscriber)
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

/// Subscriber `n`: by email, by email and SMS, or by webhook, in turn.
fn subscriber(n: usize) -> SubscriberWrite {
    let (channels, contacts) = match n % 3 {
        0 => (
            vec![Channel::Email],
            Contacts {
                email: Some(format!("bench-{n}@example.com")),
                ..Contacts::default()
            },
        ),
        1 => (
            vec![Channel::Email, Channel::Sms],
            Contacts {
                email: Some(format!("bench-{n}@example.com")),
                phone: Some(format!("+1415{:07}", n % 10_000_000)),
                webhook_url: None,
            },
        ),
        _ => (
            vec![Channel::Webhook],
            Contacts {
                webhook_url: Some(format!("https://hooks.example.com/bench/{n}")),
                ..Contacts::default()
            },
        ),
    };
    SubscriberWrite {
        external_id: format!("bench-{n:07}"),
        preferences: Preferences {
            channels: channels.into_iter().collect(),
            components: ComponentFilter::All,
            min_severity: Severity::Minor,
            kinds: BTreeMap::new(),
            quiet_hours: None,
        },
        contacts,
        candidate_webhook_secret: "whsec_YmVuY2htYXJrLXNlY3JldA==".into(),
    }
}

/// Starts the release resolver on the benchmark's database and prefix. Its logs go to this
/// terminal, at `RUST_LOG` (warn when unset).
fn start_resolver(fresh: &Fresh, page_size: u32) -> anyhow::Result<Child> {
    Command::new(target_bin("release", "tocsin-resolver"))
        .env("DATABASE_URL", &fresh.database_url)
        .env("NATS_URL", &fresh.services.nats_url)
        .env("TOCSIN_BUS_PREFIX", &fresh.prefix)
        .env("TOCSIN_RESOLVER_PAGE_SIZE", page_size.to_string())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting tocsin-resolver")
}

/// Waits until the resolver's durable consumer exists, so the clock does not include the
/// resolver's start-up.
async fn wait_for_consumer(bus: &Bus, resolver: &mut Child) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(bus.client().clone());
    let config = bus.config();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = resolver.try_wait()? {
            bail!("tocsin-resolver exited at start-up ({status})");
        }
        let stream = js.get_stream(config.events_stream()).await?;
        if stream
            .consumer_info(config.resolver_consumer())
            .await
            .is_ok()
        {
            // The consumer is made just before the first pull; let that go out too.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("tocsin-resolver did not create its consumer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Appends the opening to the log, publishes it, and waits for its fan-out record. Returns
/// the event and the seconds from just before the publish to the record being seen.
async fn time_fanout(
    store: &Store,
    bus: &Bus,
    resolver: &mut Child,
) -> anyhow::Result<(RecordedEvent, f64)> {
    let request = PublishRequest {
        idempotency_key: "bench-fanout-plan".into(),
        incident_id: None,
        change: Change {
            kind: EventKind::Opened,
            status: None,
            severity: Some(Severity::Minor),
            components: vec!["api".into()],
            title: Some("Benchmark incident".into()),
            message: "A benchmark incident, opened by cargo xtask bench fanout-plan.".into(),
            labels: BTreeMap::new(),
            window: None,
        },
        occurred_at: None,
        expected_version: None,
    };
    let event = store
        .append("xtask", &request, OffsetDateTime::now_utc())
        .await
        .context("appending the opening event")?
        .event;
    eprintln!("bench fanout-plan: publishing the opening event");
    let t0 = Instant::now();
    for published in bus.publish_events(std::slice::from_ref(&event)).await {
        published.context("publishing the opening event")?;
    }
    loop {
        if store.fanout_record(event.event_id).await?.is_some() {
            return Ok((event, t0.elapsed().as_secs_f64()));
        }
        if let Some(status) = resolver.try_wait()? {
            bail!("tocsin-resolver exited during the fan-out ({status})");
        }
        if t0.elapsed() > FANOUT_TIMEOUT {
            bail!(
                "the fan-out was not recorded within {} s",
                FANOUT_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The process's high-water resident set (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM line in {path}"))?;
    Ok(kib as f64 / 1024.0)
}

/// The trail's record, the deliveries stream and the ledger must each hold exactly the
/// expected jobs.
async fn check_counts(
    store: &Store,
    bus: &Bus,
    event: &RecordedEvent,
    expected: &BTreeMap<Channel, u64>,
    total: u64,
) -> anyhow::Result<()> {
    let record = store
        .fanout_record(event.event_id)
        .await?
        .context("the fan-out record vanished")?;
    let mut problems = Vec::new();
    for (&channel, &want) in expected {
        let recorded = record.jobs.get(&channel).copied().unwrap_or(0);
        let on_stream = bus.pending_jobs(channel).await?;
        if recorded != want {
            problems.push(format!(
                "{channel}: {recorded} jobs recorded, {want} expected"
            ));
        }
        if on_stream != want {
            problems.push(format!(
                "{channel}: {on_stream} jobs on the stream, {want} expected"
            ));
        }
    }
    let (ledger,): (i64,) = sqlx::query_as("SELECT count(*) FROM deliveries")
        .fetch_one(store.pool())
        .await?;
    if u64::try_from(ledger).ok() != Some(total) {
        problems.push(format!("{ledger} ledger rows, {total} expected"));
    }
    if !problems.is_empty() {
        bail!("the fan-out is wrong: {}", problems.join("; "));
    }
    Ok(())
}
