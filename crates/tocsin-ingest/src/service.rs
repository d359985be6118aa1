//! The `tocsin.v1.IncidentService` handlers: decode, validate, call the store, encode.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use time::OffsetDateTime;
use tocsin_bus::{Bus, DeliveryJob};
use tocsin_core::{IncidentId, PublishRequest};
use tocsin_proto::v1::{self, incident_service_server::IncidentService};
use tocsin_runtime::Shutdown;
use tocsin_store::{Appended, Appender, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};

use crate::auth::{caller, require_operator};
use crate::catalogue::Catalogue;
use crate::deliveries;
use crate::status::{domain_status, status};
use crate::watch::WatchHub;

pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1_000;

/// The gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IncidentApi {
    store: Store,
    /// Publishes go through the group-commit writer; reads go to the store directly.
    appender: Appender,
    hub: WatchHub,
    /// Ends watch streams, which would otherwise hold graceful shutdown open forever.
    shutdown: Shutdown,
    /// Dead-letter replays publish their jobs again.
    bus: Bus,
    /// Publishes are checked against it and take their components' display names from it.
    catalogue: Catalogue,
}

impl IncidentApi {
    /// The incident's current state, or NOT_FOUND.
    async fn existing_incident(&self, id: IncidentId) -> Result<tocsin_core::Incident, Status> {
        self.store
            .incident(id)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("incident {id} does not exist")))
    }

    pub fn new(
        store: Store,
        bus: Bus,
        hub: WatchHub,
        catalogue: Catalogue,
        shutdown: Shutdown,
    ) -> Self {
        let appender = Appender::start(store.clone());
        Self {
            store,
            appender,
            hub,
            shutdown,
            bus,
            catalogue,
        }
    }
}

impl IncidentApi {
    /// Records a validated publish for `publisher`: the catalogue's names, the append, the
    /// log line and the metric. Shared by gRPC publishes and the alert receivers.
    #[instrument(skip_all, fields(publisher, incident_id, idempotency_key))]
    pub(crate) async fn publish(
        &self,
        publisher: &str,
        mut publish: PublishRequest,
        now: OffsetDateTime,
    ) -> Result<Appended, Status> {
        let span = tracing::Span::current();
        span.record("publisher", publisher);
        self.catalogue
            .name(&mut publish.change)
            .await
            .map_err(status)?;
        span.record("idempotency_key", publish.idempotency_key.as_str());
        let appended = self
            .appender
            .append(publisher, publish, now)
            .await
            .map_err(status)?;
        span.record(
            "incident_id",
            tracing::field::display(appended.event.incident_id),
        );
        info!(
            event_id = %appended.event.event_id,
            version = appended.event.version,
            position = appended.event.position,
            kind = appended.event.change.kind.as_str(),
            duplicate = appended.duplicate,
            "event published"
        );
        if !appended.duplicate {
            // Publishers are the configured few, so the label set stays small.
            metrics::counter!("tocsin_events_ingested_total",
                "kind" => appended.event.change.kind.as_str(), "publisher" => publisher.to_owned())
            .increment(1);
        }
        Ok(appended)
    }

    /// Holds a validated opening as a draft for an operator (an alert under a `hold`
    /// rule); `None` when an operator already discarded this occurrence's draft.
    pub(crate) async fn hold_draft(
        &self,
        publisher: &str,
        publish: &PublishRequest,
    ) -> Result<Option<tocsin_store::Draft>, Status> {
        let id = publish
            .incident_id
            .ok_or_else(|| Status::internal("a draft needs its incident id"))?;
        self.store
            .hold_draft(id, publisher, &publish.idempotency_key, &publish.change)
            .await
            .map_err(status)
    }

    /// Ends the draft of an alert group that resolved before anyone published it.
    pub(crate) async fn end_draft(&self, id: IncidentId) -> Result<Option<String>, Status> {
        self.store.end_draft(id).await.map_err(status)
    }

    /// The incident's current state, if it exists.
    pub(crate) async fn incident(
        &self,
        id: IncidentId,
    ) -> Result<Option<tocsin_core::Incident>, Status> {
        self.store.incident(id).await.map_err(status)
    }
}

/// A requested page size: 0 means the default; above the limit is refused.
pub(crate) fn page_size(requested: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(Status::invalid_argument(format!(
            "page_size: {n} is above the limit of {MAX_PAGE_SIZE}"
        ))),
        n => Ok(n),
    }
}

#[allow(clippy::result_large_err)]
fn publisher<T>(request: &Request<T>) -> Result<String, Status> {
    caller(request).map(|c| c.name.clone())
}

fn required_incident_id(raw: &str) -> Result<IncidentId, Status> {
    tocsin_proto::incident_id("incident_id", raw)
        .map_err(domain_status)?
        .ok_or_else(|| Status::invalid_argument("incident_id: is required"))
}

