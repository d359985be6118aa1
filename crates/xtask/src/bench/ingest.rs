//! `cargo xtask bench ingest`: sustained durable publishes with many concurrent gRPC clients.
//!
//! A release build of `tocsin-ingest` (relay included) runs against a fresh database with
//! `synchronous_commit` on (PostgreSQL's default, checked below). Clients open incidents and
//! publish updates to them; the call latency is measured at the client and the relay lag
//! (commit to JetStream ack) from the outbox afterwards.
//!
//! Two kinds of load:
//! - closed loop (the default): each client calls again as soon as it has its answer. This
//!   finds the most the service sustains, but at saturation every call waits behind the
//!   others, so latency there is the queue (clients / throughput), not the service.
//! - open loop (`--rate N`): N events per second in all, each client on its own fixed
//!   schedule, as independent publishers behave. A call that goes out late because the
//!   client's previous call was slow is timed from when it was due, so a stall counts in
//!   full (no coordinated omission). This answers "at N events/s, how long does a call
//!   take?", and the achieved rate shows whether N was sustained.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use sqlx::postgres::PgPoolOptions;
use tocsin_proto::v1::{self, EventKind, incident_service_client::IncidentServiceClient};
use tokio::sync::Notify;
use tonic::transport::Channel;

use super::cpu::CpuSample;
use super::disk::DiskSample;
use super::{BenchArgs, Fresh, round2};
use crate::pipeline::{Ingest, authed, free_port, terminate};

