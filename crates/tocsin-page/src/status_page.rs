//! The public status page: `/` (components, current incidents and maintenance, 90 days of
//! history), `/incidents/{id}`, `/feed.atom` and `/api/v1/summary.json`.
//!
//! Everything is read from PostgreSQL's projections and log on each request (three short
//! queries); nothing waits on NATS, so the page stays up whatever the pipeline is doing.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{Environment, context};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tocsin_core::component::affected;
use tocsin_core::notice::{human_list, human_time};
use tocsin_core::status::{ComponentStatus, component_states, is_public, overall};
use tocsin_core::{EventKind, Incident, IncidentId, IncidentKind, IncidentStatus, RecordedEvent};
use tracing::error;

use crate::html::escape;
use crate::{Pages, render};

/// How far back the history reaches.
const HISTORY_DAYS: i64 = 90;
/// Most incidents one page lists.
const MOST_INCIDENTS: u32 = 500;
/// Entries in the Atom feed.
const FEED_ENTRIES: usize = 50;

/// The page templates, compiled in.
pub(crate) fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    for (name, source) in [
        ("_layout.html", include_str!("../templates/_layout.html")),
        (
            "_incident.html",
            include_str!("../templates/_incident.html"),
        ),
        (
            "_components.html",
            include_str!("../templates/_components.html"),
        ),
        ("status.html", include_str!("../templates/status.html")),
        ("incident.html", include_str!("../templates/incident.html")),
        (
            "preferences.html",
            include_str!("../templates/preferences.html"),
        ),
        (
            "subscribe.html",
            include_str!("../templates/subscribe.html"),
        ),
        ("verify.html", include_str!("../templates/verify.html")),
        ("notice.html", include_str!("../templates/notice.html")),
    ] {
        env.add_template(name, source)
            .expect("the compiled-in templates parse");
    }
    env
}

fn status_words(status: IncidentStatus) -> &'static str {
    match status {
        IncidentStatus::Investigating => "Investigating",
        IncidentStatus::Identified => "Identified",
        IncidentStatus::Monitoring => "Monitoring",
        IncidentStatus::Resolved => "Resolved",
        IncidentStatus::Scheduled => "Scheduled",
        IncidentStatus::InProgress => "In progress",
        IncidentStatus::Completed => "Completed",
    }
}

