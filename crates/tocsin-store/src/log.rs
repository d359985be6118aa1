//! Appending to the event log.

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::idempotency::fingerprint;
use tocsin_core::{EventId, Incident, IncidentId, PublishRequest, RecordedEvent};
use tracing::instrument;

use crate::rows::{EventRow, event_columns, sql_version};
use crate::{LogNotification, Store, StoreError};

/// What an append produced: the event as recorded, and whether it had been recorded before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub event: RecordedEvent,
    /// True when the idempotency key had been seen with the same request: `event` is the
    /// original one and nothing new was written.
    pub duplicate: bool,
}

/// How often an append re-reads and retries after losing a race for the next version.
const MAX_ATTEMPTS: u32 = 64;

impl Store {
    /// Appends one validated publish by `publisher` to the log: its idempotency key, the
    /// event, its outbox row and the incident's new projection, in one statement (and so one
    /// transaction).
    ///
    /// Concurrency is optimistic, which costs two round trips instead of four with locks:
    /// read the incident, decide in Rust, then write version N+1. `UNIQUE (incident_id,
    /// version)` makes a racing writer of the same version fail; the loser re-reads and
    /// decides again. Versions stay gapless because a version is only ever written once.
    #[instrument(skip_all, fields(publisher, idempotency_key = %request.idempotency_key, kind = request.change.kind.as_str()))]
    pub async fn append(
        &self,
        publisher: &str,
        request: &PublishRequest,
        now: OffsetDateTime,
    ) -> Result<Appended, StoreError> {
        let fingerprint = fingerprint(request);
        // PostgreSQL keeps microseconds; the projection must hold exactly what a refold of
        // the stored events gives, so times are cut to microseconds before anything uses them.
        let now = to_micros(now);
        let incident_id = request.incident_id.unwrap_or_default();
        for _ in 0..MAX_ATTEMPTS {
            // The key is looked at first: a retry of an event that was recorded must be
            // answered from the log, not judged again against the state it produced.
            let (key_used, current): (bool, Option<Json<Incident>>) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM idempotency_keys
                                WHERE publisher = $1 AND idempotency_key = $2),
                        (SELECT state FROM incidents WHERE incident_id = $3)",
            )
            .bind(publisher)
            .bind(&request.idempotency_key)
            .bind(incident_id.as_uuid())
            .fetch_one(&self.pool)
            .await?;
            if key_used {
                return self.replay(publisher, request, &fingerprint).await;
            }
            let current = current.map(|state| state.0);
            Incident::check_transition(
                current.as_ref(),
                incident_id,
                &request.change,
                request.expected_version,
            )?;
            let mut event = next_event(publisher, request, incident_id, current.as_ref(), now);
            let incident = Incident::apply(current, &event);
            match self.insert_event(&fingerprint, &event, &incident).await {
                Ok(Some(position)) => {
                    event.position = position;
                    // Announced after commit, never inside the transaction (see `announce`).
                    let _ = self.announcer.send(LogNotification {
                        incident_id,
                        version: event.version,
                    });
                    return Ok(Appended {
                        event,
                        duplicate: false,
                    });
                }
                // Another request claimed this key between our read and our write.
                Ok(None) => return self.replay(publisher, request, &fingerprint).await,
                Err(StoreError::Conflict { constraint })
                    if constraint == "events_incident_version_key" =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            constraint: "events_incident_version_key".into(),
        })
    }

    /// Claims the idempotency key and writes the event, its outbox row and the projection
    /// in one statement. `None` when the key was already claimed (nothing written).
    async fn insert_event(
        &self,
        fingerprint: &str,
        event: &RecordedEvent,
        incident: &Incident,
    ) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "WITH claim AS (
                 INSERT INTO idempotency_keys (publisher, idempotency_key, fingerprint, event_id)
                 VALUES ($5, $6, $16, $1)
                 ON CONFLICT (publisher, idempotency_key) DO NOTHING
                 RETURNING event_id
             ), ev AS (
                 INSERT INTO events (event_id, incident_id, version, kind, publisher,
                                     idempotency_key, occurred_at, recorded_at, data)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM claim
                 RETURNING position
             ), ob AS (
                 INSERT INTO outbox (position, incident_id) SELECT position, $2 FROM ev
             ), pr AS (
                 INSERT INTO incidents (incident_id, version, kind, status, severity,
                                        opened_at, updated_at, state)
                 SELECT $2, $3, $10, $11, $12, $13, $14, $15 FROM ev
                 ON CONFLICT (incident_id) DO UPDATE SET
                     version = EXCLUDED.version, status = EXCLUDED.status,
                     severity = EXCLUDED.severity, updated_at = EXCLUDED.updated_at,
                     state = EXCLUDED.state
                 WHERE incidents.version < EXCLUDED.version
             )
             SELECT position FROM ev",
        )
        .bind(event.event_id.as_uuid())
        .bind(event.incident_id.as_uuid())
        .bind(sql_version(event.version))
        .bind(event.change.kind.as_str())
        .bind(&event.publisher)
        .bind(&event.idempotency_key)
        .bind(event.occurred_at)
        .bind(event.recorded_at)
        .bind(Json(&event.change))
        .bind(kind_str(incident))
        .bind(incident.status.as_str())
        .bind(incident.severity.as_str())
        .bind(incident.opened_at)
        .bind(incident.updated_at)
        .bind(Json(incident))
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(position,)| position))
    }

    /// Answers a retried publish from the original event, or refuses a reused key.
    pub(crate) async fn replay(
        &self,
        publisher: &str,
        request: &PublishRequest,
        fingerprint: &str,
    ) -> Result<Appended, StoreError> {
        let sql = concat!(
            "SELECT k.fingerprint, ",
            event_columns!(),
            "
             FROM idempotency_keys k JOIN events e ON e.event_id = k.event_id
             WHERE k.publisher = $1 AND k.idempotency_key = $2"
        );
        let row: Option<(String, EventRow)> = sqlx::query_as::<_, ReplayRow>(sql)
            .bind(publisher)
            .bind(&request.idempotency_key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| (r.fingerprint, r.event));
        let Some((stored, event)) = row else {
            // The key's owner rolled back after we saw its row: nothing was recorded under it.
            return Err(StoreError::Conflict {
                constraint: "idempotency_keys_pkey".into(),
            });
        };
        if stored != fingerprint {
            return Err(StoreError::IdempotencyKeyReused {
                key: request.idempotency_key.clone(),
            });
        }
        Ok(Appended {
            event: event.try_into()?,
            duplicate: true,
        })
    }

    /// Deletes idempotency keys older than `keep`, never less than 24 hours. Returns how many.
    pub async fn prune_idempotency_keys(&self, keep: time::Duration) -> Result<u64, StoreError> {
        let keep = keep.max(time::Duration::hours(24));
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(keep.as_seconds_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[derive(sqlx::FromRow)]
struct ReplayRow {
    fingerprint: String,
    #[sqlx(flatten)]
    event: EventRow,
}

/// The event a checked request becomes on top of `current` (unwritten: position 0).
/// `now` must already be cut to microseconds.
pub(crate) fn next_event(
    publisher: &str,
    request: &PublishRequest,
    incident_id: IncidentId,
    current: Option<&Incident>,
    now: OffsetDateTime,
) -> RecordedEvent {
    RecordedEvent {
        event_id: EventId::new(),
        incident_id,
        version: current.map_or(1, |i| i.version + 1),
        position: 0,
        publisher: publisher.to_owned(),
        idempotency_key: request.idempotency_key.clone(),
        occurred_at: to_micros(request.occurred_at.unwrap_or(now)),
        recorded_at: now,
        change: request.change.clone(),
    }
}

pub(crate) fn to_micros(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

pub(crate) fn kind_str(incident: &Incident) -> &'static str {
    match incident.kind {
        tocsin_core::IncidentKind::Incident => "incident",
        tocsin_core::IncidentKind::Maintenance => "maintenance",
    }
}
