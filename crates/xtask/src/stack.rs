//! The pipeline's processes for the demo and the benchmarks: the local provider servers, the
//! resolver and the three channel workers, each a real binary configured by its environment.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::pipeline::{free_port, terminate_named};
use crate::services::target_bin;

/// Where the local provider servers listen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) smtp: u16,
    pub(crate) smtp_control: u16,
    pub(crate) twilio: u16,
    pub(crate) webhook: u16,
    pub(crate) sms_callbacks: u16,
    /// `tocsin-page`: the unsubscribe links in emails point at it.
    pub(crate) page: u16,
}

impl Ports {
    pub(crate) fn pick() -> anyhow::Result<Ports> {
        Ok(Ports {
            smtp: free_port()?,
            smtp_control: free_port()?,
            twilio: free_port()?,
            webhook: free_port()?,
            sms_callbacks: free_port()?,
            page: free_port()?,
        })
    }
}

impl Ports {
    /// The port of the control API that counts what `channel`'s provider received.
    pub(crate) fn control(&self, channel: tocsin_core::Channel) -> u16 {
        match channel {
            tocsin_core::Channel::Email => self.smtp_control,
            tocsin_core::Channel::Sms => self.twilio,
            tocsin_core::Channel::Webhook => self.webhook,
        }
    }
}

/// What one local provider server says it accepted (`GET /_control/summary`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub(crate) struct ProviderSummary {
    /// Distinct messages accepted.
    pub(crate) unique: u64,
    /// Accepted messages that repeat one accepted before.
    pub(crate) duplicates: u64,
}

pub(crate) async fn provider_summary(
    http: &reqwest::Client,
    control_port: u16,
) -> anyhow::Result<ProviderSummary> {
    let url = format!("http://127.0.0.1:{control_port}/_control/summary");
    http.get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {url}"))?
        .json()
        .await
        .with_context(|| format!("reading {url}"))
}

/// Tells the local webhook receiver the `whsec_` secret of each endpoint name, so that it
/// verifies every signature.
pub(crate) async fn register_webhook_endpoints(
    http: &reqwest::Client,
    webhook_port: u16,
    endpoints: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<usize> {
    let body: Vec<serde_json::Value> = endpoints
        .into_iter()
        .map(|(name, secret)| serde_json::json!({ "name": name, "secret": secret }))
        .collect();
    let url = format!("http://127.0.0.1:{webhook_port}/_control/endpoints");
    http.post(&url)
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("registering webhook secrets at {url}"))?;
    Ok(body.len())
}

/// The local Twilio server's credentials (its defaults).
pub(crate) const TWILIO_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const TWILIO_AUTH_TOKEN: &str = "tocsin-local-auth-token";

/// Running processes, stopped in reverse order.
#[derive(Debug)]
pub(crate) struct Stack {
    /// `debug` or `release`: which build of the binaries runs.
    profile: &'static str,
    children: Vec<(&'static str, Child)>,
}

impl Stack {
    pub(crate) fn new(profile: &'static str) -> Self {
        Self {
            profile,
            children: Vec::new(),
        }
    }

    /// The process id of the first running `binary`, for reading its memory use.
    pub(crate) fn pid(&self, binary: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(name, _)| *name == binary)
            .and_then(|(_, child)| child.id())
    }

    /// Starts `binary` with `args` and `env` on top of the connection settings.
    pub(crate) fn spawn(
        &mut self,
        binary: &'static str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let mut command = Command::new(target_bin(self.profile, binary));
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        self.children.push((binary, child));
        Ok(())
    }

    /// Fails if a process has already exited: it would have printed why.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited early ({status}); its log above says why");
            }
        }
        Ok(())
    }

    /// SIGTERM to each, newest first; every one must exit 0.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        while let Some((name, child)) = self.children.pop() {
            terminate_named(child, name).await?;
        }
        Ok(())
    }
}

/// Waits until something accepts connections on `port`.
pub(crate) async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    for _ in 0..150 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not start listening on 127.0.0.1:{port} within 15 s")
}

/// Where the Tocsin services find PostgreSQL and NATS, and their bus prefix.
pub(crate) struct Urls<'a> {
    pub(crate) database: &'a str,
    pub(crate) nats: &'a str,
    pub(crate) bus_prefix: &'a str,
}

