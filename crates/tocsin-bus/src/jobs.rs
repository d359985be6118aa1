//! Delivery jobs: one message per (event, subscriber, channel), on the channel's subject of a
//! work-queue stream, de-duplicated by its delivery key.

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tocsin_core::{Channel, Delivery, Lane};
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
    /// The queue it waits in (jobs from before lanes are bulk).
    #[serde(default)]
    pub lane: Lane,
}

impl DeliveryJob {
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("a job always serialises")
            .into()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, BusError> {
        let job: Self =
            serde_json::from_slice(payload).map_err(|e| BusError::Decode(e.to_string()))?;
        if job.schema != JOB_SCHEMA {
            return Err(BusError::Decode(format!(
                "unknown job schema {}",
                job.schema
            )));
        }
        Ok(job)
    }
}

impl From<&Delivery> for DeliveryJob {
    /// The job that carries a ledger row: the one shape of a job, for the fan-out, the
    /// dispatchers, the requeue sweep and dead-letter replays alike.
    fn from(delivery: &Delivery) -> Self {
        DeliveryJob {
            schema: JOB_SCHEMA,
            delivery_key: delivery.delivery_key.clone(),
            incident_id: *delivery.incident_id.as_uuid(),
            event_id: *delivery.event_id.as_uuid(),
            event_version: delivery.event_version,
            subscriber_id: *delivery.subscriber_id.as_uuid(),
            channel: delivery.channel,
            send_after: delivery.send_after,
            lane: delivery.lane,
        }
    }
}

impl Bus {
    /// Creates the deliveries stream if it does not exist. Idempotent; returns the stream's
    /// creation time, its incarnation. Work-queue retention:
    /// a job leaves the stream once a worker acknowledges it; the ledger remembers it.
    #[instrument(skip(self), fields(stream = %self.config.deliveries_stream()))]
    pub async fn ensure_deliveries_stream(&self) -> Result<time::OffsetDateTime, BusError> {
        let config = stream::Config {
            name: self.config.deliveries_stream(),
            subjects: vec![self.config.deliveries_subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_age: self.config.events_max_age,
            duplicate_window: self.config.duplicate_window,
            num_replicas: self.config.replicas,
            description: Some(
                "Tocsin delivery jobs, recorded first in the PostgreSQL ledger".into(),
            ),
            ..Default::default()
        };
        let stream = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(stream.cached_info().created)
    }

    /// Creates the dead-letter stream if it does not exist. Idempotent.
    pub async fn ensure_dead_letters_stream(&self) -> Result<(), BusError> {
        let config = stream::Config {
            name: self.config.dead_letters_stream(),
            subjects: vec![format!("{}.dead.>", self.config.prefix())],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.config.events_max_age,
            duplicate_window: self.config.duplicate_window,
            num_replicas: self.config.replicas,
            description: Some("Tocsin dead letters; the ledger holds their state".into()),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Publishes a dead letter: the job, with why it died in a `Tocsin-Reason` header.
    pub async fn publish_dead_letter(
        &self,
        job: &DeliveryJob,
        reason: &str,
    ) -> Result<(), BusError> {
        // Header values are one line; a provider's multi-line answer is flattened.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(512)
            .collect();
        let message = jetstream::message::PublishMessage::build()
            .message_id(format!(
                "{}.dead.{}",
                job.delivery_key,
                time::OffsetDateTime::now_utc().unix_timestamp()
            ))
            .header("Tocsin-Reason", reason.as_str())
            .payload(job.encode());
        self.js
            .send_publish(self.config.dead_letter_subject(job.channel), message)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Publishes jobs with `Nats-Msg-Id` = delivery key, pipelined; results in input order.
    #[instrument(skip_all, fields(count = jobs.len()))]
    pub async fn publish_jobs(&self, jobs: &[DeliveryJob]) -> Vec<Result<Published, BusError>> {
        self.send_jobs(jobs, None).await
    }

    /// Publishes jobs again, deliberately, after their ledger rows were reset (a dead-letter
    /// replay): the message id is `{key}.{tag}`, so JetStream does not drop them as
    /// duplicates of the first publish, while the ledger still allows one send per key.
    pub async fn republish_jobs(
        &self,
        jobs: &[DeliveryJob],
        tag: &str,
    ) -> Vec<Result<Published, BusError>> {
        self.send_jobs(jobs, Some(tag)).await
    }

    /// Publishes the jobs of parked deliveries a dispatcher found due, each with its
    /// dispatch number: the message id is `{key}.d{number}`, so a dispatch repeated after a
    /// crash is dropped as a duplicate of itself, while the next dispatch of the same
    /// delivery (after a later park) is not.
    pub async fn dispatch_jobs(
        &self,
        jobs: &[(DeliveryJob, u32)],
    ) -> Vec<Result<Published, BusError>> {
        let messages = jobs
            .iter()
            .map(|(job, number)| self.job_message(job, format!("{}.d{number}", job.delivery_key)));
        self.publish_pipelined(messages.collect()).await
    }

    async fn send_jobs(
        &self,
        jobs: &[DeliveryJob],
        tag: Option<&str>,
    ) -> Vec<Result<Published, BusError>> {
        let messages = jobs.iter().map(|job| {
            let message_id = match tag {
                None => job.delivery_key.clone(),
                Some(tag) => format!("{}.{tag}", job.delivery_key),
            };
            self.job_message(job, message_id)
        });
        self.publish_pipelined(messages.collect()).await
    }

    fn job_message(
        &self,
        job: &DeliveryJob,
        message_id: String,
    ) -> (String, jetstream::message::PublishMessage) {
        let message = jetstream::message::PublishMessage::build()
            .message_id(message_id)
            .payload(job.encode());
        (self.config.delivery_subject(job.channel, job.lane), message)
    }

    /// Takes every job waiting for one channel, lane by lane, each in stream order. For tests
    /// and the fan-out benchmark only: it removes them from the work queue, and fails while
    /// the channel's workers hold their consumers.
    pub async fn take_jobs(&self, channel: Channel) -> Result<Vec<DeliveryJob>, BusError> {
        let mut jobs = Vec::new();
        for lane in Lane::ALL {
            for stored in self
                .read_subject(
                    self.config.deliveries_stream(),
                    self.config.delivery_subject(channel, lane),
                    true,
                )
                .await?
            {
                jobs.push(DeliveryJob::decode(&stored.payload)?);
            }
        }
        Ok(jobs)
    }

    /// Jobs waiting for one channel, in every lane (for benchmarks, tests and readiness).
    pub async fn pending_jobs(&self, channel: Channel) -> Result<u64, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream(self.config.deliveries_stream())
            .await
            .map_err(|e| unavailable(&e))?;
        let mut pending = 0;
        for lane in Lane::ALL {
            let subject = self.config.delivery_subject(channel, lane);
            let mut counts = stream
                .info_with_subjects(&subject)
                .await
                .map_err(|e| unavailable(&e))?;
            while let Some((name, count)) = counts.try_next().await.map_err(|e| unavailable(&e))? {
                if name == subject {
                    pending += count as u64;
                }
            }
        }
        Ok(pending)
    }

    /// Deletes the deliveries stream, jobs and consumers with it: for tests and benchmarks
    /// cleaning up. The ledger in PostgreSQL is the record of what was planned.
    pub async fn delete_deliveries_stream(&self) -> Result<(), BusError> {
        self.js
            .delete_stream(self.config.deliveries_stream())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(())
    }
}
