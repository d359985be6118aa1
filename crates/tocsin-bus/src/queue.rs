//! Durable pull consumers shared by the replicas of a service, and the messages they hand
//! out with the four answers JetStream knows: ack, nak with a delay, progress, terminate.
//!
//! Replicas of one service bind to the same durable consumer, so adding replicas adds
//! throughput (`docker compose up --scale`). A plain `nak` would redeliver at once, so this
//! module offers it only as [`Work::release`], for work a stopping process never started;
//! everything else naks with a delay.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use futures::stream::BoxStream;
use tocsin_core::{Channel, Lane};
use tracing::instrument;

use crate::{Bus, BusError};

/// How a durable consumer hands out work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Unacknowledged work is redelivered after this long; long work reports progress.
    pub ack_wait: Duration,
    /// Deliveries of one message before JetStream gives up on it; `None`: never.
    pub max_deliver: Option<i64>,
    /// Messages out at once across all replicas. JetStream stops delivering silently at this
    /// number, so it must cover every replica's concurrency.
    pub max_ack_pending: i64,
}

impl QueueSettings {
    /// The resolver's: every event must be fanned out, so failures (the database down) are
    /// retried with delays for as long as they last, never dropped after N tries.
    pub fn resolver() -> Self {
        Self {
            // Work in hand reports progress every third of this, so a short wait costs
            // nothing while the resolver lives and brings an event back soon after it dies.
            ack_wait: Duration::from_secs(15),
            max_deliver: None,
            max_ack_pending: 256,
        }
    }
}

/// A durable pull consumer.
#[derive(Debug, Clone)]
pub struct WorkQueue {
    consumer: consumer::PullConsumer,
}

/// One message handed out by a [`WorkQueue`]. A clone answers for the same message.
#[derive(Debug, Clone)]
pub struct Work {
    message: jetstream::Message,
}

impl Bus {
    /// The resolver's consumer of every incident event. Creates it if missing.
    pub async fn resolver_queue(&self, settings: QueueSettings) -> Result<WorkQueue, BusError> {
        self.ensure_events_stream().await?;
        self.durable(
            self.config.events_stream(),
            self.config.resolver_consumer(),
            self.config.events_subjects(),
            settings,
        )
        .await
    }

    /// One channel's workers' consumer of its delivery jobs in one lane. Creates it if
    /// missing.
    pub async fn worker_queue(
        &self,
        channel: Channel,
        lane: Lane,
        settings: QueueSettings,
    ) -> Result<WorkQueue, BusError> {
        self.ensure_deliveries_stream().await?;
        self.durable(
            self.config.deliveries_stream(),
            self.config.worker_consumer(channel, lane),
            self.config.delivery_subject(channel, lane),
            settings,
        )
        .await
    }

    /// Events the resolver's consumer has not yet handed out. An error when the consumer does
    /// not exist or NATS does not answer; readiness checks rely on that.
    pub async fn resolver_pending(&self) -> Result<u64, BusError> {
        self.pending(self.config.events_stream(), self.config.resolver_consumer())
            .await
    }

    /// Jobs one channel's workers' consumer for one lane has not yet handed out; an error as
    /// above.
    pub async fn worker_pending(&self, channel: Channel, lane: Lane) -> Result<u64, BusError> {
        self.pending(
            self.config.deliveries_stream(),
            self.config.worker_consumer(channel, lane),
        )
        .await
    }

