//! Fans PostgreSQL append notifications out to in-process watchers.

use std::time::Duration;

use tocsin_store::{LogNotification, Store};
use tokio::sync::broadcast;
use tracing::warn;

use tocsin_runtime::Shutdown;

/// One `LISTEN` connection per process, shared by every `WatchIncident` stream.
#[derive(Debug, Clone)]
pub struct WatchHub {
    sender: broadcast::Sender<LogNotification>,
}

impl WatchHub {
    /// Starts listening in the background until `shutdown`.
    pub fn start(store: Store, shutdown: Shutdown) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let hub = Self {
            sender: sender.clone(),
        };
        tokio::spawn(async move {
            loop {
                match store.listen().await {
                    Ok(mut notifications) => loop {
                        tokio::select! {
                            _ = shutdown.wait() => return,
                            next = notifications.next() => match next {
                                Ok(notes) => for note in notes { let _ = sender.send(note); },
                                Err(e) => { warn!(error = %e, "watch listener lost"); break; }
                            },
                        }
                    },
                    Err(e) => warn!(error = %e, "watch listener could not connect"),
                }
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        hub
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogNotification> {
        self.sender.subscribe()
    }
}
