//! Configuration of the ingest service, from the environment (or flags) with defaults.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
pub use tocsin_runtime::Connections;

/// Settings of `tocsin-ingest serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TOCSIN_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Publisher credentials, `name=token` pairs separated by commas. Required. Publishers
    /// may publish incident events and read incidents.
    #[arg(long, env = "TOCSIN_PUBLISHER_TOKENS", value_parser = parse_publishers, hide_env_values = true)]
    pub publisher_tokens: CallerTokens,
    /// Operator credentials, `name=token` pairs separated by commas. Operators may do what
    /// publishers do and also manage subscribers, list deliveries, replay dead letters,
    /// rebuild and republish.
    #[arg(long, env = "TOCSIN_OPERATOR_TOKENS", value_parser = parse_operators, default_value = "", hide_env_values = true, hide_default_value = true)]
    pub operator_tokens: CallerTokens,
    /// Largest accepted request, in bytes; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "TOCSIN_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,
    /// Run the outbox relay in this process (false: run `tocsin-ingest relay` separately).
    #[arg(long, env = "TOCSIN_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay: bool,
    /// Apply pending database migrations before serving.
    #[arg(long, env = "TOCSIN_MIGRATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub migrate: bool,
    /// Seconds between the maintenance clock's looks for reminders, starts and completions
    /// that are due (0: run no clock in this process). Every replica may run it: each event
    /// is recorded once.
    #[arg(long, env = "TOCSIN_MAINTENANCE_CLOCK_SECONDS", default_value_t = 15)]
    pub maintenance_clock_seconds: u64,
    /// How long publisher idempotency keys are kept, in hours (at least 24).
    #[arg(
        long,
        env = "TOCSIN_IDEMPOTENCY_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub idempotency_retention_hours: u32,
    /// Development allow-list of webhook hosts, IPs or CIDR networks that may be private or
    /// plain http, comma-separated (e.g. `127.0.0.1,localhost`). Empty: https to public
    /// addresses only.
    #[arg(long, env = "TOCSIN_WEBHOOK_ALLOW", default_value = "")]
    pub webhook_allow: String,
    /// PEM file of the gRPC server's certificate chain: with `TOCSIN_TLS_KEY`, the API is
    /// served over TLS only. Unset: plain HTTP/2, for loopback or a TLS-terminating proxy.
    #[arg(long, env = "TOCSIN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM file of the private key of `TOCSIN_TLS_CERT` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TOCSIN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub relay_tuning: RelayArgs,
    /// Where the HTTP receivers for monitoring tools listen (`POST /v1/alerts/alertmanager`);
    /// unset: no HTTP listener.
    #[arg(long, env = "TOCSIN_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// A JSON file of rules saying which alerts may reach customers and as which components
    /// and severity (see crates/tocsin-alerts/src/mapping.rs); unset: alerts are refused.
    #[arg(long, env = "TOCSIN_ALERT_RULES")]
    pub alert_rules: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub shutdown: tocsin_runtime::ShutdownArgs,
}

impl ServeArgs {
    /// The server's TLS identity read from `TOCSIN_TLS_CERT` and `TOCSIN_TLS_KEY`, if set.
    pub fn tls_identity(&self) -> Result<Option<tonic::transport::Identity>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
        };
        Ok(Some(tonic::transport::Identity::from_pem(
            read(cert, "TOCSIN_TLS_CERT")?,
            read(key, "TOCSIN_TLS_KEY")?,
        )))
    }
}

/// Tuning of the outbox relay.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Events the relay takes from the outbox per round.
    #[arg(long, env = "TOCSIN_RELAY_BATCH", default_value_t = 512)]
    pub relay_batch: u32,
    /// Fallback poll interval in milliseconds; the relay normally wakes on LISTEN/NOTIFY.
    #[arg(long, env = "TOCSIN_RELAY_POLL_MS", default_value_t = 1_000)]
    pub relay_poll_ms: u64,
    /// Least milliseconds between two relay rounds under load (an idle relay starts at once);
    /// larger rounds cost PostgreSQL less per event, at the price of this much relay lag.
    #[arg(long, env = "TOCSIN_RELAY_MIN_INTERVAL_MS", default_value_t = 10)]
    pub relay_min_interval_ms: u64,
}

