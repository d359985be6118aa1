//! From an attempt's outcome to the ledger state it leaves and the answer JetStream gets:
//! the channel's retry schedule and its policy for unknown outcomes, applied. A retry is
//! parked in the ledger rather than held on JetStream: the dispatcher publishes it when due.

use std::time::Duration;

use time::OffsetDateTime;
use tocsin_bus::DeliveryJob;
use tocsin_core::{Retry, SendOutcome};
use tocsin_store::{AttemptOutcome, Claimed};
use tracing::{debug, info, warn};

use crate::courier::{Courier, UnknownPolicy};
use crate::worker::{Handled, Worker};

/// The least wait before asking a provider about an attempt whose answer was lost: a request
/// still being processed at the provider has finished by then, so "not found" means never.
const RECONCILE_AFTER: Duration = Duration::from_secs(10);

/// How JetStream is answered after the ledger is written.
pub(crate) enum Reply {
    Ack,
    /// A retry is due later: the job is done with, and the delivery parked in the ledger.
    Park,
    /// Dead-lettered: published to the dead-letter subject, then acknowledged.
    Dead(String),
}

impl<C: Courier> Worker<C> {
    /// Turns an attempt's outcome into a ledger state and a JetStream answer.
    pub(crate) fn decide(
        &self,
        job: &DeliveryJob,
        claim: &Claimed,
        outcome: Result<SendOutcome, String>,
        elapsed: Duration,
        now: OffsetDateTime,
    ) -> (AttemptOutcome, Reply, Handled) {
        let policy = self.courier.policy();
        let key = job.delivery_key.clone();
        let mut detail = serde_json::json!({ "latency_ms": elapsed.as_millis() as u64 });
        if claim.after_lost_attempt {
            // The previous holder was lost mid-send: a copy may already be out, which the
            // channel's policy for unknown outcomes allows for.
            detail["after_lost_attempt"] = true.into();
        }
        let record = |state: &'static str,
                      next: Option<OffsetDateTime>,
                      provider_id: Option<String>,
                      error: Option<String>,
                      detail: serde_json::Value| AttemptOutcome {
            delivery_key: key.clone(),
            incident_id: claim.incident_id,
            event_id: claim.event_id,
            state,
            next_attempt_at: next,
            parked: next.is_some(),
            unknown: detail["outcome"] == "unknown",
            not_attempted: false,
            provider_id,
            error,
            detail,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(reason) => {
                detail["reason"] = reason.clone().into();
                info!(delivery_key = %key, %reason, "delivery skipped");
                return (
                    record("skipped", None, None, Some(reason.clone()), detail),
                    Reply::Ack,
                    Handled::Skipped { key, reason },
                );
            }
        };
        let name = outcome.as_str();
        detail["outcome"] = name.into();
        if !outcome.reason().is_empty() {
            detail["reason"] = outcome.reason().into();
        }
        let age = (now - claim.created_at)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let retry = |retry_after: Option<Duration>| {
            policy
                .retry
                .after_failure(claim.attempt, age, retry_after, rand::random::<f64>())
        };
        let (state, next, reply) = match &outcome {
            SendOutcome::Delivered { .. } => ("delivered", None, Reply::Ack),
            SendOutcome::Permanent { .. } => ("failed", None, Reply::Ack),
            SendOutcome::Gone { .. } => ("failed", None, Reply::Ack),
            SendOutcome::Transient { retry_after, .. } => match retry(*retry_after) {
                Retry::After(delay) => ("retrying", Some(now + delay), Reply::Park),
                Retry::GiveUp => ("dead", None, Reply::Dead(outcome.reason().to_owned())),
            },
            SendOutcome::Unknown { reason } => match policy.unknown {
                UnknownPolicy::Resend => match retry(None) {
                    Retry::After(delay) => ("retrying", Some(now + delay), Reply::Park),
                    Retry::GiveUp => ("dead", None, Reply::Dead(reason.clone())),
                },
                // One resend in all: none yet if no earlier attempt was unknown or lost.
                UnknownPolicy::ResendOnce if claim.unknowns == 0 => match retry(None) {
                    Retry::After(delay) => ("unknown", Some(now + delay), Reply::Park),
                    Retry::GiveUp => ("unknown", None, Reply::Ack),
                },
                // Asked again on the retry schedule, until the provider can say (or its
                // callback does), within the schedule's attempts and age.
                UnknownPolicy::Reconcile => match retry(None) {
                    Retry::After(delay) => (
                        "unknown",
                        Some(now + delay.max(RECONCILE_AFTER)),
                        Reply::Park,
                    ),
                    Retry::GiveUp => ("unknown", None, Reply::Ack),
                },
                UnknownPolicy::ResendOnce => ("unknown", None, Reply::Ack),
            },
        };
        if let Some(next) = next {
            detail["next_attempt_at"] = next.unix_timestamp().into();
        }
        let provider_id = match &outcome {
            SendOutcome::Delivered { provider_id } => provider_id.clone(),
            _ => None,
        };
        match state {
            "delivered" => debug!(delivery_key = %key, attempt = claim.attempt, "delivered"),
            "retrying" => {
                warn!(delivery_key = %key, attempt = claim.attempt, reason = outcome.reason(),
                delay_ms = next.map(|n| (n - now).whole_milliseconds() as i64), "retry scheduled")
            }
            _ => {
                warn!(delivery_key = %key, attempt = claim.attempt, state, reason = outcome.reason(),
                "delivery ended without success")
            }
        }
        let error = (!outcome.reason().is_empty()).then(|| outcome.reason().to_owned());
        (
            record(state, next, provider_id, error, detail),
            reply,
            Handled::Attempted {
                key,
                outcome: name,
                state,
            },
        )
    }
}
