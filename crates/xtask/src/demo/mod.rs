//! `cargo xtask demo`: the whole pipeline, end to end, on this machine's PostgreSQL and NATS.
//!
//! Every part runs as its own process, as in production: `tocsin-ingest` (gRPC API and outbox
//! relay), `tocsin-resolver`, the `tocsin-email`, `tocsin-sms` and `tocsin-webhook` workers,
//! and `tocsin-local-providers` (an SMTP server, a Twilio-compatible API and a webhook
//! receiver on loopback). The demo imports subscribers over gRPC, publishes an incident that
//! opens, is identified, is monitored and resolves, waits for each message to reach the
//! provider servers, and then checks three witnesses against what the subscribers asked for:
//! the providers' own count of what they received, the delivery ledger, and the log.
//!
//! The database `tocsin_demo` and the streams under the prefix `tocsin_demo` are recreated
//! at the start of each run and left in place at the end, to be looked at.

mod samples;
mod subscribers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tocsin_bus::{Bus, BusConfig};
use tocsin_proto::v1::{
    self, EventKind, component_service_client::ComponentServiceClient,
    incident_service_client::IncidentServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::transport::Channel;

use crate::pipeline::{
    Ingest, authed, create_database, free_port, kind_name, operator_authed, terminate,
};
use crate::services::{build_binaries, ensure_services};
use crate::stack::{self, Ports, Stack};
use subscribers::Expected;

const DEMO_DATABASE: &str = "tocsin_demo";
const DEMO_PREFIX: &str = "tocsin_demo";
/// How long one step of the incident may take to reach every provider.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) async fn run() -> anyhow::Result<()> {
    let services = ensure_services().await?;
    build_binaries(false).await?;
    let database_url = create_database(&services, DEMO_DATABASE, true).await?;
    let bus = Bus::connect(&services.nats_url, BusConfig::new(DEMO_PREFIX)?).await?;
    crate::pipeline::delete_streams(&bus).await;
    println!("✓ fresh database {DEMO_DATABASE} and streams {DEMO_PREFIX}_*");

    let ports = Ports::pick()?;
    let ingest = Ingest {
        profile: "debug",
        database_url: database_url.clone(),
        nats_url: services.nats_url.clone(),
        bus_prefix: DEMO_PREFIX.into(),
        port: free_port()?,
        // The demo's webhook receiver is on loopback, which subscribers may only name when a
        // development allow-list says so.
        // The maintenance clock looks every second, so the demo's reminder comes promptly.
        env: vec![
            ("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".into()),
            ("TOCSIN_MAINTENANCE_CLOCK_SECONDS", "1".into()),
        ],
    };
    ingest.migrate().await?;
    println!("✓ migrations applied");
    let (ingest_child, channel) = ingest.serve().await?;
    println!(
        "✓ tocsin-ingest serving gRPC on 127.0.0.1:{} with its outbox relay",
        ingest.port
    );
    let mut stack = Stack::new("debug");
    let started = stack::start(
        &mut stack,
        ports,
        &stack::Urls {
            database: &database_url,
            nats: &services.nats_url,
            bus_prefix: DEMO_PREFIX,
        },
        &[],
    )
    .await;
    let outcome = match started {
        Ok(()) => {
            println!(
                "✓ tocsin-resolver, tocsin-email, tocsin-sms, tocsin-webhook and the local providers \
                 (SMTP 127.0.0.1:{}, Twilio 127.0.0.1:{}, webhooks 127.0.0.1:{}) running",
                ports.smtp, ports.twilio, ports.webhook
            );
            demonstrate(&mut stack, ports, channel, &bus, &database_url).await
        }
        Err(e) => Err(e),
    };
    // Every process must stop cleanly on SIGTERM, whatever the outcome.
    let stopped = stack.stop().await;
    let ingest_stopped = terminate(ingest_child).await;
    let report = outcome?;
    stopped?;
    ingest_stopped?;
    println!("{}", report.json());
    if !report.ok() {
        bail!(
            "the demo failed: {} missing, {} duplicated, {} unexpected",
            report.missing,
            report.duplicates,
            report.unexpected
        );
    }
    Ok(())
}

/// What the demo saw, for its last line.
struct Report {
    /// The sample reader's one-click unsubscribe was recorded.
    unsubscribed: bool,
    incident_id: String,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    missing: u64,
    unexpected: u64,
    log_ok: bool,
    p50_ms: f64,
    p99_ms: f64,
}

