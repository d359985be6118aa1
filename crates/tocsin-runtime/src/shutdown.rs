//! The process's stop signal, and the grace period that follows it.
//!
//! A service stops in two steps. [`Shutdown`] triggers on SIGTERM: take no new work. The
//! [`Shutdown::deadline`] derived from it triggers a grace period later: work still in flight
//! then is abandoned where it stands, and handed back to the queue where that is safe. Both
//! are the same type, so code that waits for one can be given the other, and tests trigger
//! either by hand.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How long in-flight work may take to finish after SIGTERM; flattened into the binaries
/// whose work can outlast a signal (the resolver and the channel workers).
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// Seconds in-flight work gets after SIGTERM to finish and be recorded; what is left then
    /// is handed back (or, for a send whose outcome is unknown, left to its lease). Keep the
    /// orchestrator's kill timeout (compose `stop_grace_period`) above it.
    #[arg(long, env = "TOCSIN_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
}

impl ShutdownArgs {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// A cloneable shutdown signal: triggered once, observed by every task that holds a clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            sender: Arc::new(watch::channel(false).0),
        }
    }

    /// A signal that triggers on SIGTERM or Ctrl-C.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            trigger.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once the signal is triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = receiver.wait_for(|triggered| *triggered).await;
    }

    /// A second signal that triggers `grace` after this one: the moment work still in
    /// flight is given up. Triggering it by hand ends the grace period early.
    pub fn deadline(&self, grace: Duration) -> Shutdown {
        let deadline = Shutdown::new();
        let (signal, trigger) = (self.clone(), deadline.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = async {
                    signal.wait().await;
                    tokio::time::sleep(grace).await;
                } => {
                    tracing::info!(grace_ms = grace.as_millis() as u64,
                        "shutdown grace period over; abandoning work still in flight");
                    trigger.trigger();
                }
                // Triggered by hand: nothing left to wait for.
                _ = trigger.wait() => {}
            }
        });
        deadline
    }

    /// Runs `work` to its end unless this signal triggers first, in which case `work` is
    /// dropped where it stands and `None` returned. Work already finished when both are
    /// ready wins, so nothing done is reported as abandoned.
    pub async fn unless_triggered<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            output = work => Some(output),
            _ = self.wait() => None,
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let shutdown = Shutdown::new();
        let observer = shutdown.clone();
        let waiter = tokio::spawn(async move { observer.wait().await });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_triggers_a_grace_period_after_the_signal() {
        let shutdown = Shutdown::new();
        let deadline = shutdown.deadline(Duration::from_secs(20));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!deadline.is_triggered(), "no signal, no deadline");

        shutdown.trigger();
        tokio::time::sleep(Duration::from_secs(19)).await;
        assert!(!deadline.is_triggered(), "still within the grace period");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(deadline.is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn work_finishes_unless_the_signal_comes_first() {
        let deadline = Shutdown::new();
        let quick = deadline.unless_triggered(async { 7 }).await;
        assert_eq!(quick, Some(7));

        let trigger = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.trigger();
        });
        let slow = deadline
            .unless_triggered(tokio::time::sleep(Duration::from_secs(10)))
            .await;
        assert_eq!(slow, None, "abandoned at the deadline");
        // Ready work wins over a signal already given.
        assert_eq!(deadline.unless_triggered(async { 8 }).await, Some(8));
    }
}
