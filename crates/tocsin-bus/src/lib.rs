//! The only crate that knows NATS subjects and JetStream settings.
//!
//! JetStream is Tocsin's fast transport, never its truth: every stream here can be rebuilt
//! from the PostgreSQL log. Only features of nats-server 2.9 are used: streams, pull
//! consumers, `Nats-Msg-Id` de-duplication, explicit acks, nak with delay, max deliver.
//!
//! - [`config`]: prefixes, stream names and subjects, so tests and tenants can isolate themselves.
//! - [`envelope`]: the versioned JSON wire format of an event on the bus.
//! - [`events`]: publishing events (pipelined, de-duplicated by event id) and reading them back.
//! - [`jobs`]: delivery jobs, one subject per channel, de-duplicated by delivery key.
//! - [`queue`]: durable pull consumers shared by replicas, and ack / nak-with-delay / term.
//! - [`pull`]: the pull loop services run, which hands back what it pulled when stopping.

pub mod config;
pub mod envelope;
mod error;
pub mod events;
pub mod jobs;
pub mod pull;
pub mod queue;

use std::time::Duration;

use async_nats::jetstream;

pub use config::BusConfig;
pub use envelope::EventEnvelope;
pub use error::BusError;
pub use events::Published;
pub use jobs::DeliveryJob;
pub use pull::Pull;
pub use queue::{QueueSettings, Work, WorkQueue};

/// A connection to NATS with JetStream, bound to one [`BusConfig`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: BusConfig,
}

impl Bus {
    /// Connects to `url`. The connection is made in the background and retried forever, so a
    /// service starts (and keeps its own work going) while NATS is down.
    pub async fn connect(url: &str, config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("tocsin/{}", config.prefix()))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(Self::new(client, config))
    }

    pub fn new(client: async_nats::Client, config: BusConfig) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.max_ack_inflight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Self { client, js, config }
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `messages` pipelined, results in input order. At most `max_ack_inflight`
    /// acknowledgements are awaited at once: a publish holds its in-flight permit until its
    /// acknowledgement is awaited, so sending more than that before awaiting any would wait
    /// for a permit forever.
    pub(crate) async fn publish_pipelined(
        &self,
        // A Vec, not an iterator: a lazy iterator borrowing its caller's data makes the
        // future not `Send` for every lifetime, which `tokio::spawn` requires.
        messages: Vec<(String, jetstream::message::PublishMessage)>,
    ) -> Vec<Result<Published, BusError>> {
        let window = self.config.max_ack_inflight.max(1);
        let mut results = Vec::new();
        let mut in_flight = std::collections::VecDeque::with_capacity(window);
        for (subject, message) in messages {
            if in_flight.len() == window
                && let Some(oldest) = in_flight.pop_front()
            {
                results.push(acknowledged(oldest).await);
            }
            in_flight.push_back(self.js.send_publish(subject, message).await);
        }
        for sent in in_flight {
            results.push(acknowledged(sent).await);
        }
        results
    }

    /// Whether the connection to NATS is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until everything sent so far has left for the server. Answers to JetStream
    /// (ack, nak, progress) are fire-and-forget writes into the client's buffer, so a
    /// process that exits without this may take its last answers with it.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

async fn acknowledged(
    sent: Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
) -> Result<Published, BusError> {
    let ack = sent
        .map_err(|e| BusError::Unavailable(e.to_string()))?
        .await;
    match ack {
        Ok(ack) => Ok(Published {
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
        }),
        Err(e) => Err(match e.kind() {
            jetstream::context::PublishErrorKind::StreamNotFound => {
                BusError::Rejected(e.to_string())
            }
            _ => BusError::Unavailable(e.to_string()),
        }),
    }
}
