//! The `tocsin.v1.SubscriberService` handlers: subscribers, their preferences, bulk import,
//! webhook secrets, and the reach of an event before it is announced.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use time::OffsetDateTime;
use tocsin_core::component::{Affected, Component, affected, check_known};
use tocsin_core::network::UrlPolicy;
use tocsin_core::subscriber::validate_external_id;
use tocsin_core::{
    Change, ComponentFilter, DomainError, EventId, EventKind, Incident, IncidentId, IncidentKind,
    IncidentStatus, RecordedEvent,
};
use tocsin_proto::subscribers::{channel_filter, preferences};
use tocsin_proto::v1::{self, subscriber_service_server::SubscriberService};
use tocsin_resolver::FanoutConfig;
use tocsin_store::{Store, SubscriberFilter, SubscriberWrite, Upserted};
use tocsin_webhook::signature::WebhookSecret;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, instrument};

use crate::catalogue::Catalogue;
use crate::contacts::ContactChecker;
use crate::status::{domain_status, status};

/// Rows written per statement during an import.
const IMPORT_BATCH: usize = 1_000;
/// Rejected rows reported in full in an import summary; the count covers the rest.
const MAX_REPORTED_ERRORS: usize = 1_000;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

#[derive(Debug, Clone)]
pub struct SubscriberApi {
    store: Store,
    /// Followed components and previewed ones are checked against it.
    catalogue: Catalogue,
    webhook_policy: UrlPolicy,
    fanout: FanoutConfig,
}

impl SubscriberApi {
    pub fn new(
        store: Store,
        catalogue: Catalogue,
        webhook_policy: UrlPolicy,
        fanout: FanoutConfig,
    ) -> Self {
        Self {
            store,
            catalogue,
            webhook_policy,
            fanout,
        }
    }

    /// Validates one request into a write. Errors name the field. Followed components
    /// must be in `catalogue` when one is kept.
    async fn write(
        &self,
        checker: &mut ContactChecker<'_>,
        catalogue: &BTreeMap<String, Component>,
        request: v1::UpsertSubscriberRequest,
    ) -> Result<SubscriberWrite, DomainError> {
        let external_id = request.external_id.trim().to_owned();
        validate_external_id(&external_id)?;
        let preferences = preferences(request.preferences)?;
        if let ComponentFilter::Only(followed) = &preferences.components {
            check_known(followed, catalogue, "preferences.components")?;
        }
        let contacts = checker.check(request.contacts).await?;
        contacts.check_reachable(&preferences)?;
        let consent = consent_note(&request.consent)?;
        Ok(SubscriberWrite {
            external_id,
            preferences,
            contacts,
            candidate_webhook_secret: WebhookSecret::generate().expose(),
            consent: Some(consent),
        })
    }
}

fn not_found(external_id: &str) -> Status {
    Status::not_found(crate::status::capped(format!(
        "no subscriber with external_id {external_id:?}"
    )))
}

fn field_of(e: &DomainError) -> String {
    match e {
        DomainError::Invalid { field, .. } => (*field).to_owned(),
        _ => String::new(),
    }
}

/// An import in progress: valid rows wait in `batch` until it is full.
#[derive(Default)]
struct Import {
    summary: v1::ImportSubscribersResponse,
    batch: Vec<(u64, SubscriberWrite)>,
    in_batch: HashSet<String>,
}

