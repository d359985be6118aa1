//! `cargo xtask bench fanout`: one incident to N subscribers, all the way to the providers.
//!
//! Release builds of the resolver and the three workers run as their own processes against a
//! fresh database seeded with N subscribers, a third each by email, SMS and webhook, next to
//! `tocsin-local-providers` (a real SMTP server, Twilio-compatible API and signature-checking
//! webhook receiver on loopback). The opening event is appended to the log and put on
//! JetStream as the relay would; the clock runs from that publish until the provider servers
//! have received every expected message. Duplicates and missing messages are counted by the
//! providers themselves (by Message-ID, delivery id and webhook-id), and each service's peak
//! resident memory is read from `/proc/<pid>/status` (`VmHWM`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tocsin_bus::{Bus, BusConfig};
use tocsin_core::{Channel, ComponentFilter, Contacts};
use tocsin_store::{Store, SubscriberWrite};

use super::cpu::{CpuSample, CpuUsage};
use super::scenario::{following, open_incident, peak_rss_mib, seed, wait_for_consumers};
use super::small;
use super::{BenchArgs, Fresh, round2};
use crate::stack::{self, Ports, Stack};

/// One secret for every benchmark endpoint: the receiver verifies each signature with it.
const SECRET: &str = "whsec_dG9jc2luLWJlbmNobWFyay1zZWNyZXQtMzItYnl0ZXM=";
/// How often the providers are asked how far they are.
const POLL: Duration = Duration::from_millis(200);
/// Progress is printed this often.
const PROGRESS: Duration = Duration::from_secs(5);
/// Past this the run is reported with what is missing.
const TIMEOUT: Duration = Duration::from_secs(300);
/// After the last expected message, how long a stray second copy gets to show up.
const SETTLE: Duration = Duration::from_secs(2);
/// The target from the issue, on the project's 2-core machines.
const TARGET_SECONDS: f64 = 60.0;
/// The Tocsin services whose memory is reported (the provider servers are test doubles).
const SERVICES: [&str; 4] = [
    "tocsin-resolver",
    "tocsin-email",
    "tocsin-sms",
    "tocsin-webhook",
];

struct Measured {
    /// The small incidents' messages: their times, and how many never arrived.
    small: Option<small::Timings>,
    expected: BTreeMap<Channel, u64>,
    received: BTreeMap<Channel, stack::ProviderSummary>,
    /// From the publish until every expected message was at its provider (or the timeout).
    seconds: f64,
    /// From the publish until each channel's provider had all its messages.
    channel_seconds: BTreeMap<Channel, f64>,
    peak_rss_mib: BTreeMap<&'static str, f64>,
    /// Where the CPU went from the publish to the last arrival, per 1,000 deliveries.
    cpu: Option<CpuUsage>,
}

impl Measured {
    fn total(&self) -> u64 {
        self.expected.values().sum()
    }

    fn delivered(&self) -> u64 {
        self.received.values().map(|s| s.unique).sum()
    }

    fn duplicates(&self) -> u64 {
        self.received.values().map(|s| s.duplicates).sum()
    }

