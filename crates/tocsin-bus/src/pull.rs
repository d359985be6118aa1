//! A pull loop that can stop without stranding what it pulled.
//!
//! A service pulls a little ahead of its work, so at any moment some messages are delivered
//! to it but not yet started. JetStream counts them as out, and only an answer or their ack
//! wait brings them back. [`Pull::hand_back`] gives them back at once, so another replica
//! takes them now rather than an ack wait later.
//!
//! The loop makes one pull request at a time, each expiring after [`REQUEST_EXPIRES`].
//! Stopping never abandons a request that is still open: the server may hand it a message at
//! any moment until it expires, and a message sent to a request nobody reads is stranded
//! until its ack wait. So stopping waits for the open request to end (at most
//! [`REQUEST_EXPIRES`]), and only then naks what was pulled: a nak while our own request was
//! still open could give the message straight back to us.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::{BusError, Work, WorkQueue};

/// How long one pull request waits for messages. It bounds how long stopping waits for the
/// open request; an idle consumer makes one request per this interval.
pub const REQUEST_EXPIRES: Duration = Duration::from_secs(3);

/// The wait before pulling again after a failed request (NATS away).
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Messages pulled by a background task, a batch at a time, until [`Pull::hand_back`].
///
/// Dropping a `Pull` without handing back strands what it pulled until the ack wait, as a
/// crash would; it loses nothing.
#[derive(Debug)]
pub struct Pull {
    received: mpsc::Receiver<Result<Work, BusError>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkQueue {
    /// Starts pulling up to `batch` messages per request. At most about two batches are
    /// pulled ahead of what the caller has taken.
    pub fn pull(&self, batch: usize) -> Pull {
        let batch = batch.max(1);
        let (sender, received) = mpsc::channel(batch);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(pull_loop(self.clone(), batch, sender, stopped));
        Pull {
            received,
            stop,
            task,
        }
    }
}

impl Pull {
    /// The next pulled message, or a pull error (transient: the loop goes on after it).
    /// `None` only if the pull loop is gone. Cancel-safe: a message is never lost to a
    /// `select!` that drops this future.
    pub async fn next(&mut self) -> Option<Result<Work, BusError>> {
        self.received.recv().await
    }

    /// Up to `max` messages: waits for the first, then takes those already pulled. Empty only
    /// if the pull loop is gone. Cancel-safe, like [`Pull::next`].
    pub async fn next_batch(&mut self, max: usize) -> Vec<Result<Work, BusError>> {
        let mut batch = Vec::new();
        let Some(first) = self.received.recv().await else {
            return batch;
        };
        batch.push(first);
        while batch.len() < max.max(1) {
            match self.received.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        batch
    }

    /// Stops pulling, waits for the open pull request to end (at most [`REQUEST_EXPIRES`]),
    /// then naks every message pulled but not taken, without delay, so that another replica
    /// (or this service once restarted) takes it at once. Returns how many were handed back.
    pub async fn hand_back(mut self) -> usize {
        self.stop.send_replace(true);
        let mut pulled = Vec::new();
        // The loop drops its sender when its last request has ended: then this ends too.
        while let Some(item) = self.received.recv().await {
            if let Ok(work) = item {
                pulled.push(work);
            }
        }
        if let Err(e) = (&mut self.task).await {
            warn!(error = %e, "the pull loop failed");
        }
        let answers = futures::future::join_all(pulled.iter().map(Work::release)).await;
        for result in answers {
            if let Err(e) = result {
                // It comes back after its ack wait instead.
                warn!(error = %e, "could not hand a pulled message back");
            }
        }
        pulled.len()
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn pull_loop(
    queue: WorkQueue,
    batch: usize,
    sender: mpsc::Sender<Result<Work, BusError>>,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        let request = match queue.request(batch, REQUEST_EXPIRES).await {
            Ok(request) => request,
            Err(e) => {
                if sender.send(Err(e)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
                continue;
            }
        };
        tokio::pin!(request);
        // Read to its end even once stopping, for the reason in the module's comment.
        while let Some(item) = request.next().await {
            if sender.send(item).await.is_err() {
                // Nobody takes messages any more (the `Pull` was dropped): stranded until
                // their ack wait, as in a crash.
                return;
            }
        }
    }
    debug!("pull loop stopped");
}

#[cfg(test)]
mod tests {
    use tocsin_core::{Channel, Lane};
    use uuid::Uuid;

    use super::*;
    use crate::jobs::JOB_SCHEMA;
    use crate::{Bus, BusConfig, DeliveryJob, QueueSettings};

    async fn bus() -> Bus {
        let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let prefix = format!("t_{}", &Uuid::new_v4().simple().to_string()[..12]);
        let bus = Bus::connect(&url, BusConfig::new(prefix).unwrap())
            .await
            .unwrap_or_else(|e| panic!("NATS with JetStream must run at {url} (NATS_URL): {e}"));
        bus.ensure_deliveries_stream().await.unwrap();
        bus
    }

    fn job() -> DeliveryJob {
        DeliveryJob {
            schema: JOB_SCHEMA,
            delivery_key: Uuid::new_v4().simple().to_string(),
            incident_id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
            event_version: 1,
            subscriber_id: Uuid::new_v4(),
            channel: Channel::Email,
            send_after: None,
            lane: Lane::Bulk,
        }
    }

    #[tokio::test]
    async fn handing_back_returns_every_untaken_message_at_once() {
        let bus = bus().await;
        let jobs: Vec<DeliveryJob> = (0..6).map(|_| job()).collect();
        for published in bus.publish_jobs(&jobs).await {
            published.unwrap();
        }
        // A long ack wait: anything stranded rather than handed back would not come back
        // within this test.
        let settings = QueueSettings {
            ack_wait: Duration::from_secs(120),
            max_deliver: None,
            max_ack_pending: 100,
        };
        let queue = bus
            .worker_queue(Channel::Email, Lane::Bulk, settings)
            .await
            .unwrap();
        let mut pull = queue.pull(4);
        let taken = pull.next().await.unwrap().unwrap();
        taken.ack().await.unwrap();

        let handed_back = pull.hand_back().await;
        assert!(
            (3..=5).contains(&handed_back),
            "the rest of the first request, and maybe the second: {handed_back}"
        );
        // Every other message is available again now, not an ack wait later.
        let again = queue.fetch(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(again.len(), 5, "five messages were not taken");
        let redelivered = again.iter().filter(|w| w.delivered() == 2).count();
        assert_eq!(
            redelivered, handed_back,
            "each handed-back message was delivered twice"
        );
        bus.delete_deliveries_stream().await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_pull_stops_within_one_request() {
        let bus = bus().await;
        let queue = bus
            .worker_queue(Channel::Sms, Lane::Small, QueueSettings::resolver())
            .await
            .unwrap();
        let pull = queue.pull(8);
        let started = std::time::Instant::now();
        assert_eq!(pull.hand_back().await, 0);
        assert!(
            started.elapsed() < REQUEST_EXPIRES + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        bus.delete_deliveries_stream().await.unwrap();
    }
}
