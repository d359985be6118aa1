//! What the resolver needs: subscribers who may care about an incident, page by page; the
//! delivery ledger, written in batches; and the delivery trail that records each fan-out.

use std::collections::BTreeMap;

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::{Channel, Delivery, EventId, Incident, IncidentId, Preferences, SubscriberId};
use tracing::instrument;
use uuid::Uuid;

use crate::rows::sql_version;
use crate::subscribers::severity_rank;
use crate::{Store, StoreError};

/// A subscriber the resolver must plan for.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub subscriber_id: SubscriberId,
    pub revision: i64,
    pub preferences: Preferences,
    /// They received (or are due) a message about this incident already, so follow-ups reach
    /// them whatever their filters say now.
    pub already_told: bool,
    pub webhook_disabled: bool,
}

/// A ledger row as `revive_dead_letters` and `requeue_stale_deliveries` read it back.
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    delivery_key: String,
    incident_id: Uuid,
    event_id: Uuid,
    event_version: i64,
    subscriber_id: Uuid,
    channel: String,
    send_after: Option<OffsetDateTime>,
    lane: String,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self, StoreError> {
        Ok(Delivery {
            channel: row
                .channel
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("unknown channel {:?}", row.channel)))?,
            delivery_key: row.delivery_key,
            incident_id: row.incident_id.into(),
            event_id: row.event_id.into(),
            event_version: u64::try_from(row.event_version).unwrap_or_default(),
            subscriber_id: row.subscriber_id.into(),
            send_after: row.send_after,
            lane: row
                .lane
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("unknown lane {:?}", row.lane)))?,
        })
    }
}

/// What one fan-out did, as recorded in the trail (`recipients_resolved`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FanoutRecord {
    /// The event's version in its incident.
    pub event_version: u64,
    /// Jobs per channel.
    pub jobs: BTreeMap<Channel, u64>,
    /// Of those, held by quiet hours.
    pub held: BTreeMap<Channel, u64>,
    /// Subscribers whose preferences were read.
    pub considered: u64,
    /// Subscribers who got at least one job.
    pub recipients: u64,
    /// Of those, reached only because they were told about this incident before.
    pub follow_ups: u64,
    /// Webhook deliveries not planned because the endpoint is disabled.
    pub webhook_disabled: u64,
    /// The highest subscriber revision read: the fan-out used every subscriber's preferences
    /// as of a revision at or below it, which `subscriber_revisions` keeps.
    pub preferences_revision: i64,
}

/// One entry of an incident's delivery trail.
#[derive(Debug, Clone)]
pub struct TrailEntry {
    pub position: i64,
    pub event_id: EventId,
    pub kind: String,
    pub delivery_key: Option<String>,
    pub data: serde_json::Value,
    pub recorded_at: OffsetDateTime,
}