/// Updates each client publishes per incident before opening the next one.
const UPDATES_PER_INCIDENT: usize = 9;

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let fresh = Fresh::create().await?;
    let database_url = fresh.database_url.clone();
    let ingest = Ingest {
        profile: "release",
        database_url: database_url.clone(),
        nats_url: fresh.services.nats_url.clone(),
        bus_prefix: fresh.prefix.clone(),
        port: free_port()?,
        env: Vec::new(),
    };
    ingest.migrate().await?;
    let (child, _) = ingest.serve().await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await?;
    let (sync_commit,): (String,) = sqlx::query_as("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await?;
    // Readable where PostgreSQL runs on this machine and lets this role see its settings.
    let data_directory: Option<String> = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&pool)
        .await
        .ok();
    let read_disk = || {
        data_directory
            .as_deref()
            .and_then(|dir| DiskSample::read_for(std::path::Path::new(dir)))
    };
    let limit = args
        .events
        .map_or(String::new(), |n| format!(" or {n} events"));
    eprintln!(
        "bench ingest: {} clients for {} s{limit}, synchronous_commit={sync_commit}",
        args.clients, args.seconds
    );

    // A few HTTP/2 connections shared by many concurrent callers, as real publishers would.
    let endpoint = format!("http://127.0.0.1:{}", ingest.port);
    let mut channels = Vec::new();
    for _ in 0..args.clients.div_ceil(16).max(1) {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }

    let warmup = Duration::from_secs(1);
    let run = Arc::new(Run {
        stop: AtomicBool::new(false),
        measured: AtomicU64::new(0),
        limit: args.events,
        reached: Notify::new(),
        measure_from: Instant::now() + warmup,
    });
    let measure_from = run.measure_from;
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let client = IncidentServiceClient::new(channels[c % channels.len()].clone());
            let schedule = args
                .rate
                .map(|rate| Schedule::for_client(c, args.clients, rate, Instant::now()));
            tokio::spawn(publisher(client, c, schedule, run.clone()))
        })
        .collect();
    let (cpu_before, disk_before) = tokio::select! {
        () = tokio::time::sleep_until(measure_from.into()) => (CpuSample::read(), read_disk()),
        () = run.reached.notified() => (None, None),
    };
    if cpu_before.is_some() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
            () = run.reached.notified() => {}
        }
    }
    run.stop.store(true, Ordering::Relaxed);
    let measured = measure_from.elapsed();
    let cpu_after = CpuSample::read();
    let disk_after = read_disk();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut errors = 0u64;
    for task in tasks {
        let (h, e) = task.await??;
        latency.add(h)?;
        errors += e;
    }

    // The relay has published everything once no outbox row waits.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (backlog,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await?;
        if backlog == 0 {
            break;
        }
        if Instant::now() > drain_deadline {
            bail!("the relay left {backlog} events unpublished after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Relay lag: from the event's commit-time stamp to when JetStream stored it, read back
    // from the stream (both clocks are this machine's).
    let bus = tocsin_bus::Bus::connect(
        &fresh.services.nats_url,
        tocsin_bus::BusConfig::new(&fresh.prefix)?,
    )
    .await?;
    let mut lag = Histogram::<u64>::new(3)?;
    for (event, stored_at) in bus
        .read_all_events_stored()
        .await
        .context("reading the events back from JetStream")?
    {
        let micros = (stored_at - event.recorded_at).whole_microseconds().max(0);
        lag.record(u64::try_from(micros).unwrap_or(u64::MAX))?;
    }
    let lag_ms = |q: f64| lag.value_at_quantile(q) as f64 / 1000.0;
    let (lag_p50, lag_p99) = (lag_ms(0.5), lag_ms(0.99));
    terminate(child).await?;
    pool.close().await;
    // The server's own durable commit rate, in the same minutes, for the ratio.
    let pgbench_tps = super::pgbench::single_row_commits_per_s(
        &database_url,
        Duration::from_secs(args.seconds.clamp(5, 10)),
    )
    .await;
    fresh.cleanup().await;
    let pgbench_tps = pgbench_tps?;

    let count = latency.len();
    let per_s = count as f64 / measured.as_secs_f64();
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| before.usage_until(&after, count));
    let disk = disk_before
        .zip(disk_after)
        .map(|(before, after)| before.usage_until(&after, measured.as_secs_f64()));
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!("| metric | value |\n|---|---|");
    println!("| clients | {} |", args.clients);
    println!(
        "| load | {} |",
        args.rate.map_or("closed loop".to_owned(), |r| format!(
            "open loop, {r} events/s offered"
        ))
    );
    println!(
        "| measured events | {count} over {:.1} s |",
        measured.as_secs_f64()
    );
    println!("| events/s | {per_s:.0} |");
    println!(
        "| call p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0
    );
    println!("| relay lag p50 / p99 | {lag_p50:.2} / {lag_p99:.2} ms |");
    if let Some(cpu) = &cpu {
        println!(
            "| host CPU busy / waiting on I/O / stolen by the hypervisor | {:.0} % / {:.1} % / {:.1} % |",
            cpu.busy_pct, cpu.iowait_pct, cpu.steal_pct
        );
        println!("| CPU ms per 1,000 events | {} |", cpu.breakdown());
    }
    if let Some(disk) = &disk {
        println!("| PostgreSQL's disk | {} |", disk.summary());
    }
    println!(
        "| pgbench, one-row durable commits, {} clients | {pgbench_tps:.0} tx/s |",
        super::pgbench::CLIENTS
    );
    println!(
        "| events/s to pgbench's commits/s | {:.2} |",
        per_s / pgbench_tps
    );
    println!("| errors | {errors} |");
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingest",
            "clients": args.clients,
            "offered_per_s": args.rate,
            "events_per_s": per_s.round(),
            "p50_ms": round2(ms(0.5)),
            "p99_ms": round2(ms(0.99)),
            "relay_lag_p50_ms": round2(lag_p50),
            "relay_lag_p99_ms": round2(lag_p99),
            "errors": errors,
            "pgbench_tps": pgbench_tps.round(),
            "ratio_to_pgbench": round2(per_s / pgbench_tps),
            "cpu_ms_per_1000": cpu.as_ref().map(|c| c.json()["ms_per_1000"].clone()),
            "synchronous_commit": sync_commit,
            "cpu_busy_pct": cpu.as_ref().map(|c| c.busy_pct.round()),
            "cpu_iowait_pct": cpu.as_ref().map(|c| round2(c.iowait_pct)),
            "cpu_steal_pct": cpu.as_ref().map(|c| round2(c.steal_pct)),
            "disk_write_ms": disk.as_ref().and_then(|d| d.write_ms).map(round2),
            "disk_flush_ms": disk.as_ref().and_then(|d| d.flush_ms).map(round2),
        })
    );
    if errors > 0 {
        bail!("{errors} publishes failed during the benchmark");
    }
    Ok(())
}