/// The label of one update on the page.
fn update_label(event: &RecordedEvent) -> &'static str {
    match event.change.kind {
        EventKind::Opened => event.change.status.map_or("Investigating", status_words),
        EventKind::Updated => event.change.status.map_or("Update", status_words),
        EventKind::Resolved => "Resolved",
        EventKind::Reopened => "Reopened",
        EventKind::Review => "Review",
        EventKind::MaintenanceScheduled => "Scheduled",
        EventKind::MaintenanceReminder => "Reminder",
        EventKind::MaintenanceStarted => "In progress",
        EventKind::MaintenanceCompleted => "Completed",
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct UpdateView {
    label: &'static str,
    kind: &'static str,
    at: String,
    at_iso: String,
    message: String,
    link: Option<String>,
}

#[derive(Debug, Serialize)]
struct IncidentView {
    id: String,
    title: String,
    kind: &'static str,
    status: &'static str,
    status_words: &'static str,
    severity: &'static str,
    /// "Public API (partial outage) and Dashboard".
    affected: String,
    components: Vec<AffectedView>,
    window: Option<String>,
    opened: String,
    closed: Option<String>,
    /// Newest first.
    updates: Vec<UpdateView>,
}

#[derive(Debug, Serialize)]
struct AffectedView {
    id: String,
    name: String,
    impact: Option<&'static str>,
}

/// `names`: the catalogue's, for components the incident's events carry no name for (an
/// event published before the component was in the catalogue).
fn incident_view(
    incident: &Incident,
    events: &[&RecordedEvent],
    names: &BTreeMap<String, String>,
) -> IncidentView {
    let mut known = names.clone();
    known.extend(incident.component_names.clone());
    let shown = affected(&incident.components, &known, &incident.impacts);
    let words: Vec<String> = shown
        .iter()
        .map(|a| match a.impact {
            Some(i) => format!("{} ({})", a.name, i.words()),
            None => a.name.clone(),
        })
        .collect();
    IncidentView {
        id: incident.id.to_string(),
        title: incident.title.clone(),
        kind: match incident.kind {
            IncidentKind::Incident => "incident",
            IncidentKind::Maintenance => "maintenance",
        },
        status: incident.status.as_str(),
        status_words: status_words(incident.status),
        severity: incident.severity.as_str(),
        affected: human_list(&words),
        components: shown
            .iter()
            .map(|a| AffectedView {
                id: a.id.clone(),
                name: a.name.clone(),
                impact: a.impact.map(|i| i.as_str()),
            })
            .collect(),
        window: incident
            .window
            .map(|w| format!("{} to {}", human_time(w.starts_at), human_time(w.ends_at))),
        opened: human_time(incident.opened_at),
        closed: incident.resolved_at.map(human_time),
        updates: events
            .iter()
            .rev()
            .map(|e| UpdateView {
                label: update_label(e),
                kind: e.change.kind.as_str(),
                at: human_time(e.occurred_at),
                at_iso: rfc3339(e.occurred_at),
                message: e.change.message.clone(),
                link: e.change.link.clone(),
            })
            .collect(),
    }
}

#[derive(Debug, Serialize)]
struct GroupView {
    name: Option<String>,
    components: Vec<ComponentView>,
}

#[derive(Debug, Serialize)]
struct ComponentView {
    id: String,
    name: String,
    description: Option<String>,
    state: &'static str,
    state_words: &'static str,
}

fn component_view(c: &ComponentStatus) -> ComponentView {
    ComponentView {
        id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        state: c.state(),
        state_words: c.impact.map_or("Operational", |i| match i {
            tocsin_core::Impact::DegradedPerformance => "Degraded performance",
            tocsin_core::Impact::PartialOutage => "Partial outage",
            tocsin_core::Impact::MajorOutage => "Major outage",
            tocsin_core::Impact::UnderMaintenance => "Under maintenance",
        }),
    }
}

/// Components by group, groups in the order their first component comes.
fn groups(components: &[ComponentStatus]) -> Vec<GroupView> {
    let mut groups: Vec<GroupView> = Vec::new();
    for c in components {
        match groups.iter_mut().find(|g| g.name == c.group) {
            Some(group) => group.components.push(component_view(c)),
            None => groups.push(GroupView {
                name: c.group.clone(),
                components: vec![component_view(c)],
            }),
        }
    }
    groups
}

/// Everything the page shows, read once.
pub(crate) struct Snapshot {
    now: OffsetDateTime,
    /// The catalogue's display names by id.
    names: BTreeMap<String, String>,
    components: Vec<ComponentStatus>,
    /// Newest first.
    incidents: Vec<Incident>,
    events: HashMap<IncidentId, Vec<RecordedEvent>>,
}

/// The last snapshot read, shared by every request for a short while: on an incident's worst
/// minute many customers load the page at once, and they then cost one read of PostgreSQL
/// per interval instead of one each. Requests that miss wait for the one read in progress
/// rather than all reading at once.
#[derive(Debug)]
pub(crate) struct Snapshots {
    ttl: std::time::Duration,
    last: tokio::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<Snapshot>)>>,
}

