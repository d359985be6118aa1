//! `tocsin-local-providers`: the loopback SMTP server, Twilio double and webhook receiver as a
//! process, for `cargo xtask demo` and the benchmark. Each server serves the `/_control/...`
//! API (the SMTP server on its own control port). Exits 0 on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};
use tocsin_local_providers::twilio::{DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN};
use tocsin_local_providers::webhook::EndpointRegistration;
use tocsin_local_providers::{
    SmtpConfig, SmtpServer, TwilioConfig, TwilioServer, WebhookReceiver, WebhookReceiverConfig,
};
use tocsin_runtime::{LogFormat, Shutdown, init_tracing};

#[derive(Debug, Parser)]
#[command(
    name = "tocsin-local-providers",
    version,
    about = "Loopback test doubles of Tocsin's providers: SMTP, Twilio, webhooks"
)]
struct Cli {
    /// Log output: pretty or json.
    #[arg(long, global = true, env = "TOCSIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The SMTP server and its HTTP control API.
    Smtp(SmtpArgs),
    /// The Twilio-compatible Messages API.
    Twilio(TwilioArgs),
    /// The Standard Webhooks receiver.
    Webhook(WebhookArgs),
    /// All three servers in one process.
    All {
        #[command(flatten)]
        smtp: SmtpArgs,
        #[command(flatten)]
        twilio: TwilioArgs,
        #[command(flatten)]
        webhook: WebhookArgs,
    },
}

#[derive(Debug, Args)]
struct SmtpArgs {
    /// SMTP listen address.
    #[arg(long, env = "TOCSIN_LOCAL_SMTP_ADDR", default_value = "127.0.0.1:2525")]
    smtp_addr: SocketAddr,
    /// HTTP control API address of the SMTP server.
    #[arg(
        long,
        env = "TOCSIN_LOCAL_SMTP_CONTROL_ADDR",
        default_value = "127.0.0.1:2526"
    )]
    smtp_control_addr: SocketAddr,
    /// Keep each mail's raw data (turn off for very long benchmarks).
    #[arg(long, env = "TOCSIN_LOCAL_SMTP_KEEP_DATA", default_value_t = true, action = ArgAction::Set)]
    smtp_keep_data: bool,
}

#[derive(Debug, Args)]
struct TwilioArgs {
    /// Twilio Messages API listen address (control routes share it).
    #[arg(
        long,
        env = "TOCSIN_LOCAL_TWILIO_ADDR",
        default_value = "127.0.0.1:8025"
    )]
    twilio_addr: SocketAddr,
    /// The account sid clients authenticate as.
    #[arg(long, env = "TOCSIN_LOCAL_TWILIO_ACCOUNT_SID", default_value = DEFAULT_ACCOUNT_SID)]
    twilio_account_sid: String,
    /// The auth token clients authenticate with; also signs status callbacks.
    #[arg(long, env = "TOCSIN_LOCAL_TWILIO_AUTH_TOKEN", default_value = DEFAULT_AUTH_TOKEN, hide_env_values = true)]
    twilio_auth_token: String,
    /// Wait before each status callback, in milliseconds.
    #[arg(
        long,
        env = "TOCSIN_LOCAL_TWILIO_CALLBACK_DELAY_MS",
        default_value_t = 50
    )]
    twilio_callback_delay_ms: u64,
}

#[derive(Debug, Args)]
struct WebhookArgs {
    /// Webhook receiver listen address (control routes share it).
    #[arg(
        long,
        env = "TOCSIN_LOCAL_WEBHOOK_ADDR",
        default_value = "127.0.0.1:8026"
    )]
    webhook_addr: SocketAddr,
    /// Endpoints to register at start, as `name=whsec_...` (comma-separated in the environment).
    #[arg(long = "webhook-endpoint", env = "TOCSIN_LOCAL_WEBHOOK_ENDPOINTS", value_delimiter = ',', value_parser = parse_endpoint, hide_env_values = true)]
    webhook_endpoints: Vec<EndpointRegistration>,
}

fn parse_endpoint(text: &str) -> Result<EndpointRegistration, String> {
    let (name, secret) = text.split_once('=').ok_or("expected name=whsec_...")?;
    Ok(EndpointRegistration {
        name: name.trim().to_owned(),
        secret: secret.trim().to_owned(),
    })
}

/// Whatever is running; kept alive until the signal.
#[derive(Default)]
struct Running {
    smtp: Option<SmtpServer>,
    twilio: Option<TwilioServer>,
    webhook: Option<WebhookReceiver>,
}

impl Running {
    async fn start_smtp(&mut self, args: SmtpArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
        let config = SmtpConfig {
            addr: args.smtp_addr,
            control_addr: Some(args.smtp_control_addr),
            keep_data: args.smtp_keep_data,
            ..SmtpConfig::default()
        };
        let server = SmtpServer::start_with_shutdown(config, shutdown.clone())
            .await
            .context("starting the SMTP server")?;
        tracing::info!(server = "smtp", addr = %server.addr(), control_addr = ?server.control_addr(), "listening");
        self.smtp = Some(server);
        Ok(())
    }

    async fn start_twilio(&mut self, args: TwilioArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
        let config = TwilioConfig {
            addr: args.twilio_addr,
            account_sid: args.twilio_account_sid,
            auth_token: args.twilio_auth_token,
            callback_delay: Duration::from_millis(args.twilio_callback_delay_ms),
            ..TwilioConfig::default()
        };
        let server = TwilioServer::start_with_shutdown(config, shutdown.clone())
            .await
            .context("starting the Twilio server")?;
        tracing::info!(server = "twilio", addr = %server.addr(), messages_url = %server.messages_url(), "listening");
        self.twilio = Some(server);
        Ok(())
    }

    async fn start_webhook(
        &mut self,
        args: WebhookArgs,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let config = WebhookReceiverConfig {
            addr: args.webhook_addr,
            ..WebhookReceiverConfig::default()
        };
        let receiver = WebhookReceiver::start_with_shutdown(config, shutdown.clone())
            .await
            .context("starting the webhook receiver")?;
        let endpoints = args.webhook_endpoints.len();
        receiver
            .register_all(args.webhook_endpoints)
            .context("TOCSIN_LOCAL_WEBHOOK_ENDPOINTS")?;
        tracing::info!(server = "webhook", addr = %receiver.addr(), endpoints, "listening");
        self.webhook = Some(receiver);
        Ok(())
    }

    async fn stop(self) {
        if let Some(server) = self.smtp {
            server.shutdown().await;
        }
        if let Some(server) = self.twilio {
            server.shutdown().await;
        }
        if let Some(server) = self.webhook {
            server.shutdown().await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let shutdown = Shutdown::on_signals();
    let mut running = Running::default();
    match cli.command {
        Command::Smtp(args) => running.start_smtp(args, &shutdown).await?,
        Command::Twilio(args) => running.start_twilio(args, &shutdown).await?,
        Command::Webhook(args) => running.start_webhook(args, &shutdown).await?,
        Command::All {
            smtp,
            twilio,
            webhook,
        } => {
            running.start_smtp(smtp, &shutdown).await?;
            running.start_twilio(twilio, &shutdown).await?;
            running.start_webhook(webhook, &shutdown).await?;
        }
    }
    shutdown.wait().await;
    running.stop().await;
    tracing::info!("local providers stopped");
    Ok(())
}
