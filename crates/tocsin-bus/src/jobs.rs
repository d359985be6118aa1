//! Delivery jobs: one message per (event, subscriber, channel), on the channel's subject of a
//! work-queue stream, de-duplicated by its delivery key.

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tocsin_core::Channel;
use tracing::instrument;
use uuid::Uuid;

use crate::{Bus, BusError, Published};

/// Schema version of [`DeliveryJob`]. Bump on incompatible change.
pub const JOB_SCHEMA: u16 = 1;

/// A delivery job on the wire. It carries ids only: contact details stay in PostgreSQL,
/// where deleting a subscriber erases them, and never sit in a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub schema: u16,
    pub delivery_key: String,
    pub incident_id: Uuid,
    pub event_id: Uuid,
    pub event_version: u64,
    pub subscriber_id: Uuid,
    pub channel: Channel,
    /// Quiet hours: not to be sent before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub send_after: Option<OffsetDateTime>,
}

impl DeliveryJob {
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("a job always serialises").into()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, BusError> {
        let job: Self =
            serde_json::from_slice(payload).map_err(|e| BusError::Decode(e.to_string()))?;
        if job.schema != JOB_SCHEMA {
            return Err(BusError::Decode(format!("unknown job schema {}", job.schema)));
        }
        Ok(job)
    }
}

impl Bus {
    /// Creates the deliveries stream if it does not exist. Idempotent. Work-queue retention:
    /// a job leaves the stream once a worker acknowledges it; the ledger remembers it.
    #[instrument(skip(self), fields(stream = %self.config.deliveries_stream()))]
    pub async fn ensure_deliveries_stream(&self) -> Result<(), BusError> {
        let config = stream::Config {
            name: self.config.deliveries_stream(),
            subjects: vec![self.config.deliveries_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_age: self.config.events_max_age,
            duplicate_window: self.config.duplicate_window,
            num_replicas: self.config.replicas,
            description: Some("Tocsin delivery jobs, recorded first in the PostgreSQL ledger".into()),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Publishes jobs with `Nats-Msg-Id` = delivery key, pipelined; results in input order.
    #[instrument(skip_all, fields(count = jobs.len()))]
    pub async fn publish_jobs(&self, jobs: &[DeliveryJob]) -> Vec<Result<Published, BusError>> {
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            let message = jetstream::message::PublishMessage::build()
                .message_id(job.delivery_key.as_str())
                .payload(job.encode());
            pending.push(
                self.js
                    .send_publish(self.config.delivery_subject(job.channel), message)
                    .await,
            );
        }
        join_all(pending.into_iter().map(|sent| async move {
            let ack = sent.map_err(|e| BusError::Unavailable(e.to_string()))?.await;
            ack.map(|ack| Published { stream_sequence: ack.sequence, duplicate: ack.duplicate })
                .map_err(|e| BusError::Unavailable(e.to_string()))
        }))
        .await
    }

    /// Takes every job waiting on one channel's subject, in stream order. For tests and the
    /// fan-out benchmark only: it removes them from the work queue, and fails while the
    /// channel's workers hold their consumer.
    pub async fn take_jobs(&self, channel: Channel) -> Result<Vec<DeliveryJob>, BusError> {
        self.read_subject(self.config.deliveries_stream(), self.config.delivery_subject(channel), true)
            .await?
            .iter()
            .map(|payload| DeliveryJob::decode(payload))
            .collect()
    }

    /// Jobs waiting on one channel's subject (for benchmarks, tests and readiness).
    pub async fn pending_jobs(&self, channel: Channel) -> Result<u64, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream(self.config.deliveries_stream())
            .await
            .map_err(|e| unavailable(&e))?;
        let subject = self.config.delivery_subject(channel);
        let mut counts = stream.info_with_subjects(&subject).await.map_err(|e| unavailable(&e))?;
        let mut pending = 0;
        while let Some((name, count)) = counts.try_next().await.map_err(|e| unavailable(&e))? {
            if name == subject {
                pending += count as u64;
            }
        }
        Ok(pending)
    }
}