    fn missing(&self) -> u64 {
        self.expected
            .iter()
            .map(|(channel, want)| {
                want.saturating_sub(self.received.get(channel).map_or(0, |s| s.unique))
            })
            .sum()
    }
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.recipients > 0, "--recipients must be at least 1");
    let fresh = Fresh::create().await?;
    let shape = Shape {
        recipients: args.recipients,
        small_incidents: args.small_incidents,
        webhooks_only: args.webhooks_only,
        endpoint_delay_ms: args.endpoint_delay_ms,
    };
    let outcome = measure(&fresh, &shape).await;
    fresh.cleanup().await;
    let m = outcome?;

    let deliveries_per_s = m.delivered() as f64 / m.seconds;
    let peak = m.peak_rss_mib.values().copied().fold(0.0, f64::max);
    println!(
        "| channel | expected | at provider | duplicates | all there after |\n|---|---|---|---|---|"
    );
    for (channel, want) in &m.expected {
        let got = m.received.get(channel);
        let done = m
            .channel_seconds
            .get(channel)
            .map_or("not all".to_owned(), |s| format!("{s:.2} s"));
        println!(
            "| {channel} | {want} | {} | {} | {done} |",
            got.map_or(0, |s| s.unique),
            got.map_or(0, |s| s.duplicates)
        );
    }
    println!("\n| metric | value |\n|---|---|");
    println!("| recipients | {} |", args.recipients);
    println!("| seconds | {:.2} |", m.seconds);
    println!("| deliveries/s | {deliveries_per_s:.0} |");
    for (service, mib) in &m.peak_rss_mib {
        println!("| {service} peak RSS | {mib:.1} MiB |");
    }
    if let Some(cpu) = &m.cpu {
        cpu.print_rows("deliveries");
    }
    // The same number of rows through the bare ledger cycle, on the same database server.
    let raw_fresh = Fresh::create().await?;
    let raw = super::raw::ledger_cycle(&raw_fresh.database_url, m.total() as usize).await;
    raw_fresh.cleanup().await;
    let raw_ledger_seconds = raw?;
    println!(
        "| raw ledger cycle (insert, claim, record) in PostgreSQL | {raw_ledger_seconds:.2} s |"
    );
    println!(
        "| ratio to the raw ledger cycle | {:.1} |",
        m.seconds / raw_ledger_seconds
    );
    if args.endpoint_delay_ms > 0 {
        println!(
            "| every endpoint answers after | {} ms |",
            args.endpoint_delay_ms
        );
    }
    let mut json = serde_json::json!({
        "bench": "fanout",
        "webhooks_only": args.webhooks_only,
        "endpoint_delay_ms": args.endpoint_delay_ms,
        "raw_ledger_seconds": round2(raw_ledger_seconds),
        "recipients": args.recipients,
        "deliveries": m.total(),
        "seconds": round2(m.seconds),
        "channel_seconds": m.channel_seconds.iter()
            .map(|(channel, s)| (channel.to_string(), round2(*s)))
            .collect::<BTreeMap<_, _>>(),
        "deliveries_per_s": deliveries_per_s.round(),
        "duplicates": m.duplicates(),
        "missing": m.missing(),
        "peak_rss_mb": round2(peak),
        "cpu": m.cpu.as_ref().map(CpuUsage::json),
    });
    if let Some(small) = &m.small {
        println!("| small incidents | {} |", args.small_incidents);
        println!(
            "| small-incident messages | {} arrived, {} missing |",
            small.arrived.len(),
            small.missing
        );
        println!(
            "| small-incident p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
            small.quantile(0.5, None),
            small.quantile(0.99, None),
            small.quantile(1.0, None)
        );
        for channel in Channel::ALL {
            println!(
                "| small-incident {channel} p50 / p99 | {:.0} / {:.0} ms |",
                small.quantile(0.5, Some(channel)),
                small.quantile(0.99, Some(channel))
            );
            json[format!("small_incident_{channel}_p50_ms")] =
                small.quantile(0.5, Some(channel)).round().into();
        }
        let stages = small.median_stages();
        println!(
            "| small-incident median stages: publish to ledger row / to send start / to provider | {:.0} / {:.0} / {:.0} ms |",
            stages.resolved, stages.claimed, stages.sent
        );
        json["small_incidents"] = args.small_incidents.into();
        json["small_incident_p50_ms"] = small.quantile(0.5, None).round().into();
        json["small_incident_p99_ms"] = small.quantile(0.99, None).round().into();
        json["small_incident_missing"] = small.missing.into();
    }
    println!("{json}");
    if m.duplicates() > 0 || m.missing() > 0 {
        bail!(
            "{} duplicates and {} missing: every message must arrive exactly once",
            m.duplicates(),
            m.missing()
        );
    }
    if m.seconds > TARGET_SECONDS {
        eprintln!("note: the target is at most {TARGET_SECONDS} s for 100,000 recipients");
    }
    Ok(())
}

/// What one run of the benchmark fans out, and to what kind of endpoints.
struct Shape {
    recipients: usize,
    small_incidents: usize,
    /// Every subscriber by webhook, rather than a third on each channel.
    webhooks_only: bool,
    /// Every webhook endpoint answers after this long.
    endpoint_delay_ms: u64,
}

impl Shape {
    /// The channel subscriber `n` is reached on.
    fn channel(&self, n: usize) -> Channel {
        if self.webhooks_only {
            return Channel::Webhook;
        }
        Channel::ALL[n % 3]
    }
}