impl RelayArgs {
    pub fn relay_config(&self) -> crate::relay::RelayConfig {
        crate::relay::RelayConfig {
            batch_size: self.relay_batch.max(1),
            poll_interval: Duration::from_millis(self.relay_poll_ms.max(10)),
            min_round_interval: Duration::from_millis(self.relay_min_interval_ms),
            ..crate::relay::RelayConfig::default()
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publish incident events and read incidents back: monitoring, deploy tools.
    Publisher,
    /// Everything: also subscribers, deliveries, dead-letter replays, rebuild and republish.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Operator => "operator",
        }
    }
}

/// The callers allowed to use the API: a name, a bearer token and a role each.
#[derive(Clone, Default)]
pub struct CallerTokens {
    pub(crate) entries: Vec<(String, SecretString, Role)>,
}

impl fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .entries
            .iter()
            .map(|(name, _, role)| format!("{name} ({})", role.as_str()))
            .collect();
        f.debug_struct("CallerTokens")
            .field("callers", &names)
            .finish_non_exhaustive()
    }
}

impl CallerTokens {
    /// Builds the table from `(publisher, token)` pairs, each with the publisher role.
    pub fn new<N: Into<String>, T: Into<String>>(
        pairs: impl IntoIterator<Item = (N, T)>,
    ) -> Result<Self, String> {
        let tokens = Self::default().with(Role::Publisher, pairs)?;
        if tokens.entries.is_empty() {
            return Err(
                "no publisher tokens configured (TOCSIN_PUBLISHER_TOKENS=name=token,...)".into(),
            );
        }
        Ok(tokens)
    }

    /// Adds `(name, token)` pairs with `role`. Names and tokens are unique across roles: a
    /// token names one caller.
    pub fn with<N: Into<String>, T: Into<String>>(
        mut self,
        role: Role,
        pairs: impl IntoIterator<Item = (N, T)>,
    ) -> Result<Self, String> {
        for (name, token) in pairs {
            let (name, token) = (name.into(), token.into());
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "{} name {name:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.'",
                    role.as_str()
                ));
            }
            if token.len() < 16 {
                return Err(format!(
                    "the token of {} {name:?} is shorter than 16 characters",
                    role.as_str()
                ));
            }
            if self.entries.iter().any(|(n, _, _)| *n == name) {
                return Err(format!("{name:?} is listed twice"));
            }
            if self
                .entries
                .iter()
                .any(|(_, t, _)| t.expose_secret() == token)
            {
                return Err(format!(
                    "the token of {name:?} is also another caller's: each caller needs its own"
                ));
            }
            self.entries.push((name, SecretString::from(token), role));
        }
        Ok(self)
    }

    /// Adds every entry of `other`, with the same checks as [`CallerTokens::with`].
    pub fn join(self, other: &CallerTokens) -> Result<Self, String> {
        other
            .entries
            .iter()
            .try_fold(self, |tokens, (name, token, role)| {
                tokens.with(*role, [(name.as_str(), token.expose_secret())])
            })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8], Role)> {
        self.entries
            .iter()
            .map(|(name, token, role)| (name.as_str(), token.expose_secret().as_bytes(), *role))
    }
}

/// Splits `name=token,name2=token2` into pairs.
fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(n, t)| (n.trim().to_owned(), t.trim().to_owned()))
                .ok_or_else(|| {
                    format!(
                        "{:?} is not of the form name=token",
                        pair.split('=').next().unwrap_or("")
                    )
                })
        })
        .collect()
}

/// Parses `name=token,name2=token2`: publishers.
pub fn parse_publishers(raw: &str) -> Result<CallerTokens, String> {
    CallerTokens::new(parse_pairs(raw)?)
}