/// Starts the provider servers, the resolver and the three workers. `tuning` is added to
/// every Tocsin service's environment (benchmarks raise limits with it).
pub(crate) async fn start(
    stack: &mut Stack,
    ports: Ports,
    urls: &Urls<'_>,
    tuning: &[(&'static str, String)],
) -> anyhow::Result<()> {
    start_providers(stack, ports).await?;
    start_page(stack, ports, urls).await?;
    start_resolver(stack, urls, tuning)?;
    start_workers(stack, ports, urls, tuning).await
}

/// The secret the stack's unsubscribe links are signed with (shared by the email worker and
/// `tocsin-page`); made up, for loopback only.
pub(crate) const LINK_SECRET: &str = "xtask-stack-link-secret-0123456789abcdef";

/// `tocsin-page` on `ports.page`, waited for until it listens.
pub(crate) async fn start_page(
    stack: &mut Stack,
    ports: Ports,
    urls: &Urls<'_>,
) -> anyhow::Result<()> {
    stack.spawn(
        "tocsin-page",
        &[],
        &[
            ("DATABASE_URL", urls.database.to_owned()),
            ("TOCSIN_PAGE_ADDR", format!("127.0.0.1:{}", ports.page)),
            ("TOCSIN_LINK_SECRET", LINK_SECRET.to_owned()),
            ("TOCSIN_COMPANY_NAME", "Acme Cloud".to_owned()),
            ("TOCSIN_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ],
    )?;
    wait_for_port(ports.page, "tocsin-page").await
}

/// `tocsin-local-providers all` on `ports`, waited for until each server listens.
pub(crate) async fn start_providers(stack: &mut Stack, ports: Ports) -> anyhow::Result<()> {
    stack.spawn("tocsin-local-providers", &["all"], &providers_env(ports))?;
    wait_for_providers(ports).await
}

/// The environment of `tocsin-local-providers all` listening on `ports`.
pub(crate) fn providers_env(ports: Ports) -> Vec<(&'static str, String)> {
    let addr = |port: u16| format!("127.0.0.1:{port}");
    vec![
        ("TOCSIN_LOCAL_SMTP_ADDR", addr(ports.smtp)),
        ("TOCSIN_LOCAL_SMTP_CONTROL_ADDR", addr(ports.smtp_control)),
        ("TOCSIN_LOCAL_TWILIO_ADDR", addr(ports.twilio)),
        ("TOCSIN_LOCAL_WEBHOOK_ADDR", addr(ports.webhook)),
    ]
}

/// Waits until each provider server listens on its port.
pub(crate) async fn wait_for_providers(ports: Ports) -> anyhow::Result<()> {
    for (port, what) in [
        (ports.smtp, "the local SMTP server"),
        (ports.smtp_control, "the local SMTP server's control API"),
        (ports.twilio, "the local Twilio server"),
        (ports.webhook, "the local webhook receiver"),
    ] {
        wait_for_port(port, what).await?;
    }
    Ok(())
}

/// What every Tocsin service is told: where the database and NATS are, whose company it is.
pub(crate) fn common_env(
    urls: &Urls<'_>,
    tuning: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    [
        ("DATABASE_URL", urls.database.to_owned()),
        ("NATS_URL", urls.nats.to_owned()),
        ("TOCSIN_BUS_PREFIX", urls.bus_prefix.to_owned()),
        ("TOCSIN_DB_MAX_CONNECTIONS", "8".to_owned()),
        // Any free port: the per-binary defaults would clash with a second run on one host.
        ("TOCSIN_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("TOCSIN_COMPANY_NAME", "Acme Cloud".to_owned()),
        (
            "TOCSIN_STATUS_PAGE_URL",
            "https://status.acme.example".to_owned(),
        ),
    ]
    .into_iter()
    .chain(tuning.iter().cloned())
    .collect()
}

pub(crate) fn start_resolver(
    stack: &mut Stack,
    urls: &Urls<'_>,
    tuning: &[(&'static str, String)],
) -> anyhow::Result<()> {
    stack.spawn("tocsin-resolver", &[], &common_env(urls, tuning))
}

/// The email, SMS and webhook workers, pointed at the local providers on `ports`.
pub(crate) async fn start_workers(
    stack: &mut Stack,
    ports: Ports,
    urls: &Urls<'_>,
    tuning: &[(&'static str, String)],
) -> anyhow::Result<()> {
    for channel in tocsin_core::Channel::ALL {
        stack.spawn(
            worker_binary(channel),
            &[],
            &worker_env(channel, ports, urls, tuning, ports.sms_callbacks),
        )?;
    }
    wait_for_port(ports.sms_callbacks, "the SMS worker's callback endpoint").await?;
    stack.check_alive()
}

/// The worker binary of `channel`.
pub(crate) fn worker_binary(channel: tocsin_core::Channel) -> &'static str {
    match channel {
        tocsin_core::Channel::Email => "tocsin-email",
        tocsin_core::Channel::Sms => "tocsin-sms",
        tocsin_core::Channel::Webhook => "tocsin-webhook",
    }
}

/// The environment of `channel`'s worker, pointed at the local providers on `ports`. Each SMS
/// worker serves Twilio's status callbacks on its own `sms_callback_port`.
pub(crate) fn worker_env(
    channel: tocsin_core::Channel,
    ports: Ports,
    urls: &Urls<'_>,
    tuning: &[(&'static str, String)],
    sms_callback_port: u16,
) -> Vec<(&'static str, String)> {
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let mut env = common_env(urls, tuning);
    match channel {
        tocsin_core::Channel::Email => env.extend([
            ("TOCSIN_SMTP_HOST", "127.0.0.1".to_owned()),
            ("TOCSIN_SMTP_PORT", ports.smtp.to_string()),
            (
                "TOCSIN_EMAIL_FROM",
                "Acme Cloud Status <status@acme.example>".to_owned(),
            ),
            (
                "TOCSIN_EMAIL_MESSAGE_ID_DOMAIN",
                "status.acme.example".to_owned(),
            ),
            (
                "TOCSIN_PAGE_URL",
                format!("http://127.0.0.1:{}", ports.page),
            ),
            ("TOCSIN_LINK_SECRET", LINK_SECRET.to_owned()),
        ]),
        tocsin_core::Channel::Sms => env.extend([
            (
                "TOCSIN_TWILIO_BASE_URL",
                format!("http://{}", addr(ports.twilio)),
            ),
            ("TOCSIN_TWILIO_ACCOUNT_SID", TWILIO_ACCOUNT_SID.to_owned()),
            ("TOCSIN_TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN.to_owned()),
            ("TOCSIN_TWILIO_FROM", "+15005550006".to_owned()),
            ("TOCSIN_SMS_CALLBACK_ADDR", addr(sms_callback_port)),
        ]),
        // The receiver is on loopback, which the SSRF guard refuses unless allow-listed: the
        // development allow-list exists for exactly this.
        tocsin_core::Channel::Webhook => {
            env.push(("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".to_owned()));
        }
    }
    env
}
