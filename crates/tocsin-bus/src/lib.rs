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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Semaphore;

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
    /// Publish acknowledgements awaited at once across every caller on this connection
    /// ([`BusConfig::max_ack_inflight`]); see [`Bus::publish_pipelined`].
    window: Arc<Semaphore>,
}

/// The client library's own in-flight bound, set far above [`Bus::window`] so that it never
/// binds: its permits are held until each acknowledgement is awaited, so callers blocked on
/// it while holding some of them could wait for one another forever.
const LIBRARY_ACK_BOUND: usize = 1 << 20;

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
            .max_ack_inflight(LIBRARY_ACK_BOUND)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let window = Arc::new(Semaphore::new(config.max_ack_inflight.max(1)));
        Self {
            client,
            js,
            config,
            window,
        }
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `messages` pipelined, results in input order, with at most
    /// `max_ack_inflight` acknowledgements outstanding across all callers.
    ///
    /// Concurrent callers (a resolver's fan-outs, a dispatcher, a requeue sweep) share the
    /// window, and none of them may wait for a slot while holding some: two fan-outs that
    /// each held half the window and waited for more would wait for each other forever, and
    /// with them the whole pipeline. So a caller that finds the window full first awaits its
    /// own oldest acknowledgement, which frees a slot; only a caller holding none waits, and
    /// every holder is making progress towards releasing.
    pub(crate) async fn publish_pipelined(
        &self,
        // A Vec, not an iterator: a lazy iterator borrowing its caller's data makes the
        // future not `Send` for every lifetime, which `tokio::spawn` requires.
        messages: Vec<(String, jetstream::message::PublishMessage)>,
    ) -> Vec<Result<Published, BusError>> {
        let mut results = Vec::with_capacity(messages.len());
        let mut in_flight = VecDeque::new();
        for (subject, message) in messages {
            let slot = loop {
                match self.window.clone().try_acquire_owned() {
                    Ok(slot) => break slot,
                    Err(_) => match in_flight.pop_front() {
                        Some((slot, sent, deadline)) => {
                            results.push(acknowledged(sent, deadline).await);
                            drop(slot);
                        }
                        None => {
                            break self
                                .window
                                .clone()
                                .acquire_owned()
                                .await
                                .expect("the publish window is never closed");
                        }
                    },
                }
            };
            // The acknowledgement is due within the ack timeout of the send, not of the
            // moment it is awaited: the library starts its timer only when awaited, so after a
            // lost connection (whose pending acknowledgements never come) a thousand of them
            // awaited one after another would take a thousand timeouts, and the caller would
            // hang for an hour where it should fail in seconds and retry.
            let deadline = tokio::time::Instant::now() + self.config.ack_timeout;
            in_flight.push_back((slot, self.js.send_publish(subject, message).await, deadline));
        }
        for (_slot, sent, deadline) in in_flight {
            results.push(acknowledged(sent, deadline).await);
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
    deadline: tokio::time::Instant,
) -> Result<Published, BusError> {
    let waiting = sent.map_err(|e| BusError::Unavailable(e.to_string()))?;
    let Ok(ack) = tokio::time::timeout_at(deadline, waiting.into_future()).await else {
        return Err(BusError::Unavailable(
            "no publish acknowledgement within the ack timeout of the send".into(),
        ));
    };
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

#[cfg(test)]
mod tests {
    use tocsin_core::Channel;
    use uuid::Uuid;

    use super::*;
    use crate::jobs::JOB_SCHEMA;

    fn job() -> DeliveryJob {
        DeliveryJob {
            schema: JOB_SCHEMA,
            delivery_key: Uuid::new_v4().simple().to_string(),
            incident_id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
            event_version: 1,
            subscriber_id: Uuid::new_v4(),
            channel: Channel::Webhook,
            send_after: None,
            lane: tocsin_core::Lane::Small,
        }
    }

    /// Concurrent publishers that together want more acknowledgements in flight than the
    /// window allows all finish: none waits for a slot while holding one another needs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishers_never_wait_on_each_other() {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let prefix = format!("t_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut config = BusConfig::new(prefix).unwrap();
        config.max_ack_inflight = 4;
        let bus = Bus::connect(&url, config)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {url} (NATS_URL): {e}"));
        bus.ensure_deliveries_stream().await.unwrap();

        let publishers: Vec<_> = (0..8)
            .map(|_| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    let jobs: Vec<DeliveryJob> = (0..60).map(|_| job()).collect();
                    bus.publish_jobs(&jobs).await
                })
            })
            .collect();
        let all = tokio::time::timeout(
            Duration::from_secs(30),
            futures::future::join_all(publishers),
        )
        .await
        .expect("concurrent publishers deadlocked on the in-flight window");
        let published = all
            .into_iter()
            .flat_map(|results| results.unwrap())
            .filter(|result| result.as_ref().is_ok_and(|p| !p.duplicate))
            .count();
        assert_eq!(published, 8 * 60);
        assert_eq!(
            bus.window.available_permits(),
            4,
            "every slot was given back"
        );
        bus.delete_deliveries_stream().await.unwrap();
    }

    /// Acknowledgements that never come (a connection lost with publishes in flight) fail
    /// each within the ack timeout of its send, not of when it is awaited: a fan-out that was
    /// publishing when NATS died must fail in seconds and be retried, never wait out one
    /// timeout after another (with a thousand in flight, more than an hour).
    #[tokio::test]
    async fn lost_acknowledgements_fail_within_one_timeout_of_their_send() {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let prefix = format!("t_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut config = BusConfig::new(prefix.clone()).unwrap();
        config.ack_timeout = Duration::from_millis(200);
        let bus = Bus::connect(&url, config)
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {url} (NATS_URL): {e}"));
        // A plain subscriber takes the publishes and never answers, as a server that died
        // with them would: no stream, yet a responder, so no quick "no responders" either.
        let subject = format!("{prefix}.silent");
        let silent = bus.client().subscribe(subject.clone()).await.unwrap();
        bus.client().flush().await.unwrap();
        let messages: Vec<(String, jetstream::message::PublishMessage)> = (0..50)
            .map(|n| {
                (
                    subject.clone(),
                    jetstream::message::PublishMessage::build().payload(format!("{n}").into()),
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let results = bus.publish_pipelined(messages).await;
        let took = started.elapsed();
        assert_eq!(results.len(), 50);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(BusError::Unavailable(_)))),
            "every unanswered publish is an error"
        );
        // One after another they would take 50 x 200 ms = 10 s.
        assert!(
            took < Duration::from_secs(3),
            "the timeouts ran one after another: {took:?}"
        );
        drop(silent);
    }
}