impl Store {
    /// Up to `limit` live subscribers after `after` (by id) who may care about `incident`:
    /// at or above their minimum severity and following one of its components, or already
    /// told about it. The caller applies the rest of the preferences ([`tocsin_core::plan`]).
    #[instrument(skip(self, incident), fields(incident_id = %incident.id))]
    pub async fn fanout_candidates(
        &self,
        incident: &Incident,
        after: Option<SubscriberId>,
        limit: u32,
    ) -> Result<Vec<Candidate>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            subscriber_id: Uuid,
            revision: i64,
            preferences: Json<Preferences>,
            already_told: bool,
            webhook_disabled: bool,
            opted_out: Vec<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.subscriber_id, s.revision, s.preferences, c.opted_out,
                    EXISTS (SELECT 1 FROM deliveries d
                            WHERE d.incident_id = $1 AND d.subscriber_id = s.subscriber_id)
                        AS already_told,
                    c.webhook_disabled_at IS NOT NULL AS webhook_disabled
             FROM subscribers s JOIN subscriber_contacts c USING (subscriber_id)
             WHERE s.deleted_at IS NULL AND s.subscriber_id > $2
               AND ((s.min_severity <= $3 AND (s.components IS NULL OR s.components && $4))
                    OR EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.incident_id = $1 AND d.subscriber_id = s.subscriber_id))
             ORDER BY s.subscriber_id LIMIT $5",
        )
        .bind(incident.id.as_uuid())
        .bind(after.map_or(Uuid::nil(), |id| *id.as_uuid()))
        .bind(severity_rank(incident.severity))
        .bind(&incident.components)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut preferences = row.preferences.0;
                // An opted-out address is planned nothing, as if the channel were not chosen.
                preferences
                    .channels
                    .retain(|channel| !row.opted_out.iter().any(|o| o == channel.as_str()));
                Candidate {
                    subscriber_id: row.subscriber_id.into(),
                    revision: row.revision,
                    preferences,
                    already_told: row.already_told,
                    webhook_disabled: row.webhook_disabled,
                }
            })
            .collect())
    }

    /// Writes ledger rows in one statement, state `pending`. Rows whose key exists are left
    /// as they are, so a replayed fan-out never resets a delivery that moved on.
    #[instrument(skip_all, fields(deliveries = deliveries.len()))]
    pub async fn record_deliveries(&self, deliveries: &[Delivery]) -> Result<u64, StoreError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let keys: Vec<&str> = deliveries.iter().map(|d| d.delivery_key.as_str()).collect();
        let incidents: Vec<Uuid> = deliveries
            .iter()
            .map(|d| *d.incident_id.as_uuid())
            .collect();
        let events: Vec<Uuid> = deliveries.iter().map(|d| *d.event_id.as_uuid()).collect();
        let versions: Vec<i64> = deliveries
            .iter()
            .map(|d| sql_version(d.event_version))
            .collect();
        let subscribers: Vec<Uuid> = deliveries
            .iter()
            .map(|d| *d.subscriber_id.as_uuid())
            .collect();
        let channels: Vec<&str> = deliveries.iter().map(|d| d.channel.as_str()).collect();
        let send_after: Vec<Option<OffsetDateTime>> =
            deliveries.iter().map(|d| d.send_after).collect();
        let lanes: Vec<&str> = deliveries.iter().map(|d| d.lane.as_str()).collect();
        let inserted = sqlx::query(
            "INSERT INTO deliveries (delivery_key, incident_id, event_id, event_version,
                 subscriber_id, channel, send_after, lane)
             SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::int8[], $5::uuid[],
                 $6::text[], $7::timestamptz[], $8::text[])
             ON CONFLICT (delivery_key) DO NOTHING",
        )
        .bind(&keys)
        .bind(&incidents)
        .bind(&events)
        .bind(&versions)
        .bind(&subscribers)
        .bind(&channels)
        .bind(&send_after)
        .bind(&lanes)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected())
    }

    /// How many events of the incident before `version` have no fan-out recorded yet. The
    /// resolver handles an incident's events in order, so it waits while this is not zero.
    #[instrument(skip(self))]
    pub async fn unresolved_before(
        &self,
        incident_id: IncidentId,
        version: u64,
    ) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM events e
             WHERE e.incident_id = $1 AND e.version < $2
               AND NOT EXISTS (SELECT 1 FROM delivery_trail t
                               WHERE t.event_id = e.event_id AND t.kind = 'recipients_resolved')",
        )
        .bind(incident_id.as_uuid())
        .bind(sql_version(version))
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// The recorded fan-out of an event, if there is one.
    #[instrument(skip(self))]
    pub async fn fanout_record(
        &self,
        event_id: EventId,
    ) -> Result<Option<FanoutRecord>, StoreError> {
        let row: Option<(Json<FanoutRecord>,)> = sqlx::query_as(
            "SELECT data FROM delivery_trail WHERE event_id = $1 AND kind = 'recipients_resolved'",
        )
        .bind(event_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(data,)| data.0))
    }

    /// Appends the `recipients_resolved` entry for an event. Returns false if it was already
    /// recorded (a replayed fan-out), in which case nothing changes.
    #[instrument(skip(self, record))]
    pub async fn record_fanout(
        &self,
        incident_id: IncidentId,
        event_id: EventId,
        record: &FanoutRecord,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO delivery_trail (incident_id, event_id, kind, data)
             VALUES ($1, $2, 'recipients_resolved', $3)
             ON CONFLICT (event_id) WHERE kind = 'recipients_resolved' DO NOTHING",
        )
        .bind(incident_id.as_uuid())
        .bind(event_id.as_uuid())
        .bind(Json(record))
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// An incident's delivery trail, in order.
    #[instrument(skip(self))]
    pub async fn delivery_trail(
        &self,
        incident_id: IncidentId,
        after_position: i64,
        limit: u32,
    ) -> Result<Vec<TrailEntry>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            position: i64,
            event_id: Uuid,
            kind: String,
            delivery_key: Option<String>,
            data: Json<serde_json::Value>,
            recorded_at: OffsetDateTime,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT position, event_id, kind, delivery_key, data, recorded_at
                 FROM delivery_trail WHERE incident_id = $1 AND position > $2
                 ORDER BY position LIMIT $3",
        )
        .bind(incident_id.as_uuid())
        .bind(after_position)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| TrailEntry {
                position: row.position,
                event_id: row.event_id.into(),
                kind: row.kind,
                delivery_key: row.delivery_key,
                data: row.data.0,
                recorded_at: row.recorded_at,
            })
            .collect())
    }
}