    /// A consumer's `num_pending`, in one JetStream request (the stream is not looked up first).
    async fn pending(&self, stream: String, name: String) -> Result<u64, BusError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let stream = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| BusError::Rejected(e.to_string()))?;
        match stream.consumer_info(&name).await {
            Ok(info) => Ok(info.num_pending),
            Err(e) => match e.kind() {
                Kind::NotFound | Kind::StreamNotFound | Kind::InvalidName | Kind::JetStream(_) => {
                    Err(BusError::Rejected(format!("consumer {name}: {e}")))
                }
                _ => Err(BusError::Unavailable(format!("consumer {name}: {e}"))),
            },
        }
    }

    #[instrument(skip(self, settings))]
    async fn durable(
        &self,
        stream: String,
        name: String,
        filter_subject: String,
        settings: QueueSettings,
    ) -> Result<WorkQueue, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| unavailable(&e))?;
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject,
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: settings.ack_wait,
            max_deliver: settings.max_deliver.unwrap_or(-1),
            max_ack_pending: settings.max_ack_pending,
            ..Default::default()
        };
        // Creating with the same config is idempotent. Server 2.9 cannot update a consumer in
        // place, so one created with other settings is used as it is, and said so.
        let consumer = match stream.create_consumer(config).await {
            Ok(consumer) => consumer,
            Err(create) => {
                let consumer = stream
                    .get_consumer(&name)
                    .await
                    .map_err(|_| BusError::Rejected(format!("consumer {name}: {create}")))?;
                tracing::warn!(consumer = %name, error = %create,
                    "the consumer exists with other settings; using them");
                consumer
            }
        };
        Ok(WorkQueue { consumer })
    }
}

impl WorkQueue {
    /// Up to `max` messages, waiting at most `wait` for the first. For "process one" paths
    /// and tests; services use [`WorkQueue::messages`].
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Work>, BusError> {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            out.push(Work {
                message: message.map_err(|e| unavailable(&e))?,
            });
        }
        Ok(out)
    }

    /// One pull request for up to `batch` messages, open for `expires`: its messages, ending
    /// when the batch is full or the request expires. Services use [`WorkQueue::pull`], which
    /// loops over these.
    pub(crate) async fn request(
        &self,
        batch: usize,
        expires: Duration,
    ) -> Result<BoxStream<'static, Result<Work, BusError>>, BusError> {
        let request = self
            .consumer
            .batch()
            .max_messages(batch)
            .expires(expires)
            .messages()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(request
            .map(|message| {
                message
                    .map(|message| Work { message })
                    .map_err(|e| BusError::Unavailable(e.to_string()))
            })
            .boxed())
    }

    /// Messages not yet delivered plus those delivered and not yet acknowledged.
    pub async fn backlog(&mut self) -> Result<u64, BusError> {
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

impl Work {
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// How many times this message has been delivered, this time included.
    pub fn delivered(&self) -> i64 {
        self.message.info().map_or(1, |info| info.delivered)
    }

    /// Done: JetStream forgets the message (the ledger or trail remembers it).
    pub async fn ack(&self) -> Result<(), BusError> {
        self.answer(AckKind::Ack).await
    }

    /// Not now: redeliver after `delay`.
    pub async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        self.answer(AckKind::Nak(Some(delay))).await
    }

    /// Taken but never started (the process is stopping): redeliver at once, to whichever
    /// replica asks next. Nothing about the message changed, so no delay is due.
    ///
    /// Returns once the server has processed the nak (a double ack): the server handles acks
    /// apart from pull requests, so a process that exits, or a fetch sent, right after a plain
    /// nak may find the message not yet available again.
    pub async fn release(&self) -> Result<(), BusError> {
        self.message
            .double_ack_with(AckKind::Nak(None))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    /// Still working on it: restarts the ack-wait clock so it is not redelivered meanwhile.
    pub async fn progress(&self) -> Result<(), BusError> {
        self.answer(AckKind::Progress).await
    }

    /// Runs `task`, telling JetStream every `every` that this message is still being worked
    /// on, so that a long task never sees it redelivered elsewhere meanwhile.
    pub async fn in_progress<F: std::future::Future>(&self, every: Duration, task: F) -> F::Output {
        tokio::pin!(task);
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            tokio::select! {
                biased;
                done = &mut task => return done,
                _ = ticks.tick() => {
                    if let Err(e) = self.progress().await {
                        tracing::warn!(error = %e, "could not report progress to JetStream");
                    }
                }
            }
        }
    }

    /// Never: JetStream stops redelivering it (a poison message; the reason is logged and
    /// recorded by the caller).
    pub async fn term(&self) -> Result<(), BusError> {
        self.answer(AckKind::Term).await
    }

    async fn answer(&self, kind: AckKind) -> Result<(), BusError> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}
