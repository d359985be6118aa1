//! The JSON an event travels in. A wire type: versioned by `schema`, converted to and from
//! the domain's `RecordedEvent` at the edges.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tocsin_core::{Change, RecordedEvent};
use uuid::Uuid;

use crate::BusError;

/// Schema version of [`EventEnvelope`]. Bump on incompatible change.
pub const ENVELOPE_SCHEMA: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub schema: u16,
    pub event_id: Uuid,
    pub incident_id: Uuid,
    pub version: u64,
    pub position: i64,
    pub publisher: String,
    pub idempotency_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub change: Change,
}

impl From<&RecordedEvent> for EventEnvelope {
    fn from(e: &RecordedEvent) -> Self {
        Self {
            schema: ENVELOPE_SCHEMA,
            event_id: *e.event_id.as_uuid(),
            incident_id: *e.incident_id.as_uuid(),
            version: e.version,
            position: e.position,
            publisher: e.publisher.clone(),
            idempotency_key: e.idempotency_key.clone(),
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            change: e.change.clone(),
        }
    }
}

impl From<EventEnvelope> for RecordedEvent {
    fn from(e: EventEnvelope) -> Self {
        Self {
            event_id: e.event_id.into(),
            incident_id: e.incident_id.into(),
            version: e.version,
            position: e.position,
            publisher: e.publisher,
            idempotency_key: e.idempotency_key,
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            change: e.change,
        }
    }
}

impl EventEnvelope {
    pub fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("an envelope always serialises")
            .into()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, BusError> {
        let envelope: Self =
            serde_json::from_slice(payload).map_err(|e| BusError::Decode(e.to_string()))?;
        if envelope.schema != ENVELOPE_SCHEMA {
            return Err(BusError::Decode(format!(
                "unknown envelope schema {}",
                envelope.schema
            )));
        }
        Ok(envelope)
    }
}
