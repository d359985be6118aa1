//! Publishing incident events to JetStream, and reading them back.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use time::OffsetDateTime;
use tocsin_core::{IncidentId, RecordedEvent};
use tracing::{debug, instrument};

use crate::{Bus, BusError, EventEnvelope};

/// JetStream's answer to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub stream_sequence: u64,
    /// JetStream had already stored this event id within its de-duplication window.
    pub duplicate: bool,
}

impl Bus {
    /// Creates the events stream if it does not exist. Idempotent. Returns the stream's
    /// creation time, which names its incarnation: a stream lost and created again has another.
    #[instrument(skip(self), fields(stream = %self.config.events_stream()))]
    pub async fn ensure_events_stream(&self) -> Result<time::OffsetDateTime, BusError> {
        let config = stream::Config {
            name: self.config.events_stream(),
            subjects: vec![self.config.events_subjects()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.config.events_max_age,
            duplicate_window: self.config.duplicate_window,
            num_replicas: self.config.replicas,
            description: Some("Tocsin incident events, relayed from the PostgreSQL log".into()),
            ..Default::default()
        };
        let stream = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(stream.cached_info().created)
    }

    /// Publishes events with `Nats-Msg-Id` = event id, pipelined (up to `max_ack_inflight`
    /// acknowledgements awaited at once). Results come back in input order.
    ///
    /// On one connection the server stores messages in the order they were sent, so events
    /// given in per-incident version order are stored in that order.
    #[instrument(skip_all, fields(count = events.len()))]
    pub async fn publish_events(
        &self,
        events: &[RecordedEvent],
    ) -> Vec<Result<Published, BusError>> {
        let messages = events.iter().map(|event| {
            let message = jetstream::message::PublishMessage::build()
                .message_id(event.event_id.to_string())
                .header("Tocsin-Incident-Id", event.incident_id.to_string().as_str())
                .header("Tocsin-Version", event.version.to_string().as_str())
                .payload(EventEnvelope::from(event).encode());
            (self.config.event_subject(event.incident_id), message)
        });
        self.publish_pipelined(messages.collect()).await
    }

    /// Every event of one incident currently in the stream, in stream order. For the demo,
    /// tests and audits: an ephemeral consumer that reads and acknowledges nothing.
    #[instrument(skip(self))]
    pub async fn read_incident_events(
        &self,
        incident_id: IncidentId,
    ) -> Result<Vec<EventEnvelope>, BusError> {
        self.read_subject(
            self.config.events_stream(),
            self.config.event_subject(incident_id),
            false,
        )
        .await?
        .iter()
        .map(|stored| EventEnvelope::decode(&stored.payload))
        .collect()
    }

    /// Every event in the stream, in stream order.
    pub async fn read_all_events(&self) -> Result<Vec<EventEnvelope>, BusError> {
        Ok(self
            .read_all_events_stored()
            .await?
            .into_iter()
            .map(|(event, _)| event)
            .collect())
    }

    /// Every event in the stream with the time the server stored it, in stream order: the
    /// relay's lag, measured from outside (the ingest benchmark).
    pub async fn read_all_events_stored(
        &self,
    ) -> Result<Vec<(EventEnvelope, OffsetDateTime)>, BusError> {
        self.read_subject(
            self.config.events_stream(),
            self.config.events_subjects(),
            false,
        )
        .await?
        .iter()
        .map(|stored| Ok((EventEnvelope::decode(&stored.payload)?, stored.stored_at)))
        .collect()
    }

    /// Every payload on `filter_subject` of `stream`, through an ephemeral consumer. With
    /// `take`, each message is acknowledged, which removes it from a work-queue stream (whose
    /// consumers must acknowledge explicitly); otherwise nothing is acknowledged.
    pub(crate) async fn read_subject(
        &self,
        stream: String,
        filter_subject: String,
        take: bool,
    ) -> Result<Vec<StoredMessage>, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut consumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject,
                ack_policy: if take {
                    consumer::AckPolicy::Explicit
                } else {
                    consumer::AckPolicy::None
                },
                deliver_policy: consumer::DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let mut out = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_millis(300))
                .messages()
                .await
                .map_err(|e| unavailable(&e))?;
            let before = out.len();
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| unavailable(&e))?;
                if take {
                    message.ack().await.map_err(|e| unavailable(&e))?;
                }
                let stored_at = message.info().map_err(|e| unavailable(&e))?.published;
                out.push(StoredMessage {
                    payload: message.payload.clone(),
                    stored_at,
                });
            }
            if out.len() == before {
                break;
            }
        }
        // Removed at once rather than left to expire: a work-queue stream allows one consumer
        // per subject, and the next reader would be refused meanwhile.
        let name = consumer
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .name
            .clone();
        stream
            .delete_consumer(&name)
            .await
            .map_err(|e| unavailable(&e))?;
        debug!(count = out.len(), "read messages back from the stream");
        Ok(out)
    }

    /// How many messages the events stream holds.
    pub async fn events_stream_len(&self) -> Result<u64, BusError> {
        let mut stream = self
            .js
            .get_stream(self.config.events_stream())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(info.state.messages)
    }

    /// Deletes the events stream: for tests cleaning up, and for operators rebuilding it from
    /// the log (`tocsin-ingest republish`).
    pub async fn delete_events_stream(&self) -> Result<(), BusError> {
        self.js
            .delete_stream(self.config.events_stream())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(())
    }
}

/// A message read back from a stream.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub(crate) payload: bytes::Bytes,
    /// When the server stored it.
    pub(crate) stored_at: OffsetDateTime,
}