impl Report {
    fn ok(&self) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.unexpected == 0
            && self.log_ok
            && self.unsubscribed
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "demo": if self.ok() { "ok" } else { "failed" },
            "incident_id": self.incident_id,
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "log_and_jetstream_ok": self.log_ok,
            "one_click_unsubscribe_ok": self.unsubscribed,
            "p50_ms": round1(self.p50_ms),
            "p99_ms": round1(self.p99_ms),
        })
    }
}

async fn demonstrate(
    stack: &mut Stack,
    ports: Ports,
    channel: Channel,
    bus: &Bus,
    database_url: &str,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let mut subscriber_client = SubscriberServiceClient::new(channel.clone());
    let mut component_client = ComponentServiceClient::new(channel.clone());
    let mut client = IncidentServiceClient::new(channel);

    for (id, name) in CATALOGUE {
        component_client
            .put_component(operator_authed(v1::PutComponentRequest {
                component: Some(v1::Component {
                    id: id.into(),
                    name: name.into(),
                    group: "Platform".into(),
                    description: String::new(),
                }),
            }))
            .await
            .with_context(|| format!("adding component {id} to the catalogue"))?;
    }
    println!(
        "✓ component catalogue: {}",
        CATALOGUE
            .iter()
            .map(|(id, name)| format!("{id} \"{name}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let expected = subscribers::import(&mut subscriber_client, &http, ports).await?;
    let now = time::OffsetDateTime::now_utc();
    let first = opening(String::new(), now);
    let preview = subscriber_client
        .preview_fanout(operator_authed(v1::PreviewFanoutRequest {
            kind: EventKind::Opened.into(),
            severity: first.severity,
            components: first.components.clone(),
            impacts: first.impacts.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    println!(
        "✓ PreviewFanout of the opening: {} recipients, {}; {}",
        preview.recipients,
        preview
            .channels
            .iter()
            .map(|c| format!("{} {}", c.deliveries, channel_name(c.channel)))
            .collect::<Vec<_>>()
            .join(", "),
        preview
            .components
            .iter()
            .map(|c| format!(
                "{} ({}): {} following",
                c.name,
                v1::Impact::try_from(c.impact)
                    .map(|i| i
                        .as_str_name()
                        .trim_start_matches("IMPACT_")
                        .to_ascii_lowercase())
                    .unwrap_or_default(),
                c.recipients
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let key = |step: &str| format!("demo-{run_id}-{step}");
    let open = client
        .publish_event(authed(opening(key("open"), now)))
        .await?
        .into_inner();
    let incident_id = open.incident_id.clone();
    println!(
        "\nincident {incident_id}: publishing its lifecycle, each step once the last has arrived"
    );
    let mut cumulative: BTreeMap<v1::Channel, u64> = BTreeMap::new();
    let steps = lifecycle(now);
    for (i, step) in steps.iter().enumerate() {
        let published_at = Instant::now();
        if i > 0 {
            client
                .publish_event(authed(v1::PublishEventRequest {
                    idempotency_key: key(&format!("step-{i}")),
                    incident_id: incident_id.clone(),
                    ..step.request.clone()
                }))
                .await?;
        }
        let arrived = step_arrives(
            stack,
            &mut client,
            &incident_id,
            &expected,
            step,
            &mut cumulative,
            published_at,
        )
        .await?;
        if !arrived {
            println!("    (timed out: see the table)");
        }
    }

    // A publisher's retry returns the original reply instead of a second event.
    let retry = client
        .publish_event(authed(opening(key("open"), now)))
        .await?
        .into_inner();
    let log_ok = check_log(&mut client, bus, &incident_id, steps.len()).await?
        && retry.duplicate
        && retry.event_id == open.event_id;
    println!(
        "✓ a retry of the opening returned the original event (duplicate={}); the log and \
         JetStream each hold the {} events in order: {}",
        retry.duplicate,
        steps.len(),
        if log_ok { "yes" } else { "NO" }
    );

    // A planned maintenance: announced, a reminder Tocsin sends by itself, then the work.
    let now = time::OffsetDateTime::now_utc();
    let maintenance = maintenance(now);
    let scheduled = client
        .publish_event(authed(v1::PublishEventRequest {
            idempotency_key: key("maintenance"),
            ..maintenance[0].request.clone()
        }))
        .await?
        .into_inner();
    println!(
        "\nmaintenance {}: announced for {} UTC, with a reminder one minute before",
        scheduled.incident_id,
        samples::hhmm(now + MAINTENANCE_AHEAD)
    );
    let announced = &maintenance[0].request;
    let preview = subscriber_client
        .preview_fanout(operator_authed(v1::PreviewFanoutRequest {
            incident_id: scheduled.incident_id.clone(),
            kind: EventKind::Updated.into(),
            window: announced.window,
            reminders: announced.reminders.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    println!(
        "✓ PreviewFanout of the maintenance lists what the clock will send unless we say it first: {}",
        preview
            .scheduled
            .iter()
            .map(|s| format!(
                "{} at {} UTC ({} recipients)",
                kind_name(s.kind).to_lowercase(),
                s.at.as_ref()
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
                    .map_or_else(|| "?".to_owned(), samples::hhmm),
                s.recipients
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut maintenance_cumulative: BTreeMap<v1::Channel, u64> = BTreeMap::new();
    for (i, step) in maintenance.iter().enumerate() {
        let published_at = Instant::now();
        // The reminder is Tocsin's own event: nothing to publish, only to wait for.
        if i > 0 && step.kind != EventKind::MaintenanceReminder {
            client
                .publish_event(authed(v1::PublishEventRequest {
                    idempotency_key: key(&format!("maintenance-{i}")),
                    incident_id: scheduled.incident_id.clone(),
                    ..step.request.clone()
                }))
                .await?;
        }
        let arrived = step_arrives(
            stack,
            &mut client,
            &scheduled.incident_id,
            &expected,
            step,
            &mut maintenance_cumulative,
            published_at,
        )
        .await?;
        if !arrived {
            println!("    (timed out: see the table)");
        }
    }
    for (channel, count) in maintenance_cumulative {
        *cumulative.entry(channel).or_default() += count;
    }
    let samples = samples::collect(&http, ports).await?;
    println!("\n{samples}");
    let unsubscribed =
        one_click_unsubscribe(&http, samples.unsubscribe_url.as_deref(), database_url).await?;
    status_page(&http, ports, &incident_id).await?;

    // Give a stray second send the time to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = ledger_report(database_url).await?;
    let mut report = Report {
        unsubscribed,
        incident_id,
        expected: 0,
        delivered: 0,
        duplicates: 0,
        missing: 0,
        unexpected: 0,
        log_ok,
        p50_ms: ledger.total.p50_ms,
        p99_ms: ledger.total.p99_ms,
    };
    println!();
    println!(
        "{:<8} {:>8} {:>12} {:>10} {:>7} {:>6} {:>5} {:>8} {:>8}",
        "channel",
        "expected",
        "at provider",
        "duplicates",
        "missing",
        "failed",
        "dead",
        "p50 ms",
        "p99 ms"
    );
    for (channel, port) in [
        (v1::Channel::Email, ports.smtp_control),
        (v1::Channel::Sms, ports.twilio),
        (v1::Channel::Webhook, ports.webhook),
    ] {
        let want = cumulative.get(&channel).copied().unwrap_or(0);
        let summary = stack::provider_summary(&http, port).await?;
        let row = ledger.by_channel.get(channel_name(channel.into()));
        let missing = want.saturating_sub(summary.unique);
        report.expected += want;
        report.delivered += summary.unique;
        report.duplicates += summary.duplicates;
        report.missing += missing;
        report.unexpected += summary.unique.saturating_sub(want);
        println!(
            "{:<8} {:>8} {:>12} {:>10} {:>7} {:>6} {:>5} {:>8.0} {:>8.0}",
            channel_name(channel.into()),
            want,
            summary.unique,
            summary.duplicates,
            missing,
            row.map_or(0, |r| r.failed),
            row.map_or(0, |r| r.dead),
            row.map_or(f64::NAN, |r| r.p50_ms),
            row.map_or(f64::NAN, |r| r.p99_ms),
        );
    }
    println!(
        "latency runs from the event's commit in the log to the provider's acceptance (for SMS, \
         to the carrier's delivered callback)."
    );
    println!(
        "the database {DEMO_DATABASE} keeps it all: the events table, the deliveries ledger and \
         its delivery_trail."
    );
    Ok(report)
}

/// Reads the status page `tocsin-page` serves, as a machine would (its JSON summary) and as
/// a reader would (the incident's page), and says what it shows.
async fn status_page(
    http: &reqwest::Client,
    ports: Ports,
    incident_id: &str,
) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{}", ports.page);
    let summary: serde_json::Value = http
        .get(format!("{base}/api/v1/summary.json"))
        .send()
        .await?
        .json()
        .await
        .context("reading the status page's JSON summary")?;
    let page = http
        .get(format!("{base}/incidents/{incident_id}"))
        .send()
        .await?
        .text()
        .await?;
    println!(
        "✓ status page {base}/ says \"{}\" over {} components; the incident's page shows {} \
         updates (feed: {base}/feed.atom)",
        summary["status"]["description"].as_str().unwrap_or("?"),
        summary["components"].as_array().map_or(0, Vec::len),
        page.matches("<li><strong>").count()
    );
    Ok(())
}

/// Does what a mail provider does when the reader clicks "unsubscribe": POSTs
/// `List-Unsubscribe=One-Click` (RFC 8058) to the URL in their last email's header, served by
/// `tocsin-page`; then checks the ledger's side: their address is opted out of email.
async fn one_click_unsubscribe(
    http: &reqwest::Client,
    url: Option<&str>,
    database_url: &str,
) -> anyhow::Result<bool> {
    let Some(url) = url else {
        println!("✗ the sample reader's emails carried no List-Unsubscribe header");
        return Ok(false);
    };
    let answer = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .context("posting the one-click unsubscribe to tocsin-page")?;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let opted_out: Vec<String> =
        sqlx::query_scalar("SELECT opted_out FROM subscriber_contacts WHERE email = $1")
            .bind(samples::EMAIL_READER)
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    let ok = answer.status().is_success() && opted_out == ["email"];
    println!(
        "{} one-click unsubscribe (RFC 8058) from {}'s last email: tocsin-page answered {}; \
         their address is opted out of {:?}",
        if ok { "✓" } else { "✗" },
        samples::EMAIL_READER,
        answer.status(),
        opted_out
    );
    Ok(ok)
}

/// One step of an incident's or maintenance's life.
struct Step {
    label: &'static str,
    kind: EventKind,
    /// What is published (the idempotency key and incident id are filled in).
    request: v1::PublishEventRequest,
}

/// How far ahead the demo's maintenance is planned: its one-minute reminder is then due
/// seconds after the announcement, and the clock would start the work only after the demo
/// has done so itself.
const MAINTENANCE_AHEAD: time::Duration = time::Duration::seconds(75);

fn ts(at: time::OffsetDateTime) -> Option<prost_types::Timestamp> {
    Some(tocsin_proto::timestamp(at))
}

/// The incident the demo announces, in the tone the default templates are written for:
/// what is wrong, since when, what we are doing and when we will say more; then how it
/// ended, and the review three seconds later (scheduled, as a publisher would for Thursday).
fn lifecycle(now: time::OffsetDateTime) -> [Step; 5] {
    let minutes = time::Duration::minutes;
    let update = |status: v1::IncidentStatus, message: &str, next: Option<time::Duration>| {
        v1::PublishEventRequest {
            kind: EventKind::Updated.into(),
            status: status.into(),
            message: message.into(),
            next_update_at: next.and_then(|n| ts(now + n)),
            ..Default::default()
        }
    };
    [
        Step {
            label: "opened",
            kind: EventKind::Opened,
            request: opening(String::new(), now),
        },
        Step {
            label: "updated: identified",
            kind: EventKind::Updated,
            request: update(
                v1::IncidentStatus::Identified,
                "We found the cause: a faulty configuration change. We are rolling it back.",
                Some(minutes(45)),
            ),
        },
        Step {
            label: "updated: monitoring",
            kind: EventKind::Updated,
            request: update(
                v1::IncidentStatus::Monitoring,
                "The rollback is complete and error rates are back to normal. We are \
                 watching closely before we call this resolved.",
                Some(minutes(60)),
            ),
        },
        Step {
            label: "resolved",
            kind: EventKind::Resolved,
            request: v1::PublishEventRequest {
                kind: EventKind::Resolved.into(),
                message: "Error rates have been normal for 30 minutes. Requests that failed \
                          may be retried safely."
                    .into(),
                customer_action: "Retry any API request that failed with a 5xx error during \
                                  the outage."
                    .into(),
                review_to_follow: true,
                ..Default::default()
            },
        },
        Step {
            label: "review (scheduled +3 s)",
            kind: EventKind::Review,
            request: v1::PublishEventRequest {
                kind: EventKind::Review.into(),
                message: "A configuration change meant for a test region reached production \
                          because one check ran after the deploy instead of before it. We now \
                          run that check first and stage configuration changes region by \
                          region."
                    .into(),
                link: "https://status.example.com/reviews/api-errors".into(),
                deliver_at: ts(now + time::Duration::seconds(3)),
                ..Default::default()
            },
        },
    ]
}

/// The component catalogue the demo keeps: ids as publishers write them, names as customers
/// read them.
const CATALOGUE: [(&str, &str); 3] = [
    ("api", "Public API"),
    ("dashboard", "Dashboard"),
    ("billing", "Billing"),
];

/// The incident's first message: what is wrong, how hard each component is hit, since when
/// (14 minutes before it was reported), and when we will say more.
fn opening(idempotency_key: String, now: time::OffsetDateTime) -> v1::PublishEventRequest {
    let impact = |component: &str, impact: v1::Impact| v1::ComponentImpact {
        component: component.into(),
        impact: impact.into(),
        name: String::new(),
    };
    v1::PublishEventRequest {
        idempotency_key,
        kind: EventKind::Opened.into(),
        severity: v1::Severity::Major.into(),
        components: vec!["api".into(), "dashboard".into()],
        impacts: vec![
            impact("api", v1::Impact::PartialOutage),
            impact("dashboard", v1::Impact::DegradedPerformance),
        ],
        title: "Elevated error rates on the API".into(),
        message: "Some requests to our API fail with errors, in every region.".into(),
        started_at: ts(now - time::Duration::minutes(14)),
        next_update_at: ts(now + time::Duration::minutes(30)),
        ..Default::default()
    }
}

/// A planned maintenance of the dashboard, with one reminder a minute before it starts
/// (recorded by Tocsin itself); the work then starts early and completes.
fn maintenance(now: time::OffsetDateTime) -> [Step; 4] {
    let starts_at = now + MAINTENANCE_AHEAD;
    [
        Step {
            label: "maintenance scheduled",
            kind: EventKind::MaintenanceScheduled,
            request: v1::PublishEventRequest {
                kind: EventKind::MaintenanceScheduled.into(),
                components: vec!["dashboard".into()],
                title: "Dashboard database upgrade".into(),
                message: "The dashboard will be read-only for up to 30 minutes while we \
                          upgrade its database. The API is not affected."
                    .into(),
                window: Some(v1::MaintenanceWindow {
                    starts_at: ts(starts_at),
                    ends_at: ts(starts_at + time::Duration::minutes(30)),
                }),
                reminders: Some(v1::Reminders {
                    minutes_before: vec![1],
                }),
                customer_action: "Save dashboard changes before the window starts.".into(),
                ..Default::default()
            },
        },
        Step {
            label: "reminder (by Tocsin)",
            kind: EventKind::MaintenanceReminder,
            request: v1::PublishEventRequest::default(),
        },
        Step {
            label: "maintenance started",
            kind: EventKind::MaintenanceStarted,
            request: v1::PublishEventRequest {
                kind: EventKind::MaintenanceStarted.into(),
                message: "We started a little early; the dashboard is read-only now.".into(),
                ..Default::default()
            },
        },
        Step {
            label: "maintenance completed",
            kind: EventKind::MaintenanceCompleted,
            request: v1::PublishEventRequest {
                kind: EventKind::MaintenanceCompleted.into(),
                message: "The upgrade is done and the dashboard takes changes again.".into(),
                ..Default::default()
            },
        },
    ]
}

/// Adds `step`'s deliveries to `cumulative`, waits for them to arrive and prints the line.
async fn step_arrives(
    stack: &mut Stack,
    client: &mut IncidentServiceClient<Channel>,
    incident_id: &str,
    expected: &Expected,
    step: &Step,
    cumulative: &mut BTreeMap<v1::Channel, u64>,
    published_at: Instant,
) -> anyhow::Result<bool> {
    for (channel, count) in expected.for_kind(step.kind) {
        *cumulative.entry(channel).or_default() += count;
    }
    let arrived = wait_for_step(stack, client, incident_id, cumulative, published_at).await?;
    println!(
        "  {:<24} {:>3} messages out in {:>6.0} ms",
        step.label,
        expected.for_kind(step.kind).values().sum::<u64>(),
        published_at.elapsed().as_secs_f64() * 1e3,
    );
    Ok(arrived)
}

/// Waits until the ledger shows `cumulative` deliveries per channel and nothing in flight.
/// Returns false on timeout (the final table then says what is missing).
async fn wait_for_step(
    stack: &mut Stack,
    client: &mut IncidentServiceClient<Channel>,
    incident_id: &str,
    cumulative: &BTreeMap<v1::Channel, u64>,
    since: Instant,
) -> anyhow::Result<bool> {
    loop {
        stack.check_alive()?;
        let incident = client
            .get_incident(authed(v1::GetIncidentRequest {
                incident_id: incident_id.to_owned(),
            }))
            .await?
            .into_inner();
        let settled = cumulative.iter().all(|(&channel, &want)| {
            incident
                .delivery
                .iter()
                .find(|p| p.channel == i32::from(channel))
                .is_some_and(|p| {
                    p.delivered + p.failed + p.dead >= want
                        && p.pending + p.sending + p.retrying + p.unknown == 0
                })
        });
        if settled {
            return Ok(true);
        }
        if since.elapsed() > STEP_TIMEOUT {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The log holds `events` versions, and JetStream the same events in order.
async fn check_log(
    client: &mut IncidentServiceClient<Channel>,
    bus: &Bus,
    incident_id: &str,
    events: usize,
) -> anyhow::Result<bool> {
    let log = client
        .list_incident_events(authed(v1::ListIncidentEventsRequest {
            incident_id: incident_id.to_owned(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .events;
    let id: tocsin_core::IncidentId = incident_id.parse().context("incident id")?;
    let on_stream = bus.read_incident_events(id).await?;
    for event in &log {
        println!(
            "  log v{} {:<10} position {:<4} on JetStream: {}",
            event.version,
            kind_name(event.kind),
            event.position,
            if on_stream
                .iter()
                .any(|e| e.event_id.to_string() == event.event_id)
            {
                "yes"
            } else {
                "NO"
            }
        );
    }
    let in_order = on_stream
        .windows(2)
        .all(|w| w[0].version + 1 == w[1].version);
    Ok(log.len() == events && on_stream.len() == events && in_order)
}

/// The ledger's outcome counts and latencies, per channel and in all.
struct LedgerReport {
    by_channel: BTreeMap<String, LedgerRow>,
    total: LedgerRow,
}

#[derive(Debug, Default, Clone, Copy)]
struct LedgerRow {
    failed: u64,
    dead: u64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn ledger_report(database_url: &str) -> anyhow::Result<LedgerReport> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    // ROLLUP adds the all-channels row, whose channel is NULL. Messages scheduled for later
    // (`deliver_at`) are late on purpose, so they are left out of the latencies.
    // channel (NULL on the total row), failed, dead, p50 ms, p99 ms.
    type Row = (Option<String>, i64, i64, Option<f64>, Option<f64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.channel,
                count(*) FILTER (WHERE d.state = 'failed'),
                count(*) FILTER (WHERE d.state = 'dead'),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.finished_at - e.recorded_at) * 1000)
                    FILTER (WHERE d.state = 'delivered' AND NOT e.data ? 'deliver_at'),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.finished_at - e.recorded_at) * 1000)
                    FILTER (WHERE d.state = 'delivered' AND NOT e.data ? 'deliver_at')
         FROM deliveries d JOIN events e ON e.event_id = d.event_id
         GROUP BY ROLLUP (d.channel)",
    )
    .fetch_all(&pool)
    .await
    .context("reading the delivery ledger")?;
    pool.close().await;
    let mut report = LedgerReport {
        by_channel: BTreeMap::new(),
        total: LedgerRow {
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            ..LedgerRow::default()
        },
    };
    for (channel, failed, dead, p50, p99) in rows {
        let row = LedgerRow {
            failed: u64::try_from(failed).unwrap_or(0),
            dead: u64::try_from(dead).unwrap_or(0),
            p50_ms: p50.unwrap_or(f64::NAN),
            p99_ms: p99.unwrap_or(f64::NAN),
        };
        match channel {
            Some(channel) => {
                report.by_channel.insert(channel, row);
            }
            None => report.total = row,
        }
    }
    Ok(report)
}

fn channel_name(channel: i32) -> &'static str {
    match v1::Channel::try_from(channel) {
        Ok(v1::Channel::Email) => "email",
        Ok(v1::Channel::Sms) => "sms",
        Ok(v1::Channel::Webhook) => "webhook",
        _ => "?",
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Expected {
    /// Deliveries one event of `kind` makes, per channel.
    fn for_kind(&self, kind: EventKind) -> BTreeMap<v1::Channel, u64> {
        self.per_kind.get(&kind).cloned().unwrap_or_default()
    }
}