/// What the publishers share: when to start measuring, and when to stop.
#[derive(Debug)]
struct Run {
    stop: AtomicBool,
    /// Successful calls measured so far, across publishers, for `--events`.
    measured: AtomicU64,
    limit: Option<u64>,
    /// Notified once when `measured` reaches `limit`.
    reached: Notify,
    measure_from: Instant,
}

impl Run {
    fn count_measured(&self) {
        let measured = self.measured.fetch_add(1, Ordering::Relaxed) + 1;
        if self.limit == Some(measured) {
            self.stop.store(true, Ordering::Relaxed);
            self.reached.notify_one();
        }
    }
}

/// When an open-loop client's calls are due: every `interval`, from `first`. Clients are
/// offset from each other so that the offered load is even, not in bursts.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Duration,
}

impl Schedule {
    fn for_client(client: usize, clients: usize, rate: u32, start: Instant) -> Schedule {
        let interval = Duration::from_secs_f64(clients as f64 / f64::from(rate.max(1)));
        let offset = interval.mul_f64(client as f64 / clients as f64);
        Schedule {
            first: start + offset,
            interval,
        }
    }

    fn due(&self, call: u32) -> Instant {
        self.first + self.interval * call
    }
}

/// One publisher: opens an incident, updates it, opens the next. Records latencies (µs)
/// of successful calls that start after `run.measure_from`: from the call's start in a
/// closed loop, from when it was due in an open loop.
async fn publisher(
    mut client: IncidentServiceClient<Channel>,
    id: usize,
    schedule: Option<Schedule>,
    run: Arc<Run>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut latency = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    let mut incident = String::new();
    let mut n = 0usize;
    let mut calls = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        let request = if n.is_multiple_of(UPDATES_PER_INCIDENT + 1) {
            v1::PublishEventRequest {
                idempotency_key: format!("bench-{id}-{n}"),
                kind: EventKind::Opened.into(),
                severity: v1::Severity::Minor.into(),
                components: vec!["api".into()],
                title: "Benchmark incident".into(),
                message: "A benchmark incident, opened by cargo xtask bench.".into(),
                ..Default::default()
            }
        } else {
            v1::PublishEventRequest {
                idempotency_key: format!("bench-{id}-{n}"),
                incident_id: incident.clone(),
                kind: EventKind::Updated.into(),
                message: format!("Update {n}"),
                ..Default::default()
            }
        };
        let started = match schedule {
            Some(schedule) => {
                // A failed call keeps its slot: the next attempt is due at the next tick.
                let due = schedule.due(u32::try_from(calls).unwrap_or(u32::MAX));
                calls += 1;
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        match client.publish_event(authed(request)).await {
            Ok(reply) => {
                if n.is_multiple_of(UPDATES_PER_INCIDENT + 1) {
                    incident = reply.into_inner().incident_id;
                }
                if started >= run.measure_from {
                    latency.record(started.elapsed().as_micros() as u64)?;
                    run.count_measured();
                }
            }
            Err(status) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("publisher {id}: {status}");
                }
                if n.is_multiple_of(UPDATES_PER_INCIDENT + 1) {
                    continue;
                }
            }
        }
        n += 1;
    }
    Ok((latency, errors))
}