fn draft_to_wire(draft: &tocsin_store::Draft) -> v1::Draft {
    v1::Draft {
        incident_id: draft.incident_id.to_string(),
        title: draft.change.title.clone().unwrap_or_default(),
        severity: draft
            .change
            .severity
            .map_or(v1::Severity::Unspecified, v1::Severity::from) as i32,
        components: draft.change.components.clone(),
        message: draft.change.message.clone(),
        source: draft.publisher.clone(),
        notifications: draft.notifications,
        created_at: Some(tocsin_proto::timestamp(draft.created_at)),
        updated_at: Some(tocsin_proto::timestamp(draft.updated_at)),
    }
}

fn reply(appended: &Appended) -> v1::PublishEventResponse {
    v1::PublishEventResponse {
        event_id: appended.event.event_id.to_string(),
        incident_id: appended.event.incident_id.to_string(),
        incident_version: appended.event.version,
        position: appended.event.position,
        duplicate: appended.duplicate,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::IncidentEvent, Status>> + Send>>;

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    async fn publish_event(
        &self,
        request: Request<v1::PublishEventRequest>,
    ) -> Result<Response<v1::PublishEventResponse>, Status> {
        let publisher = publisher(&request)?;
        let now = OffsetDateTime::now_utc();
        let publish = PublishRequest::try_from(request.into_inner())
            .and_then(|r| r.validate(now))
            .map_err(domain_status)?;
        let appended = self.publish(&publisher, publish, now).await?;
        Ok(Response::new(reply(&appended)))
    }

    #[instrument(skip_all, fields(incident_id = %request.get_ref().incident_id))]
    async fn get_incident(
        &self,
        request: Request<v1::GetIncidentRequest>,
    ) -> Result<Response<v1::Incident>, Status> {
        let id = required_incident_id(&request.get_ref().incident_id)?;
        let incident = self.existing_incident(id).await?;
        let mut wire = v1::Incident::from(&incident);
        let progress = self.store.delivery_progress(id).await.map_err(status)?;
        wire.delivery = progress.iter().map(deliveries::progress_to_wire).collect();
        wire.fanned_out_version = self.store.fanned_out_version(id).await.map_err(status)?;
        Ok(Response::new(wire))
    }

    #[instrument(skip_all)]
    async fn list_incidents(
        &self,
        request: Request<v1::ListIncidentsRequest>,
    ) -> Result<Response<v1::ListIncidentsResponse>, Status> {
        crate::listing::list(&self.store, request.get_ref())
            .await
            .map(Response::new)
    }

    #[instrument(skip_all, fields(incident_id = %request.get_ref().incident_id))]
    async fn list_incident_events(
        &self,
        request: Request<v1::ListIncidentEventsRequest>,
    ) -> Result<Response<v1::ListIncidentEventsResponse>, Status> {
        let req = request.into_inner();
        let id = required_incident_id(&req.incident_id)?;
        let page_size = page_size(req.page_size)?;
        // The page token is the last version of the previous page: opaque to clients, and
        // stable because the log never changes.
        let after: u64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse().map_err(|_| {
                Status::invalid_argument("page_token: not a token from a previous page")
            })?
        };
        if after == 0 {
            self.existing_incident(id).await?;
        }
        let events = self
            .store
            .incident_events(id, after, page_size)
            .await
            .map_err(status)?;
        let next_page_token = match events.last() {
            Some(last) if events.len() == page_size as usize => last.version.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListIncidentEventsResponse {
            events: events.iter().map(v1::IncidentEvent::from).collect(),
            next_page_token,
        }))
    }

    type WatchIncidentStream = WatchStream;

    #[instrument(skip_all, fields(incident_id = %request.get_ref().incident_id))]
    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        // Deliveries name recipients: not for every publisher to read.
        require_operator(&request, "ListDeliveries")?;
        let request = request.into_inner();
        let id = required_incident_id(&request.incident_id)?;
        if request.page_token.is_empty() {
            self.existing_incident(id).await?;
        }
        Ok(Response::new(
            deliveries::list(&self.store, id, &request).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn replay_dead_letters(
        &self,
        request: Request<v1::ReplayDeadLettersRequest>,
    ) -> Result<Response<v1::ReplayDeadLettersResponse>, Status> {
        require_operator(&request, "ReplayDeadLetters")?;
        let request = request.into_inner();
        let incident = tocsin_proto::incident_id("incident_id", &request.incident_id)
            .map_err(domain_status)?;
        let channel = tocsin_proto::subscribers::channel_filter("channel", request.channel)
            .map_err(domain_status)?;
        let revived = self
            .store
            .revive_dead_letters(incident, channel)
            .await
            .map_err(status)?;
        let jobs: Vec<DeliveryJob> = revived.iter().map(DeliveryJob::from).collect();
        // The ledger rows are pending again, so a failure here is repaired by replaying again.
        let tag = format!("replay{}", OffsetDateTime::now_utc().unix_timestamp_nanos());
        for published in self.bus.republish_jobs(&jobs, &tag).await {
            published.map_err(|e| {
                warn!(error = %e, "republishing replayed dead letters failed");
                Status::unavailable(
                    "NATS is unavailable; the dead letters are pending again, replay once more",
                )
            })?;
        }
        info!(replayed = jobs.len(), "dead letters replayed");
        Ok(Response::new(v1::ReplayDeadLettersResponse {
            replayed: jobs.len() as u64,
        }))
    }

    async fn list_drafts(
        &self,
        request: Request<v1::ListDraftsRequest>,
    ) -> Result<Response<v1::ListDraftsResponse>, Status> {
        require_operator(&request, "ListDrafts")?;
        let limit = page_size(request.get_ref().page_size)?;
        let drafts = self.store.pending_drafts(limit).await.map_err(status)?;
        Ok(Response::new(v1::ListDraftsResponse {
            drafts: drafts.iter().map(draft_to_wire).collect(),
        }))
    }

    #[instrument(skip_all, fields(incident_id = %request.get_ref().incident_id))]
    async fn publish_draft(
        &self,
        request: Request<v1::PublishDraftRequest>,
    ) -> Result<Response<v1::PublishEventResponse>, Status> {
        require_operator(&request, "PublishDraft")?;
        let operator = publisher(&request)?;
        let id = required_incident_id(&request.get_ref().incident_id)?;
        let draft = match self.store.draft(id).await.map_err(status)? {
            Some(draft) if draft.state == "pending" => draft,
            _ => {
                return Err(Status::not_found(format!(
                    "no draft of incident {id} waits"
                )));
            }
        };
        let now = OffsetDateTime::now_utc();
        let publish = PublishRequest {
            idempotency_key: draft.idempotency_key.clone(),
            incident_id: Some(id),
            change: draft.change.clone(),
            occurred_at: None,
            expected_version: None,
        }
        .validate(now)
        .map_err(domain_status)?;
        // Published first, marked after: a crash between the two leaves a pending draft
        // whose publish is a duplicate (same key), so publishing it again is harmless.
        let appended = self.publish(&draft.publisher, publish, now).await?;
        self.store
            .decide_draft(id, "published", &operator)
            .await
            .map_err(status)?;
        info!(%operator, "draft published");
        Ok(Response::new(reply(&appended)))
    }

    #[instrument(skip_all, fields(incident_id = %request.get_ref().incident_id))]
    async fn discard_draft(
        &self,
        request: Request<v1::DiscardDraftRequest>,
    ) -> Result<Response<v1::DiscardDraftResponse>, Status> {
        require_operator(&request, "DiscardDraft")?;
        let operator = publisher(&request)?;
        let id = required_incident_id(&request.get_ref().incident_id)?;
        if !self
            .store
            .decide_draft(id, "discarded", &operator)
            .await
            .map_err(status)?
        {
            return Err(Status::not_found(format!(
                "no draft of incident {id} waits"
            )));
        }
        info!(%operator, "draft discarded");
        Ok(Response::new(v1::DiscardDraftResponse {}))
    }

    #[instrument(skip_all, fields(incident_id = %request.get_ref().incident_id))]
    async fn watch_incident(
        &self,
        request: Request<v1::WatchIncidentRequest>,
    ) -> Result<Response<Self::WatchIncidentStream>, Status> {
        let req = request.into_inner();
        let id = required_incident_id(&req.incident_id)?;
        self.existing_incident(id).await?;
        // Subscribe before the first read, so no append between the two is missed.
        let notifications = self.hub.subscribe();
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        let after = req.from_version.saturating_sub(1);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = watch(store, id, after, notifications, tx) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the incident's events after `after` to `tx`, then follows new ones until the client
/// goes away. Notifications only wake it; the log is always what is sent.
async fn watch(
    store: Store,
    id: IncidentId,
    mut after: u64,
    mut notifications: broadcast::Receiver<tocsin_store::LogNotification>,
    tx: mpsc::Sender<Result<v1::IncidentEvent, Status>>,
) {
    // A missed notification (reconnect, lag) costs at most this much delay.
    let mut safety_poll = tokio::time::interval(Duration::from_secs(2));
    loop {
        match store.incident_events(id, after, MAX_PAGE_SIZE).await {
            Ok(events) => {
                let full = events.len() == MAX_PAGE_SIZE as usize;
                for event in &events {
                    if tx.send(Ok(v1::IncidentEvent::from(event))).await.is_err() {
                        return;
                    }
                    after = event.version;
                }
                if full {
                    continue;
                }
            }
            Err(e) => {
                warn!(error = %e, "watch could not read the log");
                let _ = tx.send(Err(status(e))).await;
                return;
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = safety_poll.tick() => {}
            note = notifications.recv() => match note {
                Ok(n) if n.incident_id != id || n.version <= after => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
