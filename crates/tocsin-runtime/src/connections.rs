//! Where every Tocsin service finds PostgreSQL and NATS, and how it logs: the settings all
//! binaries share, from the environment (or flags) with documented defaults.

use secrecy::SecretString;

use crate::LogFormat;

/// Where to find PostgreSQL and NATS, and the log format; shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// PostgreSQL URL of Tocsin's database. The default is a local server over loopback,
    /// where TLS protects nothing and costs CPU on both ends, hence `sslmode=disable`; for a
    /// server across a network, give `sslmode=verify-full`.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/tocsin?sslmode=disable", value_parser = secret, hide_env_values = true)]
    pub database_url: SecretString,
    /// Most connections the pool opens.
    #[arg(long, env = "TOCSIN_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
    /// NATS server URL (JetStream enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Names every stream and subject: `<prefix>.events.<incident>`, stream `<PREFIX>_EVENTS`.
    #[arg(long, env = "TOCSIN_BUS_PREFIX", default_value = "tocsin")]
    pub bus_prefix: String,
    /// Log output: pretty or json.
    #[arg(long, env = "TOCSIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw.to_owned()))
}
