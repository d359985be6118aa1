//! `cargo xtask bench ordered`: one busy recipient. An incident is opened and updated again
//! and again, all at once, for one subscriber with a webhook endpoint: every message must
//! reach it, strictly in order (webhooks are never superseded), each leaving as soon as the
//! one before it is settled. Timed from the first publish to the last arrival.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use time::OffsetDateTime;
use tocsin_bus::{Bus, BusConfig};
use tocsin_core::{
    Change, Channel, ComponentFilter, Contacts, DeliveryKey, EventKind, PublishRequest,
};
use tocsin_store::{Store, SubscriberWrite};

use super::cpu::{CpuSample, CpuUsage};
use super::scenario::{following, open, wait_for_consumers};
use super::{BenchArgs, Fresh, round2};
use crate::stack::{self, Ports, Stack};

const SECRET: &str = "whsec_dG9jc2luLWJlbmNobWFyay1zZWNyZXQtMzItYnl0ZXM=";
const ENDPOINT: &str = "bench-ordered";
const TIMEOUT: Duration = Duration::from_secs(300);

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.updates > 0, "--updates must be at least 1");
    let fresh = Fresh::create().await?;
    let outcome = measure(&fresh, args.updates).await;
    fresh.cleanup().await;
    let (seconds, in_order, cpu) = outcome?;
    let per_s = args.updates as f64 / seconds;
    println!("| metric | value |\n|---|---|");
    println!("| messages to one endpoint | {} |", args.updates);
    println!("| seconds, first publish to last arrival | {seconds:.2} |");
    println!("| messages/s | {per_s:.1} |");
    println!("| in order | {in_order} |");
    if let Some(cpu) = &cpu {
        println!("| CPU ms per 1,000 messages | {} |", cpu.breakdown());
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "ordered",
            "updates": args.updates,
            "seconds": round2(seconds),
            "messages_per_s": round2(per_s),
            "in_order": in_order,
            "cpu": cpu.as_ref().map(CpuUsage::json),
        })
    );
    if !in_order {
        bail!("the messages arrived out of order");
    }
    Ok(())
}

/// Seconds from the first publish until every message arrived, whether in order, and where
/// the CPU went meanwhile.
async fn measure(fresh: &Fresh, updates: usize) -> anyhow::Result<(f64, bool, Option<CpuUsage>)> {
    let store = Store::connect(&fresh.database_url, 4)
        .await
        .context("connecting to the benchmark database")?;
    store.migrate().await.context("migrating")?;
    let ports = Ports::pick()?;
    let subscriber = store
        .upsert_subscribers(&[SubscriberWrite {
            external_id: "bench-ordered".into(),
            preferences: following(&[Channel::Webhook], ComponentFilter::All),
            contacts: Contacts {
                webhook_url: Some(format!(
                    "http://127.0.0.1:{}/hooks/{ENDPOINT}",
                    ports.webhook
                )),
                ..Contacts::default()
            },
            candidate_webhook_secret: SECRET.into(),
            consent: None,
        }])
        .await
        .context("seeding the subscriber")?
        .remove(0)
        .subscriber;
    let bus = Bus::connect(&fresh.services.nats_url, BusConfig::new(&fresh.prefix)?)
        .await
        .context("connecting to NATS")?;
    bus.ensure_events_stream().await?;

    let http = reqwest::Client::new();
    let mut stack = Stack::new("release");
    let outcome: anyhow::Result<(f64, bool, Option<CpuUsage>)> = async {
        stack::start_providers(&mut stack, ports).await?;
        stack::register_webhook_endpoints(
            &http,
            ports.webhook,
            [(ENDPOINT.to_owned(), SECRET.to_owned())],
        )
        .await?;
        stack::start_resolver(&mut stack, &fresh.urls(), &[])?;
        stack::start_workers(&mut stack, ports, &fresh.urls(), &[]).await?;
        wait_for_consumers(&bus, &mut stack, &bus.config().consumers()).await?;

        let cpu_before = CpuSample::read();
        let (opening, t0) = open(
            &store,
            &bus,
            "ordered-0",
            tocsin_core::Severity::Major,
            "api",
        )
        .await?;
        let mut versions = HashMap::from([(
            DeliveryKey::derive(opening.event_id, subscriber.id, Channel::Webhook).to_string(),
            opening.version,
        )]);
        for i in 1..updates {
            let request = PublishRequest {
                idempotency_key: format!("ordered-{i}"),
                incident_id: Some(opening.incident_id),
                change: Change::new(EventKind::Updated, format!("Update {i}.")),
                occurred_at: None,
                expected_version: None,
            };
            let event = store
                .append("xtask", &request, OffsetDateTime::now_utc())
                .await
                .context("appending an update")?
                .event;
            for published in bus.publish_events(std::slice::from_ref(&event)).await {
                published.context("publishing an update")?;
            }
            versions.insert(
                DeliveryKey::derive(event.event_id, subscriber.id, Channel::Webhook).to_string(),
                event.version,
            );
        }
        loop {
            let arrived = stack::provider_summary(&http, ports.webhook).await?.unique;
            if arrived >= updates as u64 {
                break;
            }
            if t0.elapsed() > TIMEOUT {
                bail!("{arrived} of {updates} arrived within {TIMEOUT:?}");
            }
            stack.check_alive()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seconds = t0.elapsed().as_secs_f64();
        let cpu = cpu_before
            .zip(CpuSample::read())
            .map(|(before, after)| before.usage_until(&after, updates as u64));
        let mut order: Vec<(usize, u64)> = crate::received::received(&http, ports)
            .await?
            .into_iter()
            .filter(|r| r.channel == Channel::Webhook)
            .filter_map(|r| Some((r.seq, *versions.get(r.key.as_deref()?)?)))
            .collect();
        order.sort_unstable();
        let in_order = order.windows(2).all(|pair| pair[0].1 < pair[1].1) && order.len() == updates;
        Ok((seconds, in_order, cpu))
    }
    .await;
    let stopped = stack.stop().await;
    store.pool().close().await;
    let measured = outcome?;
    stopped?;
    Ok(measured)
}
