//! `cargo xtask demo`: the pipeline end to end on this machine's PostgreSQL and NATS.
//!
//! Publishes an incident's whole lifecycle through the real gRPC API of a real
//! `tocsin-ingest` process, then reads it back from the PostgreSQL log and from JetStream.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tocsin_bus::{Bus, BusConfig};
use tocsin_proto::v1::{self, EventKind};

use crate::pipeline::{Ingest, authed, create_database, free_port, kind_name, terminate};
use crate::services::{build_binaries, ensure_services};

const DEMO_DATABASE: &str = "tocsin_demo";
const DEMO_PREFIX: &str = "tocsin_demo";

pub(crate) async fn run() -> anyhow::Result<()> {
    let services = ensure_services().await?;
    build_binaries(false).await?;
    let database_url = create_database(&services, DEMO_DATABASE, false).await?;
    println!("✓ database {DEMO_DATABASE} ready");
    let ingest = Ingest {
        profile: "debug",
        database_url,
        nats_url: services.nats_url.clone(),
        bus_prefix: DEMO_PREFIX.into(),
        port: free_port()?,
    };
    ingest.migrate().await?;
    println!("✓ migrations applied");
    let (child, mut client) = ingest.serve().await?;
    println!(
        "✓ tocsin-ingest serving on 127.0.0.1:{} with its outbox relay",
        ingest.port
    );

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let key = |step: &str| format!("demo-{run_id}-{step}");
    let started = Instant::now();
    let open = client
        .publish_event(authed(opening(key("open"))))
        .await?
        .into_inner();
    let incident_id = open.incident_id.clone();
    let steps = [
        (
            EventKind::Updated,
            v1::IncidentStatus::Identified,
            "We found the cause: a faulty configuration change. We are rolling it back.",
        ),
        (
            EventKind::Updated,
            v1::IncidentStatus::Monitoring,
            "The rollback is complete and error rates are back to normal. We are watching closely.",
        ),
        (
            EventKind::Resolved,
            v1::IncidentStatus::Unspecified,
            "This incident is resolved. Requests between 14:02 and 14:41 UTC may have failed; we are sorry for the disruption.",
        ),
    ];
    for (i, (kind, status, message)) in steps.into_iter().enumerate() {
        client
            .publish_event(authed(v1::PublishEventRequest {
                idempotency_key: key(&format!("step-{i}")),
                incident_id: incident_id.clone(),
                kind: kind.into(),
                status: status.into(),
                message: message.into(),
                ..Default::default()
            }))
            .await?;
    }
    let publish_ms = started.elapsed().as_secs_f64() * 1e3;
    // A publisher's retry returns the original reply instead of a second event.
    let retry = client
        .publish_event(authed(opening(key("open"))))
        .await?
        .into_inner();

    let incident = client
        .get_incident(authed(v1::GetIncidentRequest {
            incident_id: incident_id.clone(),
        }))
        .await?
        .into_inner();
    let log = client
        .list_incident_events(authed(v1::ListIncidentEventsRequest {
            incident_id: incident_id.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .events;

    let bus = Bus::connect(&services.nats_url, BusConfig::new(DEMO_PREFIX)?).await?;
    let id: tocsin_core::IncidentId = incident_id.parse().context("incident id")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let on_stream = loop {
        let envelopes = bus.read_incident_events(id).await.unwrap_or_default();
        if envelopes.len() >= log.len() || Instant::now() > deadline {
            break envelopes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    terminate(child).await?;
    // Relay lag as the log saw it: from the event's record time to JetStream's acknowledgement.
    let pool = sqlx::PgPool::connect(&ingest.database_url).await?;
    let (relay_lag_ms,): (Option<f64>,) = sqlx::query_as(
        "SELECT max(extract(epoch FROM o.published_at - e.recorded_at) * 1000)::float8
         FROM outbox o JOIN events e ON e.position = o.position WHERE e.incident_id = $1",
    )
    .bind(id.as_uuid())
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    let relay_lag_ms = relay_lag_ms.unwrap_or(f64::NAN);

    println!();
    println!(
        "incident {incident_id}: {} · {} · version {}",
        incident.title,
        v1::IncidentStatus::try_from(incident.status)
            .map_or("?", |s| s.as_str_name())
            .trim_start_matches("INCIDENT_STATUS_"),
        incident.version
    );
    println!(
        "{:<4} {:<22} {:<10} {:<36} on JetStream",
        "ver", "kind", "position", "event id"
    );
    for event in &log {
        let relayed = on_stream
            .iter()
            .any(|e| e.event_id.to_string() == event.event_id);
        println!(
            "{:<4} {:<22} {:<10} {:<36} {}",
            event.version,
            kind_name(event.kind),
            event.position,
            event.event_id,
            if relayed { "yes" } else { "NO" }
        );
    }
    println!();
    println!(
        "published 4 events in {publish_ms:.1} ms; slowest relay (commit to JetStream ack): {relay_lag_ms:.1} ms"
    );
    println!(
        "retry of the opening event returned duplicate={} with the original event id: {}",
        retry.duplicate,
        retry.event_id == open.event_id
    );

    let in_order = on_stream
        .windows(2)
        .all(|w| w[0].version + 1 == w[1].version);
    let ok = log.len() == 4
        && on_stream.len() == 4
        && in_order
        && retry.duplicate
        && retry.event_id == open.event_id
        && incident.version == 4;
    println!(
        "{}",
        serde_json::json!({
            "demo": if ok { "ok" } else { "failed" },
            "incident_id": incident_id,
            "events_published": 4,
            "in_log": log.len(),
            "on_jetstream": on_stream.len(),
            "in_order": in_order,
            "duplicate_retry_deduplicated": retry.duplicate,
            "publish_ms": (publish_ms * 10.0).round() / 10.0,
            "max_relay_lag_ms": (relay_lag_ms * 10.0).round() / 10.0,
        })
    );
    if !ok {
        bail!("the demo did not see every event exactly once in the log and on JetStream");
    }
    Ok(())
}

/// The incident's first message: what is wrong, since when, and when we will say more.
fn opening(idempotency_key: String) -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        idempotency_key,
        kind: EventKind::Opened.into(),
        severity: v1::Severity::Major.into(),
        components: vec!["api".into(), "dashboard".into()],
        title: "Elevated error rates on the API".into(),
        message: "Some requests to our API are failing since 14:02 UTC. We are investigating \
                  and will update you within 30 minutes."
            .into(),
        ..Default::default()
    }
}
