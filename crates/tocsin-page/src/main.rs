//! `tocsin-page`: the public pages customers reach from their messages.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use tocsin_core::links::LinkSecret;
use tocsin_page::PageConfig;
use tocsin_runtime::{LogFormat, Shutdown, init_tracing};
use tocsin_store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "tocsin-page",
    version,
    about = "Tocsin's public pages: the status page, self-service sign-up, the preference centre and one-click unsubscribe"
)]
#[command(mut_arg("metrics_addr", |arg| arg.default_value("127.0.0.1:9469")))]
struct Cli {
    #[command(flatten)]
    ops: tocsin_runtime::OpsArgs,
    /// PostgreSQL URL of Tocsin's database.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/tocsin?sslmode=disable", value_parser = secret, hide_env_values = true)]
    database_url: SecretString,
    /// Most connections the pool opens; the pages write rarely.
    #[arg(long, env = "TOCSIN_DB_MAX_CONNECTIONS", default_value_t = 4)]
    db_max_connections: u32,
    /// Where to listen. Put it behind the public URL given to the email worker as
    /// TOCSIN_PAGE_URL.
    #[arg(long, env = "TOCSIN_PAGE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The secret links are signed with (at least 32 bytes), the same as the email
    /// worker's.
    #[arg(long, env = "TOCSIN_LINK_SECRET", value_parser = secret, hide_env_values = true)]
    link_secret: SecretString,
    /// The company name the pages speak for.
    #[arg(long, env = "TOCSIN_COMPANY_NAME", default_value = "Tocsin")]
    company: String,
    /// Where the public reaches the pages (the feed's links); `http://<TOCSIN_PAGE_ADDR>`
    /// when unset.
    #[arg(long, env = "TOCSIN_PAGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// A logo for the page header (an absolute URL or a path).
    #[arg(long, env = "TOCSIN_PAGE_LOGO_URL")]
    logo_url: Option<String>,
    /// The links' colour, `#rgb` or `#rrggbb`.
    #[arg(long, env = "TOCSIN_PAGE_ACCENT_COLOR", default_value = "#1d4ed8")]
    accent: String,
    /// The channels visitors may sign up for on `/subscribe` (comma-separated: email, sms,
    /// webhook; webhook needs email, through which it is confirmed); empty turns self-service
    /// sign-up off. The email and SMS workers send the confirmations.
    #[arg(
        long,
        env = "TOCSIN_SIGNUP_CHANNELS",
        default_value = "email,sms",
        value_delimiter = ','
    )]
    signup_channels: Vec<String>,
    /// Sign-ups one client address may make per hour.
    #[arg(
        long,
        env = "TOCSIN_SIGNUP_LIMIT_PER_CLIENT_HOUR",
        default_value_t = 10
    )]
    signup_limit_per_client_hour: u32,
    /// Sign-ups naming one email address or phone number per day.
    #[arg(long, env = "TOCSIN_SIGNUP_LIMIT_PER_ADDRESS_DAY", default_value_t = 3)]
    signup_limit_per_address_day: u32,
    /// The header a trusted proxy in front of the pages puts the client's address in (for
    /// example X-Forwarded-For; its last entry is used). Unset: the connection's peer.
    #[arg(long, env = "TOCSIN_PAGE_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// Hosts and networks webhook URLs may point at despite being private (comma-separated;
    /// for development only), when TOCSIN_SIGNUP_CHANNELS offers webhooks.
    #[arg(long, env = "TOCSIN_WEBHOOK_ALLOW", default_value = "")]
    webhook_allow: String,
    /// How long, in milliseconds, the status page and its JSON summary are served from one
    /// read of PostgreSQL, so a crowd of readers costs one read per interval; 0 reads on
    /// every request.
    #[arg(long, env = "TOCSIN_PAGE_CACHE_MS", default_value_t = 2000)]
    cache_ms: u64,
    /// Log output: pretty or json.
    #[arg(long, env = "TOCSIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw.to_owned()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tocsin_runtime::fatal::exit("tocsin-page", run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // PostgreSQL over TLS (`sslmode=verify-full`) needs the process's one provider.
    tocsin_runtime::tls::install_crypto_provider();
    let link_secret = LinkSecret::new(cli.link_secret.expose_secret().as_bytes())
        .context("TOCSIN_LINK_SECRET")?;
    let store = Store::connect(cli.database_url.expose_secret(), cli.db_max_connections)
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at {} (DATABASE_URL)",
                tocsin_runtime::fatal::redacted(cli.database_url.expose_secret())
            )
        })?;
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("binding {} (TOCSIN_PAGE_ADDR)", cli.addr))?;
    tocsin_page::check_colour(&cli.accent)
        .map_err(anyhow::Error::msg)
        .context("TOCSIN_PAGE_ACCENT_COLOR")?;
    let mut channels = Vec::new();
    for name in cli
        .signup_channels
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
    {
        match name.parse::<tocsin_core::Channel>() {
            Ok(c) => channels.push(c),
            Err(_) => anyhow::bail!(
                "TOCSIN_SIGNUP_CHANNELS: {name:?} is not a channel; use email, sms and webhook"
            ),
        }
    }
    let client_ip_header = cli
        .client_ip_header
        .map(|h| axum::http::HeaderName::try_from(h.trim()))
        .transpose()
        .context("TOCSIN_PAGE_CLIENT_IP_HEADER is not a header name")?;
    if channels.contains(&tocsin_core::Channel::Webhook)
        && !channels.contains(&tocsin_core::Channel::Email)
    {
        anyhow::bail!(
            "TOCSIN_SIGNUP_CHANNELS: webhook needs email too, since a webhook is confirmed through an email address"
        );
    }
    let config = PageConfig {
        link_secret,
        company: cli.company,
        public_url: cli
            .public_url
            .unwrap_or_else(|| format!("http://{}", cli.addr)),
        logo_url: cli.logo_url,
        accent: cli.accent,
        snapshot_ttl: std::time::Duration::from_millis(cli.cache_ms),
        signup: tocsin_page::signup::SignupConfig {
            channels,
            limits: tocsin_store::SignupLimits {
                per_client_per_hour: cli.signup_limit_per_client_hour,
                per_address_per_day: cli.signup_limit_per_address_day,
            },
            client_ip_header,
            webhook_policy: tocsin_core::network::UrlPolicy::from_list(&cli.webhook_allow)
                .context("TOCSIN_WEBHOOK_ALLOW")?,
        },
    };
    let shutdown = Shutdown::on_signals();
    let ops = cli
        .ops
        .spawn(tocsin_page::PageReadiness(store.clone()), shutdown.clone())
        .await
        .context("starting the ops server (TOCSIN_METRICS_ADDR)")?;
    tocsin_page::run(config, store, listener, shutdown).await?;
    // The shutdown that stopped the pages stops the ops server too.
    let _ = ops.await;
    Ok(())
}