/// Parses `name=token,...` (possibly empty): operators, kept apart until
/// [`ServeArgs::callers`] joins them to the publishers, so a bad entry is reported against
/// its own variable.
pub fn parse_operators(raw: &str) -> Result<CallerTokens, String> {
    CallerTokens::default().with(Role::Operator, parse_pairs(raw)?)
}

impl ServeArgs {
    /// Publishers and operators in one table.
    pub fn callers(&self) -> Result<CallerTokens, String> {
        self.publisher_tokens.clone().join(&self.operator_tokens)
    }
}

/// Everything `run` needs besides its connections, built by `main` or directly by tests.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Publishers and operators, with their tokens.
    pub callers: CallerTokens,
    pub max_message_bytes: usize,
    /// `None` runs no relay in this process.
    pub relay: Option<crate::relay::RelayConfig>,
    pub idempotency_retention: time::Duration,
    /// Hosts and networks webhook URLs may use despite being private or plain http: the
    /// development allow-list. Empty (strict) in production.
    pub webhook_policy: tocsin_core::network::UrlPolicy,
    /// Page size of `PreviewFanout`'s walk over subscribers.
    pub fanout: tocsin_resolver::FanoutConfig,
    /// How long calls in flight may take after the shutdown signal before they are cut.
    pub shutdown_grace: Duration,
    /// The server's certificate and key: `Some` serves TLS only.
    pub tls: Option<tonic::transport::Identity>,
    /// How often the maintenance clock looks for reminders, starts and completions that are
    /// due; `None` runs no clock in this process.
    pub maintenance_clock: Option<Duration>,
    /// Which alerts from monitoring tools may reach customers, and how; `None`: the alert
    /// receivers refuse every notification, saying so.
    pub alert_rules: Option<std::sync::Arc<tocsin_alerts::Mapping>>,
}

impl IngestConfig {
    pub fn new(callers: CallerTokens) -> Self {
        Self {
            callers,
            max_message_bytes: 65_536,
            relay: Some(crate::relay::RelayConfig::default()),
            idempotency_retention: time::Duration::days(7),
            webhook_policy: tocsin_core::network::UrlPolicy::strict(),
            fanout: tocsin_resolver::FanoutConfig::default(),
            shutdown_grace: Duration::from_secs(20),
            tls: None,
            maintenance_clock: Some(crate::clock::DEFAULT_INTERVAL),
            alert_rules: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_parse_and_never_print_tokens() {
        let p = parse_publishers("monitoring=0123456789abcdef, deploy = fedcba9876543210").unwrap();
        assert_eq!(
            p.iter().map(|(n, _, _)| n).collect::<Vec<_>>(),
            ["monitoring", "deploy"]
        );
        assert!(!format!("{p:?}").contains("0123456789abcdef"));
        assert!(parse_publishers("").is_err());
        assert!(parse_publishers("nopair").is_err());
        assert!(parse_publishers("a=short").is_err());
        assert!(parse_publishers("a=0123456789abcdef,a=0123456789abcdeg").is_err());
    }

    #[test]
    fn operators_join_publishers_with_unique_names_and_tokens() {
        let publishers = parse_publishers("monitoring=0123456789abcdef").unwrap();
        let operators = parse_operators("oncall=fedcba9876543210").unwrap();
        assert!(!format!("{operators:?}").contains("fedcba9876543210"));
        let callers = publishers.clone().join(&operators).unwrap();
        assert_eq!(
            callers.iter().map(|(n, _, r)| (n, r)).collect::<Vec<_>>(),
            [("monitoring", Role::Publisher), ("oncall", Role::Operator)]
        );
        assert_eq!(parse_operators("").unwrap().iter().count(), 0);
        assert!(parse_operators("oncall=short").is_err());
        let same_name = parse_operators("monitoring=fedcba9876543210").unwrap();
        assert!(publishers.clone().join(&same_name).is_err());
        let same_token = parse_operators("oncall=0123456789abcdef").unwrap();
        let err = publishers.join(&same_token).unwrap_err();
        assert!(err.contains("another caller"), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
    }
}
