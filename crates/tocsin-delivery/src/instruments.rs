//! The worker's metrics, resolved once per worker so that recording one delivery is a few
//! atomic adds: no label strings built, no registry looked up, per message.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tocsin_deliveries_total` | counter | `channel`, `outcome` |
//! | `tocsin_delivery_attempt_duration_seconds` | histogram | `channel` |
//! | `tocsin_delivery_retries_scheduled_total` | counter | `channel` |
//! | `tocsin_dead_letters_total` | counter | `channel` |
//! | `tocsin_ingest_to_delivery_seconds` | histogram | `channel`, `severity` |
//! | `tocsin_consumer_pending` | gauge | `consumer` |

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use time::OffsetDateTime;
use tocsin_bus::Bus;
use tocsin_core::{Channel, Lane, Severity};
use tocsin_runtime::Shutdown;
use tracing::debug;

use crate::Handled;

/// How often the consumer's pending count is read for `tocsin_consumer_pending`.
const PENDING_INTERVAL: Duration = Duration::from_secs(5);

/// What the worker records for each job it settles, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    Transient,
    Permanent,
    Unknown,
    Gone,
    Superseded,
    Skipped,
    /// Failed through every retry (or an unknown that may not be resent any more).
    Dead,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Self::Delivered,
        Self::Transient,
        Self::Permanent,
        Self::Unknown,
        Self::Gone,
        Self::Superseded,
        Self::Skipped,
        Self::Dead,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Unknown => "unknown",
            Self::Gone => "gone",
            Self::Superseded => "superseded",
            Self::Skipped => "skipped",
            Self::Dead => "dead",
        }
    }

    /// How a handled job counts, from what the worker recorded for it; `None` for jobs that
    /// were not settled here (parked, held elsewhere, already done, poison, handed back, abandoned).
    pub(crate) fn of(handled: &Handled) -> Option<Self> {
        match handled {
            Handled::Attempted { state: "dead", .. } => Some(Self::Dead),
            Handled::Attempted { outcome, .. } => {
                Self::ALL.into_iter().find(|o| o.as_str() == *outcome)
            }
            Handled::Skipped { .. } => Some(Self::Skipped),
            Handled::AlreadyDone { .. }
            | Handled::Parked { .. }
            | Handled::Held { .. }
            | Handled::Poison
            | Handled::HandedBack { .. }
            | Handled::Abandoned { .. }
            | Handled::Lost { .. } => None,
        }
    }
}

const SEVERITIES: [Severity; 3] = [Severity::Minor, Severity::Major, Severity::Critical];

/// One channel worker's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    outcomes: [Counter; Outcome::ALL.len()],
    attempt_duration: Histogram,
    retries: Counter,
    dead_letters: Counter,
    ingest_to_delivery: [Histogram; SEVERITIES.len()],
    /// One per lane, in [`Lane::ALL`] order.
    pending: [Gauge; Lane::ALL.len()],
}

impl Instruments {
    pub(crate) fn new(channel: Channel, consumer: impl Fn(Lane) -> String) -> Self {
        // A handle taken before the recorder exists would stay a no-op for good.
        tocsin_runtime::recorder::install();
        let channel = channel.as_str();
        Self {
            outcomes: Outcome::ALL.map(|outcome| {
                counter!("tocsin_deliveries_total", "channel" => channel, "outcome" => outcome.as_str())
            }),
            attempt_duration: histogram!("tocsin_delivery_attempt_duration_seconds", "channel" => channel),
            retries: counter!("tocsin_delivery_retries_scheduled_total", "channel" => channel),
            dead_letters: counter!("tocsin_dead_letters_total", "channel" => channel),
            ingest_to_delivery: SEVERITIES.map(|severity| {
                histogram!("tocsin_ingest_to_delivery_seconds",
                    "channel" => channel, "severity" => severity.as_str())
            }),
            pending: Lane::ALL.map(|lane| gauge!("tocsin_consumer_pending", "consumer" => consumer(lane))),
        }
    }

    pub(crate) fn settled(&self, outcome: Outcome, count: u64) {
        // `ALL` lists the variants in declaration order.
        self.outcomes[outcome as usize].increment(count);
    }

    /// One send to the provider took `elapsed`.
    pub(crate) fn attempt(&self, elapsed: Duration) {
        self.attempt_duration.record(elapsed.as_secs_f64());
    }

    /// The provider accepted a message about an event recorded at `recorded_at`.
    pub(crate) fn accepted(&self, severity: Severity, recorded_at: OffsetDateTime) {
        let index = SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0);
        let age = (OffsetDateTime::now_utc() - recorded_at)
            .as_seconds_f64()
            .max(0.0);
        self.ingest_to_delivery[index].record(age);
    }

    pub(crate) fn retry_scheduled(&self) {
        self.retries.increment(1);
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_letters.increment(1);
    }

    /// Sets `tocsin_consumer_pending` from each lane's consumer's `num_pending` every few
    /// seconds until `shutdown`.
    pub(crate) async fn report_pending(self, bus: Bus, channel: Channel, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(PENDING_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticks.tick() => {
                    for (lane, gauge) in Lane::ALL.into_iter().zip(&self.pending) {
                        match bus.worker_pending(channel, lane).await {
                            Ok(pending) => gauge.set(pending as f64),
                            Err(e) => debug!(error = %e, "could not read a consumer's pending count"),
                        }
                    }
                }
            }
        }
    }
}