impl Snapshots {
    pub(crate) fn new(ttl: std::time::Duration) -> Snapshots {
        Snapshots {
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("now", &self.now)
            .field("incidents", &self.incidents.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The current snapshot: the shared one while it is younger than the configured time to
    /// live, else a fresh read.
    async fn current(pages: &Pages) -> Result<std::sync::Arc<Snapshot>, tocsin_store::StoreError> {
        let snapshots = &pages.snapshots;
        if snapshots.ttl.is_zero() {
            return Ok(std::sync::Arc::new(Snapshot::read(pages).await?));
        }
        let mut last = snapshots.last.lock().await;
        if let Some((at, snapshot)) = last.as_ref()
            && at.elapsed() < snapshots.ttl
        {
            return Ok(snapshot.clone());
        }
        let snapshot = std::sync::Arc::new(Snapshot::read(pages).await?);
        *last = Some((std::time::Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    async fn read(pages: &Pages) -> Result<Snapshot, tocsin_store::StoreError> {
        let now = OffsetDateTime::now_utc();
        let since = now - time::Duration::days(HISTORY_DAYS);
        let catalogue = pages.store.components().await?;
        let incidents = pages.store.public_incidents(since, MOST_INCIDENTS).await?;
        let ids: Vec<IncidentId> = incidents.iter().map(|i| i.id).collect();
        let mut events: HashMap<IncidentId, Vec<RecordedEvent>> = HashMap::new();
        for event in pages.store.events_of(&ids).await? {
            if is_public(&event, now) {
                events.entry(event.incident_id).or_default().push(event);
            }
        }
        Ok(Snapshot {
            now,
            names: catalogue
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect(),
            components: component_states(&catalogue, &incidents),
            incidents,
            events,
        })
    }

    fn view(&self, incident: &Incident) -> IncidentView {
        let events: Vec<&RecordedEvent> = self
            .events
            .get(&incident.id)
            .map(|e| e.iter().collect())
            .unwrap_or_default();
        incident_view(incident, &events, &self.names)
    }

    fn active(&self) -> impl Iterator<Item = &Incident> {
        self.incidents
            .iter()
            .filter(|i| i.kind == IncidentKind::Incident && !i.is_closed())
    }

    fn maintenance(&self) -> impl Iterator<Item = &Incident> {
        self.incidents
            .iter()
            .filter(|i| i.kind == IncidentKind::Maintenance && !i.is_closed())
    }
}

fn unavailable(pages: &Pages, e: &tocsin_store::StoreError) -> Response {
    error!(error = %e, "could not read the status");
    crate::html::unavailable(pages)
}

/// `GET /`.
pub(crate) async fn status(State(pages): State<Pages>) -> Response {
    let snapshot = match Snapshot::current(&pages).await {
        Ok(s) => s,
        Err(e) => return unavailable(&pages, &e),
    };
    let word = overall(&snapshot.components);
    let history: Vec<IncidentView> = snapshot
        .incidents
        .iter()
        .filter(|i| i.is_closed())
        .map(|i| snapshot.view(i))
        .collect();
    let ctx = context! {
        overall_words => word.words(),
        overall_class => serde_json_value(&word),
        groups => groups(&snapshot.components),
        active => snapshot.active().map(|i| snapshot.view(i)).collect::<Vec<_>>(),
        maintenance => snapshot.maintenance().map(|i| snapshot.view(i)).collect::<Vec<_>>(),
        history => history,
    };
    render(&pages, StatusCode::OK, "status.html", ctx)
}

/// The serde name of a unit enum variant ("partial_outage").
fn serde_json_value<T: Serialize>(value: &T) -> String {
    minijinja::Value::from_serialize(value).to_string()
}

/// `GET /incidents/{id}`.
pub(crate) async fn incident(State(pages): State<Pages>, Path(id): Path<String>) -> Response {
    let not_found = || crate::html::not_found(&pages);
    let Ok(id) = id.parse::<IncidentId>() else {
        return not_found();
    };
    let incident = match pages.store.incident(id).await {
        Ok(Some(incident)) => incident,
        Ok(None) => return not_found(),
        Err(e) => return unavailable(&pages, &e),
    };
    let now = OffsetDateTime::now_utc();
    let events = match pages.store.events_of(&[id]).await {
        Ok(events) => events,
        Err(e) => return unavailable(&pages, &e),
    };
    let public: Vec<&RecordedEvent> = events.iter().filter(|e| is_public(e, now)).collect();
    let names = match pages.store.components().await {
        Ok(catalogue) => catalogue.into_iter().map(|c| (c.id, c.name)).collect(),
        Err(e) => return unavailable(&pages, &e),
    };
    render(
        &pages,
        StatusCode::OK,
        "incident.html",
        context! { i => incident_view(&incident, &public, &names) },
    )
}

/// `GET /api/v1/summary.json`: the page for machines (shape in the README).
pub(crate) async fn summary(State(pages): State<Pages>) -> Response {
    let snapshot = match Snapshot::current(&pages).await {
        Ok(s) => s,
        Err(e) => return unavailable(&pages, &e),
    };
    let word = overall(&snapshot.components);
    let components: Vec<serde_json::Value> = snapshot
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id, "name": c.name, "group": c.group,
                "description": c.description, "status": c.state(),
            })
        })
        .collect();
    let incidents = |list: Vec<&Incident>| -> Vec<IncidentView> {
        list.into_iter().map(|i| snapshot.view(i)).collect()
    };
    let body = serde_json::json!({
        "page": {
            "name": pages.config.company,
            "url": pages.config.public_url,
            "updated_at": rfc3339(snapshot.now),
        },
        "status": { "indicator": word, "description": word.words() },
        "components": components,
        "incidents": incidents(snapshot.active().collect()),
        "maintenances": incidents(snapshot.maintenance().collect()),
    });
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response()
}

/// `GET /feed.atom`: the latest public updates, newest first.
pub(crate) async fn feed(State(pages): State<Pages>) -> Response {
    let now = OffsetDateTime::now_utc();
    let events = match pages.store.latest_events(FEED_ENTRIES as u32 * 2).await {
        Ok(events) => events,
        Err(e) => return unavailable(&pages, &e),
    };
    let events: Vec<RecordedEvent> = events
        .into_iter()
        .filter(|e| is_public(e, now))
        .take(FEED_ENTRIES)
        .collect();
    // The entries' incidents in one query, for their titles.
    let ids: Vec<IncidentId> = events.iter().map(|e| e.incident_id).collect();
    let titles: BTreeMap<IncidentId, String> = match pages.store.incidents_by_id(&ids).await {
        Ok(incidents) => incidents.into_iter().map(|i| (i.id, i.title)).collect(),
        Err(e) => return unavailable(&pages, &e),
    };
    let base = pages.config.public_url.trim_end_matches('/').to_owned();
    let company = escape(&pages.config.company);
    let updated = events.first().map_or(now, |e| e.occurred_at);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
         <title>{company} status</title>\n\
         <id>{base}/feed.atom</id>\n\
         <link rel=\"self\" href=\"{base}/feed.atom\"/>\n\
         <link rel=\"alternate\" type=\"text/html\" href=\"{base}/\"/>\n\
         <updated>{}</updated>\n\
         <author><name>{company}</name></author>\n",
        rfc3339(updated)
    );
    for event in &events {
        let title = titles.get(&event.incident_id).cloned().unwrap_or_default();
        xml.push_str(&format!(
            "<entry>\n<id>urn:uuid:{}</id>\n<title>{}: {}</title>\n<updated>{}</updated>\n\
             <link rel=\"alternate\" type=\"text/html\" href=\"{base}/incidents/{}\"/>\n\
             <content type=\"text\">{}</content>\n</entry>\n",
            event.event_id.as_uuid(),
            escape(update_label(event)),
            escape(&title),
            rfc3339(event.occurred_at),
            event.incident_id,
            escape(&event.change.message),
        ));
    }
    xml.push_str("</feed>\n");
    (
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        xml,
    )
        .into_response()
}
