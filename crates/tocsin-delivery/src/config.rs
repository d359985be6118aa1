//! Settings every worker binary shares, from the environment (or flags) with defaults.

use std::num::NonZeroU32;
use std::time::Duration;

use tocsin_core::RetryPolicy;
use tocsin_runtime::ShutdownArgs;

use crate::WorkerConfig;

/// Worker tuning and retry schedule. Each worker is its own process, so the names are the
/// same for every channel; set them per service.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Jobs claimed together (one statement).
    #[arg(long, env = "TOCSIN_WORKER_BATCH", default_value_t = 64)]
    pub batch: usize,
    /// Sends in flight at once in the bulk lane; the small and critical lanes each get a
    /// quarter as many (at least 4) on top. Default: 1,024 for webhooks, 32 for email (the
    /// SMTP connection pool is sized to match: 48 in all, under Postfix's default limit of
    /// 50 connections per client), 64 for SMS (96 in all, under Twilio's default limit of
    /// 100 concurrent requests per account).
    #[arg(long, env = "TOCSIN_WORKER_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Sends per second to the provider from this process; 0 means unlimited.
    #[arg(long, env = "TOCSIN_WORKER_RATE_PER_SECOND", default_value_t = 0)]
    pub rate_per_second: u32,
    /// Seconds a claim holds unless renewed; a live worker renews its claims every third of
    /// this, so it is how soon a dead worker's deliveries are taken over.
    #[arg(long, env = "TOCSIN_WORKER_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// First retry delay in seconds; each later one doubles, with jitter.
    #[arg(long, env = "TOCSIN_RETRY_BASE_SECONDS", default_value_t = 5)]
    pub retry_base_seconds: u64,
    /// Longest delay between two attempts, in seconds (before a provider's Retry-After).
    #[arg(long, env = "TOCSIN_RETRY_CAP_SECONDS", default_value_t = 1800)]
    pub retry_cap_seconds: u64,
    /// Attempts in all before a delivery is dead-lettered.
    #[arg(long, env = "TOCSIN_RETRY_MAX_ATTEMPTS", default_value_t = 12)]
    pub retry_max_attempts: u32,
    /// Age in hours after which a delivery is dead-lettered rather than retried.
    #[arg(long, env = "TOCSIN_RETRY_MAX_AGE_HOURS", default_value_t = 24)]
    pub retry_max_age_hours: u64,
    /// The company name customers see in every message.
    #[arg(long, env = "TOCSIN_COMPANY_NAME", default_value = "Tocsin")]
    pub company: String,
    /// A status page linked from every message.
    #[arg(long, env = "TOCSIN_STATUS_PAGE_URL")]
    pub status_page_url: Option<String>,
    /// The grace period after SIGTERM (`TOCSIN_SHUTDOWN_GRACE_SECONDS`).
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

impl WorkerArgs {
    /// The worker's settings; `default_concurrency` is the channel's own default for
    /// `TOCSIN_WORKER_CONCURRENCY`.
    pub fn worker_config(&self, default_concurrency: usize) -> WorkerConfig {
        WorkerConfig {
            batch: self.batch.max(1),
            concurrency: self.concurrency.unwrap_or(default_concurrency).max(1),
            rate_per_second: NonZeroU32::new(self.rate_per_second),
            lease: Duration::from_secs(self.lease_seconds.max(3)),
            company: self.company.clone(),
            status_page_url: self.status_page_url.clone(),
            shutdown_grace: self.shutdown.grace(),
            ..WorkerConfig::default()
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(self.retry_base_seconds.max(1)),
            cap: Duration::from_secs(self.retry_cap_seconds.max(1)),
            max_attempts: self.retry_max_attempts.max(1),
            max_age: Duration::from_secs(self.retry_max_age_hours.max(1) * 3600),
        }
    }
}