impl Import {
    fn reject(&mut self, row: u64, external_id: String, e: &DomainError) {
        self.summary.rejected += 1;
        if self.summary.errors.len() < MAX_REPORTED_ERRORS {
            let message = match e {
                DomainError::Invalid { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            self.summary.errors.push(v1::ImportRowError {
                row,
                external_id,
                field: field_of(e),
                message,
            });
        }
    }

    fn count(&mut self, upserted: Upserted) {
        if upserted.created {
            self.summary.created += 1;
        } else {
            self.summary.updated += 1;
        }
        if let Some(secret) = upserted.new_webhook_secret {
            self.summary
                .webhook_secrets
                .insert(upserted.subscriber.external_id, secret);
        }
    }

    /// Writes the waiting rows. A failed batch is retried row by row, so one bad row (a
    /// constraint the checks could not see) is reported alone.
    async fn flush(&mut self, store: &Store) -> Result<(), Status> {
        let batch = std::mem::take(&mut self.batch);
        self.in_batch.clear();
        if batch.is_empty() {
            return Ok(());
        }
        let writes: Vec<SubscriberWrite> = batch.iter().map(|(_, w)| w.clone()).collect();
        match store.upsert_subscribers(&writes).await {
            Ok(upserted) => upserted.into_iter().for_each(|u| self.count(u)),
            Err(tocsin_store::StoreError::Unavailable(e)) => {
                return Err(status(tocsin_store::StoreError::Unavailable(e)));
            }
            Err(_) => {
                for (row, write) in batch {
                    match store.upsert_subscribers(std::slice::from_ref(&write)).await {
                        Ok(mut upserted) => self.count(upserted.remove(0)),
                        Err(e) => {
                            tracing::warn!(row, error = %e, "import row refused by the store");
                            let e = DomainError::invalid("external_id", "could not be stored");
                            self.reject(row, write.external_id, &e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl SubscriberService for SubscriberApi {
    #[instrument(skip_all, fields(external_id = %request.get_ref().external_id))]
    async fn upsert_subscriber(
        &self,
        request: Request<v1::UpsertSubscriberRequest>,
    ) -> Result<Response<v1::UpsertSubscriberResponse>, Status> {
        let mut checker = ContactChecker::new(&self.webhook_policy);
        let catalogue = self.catalogue.entries().await.map_err(status)?;
        let write = self
            .write(&mut checker, &catalogue, request.into_inner())
            .await
            .map_err(domain_status)?;
        let upserted = self
            .store
            .upsert_subscribers(&[write])
            .await
            .map_err(status)?
            .remove(0);
        info!(created = upserted.created, "subscriber upserted");
        Ok(Response::new(v1::UpsertSubscriberResponse {
            subscriber: Some((&upserted.subscriber).into()),
            created: upserted.created,
            webhook_secret: upserted.new_webhook_secret.unwrap_or_default(),
        }))
    }

    async fn get_subscriber(
        &self,
        request: Request<v1::GetSubscriberRequest>,
    ) -> Result<Response<v1::Subscriber>, Status> {
        let external_id = request.into_inner().external_id;
        validate_external_id(&external_id).map_err(domain_status)?;
        let subscriber = self.store.subscriber(&external_id).await.map_err(status)?;
        subscriber
            .map(|s| Response::new((&s).into()))
            .ok_or_else(|| not_found(&external_id))
    }

    async fn list_subscribers(
        &self,
        request: Request<v1::ListSubscribersRequest>,
    ) -> Result<Response<v1::ListSubscribersResponse>, Status> {
        let request = request.into_inner();
        // Refused above the limit, like every other listing.
        let limit = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is above the limit of {MAX_PAGE}"
                )));
            }
            n => n,
        };
        let filter = SubscriberFilter {
            channel: channel_filter("channel", request.channel).map_err(domain_status)?,
            component: Some(request.component.trim().to_owned()).filter(|c| !c.is_empty()),
        };
        let after = Some(request.page_token.as_str()).filter(|t| !t.is_empty());
        let page = self
            .store
            .list_subscribers(&filter, after, limit)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListSubscribersResponse {
            subscribers: page.subscribers.iter().map(Into::into).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(external_id = %request.get_ref().external_id))]
    async fn delete_subscriber(
        &self,
        request: Request<v1::DeleteSubscriberRequest>,
    ) -> Result<Response<v1::DeleteSubscriberResponse>, Status> {
        let external_id = request.into_inner().external_id;
        validate_external_id(&external_id).map_err(domain_status)?;
        if !self
            .store
            .delete_subscriber(&external_id)
            .await
            .map_err(status)?
        {
            return Err(not_found(&external_id));
        }
        info!("subscriber deleted; contact details erased");
        Ok(Response::new(v1::DeleteSubscriberResponse {}))
    }

    #[instrument(skip_all)]
    async fn import_subscribers(
        &self,
        request: Request<Streaming<v1::UpsertSubscriberRequest>>,
    ) -> Result<Response<v1::ImportSubscribersResponse>, Status> {
        let mut rows = request.into_inner();
        let mut checker = ContactChecker::new(&self.webhook_policy);
        // One copy for the whole import: a catalogue change during it applies to the next.
        let catalogue = self.catalogue.entries().await.map_err(status)?;
        let mut import = Import::default();
        while let Some(row) = rows.next().await {
            let row = row?;
            import.summary.received += 1;
            let number = import.summary.received;
            let external_id = row.external_id.trim().to_owned();
            match self.write(&mut checker, &catalogue, row).await {
                Err(e) => import.reject(number, external_id, &e),
                Ok(write) => {
                    // A second row for the same subscriber waits for the first to be written,
                    // so the later row wins as it would in a loop of upserts.
                    if import.in_batch.contains(&write.external_id) {
                        import.flush(&self.store).await?;
                    }
                    import.in_batch.insert(write.external_id.clone());
                    import.batch.push((number, write));
                    if import.batch.len() >= IMPORT_BATCH {
                        import.flush(&self.store).await?;
                    }
                }
            }
            if number % 10_000 == 0 {
                info!(
                    received = number,
                    rejected = import.summary.rejected,
                    "import progress"
                );
            }
        }
        import.flush(&self.store).await?;
        let s = &import.summary;
        info!(
            received = s.received,
            created = s.created,
            updated = s.updated,
            rejected = s.rejected,
            "import finished"
        );
        Ok(Response::new(import.summary))
    }

    #[instrument(skip_all, fields(external_id = %request.get_ref().external_id))]
    async fn rotate_webhook_secret(
        &self,
        request: Request<v1::RotateWebhookSecretRequest>,
    ) -> Result<Response<v1::RotateWebhookSecretResponse>, Status> {
        let external_id = request.into_inner().external_id;
        validate_external_id(&external_id).map_err(domain_status)?;
        let secret = WebhookSecret::generate().expose();
        if !self
            .store
            .rotate_webhook_secret(&external_id, &secret)
            .await
            .map_err(status)?
        {
            return match self.store.subscriber(&external_id).await.map_err(status)? {
                None => Err(not_found(&external_id)),
                Some(_) => Err(Status::failed_precondition(format!(
                    "subscriber {external_id:?} has no webhook URL; set one first"
                ))),
            };
        }
        info!("webhook secret rotated");
        Ok(Response::new(v1::RotateWebhookSecretResponse {
            webhook_secret: secret,
        }))
    }

    async fn preview_fanout(
        &self,
        request: Request<v1::PreviewFanoutRequest>,
    ) -> Result<Response<v1::PreviewFanoutResponse>, Status> {
        let (incident, event) = self.candidate(request.into_inner()).await?;
        let reach = self.reach(&incident, &event).await?;
        // What the maintenance clock will send later, each with its reach as of now.
        let after = Incident::apply(Some(incident), &event);
        let shown: BTreeMap<String, Affected> =
            affected(&after.components, &after.component_names, &after.impacts)
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect();
        let mut scheduled = Vec::new();
        for (kind, at) in tocsin_core::maintenance::schedule(&after, event.occurred_at) {
            let step = RecordedEvent {
                event_id: EventId::new(),
                version: after.version + 1,
                occurred_at: at,
                change: Change::new(kind, String::new()),
                ..event.clone()
            };
            let step_reach = self.reach(&after, &step).await?;
            scheduled.push(v1::ScheduledNotice {
                kind: v1::EventKind::from(kind).into(),
                at: Some(tocsin_proto::timestamp(at)),
                recipients: step_reach.recipients,
                channels: channel_counts(&step_reach),
            });
        }
        Ok(Response::new(v1::PreviewFanoutResponse {
            recipients: reach.recipients,
            channels: channel_counts(&reach),
            components: reach
                .per_component
                .iter()
                .map(|(component, n)| v1::ComponentCount {
                    component: component.clone(),
                    recipients: *n,
                    name: shown
                        .get(component)
                        .map_or_else(|| component.clone(), |a| a.name.clone()),
                    impact: shown
                        .get(component)
                        .and_then(|a| a.impact)
                        .map_or(0, |i| v1::Impact::from(i).into()),
                })
                .collect(),
            held: reach.held,
            scheduled,
        }))
    }
}

fn channel_counts(reach: &tocsin_resolver::fanout::Reach) -> Vec<v1::ChannelCount> {
    reach
        .per_channel
        .iter()
        .map(|(channel, n)| v1::ChannelCount {
            channel: v1::Channel::from(*channel) as i32,
            deliveries: *n,
        })
        .collect()
}

impl SubscriberApi {
    async fn reach(
        &self,
        incident: &Incident,
        event: &RecordedEvent,
    ) -> Result<tocsin_resolver::fanout::Reach, Status> {
        tocsin_resolver::fanout::preview(&self.store, self.fanout, incident, event)
            .await
            .map_err(|e| match e {
                // The request's own fault (a NUL character in a component): no retry helps.
                tocsin_resolver::ResolveError::Store(tocsin_store::StoreError::Domain(d)) => {
                    domain_status(d)
                }
                e => {
                    tracing::error!(error = %e, "preview failed");
                    Status::unavailable("the preview could not be computed; retry shortly")
                }
            })
    }

    /// The incident and event a preview is computed for: the candidate applied to the
    /// incident's current state, or a new incident.
    async fn candidate(
        &self,
        request: v1::PreviewFanoutRequest,
    ) -> Result<(Incident, RecordedEvent), Status> {
        let kind = tocsin_proto::event_kind_in("kind", request.kind).map_err(domain_status)?;
        let severity =
            tocsin_proto::severity_in("severity", request.severity).map_err(domain_status)?;
        let impacts = tocsin_proto::impacts(request.impacts).map_err(domain_status)?;
        let mut components: Vec<String> = request
            .components
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if components.is_empty() && kind.creates() {
            components = impacts.keys().cloned().collect();
        }
        let now = OffsetDateTime::now_utc();
        let incident_id = tocsin_proto::incident_id("incident_id", &request.incident_id)
            .map_err(domain_status)?;
        let window = request
            .window
            .as_ref()
            .map(|w| {
                let missing = || DomainError::invalid("window", "needs both starts_at and ends_at");
                Ok::<_, DomainError>(tocsin_core::MaintenanceWindow {
                    starts_at: tocsin_proto::to_offset_datetime(
                        "window",
                        w.starts_at.as_ref().ok_or_else(missing)?,
                    )?,
                    ends_at: tocsin_proto::to_offset_datetime(
                        "window",
                        w.ends_at.as_ref().ok_or_else(missing)?,
                    )?,
                })
            })
            .transpose()
            .map_err(domain_status)?;
        let deliver_at = request
            .deliver_at
            .as_ref()
            .map(|ts| tocsin_proto::to_offset_datetime("deliver_at", ts))
            .transpose()
            .map_err(domain_status)?;
        let mut incident = match incident_id {
            Some(id) => self
                .store
                .incident(id)
                .await
                .map_err(status)?
                .ok_or_else(|| Status::not_found(format!("no incident {id}")))?,
            None => Incident {
                impacts: BTreeMap::new(),
                component_names: BTreeMap::new(),
                id: IncidentId::new(),
                kind: if kind.creates() && kind != EventKind::Opened {
                    IncidentKind::Maintenance
                } else {
                    IncidentKind::Incident
                },
                status: IncidentStatus::Investigating,
                severity: severity.ok_or_else(|| {
                    Status::invalid_argument("severity: is required for a new incident")
                })?,
                title: String::new(),
                components: Vec::new(),
                message: String::new(),
                labels: BTreeMap::new(),
                window: None,
                version: 0,
                last_event_id: EventId::new(),
                last_event_kind: kind,
                opened_at: now,
                updated_at: now,
                resolved_at: None,
                started_at: None,
                next_update_at: None,
                review_to_follow: false,
                reminders: None,
                customer_action: None,
            },
        };
        let mut change = Change {
            severity,
            components: components.clone(),
            window,
            reminders: request.reminders.map(|r| r.minutes_before),
            deliver_at,
            impacts,
            ..Change::new(kind, String::new())
        };
        self.catalogue.name(&mut change).await.map_err(status)?;
        if let Some(severity) = severity {
            incident.severity = severity;
        }
        if !components.is_empty() {
            incident.components = components.clone();
        }
        let event = RecordedEvent {
            event_id: EventId::new(),
            incident_id: incident.id,
            version: incident.version + 1,
            position: 0,
            publisher: "preview".into(),
            idempotency_key: "preview".into(),
            occurred_at: now,
            recorded_at: now,
            change,
        };
        Ok((incident, event))
    }
}

/// The most a consent note may hold.
const CONSENT_MAX_CHARS: usize = 500;

/// The operator's word on how consent was obtained, as the consent log keeps it.
fn consent_note(raw: &str) -> Result<String, DomainError> {
    let note = raw.trim();
    if note.chars().count() > CONSENT_MAX_CHARS {
        return Err(DomainError::invalid(
            "consent",
            format!("is longer than {CONSENT_MAX_CHARS} characters"),
        ));
    }
    if note.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "consent",
            "holds a control character; write it on one line",
        ));
    }
    Ok(if note.is_empty() {
        "not stated".to_owned()
    } else {
        note.to_owned()
    })
}
