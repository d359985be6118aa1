//! What operators read of the ledger: delivery progress per channel, how far an incident's
//! fan-out has got, and the deliveries themselves, filtered and paged.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use tocsin_core::{Channel, DeliveryState, IncidentId, SubscriberId};
use tracing::instrument;
use uuid::Uuid;

use crate::{Store, StoreError};

/// Deliveries of one incident on one channel, by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelProgress {
    pub channel: Channel,
    pub states: BTreeMap<DeliveryState, u64>,
    /// Of the pending ones, those held by quiet hours until their window ends.
    pub held: u64,
}

impl ChannelProgress {
    pub fn count(&self, state: DeliveryState) -> u64 {
        self.states.get(&state).copied().unwrap_or(0)
    }
}

/// Which deliveries of an incident to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub channel: Option<Channel>,
    /// Empty: every state.
    pub states: Vec<DeliveryState>,
    /// One subscriber, by the caller's id.
    pub external_id: Option<String>,
    /// One event, by its incident version.
    pub event_version: Option<u64>,
}

/// Where a page of deliveries ends; the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCursor {
    pub event_version: u64,
    pub channel: Channel,
    pub delivery_key: String,
}

/// One delivery as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub delivery_key: String,
    pub channel: Channel,
    pub state: DeliveryState,
    pub event_version: u64,
    pub subscriber_id: SubscriberId,
    /// `None` once the subscriber was deleted.
    pub external_id: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_id: Option<String>,
    pub send_after: Option<OffsetDateTime>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

impl DeliveryView {
    /// The cursor a page ending with this delivery continues from.
    pub fn cursor(&self) -> DeliveryCursor {
        DeliveryCursor {
            event_version: self.event_version,
            channel: self.channel,
            delivery_key: self.delivery_key.clone(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryViewRow {
    delivery_key: String,
    channel: String,
    state: String,
    event_version: i64,
    subscriber_id: Uuid,
    external_id: Option<String>,
    attempts: i32,
    last_error: Option<String>,
    provider_id: Option<String>,
    send_after: Option<OffsetDateTime>,
    next_attempt_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
}

impl TryFrom<DeliveryViewRow> for DeliveryView {
    type Error = StoreError;

    fn try_from(row: DeliveryViewRow) -> Result<Self, StoreError> {
        Ok(DeliveryView {
            channel: parse_channel(&row.channel)?,
            state: parse_state(&row.state)?,
            delivery_key: row.delivery_key,
            event_version: u64::try_from(row.event_version).unwrap_or_default(),
            subscriber_id: row.subscriber_id.into(),
            external_id: row.external_id,
            attempts: u32::try_from(row.attempts).unwrap_or_default(),
            last_error: row.last_error,
            provider_id: row.provider_id,
            send_after: row.send_after,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })
    }
}

fn parse_channel(raw: &str) -> Result<Channel, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown channel {raw:?}")))
}

fn parse_state(raw: &str) -> Result<DeliveryState, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown delivery state {raw:?}")))
}

impl Store {
    /// The incident's deliveries per channel and state (channels in order; channels without
    /// deliveries are absent).
    #[instrument(skip(self))]
    pub async fn delivery_progress(
        &self,
        incident_id: IncidentId,
    ) -> Result<Vec<ChannelProgress>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT channel, state, count(*),
                    count(*) FILTER (WHERE state = 'pending' AND send_after > now())
             FROM deliveries WHERE incident_id = $1
             GROUP BY channel, state ORDER BY channel, state",
        )
        .bind(incident_id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        let mut progress: Vec<ChannelProgress> = Vec::new();
        for (channel, state, count, held) in rows {
            let channel = parse_channel(&channel)?;
            let state = parse_state(&state)?;
            if progress.last().is_none_or(|p| p.channel != channel) {
                progress.push(ChannelProgress {
                    channel,
                    states: BTreeMap::new(),
                    held: 0,
                });
            }
            let entry = progress.last_mut().expect("pushed above");
            entry
                .states
                .insert(state, u64::try_from(count).unwrap_or_default());
            entry.held += u64::try_from(held).unwrap_or_default();
        }
        Ok(progress)
    }

    /// The latest incident version whose fan-out is complete (its `recipients_resolved` trail
    /// entry exists); 0 before the first. The resolver fans an incident's events out in
    /// order, so every earlier version is complete too.
    #[instrument(skip(self))]
    pub async fn fanned_out_version(&self, incident_id: IncidentId) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT max(e.version) FROM delivery_trail t JOIN events e USING (event_id)
             WHERE t.incident_id = $1 AND t.kind = 'recipients_resolved'",
        )
        .bind(incident_id.as_uuid())
        .fetch_one(&self.pool)
        .await?;
        Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// Up to `limit` of the incident's deliveries matching `filter`, after `after`, in
    /// (event version, channel, delivery key) order.
    #[instrument(skip(self))]
    pub async fn list_deliveries(
        &self,
        incident_id: IncidentId,
        filter: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
        limit: u32,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        let rows: Vec<DeliveryViewRow> = sqlx::query_as(
            "SELECT d.delivery_key, d.channel, d.state, d.event_version, d.subscriber_id,
                    s.external_id, d.attempts, d.last_error, d.provider_id, d.send_after,
                    d.next_attempt_at, d.created_at, d.updated_at, d.finished_at
             FROM deliveries d LEFT JOIN subscribers s USING (subscriber_id)
             WHERE d.incident_id = $1
               AND ($2::text IS NULL OR d.channel = $2)
               AND (cardinality($3::text[]) = 0 OR d.state = ANY($3))
               AND ($4::text IS NULL OR s.external_id = $4)
               AND ($5::bigint IS NULL OR d.event_version = $5)
               AND ($6::bigint IS NULL
                    OR (d.event_version, d.channel, d.delivery_key) > ($6, $7, $8))
             ORDER BY d.event_version, d.channel, d.delivery_key
             LIMIT $9",
        )
        .bind(incident_id.as_uuid())
        .bind(filter.channel.map(Channel::as_str))
        .bind(&states)
        .bind(filter.external_id.as_deref())
        .bind(filter.event_version.map(|v| v as i64))
        .bind(after.map(|c| c.event_version as i64))
        .bind(after.map(|c| c.channel.as_str()))
        .bind(after.map(|c| c.delivery_key.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(DeliveryView::try_from).collect()
    }
}
