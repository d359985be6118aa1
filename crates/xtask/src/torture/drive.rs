//! Carries out a plan: each incident's events published on schedule (one task per incident,
//! since an update needs the incident's id), the faults caused alongside, and the supervisor
//! watching for processes that exit on their own the whole time.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tocsin_proto::v1::{self, EventKind};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::rig::{Rig, Servers};
use super::scenarios::{Action, Plan};
use super::world::{IncidentPlan, PublishedEvent, PublishedIncident};

/// What happened while the plan ran.
#[derive(Debug)]
pub(super) struct Driven {
    pub(super) published: Vec<PublishedIncident>,
    /// When the last publish or fault completed: the settle clock starts here.
    pub(super) quiet_since: Instant,
    /// What the harness did, one line each, with times from the start.
    pub(super) log: Vec<String>,
    pub(super) kills: usize,
    /// PostgreSQL restarts and NATS wipes, as short labels (`pg fast`, `nats wipe`).
    pub(super) faults: Vec<&'static str>,
}

/// Steps published so far, as (incident, step), for actions that wait on one; and whether
/// the publishers are all done (or one gave up), so that nothing waits for a step that will
/// never come.
#[derive(Debug, Default)]
struct Progress {
    steps: std::sync::Mutex<HashSet<(usize, usize)>>,
    finished: AtomicBool,
}

