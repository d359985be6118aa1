//! Group commit for appends.
//!
//! Every commit costs an fsync and a handful of round trips, and on small machines that
//! per-transaction cost, not the rows, bounds throughput. So a process funnels its appends
//! through a few writer tasks; each takes the publishes waiting at that moment and records
//! them in one statement (one transaction) with multi-row inserts. An idle writer takes one request at once, so
//! batching adds no latency at low load; under load, batches grow while the previous commits.
//!
//! A batch is all-or-nothing. When it meets anything but the plain case (a key seen before,
//! a concurrent writer in another process winning a version), it is rolled back and each of
//! its requests goes through [`Store::append`] one by one, which handles every case.

use std::collections::{HashMap, HashSet};

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::idempotency::fingerprint;
use tocsin_core::{Incident, IncidentId, PublishRequest, RecordedEvent};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use uuid::Uuid;

use crate::log::{kind_str, next_event, to_micros};
use crate::rows::sql_version;
use crate::{Appended, LogNotification, Store, StoreError};

/// Most publishes one statement takes over TCP. sqlx 0.9 leaves Nagle's algorithm on for TCP
/// sockets, and a statement large enough to span several writes then stalls ~40 ms on a
/// delayed ACK; this size stays clear of it (measured: 8 rows ~1 ms, 28 rows 44 ms).
const MAX_BATCH_TCP: usize = 8;
/// Over a Unix socket there is no Nagle: batches may grow (measured: 38 rows in 3 ms).
const MAX_BATCH_UNIX: usize = 64;

/// Writers draining the queue side by side, so one batch's fsync overlaps the next.
const WRITERS: usize = 4;

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
        f.debug_struct("Job")
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

impl Appender {
    /// Starts the writer task for `store`.
    pub fn start(store: Store) -> Self {
        let max_batch = if store.pool().connect_options().get_socket().is_some()
            || store.pool().connect_options().get_host().starts_with('/')
        {
            MAX_BATCH_UNIX
        } else {
            MAX_BATCH_TCP
        };
        let (jobs, receiver) = mpsc::channel::<Job>(1024);
        let receiver = std::sync::Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..WRITERS {
            let (store, receiver) = (store.clone(), receiver.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::with_capacity(max_batch);
                    // Only the wait for work is serialised; writing happens outside the lock.
                    if receiver.lock().await.recv_many(&mut batch, max_batch).await == 0 {
                        return;
                    }
                    write(&store, batch).await;
                }
            });
        }
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
        let job = Job {
            publisher: publisher.to_owned(),
            request,
            now,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Corrupt("the append writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the append writer dropped a request".into()))?
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
    let idem_keys: Vec<&str> = jobs
        .iter()
        .map(|j| j.request.idempotency_key.as_str())
        .collect();
    let ids: Vec<IncidentId> = jobs
        .iter()
        .map(|j| j.request.incident_id.unwrap_or_default())
        .collect();
    let uuids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();

    // One round trip reads both what decides the batch can go ahead (no key seen before)
    // and the states it builds on: one row per known incident, or a single row with no state.
    let rows: Vec<(bool, Option<Json<Incident>>)> = sqlx::query_as(
        "SELECT k.used, i.state
         FROM (SELECT EXISTS (
                   SELECT 1 FROM idempotency_keys k
                   JOIN UNNEST($1::text[], $2::text[]) AS r(publisher, idempotency_key)
                     ON k.publisher = r.publisher AND k.idempotency_key = r.idempotency_key
               ) AS used) AS k
         LEFT JOIN incidents i ON i.incident_id = ANY($3)",
    )
    .bind(&publishers)
    .bind(&idem_keys)
    .bind(&uuids)
    .fetch_all(store.pool())
    .await?;
    if rows.iter().any(|(used, _)| *used) {
        return Ok(None);
    }
    let mut states: HashMap<IncidentId, Incident> = rows
        .into_iter()
        .filter_map(|(_, state)| state.map(|s| (s.0.id, s.0)))
        .collect();

    let mut planned = Vec::with_capacity(jobs.len());
    for (job, incident_id) in jobs.iter().zip(&ids) {
        let current = states.get(incident_id);
        // A refused request gets its precise error from the single path.
        if Incident::check_transition(
            current,
            *incident_id,
            &job.request.change,
            job.request.expected_version,
        )
        .is_err()
        {
            return Ok(None);
        }
        let event = next_event(
            &job.publisher,
            &job.request,
            *incident_id,
            current,
            to_micros(job.now),
        );
        let next = Incident::apply(states.remove(incident_id), &event);
        states.insert(*incident_id, next);
        planned.push(Planned {
            fingerprint: fingerprint(&job.request),
            event,
        });
    }

    let started = std::time::Instant::now();
    // One statement is one transaction: a key or a version taken meanwhile by another
    // process fails all of it, and the single path then answers each request.
    let positions = match insert_all(store, &planned, &states).await {
        Ok(p) => p,
        Err(StoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    debug!(size = planned.len(), elapsed = ?started.elapsed(), "batch written");

    let by_id: HashMap<Uuid, i64> = positions.into_iter().collect();
    let mut out = Vec::with_capacity(planned.len());
    for Planned { mut event, .. } in planned {
        event.position = by_id[event.event_id.as_uuid()];
        let _ = store.announcer.send(LogNotification {
            incident_id: event.incident_id,
            version: event.version,
        });
        out.push(Appended {
            event,
            duplicate: false,
        });
    }
    Ok(Some(out))
}

/// Claims every key and writes every event, outbox row and final projection with one
/// statement, all or nothing. Returns `(event_id, position)` of each event.
async fn insert_all(
    store: &Store,
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
    .bind(
        events
            .iter()
            .map(|e| *e.event_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| *e.incident_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| sql_version(e.version))
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.change.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.publisher.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.idempotency_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Json(&e.change)).collect::<Vec<_>>())
    .bind(
        planned
            .iter()
            .map(|p| p.fingerprint.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(finals.iter().map(|i| *i.id.as_uuid()).collect::<Vec<_>>())
    .bind(
        finals
            .iter()
            .map(|i| sql_version(i.version))
            .collect::<Vec<_>>(),
    )
    .bind(finals.iter().map(|i| kind_str(i)).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| i.status.as_str()).collect::<Vec<_>>())
    .bind(
        finals
            .iter()
            .map(|i| i.severity.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(finals.iter().map(|i| i.opened_at).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| i.updated_at).collect::<Vec<_>>())
    .bind(finals.iter().map(|i| Json(*i)).collect::<Vec<_>>())
    .fetch_all(store.pool())
    .await?;
    Ok(rows)
}
