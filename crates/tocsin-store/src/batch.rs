//! Group commit for appends.
//!
//! Every commit costs an fsync and a handful of round trips, and on small machines that
//! per-transaction cost, not the rows, bounds throughput. So a process funnels its appends
//! through one writer task that takes every publish waiting at that moment and records them
//! in one transaction with multi-row statements. An idle writer takes one request at once, so
//! batching adds no latency at low load; under load, batches grow while the previous commits.
//!
//! A batch is all-or-nothing. When it meets anything but the plain case (a key seen before,
//! a concurrent writer in another process winning a version), it is rolled back and each of
//! its requests goes through [`Store::append`] one by one, which handles every case.

use std::collections::{HashMap, HashSet};

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::idempotency::fingerprint;
use tocsin_core::{EventId, Incident, IncidentId, PublishRequest, RecordedEvent};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use uuid::Uuid;

use crate::log::{kind_str, to_micros};
use crate::rows::sql_version;
use crate::{Appended, LogNotification, Store, StoreError};

/// Most publishes one transaction takes.
const MAX_BATCH: usize = 256;

struct Job {
    publisher: String,
    request: PublishRequest,
    now: OffsetDateTime,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// A handle on the writer task. Cheap to clone; the task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Appender {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("publisher", &self.publisher).finish_non_exhaustive()
    }
}

impl Appender {
    /// Starts the writer task for `store`.
    pub fn start(store: Store) -> Self {
        let (jobs, mut receiver) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
                write(&store, std::mem::take(&mut batch)).await;
            }
        });
        Self { jobs }
    }

    /// Appends like [`Store::append`], sharing a transaction with whatever else is waiting.
    pub async fn append(
        &self,
        publisher: &str,
        request: PublishRequest,
        now: OffsetDateTime,
    ) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { publisher: publisher.to_owned(), request, now, reply };
        self.jobs.send(job).await.map_err(|_| StoreError::Corrupt("the append writer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Corrupt("the append writer dropped a request".into()))?
    }
}

async fn write(store: &Store, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        match try_batch(store, &jobs).await {
            Ok(Some(results)) => {
                debug!(size = jobs.len(), "batch appended");
                for (job, appended) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(appended));
                }
                return;
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, size = jobs.len(), "batch fell back to single appends"),
        }
    }
    for job in jobs {
        let result = store.append(&job.publisher, &job.request, job.now).await;
        let _ = job.reply.send(result);
    }
}

/// One decided event of a batch.
struct Planned {
    fingerprint: String,
    event: RecordedEvent,
}

