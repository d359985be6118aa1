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
        let Some(channel) = fallback_channel(
            &subscriber.preferences,
            &subscriber.contacts,
            failed.channel,
        ) else {
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
