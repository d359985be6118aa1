//! Failures nobody was told about: the repair behind fallback notices.
//!
//! A worker plans the fallback notice (and disables a webhook endpoint) right after it
//! records a delivery dead, in a second write. A worker lost between the two leaves the
//! subscriber untold; the dispatcher of the failed channel finds such failures every
//! [`UNTOLD_SWEEP_INTERVAL`] and finishes the job. Planning is idempotent (one key per
//! incident, subscriber and failed channel), so a sweep racing a live worker changes nothing.

use std::time::Duration;

use tocsin_core::Channel;
use tocsin_store::{FailedDelivery, FallbackPlanned};
use tracing::{info, warn};

use crate::DeliveryError;
use crate::courier::Courier;
use crate::worker::Worker;

/// How often the dispatcher looks for untold failures.
pub const UNTOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How long a failure is left to the worker that recorded it before the sweep steps in.
const GRACE: Duration = Duration::from_secs(30);
/// How far back the sweep looks: a notice days late would confuse more than it helps.
const WITHIN: Duration = Duration::from_secs(24 * 3600);
/// Failures repaired per sweep.
const SWEEP_LIMIT: u32 = 500;

/// The reason a notice gives for a delivery that went dead.
pub(crate) fn dead_reason(last_error: &str) -> String {
    format!("failed through every retry: {last_error}")
}

/// Logs and counts what planning a fallback notice did.
pub(crate) fn note_planned(failed: &FailedDelivery, planned: &FallbackPlanned) {
    match planned {
        FallbackPlanned::Planned {
            delivery_key,
            channel,
        } => {
            info!(subscriber_id = %failed.subscriber_id, failed = %failed.channel, %channel,
                %delivery_key, "fallback notice planned");
            metrics::counter!("tocsin_fallback_notices_total",
                "failed_channel" => failed.channel.as_str(), "channel" => channel.as_str())
            .increment(1);
        }
        FallbackPlanned::AlreadyPlanned => {}
        FallbackPlanned::NoOtherChannel => {
            warn!(subscriber_id = %failed.subscriber_id, failed = %failed.channel,
                "a channel stopped working and the subscriber has no other to be told on");
        }
    }
}

impl<C: Courier> Worker<C> {
    /// Tells the subscribers of this channel's untold dead deliveries on another channel
    /// (disabling a dead webhook endpoint first, as the worker would have); returns how many
    /// notices it planned. The "process one" step of the sweep, for tests.
    pub async fn tell_untold_failures(&self) -> Result<u64, DeliveryError> {
        self.tell_untold_failures_after(GRACE).await
    }

    /// [`Worker::tell_untold_failures`] for failures older than `grace`.
    pub async fn tell_untold_failures_after(&self, grace: Duration) -> Result<u64, DeliveryError> {
        let channel = self.courier.channel();
        let untold = self
            .store
            .untold_failures(channel, grace, WITHIN, SWEEP_LIMIT)
            .await?;
        let mut planned = 0;
        for failure in untold {
            let reason = dead_reason(&failure.last_error);
            let failed = &failure.failed;
            if channel == Channel::Webhook {
                self.store
                    .disable_webhook(
                        failed.subscriber_id,
                        failed.incident_id,
                        failed.event_id,
                        &reason,
                    )
                    .await?;
            }
            let outcome = self.store.plan_fallback(failed, &reason).await?;
            if matches!(outcome, FallbackPlanned::Planned { .. }) {
                info!(subscriber_id = %failed.subscriber_id, incident_id = %failed.incident_id,
                    "a dead delivery's subscriber had not been told; telling them now");
                planned += 1;
            }
            note_planned(failed, &outcome);
        }
        Ok(planned)
    }
}