async fn measure(fresh: &Fresh, shape: &Shape) -> anyhow::Result<Measured> {
    let (recipients, small_incidents) = (shape.recipients, shape.small_incidents);
    let store = Store::connect(&fresh.database_url, 4)
        .await
        .context("connecting to the benchmark database")?;
    store
        .migrate()
        .await
        .context("migrating the benchmark database")?;
    let ports = Ports::pick()?;
    let expected = seed(&store, recipients, |n| {
        subscriber(n, shape.channel(n), ports.webhook)
    })
    .await?;
    let small_subscribers = small::seed(&store, ports.webhook, SECRET).await?;

    let bus = Bus::connect(&fresh.services.nats_url, BusConfig::new(&fresh.prefix)?)
        .await
        .context("connecting to NATS")?;
    bus.ensure_events_stream().await?;
    bus.ensure_deliveries_stream().await?;
    bus.ensure_dead_letters_stream().await?;

    let http = reqwest::Client::new();
    let mut stack = Stack::new("release");
    let outcome: anyhow::Result<Measured> = async {
        stack::start_providers(&mut stack, ports).await?;
        let endpoints = (0..recipients)
            .filter(|n| shape.channel(*n) == Channel::Webhook)
            .map(|n| (endpoint(n), SECRET.to_owned()))
            .chain([(small::ENDPOINT.to_owned(), SECRET.to_owned())]);
        stack::register_webhook_endpoints(&http, ports.webhook, endpoints).await?;
        if shape.endpoint_delay_ms > 0 {
            // Every endpoint answers only after the delay: a customer's slow server, times N.
            let url = format!("http://127.0.0.1:{}/_control/faults", ports.webhook);
            http.post(&url)
                .json(&serde_json::json!({ "kind": "delay", "ms": shape.endpoint_delay_ms }))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .with_context(|| format!("slowing the endpoints down at {url}"))?;
        }
        stack::start_resolver(&mut stack, &fresh.urls(), &[])?;
        stack::start_workers(&mut stack, ports, &fresh.urls(), &[]).await?;
        let config = bus.config();
        let consumers = config.consumers();
        wait_for_consumers(&bus, &mut stack, &consumers).await?;

        let cpu_before = CpuSample::read();
        let (_, t0) = open_incident(&store, &bus, "bench-fanout").await?;
        let smalls = tokio::spawn(small::publish(
            store.clone(),
            bus.clone(),
            small_incidents,
            t0,
        ));
        let (seconds, channel_seconds) =
            wait_for_providers(&http, &mut stack, ports, &expected, t0).await?;
        let cpu = cpu_before
            .zip(CpuSample::read())
            .map(|(before, after)| before.usage_until(&after, expected.values().sum()));
        let published = smalls.await.context("the small incidents' task")??;
        tokio::time::sleep(SETTLE).await;
        let small = if small_incidents > 0 {
            Some(small::latencies(&http, &store, ports, &small_subscribers, &published).await?)
        } else {
            None
        };
        let mut received = BTreeMap::new();
        for channel in Channel::ALL {
            received.insert(
                channel,
                stack::provider_summary(&http, ports.control(channel)).await?,
            );
        }
        let mut peak_rss = BTreeMap::new();
        for service in SERVICES {
            let pid = stack
                .pid(service)
                .with_context(|| format!("{service} has exited"))?;
            peak_rss.insert(service, peak_rss_mib(pid)?);
        }
        Ok(Measured {
            small,
            expected: expected.clone(),
            received,
            seconds,
            channel_seconds,
            peak_rss_mib: peak_rss,
            cpu,
        })
    }
    .await;
    let stopped = stack.stop().await;
    store.pool().close().await;
    let measured = outcome?;
    stopped?;
    Ok(measured)
}

/// Polls the providers until each has its expected count of distinct messages; returns the
/// seconds since `t0` when that was first seen (or at the timeout), and when each channel's
/// provider had all of its own.
async fn wait_for_providers(
    http: &reqwest::Client,
    stack: &mut Stack,
    ports: Ports,
    expected: &BTreeMap<Channel, u64>,
    t0: Instant,
) -> anyhow::Result<(f64, BTreeMap<Channel, f64>)> {
    let total: u64 = expected.values().sum();
    let mut last_progress = Instant::now();
    let mut channel_seconds = BTreeMap::new();
    loop {
        let mut arrived = 0;
        let mut complete = true;
        for (&channel, &want) in expected {
            let unique = stack::provider_summary(http, ports.control(channel))
                .await?
                .unique;
            arrived += unique.min(want);
            complete &= unique >= want;
            if unique >= want {
                channel_seconds
                    .entry(channel)
                    .or_insert_with(|| t0.elapsed().as_secs_f64());
            }
        }
        let elapsed = t0.elapsed();
        if complete {
            return Ok((elapsed.as_secs_f64(), channel_seconds));
        }
        if elapsed > TIMEOUT {
            eprintln!(
                "timed out after {} s with {arrived} of {total} delivered",
                TIMEOUT.as_secs()
            );
            return Ok((elapsed.as_secs_f64(), channel_seconds));
        }
        if last_progress.elapsed() >= PROGRESS {
            eprintln!(
                "  {arrived} of {total} delivered ({:.0} s)",
                elapsed.as_secs_f64()
            );
            last_progress = Instant::now();
        }
        stack.check_alive()?;
        tokio::time::sleep(POLL).await;
    }
}

/// The receiver's endpoint name of subscriber `n`.
fn endpoint(n: usize) -> String {
    format!("bench-{n}")
}

/// Subscriber `n`: by email, by SMS or by webhook, in turn.
fn subscriber(n: usize, channel: Channel, webhook_port: u16) -> SubscriberWrite {
    let (channel, contacts) = match channel {
        Channel::Email => (
            Channel::Email,
            Contacts {
                email: Some(format!("bench-{n}@example.com")),
                ..Contacts::default()
            },
        ),
        Channel::Sms => (
            Channel::Sms,
            Contacts {
                phone: Some(format!("+1415{:07}", n % 10_000_000)),
                ..Contacts::default()
            },
        ),
        Channel::Webhook => (
            Channel::Webhook,
            Contacts {
                webhook_url: Some(format!(
                    "http://127.0.0.1:{webhook_port}/hooks/{}",
                    endpoint(n)
                )),
                ..Contacts::default()
            },
        ),
    };
    SubscriberWrite {
        external_id: format!("bench-{n:07}"),
        // The big incident is on `api`; the small ones, on `payments`, reach none of these.
        preferences: following(&[channel], ComponentFilter::Only(["api".to_owned()].into())),
        contacts,
        candidate_webhook_secret: SECRET.into(),
        consent: None,
    }
}
