//! Account messages: the confirmations and answers a self-service sign-up sends
//! (`tocsin_core::account`), outside the incident ledger, from PostgreSQL's
//! `account_messages` queue. Each email and SMS worker process runs an [`AccountSender`]
//! beside its delivery loop: every second it claims what is due, marks each send begun, hands
//! it to the channel, and records the end. Never twice: a send whose outcome is unknown, or
//! whose worker vanished mid-send, is not repeated (the visitor asks again); transient
//! failures are retried a few times, a minute apart at most.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tocsin_core::{Channel, SendOutcome};
use tocsin_runtime::Shutdown;
use tocsin_store::{AccountMessage, AccountOutcome, Store, StoreError};
use tracing::{error, info, instrument, warn};

/// What a channel implements to send account messages.
pub trait AccountCourier: Send + Sync + 'static {
    fn channel(&self) -> Channel;

    /// Sends one account message to its address.
    fn send_account(&self, message: &AccountMessage) -> impl Future<Output = SendOutcome> + Send;
}

/// How often the queue is read when idle.
const POLL: Duration = Duration::from_secs(1);
/// Messages claimed at once.
const BATCH: u32 = 16;
/// How long a claim or a send may take before another worker may act on it.
const LEASE: Duration = Duration::from_secs(120);
/// Attempts before a transiently failing message is given up.
const MAX_ATTEMPTS: u32 = 5;

/// The account-message loop of one worker process.
#[derive(Debug)]
pub struct AccountSender<C> {
    store: Store,
    courier: Arc<C>,
}

impl<C: AccountCourier> AccountSender<C> {
    pub fn new(store: Store, courier: Arc<C>) -> Self {
        AccountSender { store, courier }
    }

    /// Sends what is due every [`POLL`] until `shutdown`; a send in progress finishes first.
    pub async fn run(self, shutdown: Shutdown) {
        let channel = self.courier.channel();
        info!(%channel, "account messages: sending");
        let mut ticks: u64 = 0;
        while !shutdown.is_triggered() {
            if ticks.is_multiple_of(60) {
                match self.store.settle_vanished_account_messages().await {
                    Ok(0) => {}
                    Ok(n) => {
                        warn!(%channel, messages = n, "account messages whose worker vanished mid-send: left unsent")
                    }
                    Err(e) => {
                        warn!(%channel, error = %e, "could not settle vanished account messages")
                    }
                }
            }
            ticks += 1;
            match self.tick().await {
                // A full batch: more may be waiting.
                Ok(n) if n >= BATCH as usize => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(%channel, error = %e, "account messages: PostgreSQL unavailable; retrying")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.wait() => {}
            }
        }
    }

    /// Claims and sends what is due now; returns how many were claimed.
    pub async fn tick(&self) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim_account_messages(self.courier.channel(), BATCH, LEASE)
            .await?;
        let n = claimed.len();
        for message in claimed {
            self.send(message).await?;
        }
        Ok(n)
    }

    #[instrument(skip_all, fields(message_id = message.id, kind = message.notice.kind()))]
    async fn send(&self, message: AccountMessage) -> Result<(), StoreError> {
        if !self.store.begin_account_message(message.id, LEASE).await? {
            return Ok(());
        }
        let outcome = self.courier.send_account(&message).await;
        let attempt = message.attempts + 1;
        let recorded = match outcome {
            SendOutcome::Delivered { .. } => AccountOutcome::Sent,
            SendOutcome::Transient {
                reason,
                retry_after,
            } if attempt < MAX_ATTEMPTS => AccountOutcome::Retry {
                after: retry_after
                    .unwrap_or_default()
                    .max(Duration::from_secs(5 << attempt.min(4)).min(Duration::from_secs(60))),
                error: reason,
            },
            SendOutcome::Transient { reason, .. }
            | SendOutcome::Permanent { reason }
            | SendOutcome::Gone { reason } => AccountOutcome::Failed { error: reason },
            SendOutcome::Unknown { reason } => AccountOutcome::Unknown { error: reason },
        };
        let state = match &recorded {
            AccountOutcome::Sent => "sent",
            AccountOutcome::Retry { .. } => "retry",
            AccountOutcome::Failed { .. } => "failed",
            AccountOutcome::Unknown { .. } => "unknown",
        };
        match &recorded {
            AccountOutcome::Sent | AccountOutcome::Retry { .. } => {
                info!(outcome = state, "account message")
            }
            AccountOutcome::Failed { error } | AccountOutcome::Unknown { error } => {
                error!(outcome = state, %error, "account message not sent")
            }
        }
        metrics::counter!("tocsin_account_messages_total",
            "channel" => self.courier.channel().as_str(),
            "kind" => message.notice.kind(),
            "outcome" => state)
        .increment(1);
        // Recorded until PostgreSQL answers: a known outcome is never dropped.
        let mut wait = Duration::from_millis(100);
        loop {
            match self
                .store
                .finish_account_message(message.id, &recorded)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if wait < Duration::from_secs(30) => {
                    warn!(error = %e, "could not record an account message's outcome; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