/// Writes the whole batch in one transaction, or returns `None` (nothing written) when any
/// request needs the careful path.
async fn try_batch(store: &Store, jobs: &[Job]) -> Result<Option<Vec<Appended>>, StoreError> {
    let mut keys = HashSet::new();
    for job in jobs {
        // A key twice in one batch is a retry racing its original: the single path answers it.
        if !keys.insert((job.publisher.as_str(), job.request.idempotency_key.as_str())) {
            return Ok(None);
        }
    }
    let publishers: Vec<&str> = jobs.iter().map(|j| j.publisher.as_str()).collect();
    let idem_keys: Vec<&str> = jobs.iter().map(|j| j.request.idempotency_key.as_str()).collect();
    let ids: Vec<IncidentId> = jobs.iter().map(|j| j.request.incident_id.unwrap_or_default()).collect();
    let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();

    let (any_key_used,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys k
                        JOIN UNNEST($1::text[], $2::text[]) AS r(publisher, idempotency_key)
                          ON k.publisher = r.publisher AND k.idempotency_key = r.idempotency_key)",
    )
    .bind(&publishers)
    .bind(&idem_keys)
    .fetch_one(store.pool())
    .await?;
    if any_key_used {
        return Ok(None);
    }
    let rows: Vec<(Json<Incident>,)> =
        sqlx::query_as("SELECT state FROM incidents WHERE incident_id = ANY($1)")
            .bind(&uuids)
            .fetch_all(store.pool())
            .await?;
    let mut states: HashMap<IncidentId, Incident> = rows.into_iter().map(|(s,)| (s.0.id, s.0)).collect();

    let mut planned = Vec::with_capacity(jobs.len());
    for (job, incident_id) in jobs.iter().zip(&ids) {
        let current = states.get(incident_id);
        // A refused request gets its precise error from the single path.
        if Incident::check_transition(current, *incident_id, &job.request.change, job.request.expected_version).is_err() {
            return Ok(None);
        }
        let now = to_micros(job.now);
        let event = RecordedEvent {
            event_id: EventId::new(),
            incident_id: *incident_id,
            version: current.map_or(1, |i| i.version + 1),
            position: 0,
            publisher: job.publisher.clone(),
            idempotency_key: job.request.idempotency_key.clone(),
            occurred_at: to_micros(job.request.occurred_at.unwrap_or(now)),
            recorded_at: now,
            change: job.request.change.clone(),
        };
        let next = Incident::apply(states.remove(incident_id), &event);
        states.insert(*incident_id, next);
        planned.push(Planned { fingerprint: fingerprint(&job.request), event });
    }

    let mut tx = store.pool().begin().await?;
    let positions = match insert_all(&mut tx, &planned, &states).await {
        Ok(p) if p.len() == planned.len() => p,
        Ok(_) => return Ok(None),
        // A writer in another process took a version first: the single path retries.
        Err(StoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    tx.commit().await?;

    let by_id: HashMap<Uuid, i64> = positions.into_iter().collect();
    let mut out = Vec::with_capacity(planned.len());
    for Planned { mut event, .. } in planned {
        event.position = by_id[event.event_id.as_uuid()];
        let _ = store.announcer.send(LogNotification { incident_id: event.incident_id, version: event.version });
        out.push(Appended { event, duplicate: false });
    }
    Ok(Some(out))
}

/// Claims every key and writes every event, outbox row and final projection with one
/// statement. Returns `(event_id, position)` of what was written.
async fn insert_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    planned: &[Planned],
    states: &HashMap<IncidentId, Incident>,
) -> Result<Vec<(Uuid, i64)>, StoreError> {
    let events: Vec<&RecordedEvent> = planned.iter().map(|p| &p.event).collect();
    let finals: Vec<&Incident> = {
        let touched: HashSet<IncidentId> = events.iter().map(|e| e.incident_id).collect();
        touched.iter().map(|id| &states[id]).collect()
    };
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH claim AS (
             INSERT INTO idempotency_keys (publisher, idempotency_key, fingerprint, event_id)
             SELECT * FROM UNNEST($5::text[], $6::text[], $10::text[], $1::uuid[])
             ON CONFLICT (publisher, idempotency_key) DO NOTHING
             RETURNING event_id
         ), ev AS (
             INSERT INTO events (event_id, incident_id, version, kind, publisher,
                                 idempotency_key, occurred_at, recorded_at, data)
             SELECT u.* FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[],
                                    $6::text[], $7::timestamptz[], $8::timestamptz[], $9::jsonb[])
                  AS u(event_id, incident_id, version, kind, publisher, idempotency_key,
                       occurred_at, recorded_at, data)
             JOIN claim USING (event_id)
             RETURNING event_id, incident_id, position
         ), ob AS (
             INSERT INTO outbox (position, incident_id) SELECT position, incident_id FROM ev
         ), pr AS (
             INSERT INTO incidents (incident_id, version, kind, status, severity,
                                    opened_at, updated_at, state)
             SELECT * FROM UNNEST($11::uuid[], $12::bigint[], $13::text[], $14::text[], $15::text[],
                                  $16::timestamptz[], $17::timestamptz[], $18::jsonb[])
             ON CONFLICT (incident_id) DO UPDATE SET
                 version = EXCLUDED.version, status = EXCLUDED.status,
                 severity = EXCLUDED.severity, updated_at = EXCLUDED.updated_at,
                 state = EXCLUDED.state
             WHERE incidents.version < EXCLUDED.version
         )
         SELECT event_id, position FROM ev",
    )
    .bind(events.iter().map(|e| *e.event_id.as_uuid()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| *e.incident_id.as_uuid()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| sql_version(e.version)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.change.kind.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.publisher.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.idempotency_key.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Json(&e.change)).collect::<Vec<_>>())
    .bind(planned.iter().map(|p| p.fingerprint.as_str()).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| *i.id.as_uuid()).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| sql_version(i.version)).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| kind_str(i)).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| i.status.as_str()).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| i.severity.as_str()).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| i.opened_at).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| i.updated_at).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| Json(*i)).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}
