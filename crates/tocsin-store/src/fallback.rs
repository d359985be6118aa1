//! Fallback notices in the ledger: see [`tocsin_core::fallback`].

use sqlx::types::Json;
use tocsin_core::fallback::{DeliveryNotice, fallback_channel, fallback_key};
use tocsin_core::{Channel, EventId, IncidentId, Lane, SubscriberId};
use tracing::instrument;

use crate::{Store, StoreError};

/// The delivery whose failure is the cause: its incident, event and recipient.
#[derive(Debug, Clone)]
pub struct FailedDelivery {
    pub incident_id: IncidentId,
    pub event_id: EventId,
    pub event_version: u64,
    pub subscriber_id: SubscriberId,
    pub channel: Channel,
}

/// What [`Store::plan_fallback`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackPlanned {
    /// A notice was recorded under this key, on this channel.
    Planned {
        delivery_key: String,
        channel: Channel,
    },
    /// The notice for this cause was recorded before: nothing new.
    AlreadyPlanned,
    /// The subscriber has no other channel to be told on (or was deleted).
    NoOtherChannel,
}

impl Store {
    /// Records the notice telling the subscriber of `failed` that its channel stopped working
    /// for them, on another channel they chose ([`fallback_channel`]), once per incident and
    /// failed channel. The row is parked, so the channel's dispatcher publishes its job within
    /// a tick; it is written with its trail entry in one statement, and a repeated call
    /// changes nothing.
    #[instrument(skip(self, failed), fields(subscriber_id = %failed.subscriber_id, channel = %failed.channel))]
    pub async fn plan_fallback(
        &self,
        failed: &FailedDelivery,
        reason: &str,
    ) -> Result<FallbackPlanned, StoreError> {
        let subscribers = self
            .subscribers_for_delivery(&[failed.subscriber_id])
            .await?;
        let Some((subscriber, _)) = subscribers.get(&failed.subscriber_id) else {
            return Ok(FallbackPlanned::NoOtherChannel);
        };
        // A channel whose address opted out is not one to be told on.
        let mut preferences = subscriber.preferences.clone();
        preferences
            .channels
            .retain(|channel| !subscriber.opted_out.contains(channel));
        let Some(channel) = fallback_channel(&preferences, &subscriber.contacts, failed.channel)
        else {
            return Ok(FallbackPlanned::NoOtherChannel);
        };
        let key = fallback_key(
            failed.incident_id,
            failed.subscriber_id,
            failed.channel,
            channel,
        );
        let notice = DeliveryNotice::ChannelFailed {
            failed_channel: failed.channel,
            reason: reason.to_owned(),
        };
        let inserted: Option<(String,)> = sqlx::query_as(
            "WITH planned AS (
                 INSERT INTO deliveries (delivery_key, incident_id, event_id, event_version,
                     subscriber_id, channel, lane, parked, notice)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8)
                 ON CONFLICT (delivery_key) DO NOTHING
                 RETURNING delivery_key
             ), trail AS (
                 INSERT INTO delivery_trail (incident_id, event_id, kind, delivery_key, data)
                 SELECT $2, $3, 'fallback_planned', delivery_key,
                        jsonb_build_object('failed_channel', $9::text, 'channel', $6::text,
                                           'reason', $10::text)
                 FROM planned
             )
             SELECT delivery_key FROM planned",
        )
        .bind(key.as_str())
        .bind(failed.incident_id.as_uuid())
        .bind(failed.event_id.as_uuid())
        .bind(crate::rows::sql_version(failed.event_version))
        .bind(failed.subscriber_id.as_uuid())
        .bind(channel.as_str())
        .bind(Lane::Small.as_str())
        .bind(Json(&notice))
        .bind(failed.channel.as_str())
        .bind(reason)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match inserted {
            Some((delivery_key,)) => FallbackPlanned::Planned {
                delivery_key,
                channel,
            },
            None => FallbackPlanned::AlreadyPlanned,
        })
    }
}

/// A failure whose subscriber has not been told on another channel yet.
#[derive(Debug, Clone)]
pub struct UntoldFailure {
    pub failed: FailedDelivery,
    /// The failed delivery's last error, as recorded.
    pub last_error: String,
}

impl Store {
    /// Dead deliveries on `channel` that went dead between `within` and `grace` ago and whose
    /// subscriber has no fallback notice for that incident and channel: the failures a worker
    /// lost between recording the outcome and planning the notice left untold. One per
    /// incident and subscriber, at most `limit`. (Notices that dead-letter tell nobody more.)
    pub async fn untold_failures(
        &self,
        channel: Channel,
        grace: std::time::Duration,
        within: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<UntoldFailure>, StoreError> {
        let rows: Vec<(uuid::Uuid, uuid::Uuid, i64, uuid::Uuid, String)> = sqlx::query_as(
            "SELECT DISTINCT ON (d.incident_id, d.subscriber_id)
                    d.incident_id, d.event_id, d.event_version, d.subscriber_id,
                    coalesce(d.last_error, '')
             FROM deliveries d
             WHERE d.channel = $1 AND d.state = 'dead' AND d.notice IS NULL
               AND d.updated_at < now() - make_interval(secs => $2)
               AND d.updated_at > now() - make_interval(secs => $3)
               AND NOT EXISTS (
                   SELECT 1 FROM deliveries f
                   WHERE f.incident_id = d.incident_id AND f.subscriber_id = d.subscriber_id
                     AND f.notice->>'failed_channel' = $1)
             ORDER BY d.incident_id, d.subscriber_id, d.event_version
             LIMIT $4",
        )
        .bind(channel.as_str())
        .bind(grace.as_secs_f64())
        .bind(within.as_secs_f64())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(incident_id, event_id, version, subscriber_id, last_error)| UntoldFailure {
                    failed: FailedDelivery {
                        incident_id: IncidentId::from_uuid(incident_id),
                        event_id: EventId::from_uuid(event_id),
                        event_version: u64::try_from(version).unwrap_or_default(),
                        subscriber_id: SubscriberId::from_uuid(subscriber_id),
                        channel,
                    },
                    last_error,
                },
            )
            .collect())
    }
}