impl Progress {
    fn reached(&self, incident: usize, step: usize) -> bool {
        self.steps.lock().unwrap().contains(&(incident, step))
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

pub(super) async fn drive(
    rig: &Rig,
    servers: &mut Servers,
    plan: &Plan,
    run_id: &str,
) -> anyhow::Result<Driven> {
    let t0 = Instant::now();
    let progress: Arc<Progress> = Arc::default();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut publishers = JoinSet::new();
    for (index, incident) in plan.incidents.iter().cloned().enumerate() {
        let api = rig.api.clone();
        let progress = progress.clone();
        let key_prefix = format!("{run_id}-{}", incident.label);
        publishers.spawn(async move {
            let published =
                publish_incident(&api, &incident, index, &key_prefix, t0, &progress).await;
            (index, published)
        });
    }
    let actions = run_actions(rig, servers, plan, t0, &progress, &log);
    let collect = async {
        let mut published = vec![PublishedIncident::default(); plan.incidents.len()];
        let mut failure = None;
        while let Some(joined) = publishers.join_next().await {
            match joined.context("a publisher task panicked") {
                Ok((index, Ok(incident))) => published[index] = incident,
                Ok((_, Err(e))) | Err(e) => {
                    failure.get_or_insert(e);
                    publishers.abort_all();
                }
            }
        }
        progress.finished.store(true, Ordering::Relaxed);
        match failure {
            Some(e) => Err(e),
            None => anyhow::Ok((published, Instant::now())),
        }
    };
    let (published, actions) = tokio::join!(collect, actions);
    let (published, last_publish) = published?;
    let (last_action, kills, faults) = actions?;
    let mut log = Arc::try_unwrap(log)
        .map(Mutex::into_inner)
        .unwrap_or_default();
    log.push(format!(
        "t={:.2}s all {} events published ({} publish retries)",
        last_publish.duration_since(t0).as_secs_f64(),
        published.iter().map(|p| p.events.len()).sum::<usize>(),
        rig.api.retries()
    ));
    Ok(Driven {
        published,
        quiet_since: last_publish.max(last_action),
        log,
        kills,
        faults,
    })
}

fn request(
    incident: &IncidentPlan,
    step: usize,
    key: String,
    incident_id: &str,
) -> v1::PublishEventRequest {
    let kind = incident.steps[step].kind;
    let message = match kind {
        EventKind::Opened => format!(
            "{}: some requests fail. We are investigating.",
            incident.label
        ),
        EventKind::Resolved => format!("{}: resolved. Everything works again.", incident.label),
        _ => format!("{}: update {step}.", incident.label),
    };
    let status = match kind {
        EventKind::Opened => v1::IncidentStatus::Investigating,
        EventKind::Updated if step % 2 == 1 => v1::IncidentStatus::Identified,
        EventKind::Updated => v1::IncidentStatus::Monitoring,
        _ => v1::IncidentStatus::Unspecified,
    };
    let opening = kind == EventKind::Opened;
    v1::PublishEventRequest {
        idempotency_key: key,
        incident_id: incident_id.to_owned(),
        kind: kind.into(),
        status: status.into(),
        severity: if opening { incident.severity.into() } else { 0 },
        components: if opening {
            incident.components.clone()
        } else {
            Vec::new()
        },
        title: if opening {
            format!("Torture incident {}", incident.label)
        } else {
            String::new()
        },
        message,
        ..Default::default()
    }
}

async fn publish_incident(
    api: &super::client::Api,
    incident: &IncidentPlan,
    index: usize,
    key_prefix: &str,
    t0: Instant,
    progress: &Progress,
) -> anyhow::Result<PublishedIncident> {
    let mut done = PublishedIncident::default();
    for (step, planned) in incident.steps.iter().enumerate() {
        tokio::time::sleep_until((t0 + planned.at).into()).await;
        let reply = api
            .publish(request(
                incident,
                step,
                format!("{key_prefix}-{step}"),
                &done.incident_id,
            ))
            .await
            .with_context(|| format!("publishing step {step} of {}", incident.label))?;
        done.incident_id = reply.incident_id;
        done.events.push(PublishedEvent {
            event_id: reply.event_id,
            version: reply.incident_version,
            kind: planned.kind,
        });
        progress.steps.lock().unwrap().insert((index, step));
    }
    Ok(done)
}

/// Runs the plan's actions in order and watches the processes until the publishers are
/// done too. Returns when the last action ended, and the kills and other faults caused.
async fn run_actions(
    rig: &Rig,
    servers: &mut Servers,
    plan: &Plan,
    t0: Instant,
    progress: &Progress,
    log: &Mutex<Vec<String>>,
) -> anyhow::Result<(Instant, usize, Vec<&'static str>)> {
    let stamp = || format!("t={:.2}s", t0.elapsed().as_secs_f64());
    let mut last = t0;
    let mut kills = 0;
    let mut faults = Vec::new();
    let mut restarts: JoinSet<anyhow::Result<Instant>> = JoinSet::new();
    for action in &plan.actions {
        match action {
            Action::Kill { at, target, pause } => {
                sleep_watching(rig, t0 + *at).await;
                // The planned target, or the next one that is running (it may be down
                // between its own kill and restart).
                let mut supervisor = rig.supervisor.lock().await;
                let n = rig.killable.len();
                let Some(name) = (0..n)
                    .map(|i| &rig.killable[(target + i) % n])
                    .find(|name| supervisor.is_running(name))
                    .cloned()
                else {
                    continue;
                };
                supervisor.kill(&name).await?;
                drop(supervisor);
                kills += 1;
                log.lock().await.push(format!(
                    "{} SIGKILL {name}, restart in {} ms",
                    stamp(),
                    pause.as_millis()
                ));
                let supervisor = rig.supervisor.clone();
                let pause = *pause;
                restarts.spawn(async move {
                    tokio::time::sleep(pause).await;
                    supervisor.lock().await.restart(&name)?;
                    Ok(Instant::now())
                });
                last = Instant::now();
            }
            Action::Postgres {
                incident,
                step,
                deliveries,
                immediate,
                pause,
            } => {
                let seen = mid_fan_out(rig, progress, *incident, *step, *deliveries).await;
                log.lock().await.push(format!("{} {seen}", stamp()));
                let mode = if *immediate { "immediate" } else { "fast" };
                log.lock()
                    .await
                    .push(format!("{} PostgreSQL stop -m {mode}", stamp()));
                if *immediate {
                    servers.postgres.stop_immediate().await?;
                } else {
                    servers.postgres.stop().await?;
                }
                tokio::time::sleep(*pause).await;
                servers.postgres.start_again().await?;
                log.lock()
                    .await
                    .push(format!("{} PostgreSQL started again", stamp()));
                faults.push(if *immediate {
                    "pg immediate"
                } else {
                    "pg fast"
                });
                last = Instant::now();
            }
            Action::NatsWipe {
                incident,
                step,
                deliveries,
            } => {
                let seen = mid_fan_out(rig, progress, *incident, *step, *deliveries).await;
                log.lock().await.push(format!("{} {seen}", stamp()));
                log.lock()
                    .await
                    .push(format!("{} nats-server SIGKILL, store wiped", stamp()));
                servers.nats.start_empty().await?;
                log.lock()
                    .await
                    .push(format!("{} nats-server started again, empty", stamp()));
                faults.push("nats wipe");
                last = Instant::now();
            }
        }
    }
    while let Some(restarted) = restarts.join_next().await {
        last = last.max(restarted.context("a restart task panicked")??);
    }
    // Keep watching until every publisher is done.
    while !progress.finished() {
        rig.supervisor.lock().await.watch();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((last, kills, faults))
}

/// Sleeps until `deadline`, letting the supervisor look at its processes meanwhile.
async fn sleep_watching(rig: &Rig, deadline: Instant) {
    while Instant::now() < deadline {
        rig.supervisor.lock().await.watch();
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
    }
}

/// Waits until step `step` of incident `incident` is published and the providers have then
/// taken `deliveries` more messages: its fan-out is under way. Says what it saw.
async fn mid_fan_out(
    rig: &Rig,
    progress: &Progress,
    incident: usize,
    step: usize,
    deliveries: u64,
) -> String {
    while !progress.reached(incident, step) && !progress.finished() {
        rig.supervisor.lock().await.watch();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let http = reqwest::Client::new();
    let taken = async || -> u64 {
        let mut total = 0;
        for channel in tocsin_core::Channel::ALL {
            if let Ok(summary) =
                crate::stack::provider_summary(&http, rig.ports.control(channel)).await
            {
                total += summary.unique + summary.duplicates;
            }
        }
        total
    };
    let base = taken().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = taken().await;
        if now >= base + deliveries || Instant::now() > deadline {
            return format!(
                "step {step} of incident {incident} published; providers took {} messages since",
                now - base
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
