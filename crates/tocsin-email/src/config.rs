//! The `tocsin-email` binary's settings: connections and worker tuning shared with every
//! service, plus the relay and the sender identity, from the environment (or flags).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use lettre::message::Mailbox;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use tocsin_delivery::config::WorkerArgs;
use tocsin_email::courier::{TOKEN_PLACEHOLDER, UnsubscribeLinks};
use tocsin_email::{EmailSettings, SmtpConfig, Templates, TlsMode};
use tocsin_runtime::{Connections, OpsArgs};

#[derive(Debug, Parser)]
#[command(
    name = "tocsin-email",
    version,
    about = "Tocsin email worker: sends incident notices through an SMTP relay"
)]
#[command(mut_arg("metrics_addr", |arg| arg.default_value("127.0.0.1:9466")))]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) connections: Connections,
    #[command(flatten)]
    pub(crate) ops: OpsArgs,
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    pub(crate) email: EmailArgs,
}

/// How the relay is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TlsArg {
    /// Plain text: a relay on the same host or a test server.
    None,
    /// Upgrade with STARTTLS, required (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// The relay and the sender identity.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EmailArgs {
    /// SMTP relay host.
    #[arg(long, env = "TOCSIN_SMTP_HOST", default_value = "127.0.0.1")]
    pub(crate) smtp_host: String,
    /// SMTP relay port.
    #[arg(long, env = "TOCSIN_SMTP_PORT", default_value_t = 2525)]
    pub(crate) smtp_port: u16,
    /// Connection security: none, starttls or tls.
    #[arg(long, env = "TOCSIN_SMTP_TLS", value_enum, default_value_t = TlsArg::None)]
    pub(crate) smtp_tls: TlsArg,
    /// User name for SMTP AUTH; set it together with the password.
    #[arg(long, env = "TOCSIN_SMTP_USERNAME")]
    pub(crate) smtp_username: Option<String>,
    /// Password for SMTP AUTH.
    #[arg(long, env = "TOCSIN_SMTP_PASSWORD", value_parser = secret, hide_env_values = true)]
    pub(crate) smtp_password: Option<SecretString>,
    /// Seconds one send may take, connect to final reply; past it the outcome is unknown.
    /// The TCP connect alone gets at most 10 of them.
    #[arg(long, env = "TOCSIN_SMTP_TIMEOUT_SECONDS", default_value_t = 30)]
    pub(crate) smtp_timeout_seconds: u64,
    /// The From mailbox.
    #[arg(
        long,
        env = "TOCSIN_EMAIL_FROM",
        default_value = "Tocsin Status <status@example.com>"
    )]
    pub(crate) email_from: String,
    /// The domain in every Message-ID (`<dlv_…@domain>`); one the company controls.
    #[arg(
        long,
        env = "TOCSIN_EMAIL_MESSAGE_ID_DOMAIN",
        default_value = "status.example.com"
    )]
    pub(crate) email_message_id_domain: String,
    /// A directory of template overrides; files not in it keep the compiled-in defaults.
    #[arg(long, env = "TOCSIN_EMAIL_TEMPLATES_DIR")]
    pub(crate) email_templates_dir: Option<PathBuf>,
    /// The public URL of `tocsin-page` (`https://status.acme.com`): every email then carries
    /// a signed one-click unsubscribe link to its `/unsubscribe/{token}`.
    #[arg(long, env = "TOCSIN_PAGE_URL")]
    pub(crate) page_url: Option<String>,
    /// A one-click unsubscribe URL of your own, with `{token}` for the signed token (your
    /// page then verifies it with the same secret); overrides TOCSIN_PAGE_URL's.
    #[arg(long, env = "TOCSIN_EMAIL_UNSUBSCRIBE_URL")]
    pub(crate) email_unsubscribe_url: Option<String>,
    /// The secret unsubscribe links are signed with (at least 32 bytes; `openssl rand -hex
    /// 32`), the same as `tocsin-page`'s. Required with either URL.
    #[arg(long, env = "TOCSIN_LINK_SECRET", value_parser = secret, hide_env_values = true)]
    pub(crate) link_secret: Option<SecretString>,
}

impl EmailArgs {
    /// The relay's settings, checked.
    pub(crate) fn smtp_config(&self) -> anyhow::Result<SmtpConfig> {
        if self.smtp_host.trim().is_empty() {
            bail!("TOCSIN_SMTP_HOST is empty");
        }
        let tls = match self.smtp_tls {
            TlsArg::None => TlsMode::None,
            TlsArg::Starttls => TlsMode::StartTls,
            TlsArg::Tls => TlsMode::Tls,
        };
        let mut config = SmtpConfig::new(self.smtp_host.trim(), self.smtp_port, tls);
        let timeout = Duration::from_secs(self.smtp_timeout_seconds.max(1));
        config.send_timeout = timeout;
        config.connect_timeout = timeout.min(Duration::from_secs(10));
        config.credentials = match (&self.smtp_username, &self.smtp_password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            (Some(_), None) => bail!("TOCSIN_SMTP_USERNAME is set but TOCSIN_SMTP_PASSWORD is not"),
            (None, Some(_)) => bail!("TOCSIN_SMTP_PASSWORD is set but TOCSIN_SMTP_USERNAME is not"),
        };
        Ok(config)
    }

    /// The templates: the defaults, or the overrides rendered once against samples.
    pub(crate) fn templates(&self) -> anyhow::Result<Templates> {
        match &self.email_templates_dir {
            None => Ok(Templates::defaults()),
            Some(dir) => Templates::from_dir(dir).with_context(|| {
                format!(
                    "email templates in {} (TOCSIN_EMAIL_TEMPLATES_DIR)",
                    dir.display()
                )
            }),
        }
    }

    /// The sender identity and links, checked, with `worker`'s retry schedule.
    pub(crate) fn settings(&self, worker: &WorkerArgs) -> anyhow::Result<EmailSettings> {
        let from: Mailbox = self
            .email_from
            .parse()
            .with_context(|| format!("TOCSIN_EMAIL_FROM {:?} is not a mailbox", self.email_from))?;
        let domain = self.email_message_id_domain.trim();
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            bail!("TOCSIN_EMAIL_MESSAGE_ID_DOMAIN {domain:?} is not a domain name");
        }
        Ok(EmailSettings {
            from,
            message_id_domain: domain.to_owned(),
            unsubscribe: self.unsubscribe_links()?,
            retry: worker.retry_policy(),
        })
    }
}

impl EmailArgs {
    /// The unsubscribe links, when a URL is configured: checked, with their secret.
    fn unsubscribe_links(&self) -> anyhow::Result<Option<UnsubscribeLinks>> {
        let url = match (&self.email_unsubscribe_url, &self.page_url) {
            (Some(url), _) => url.trim().to_owned(),
            (None, Some(page)) => format!(
                "{}/unsubscribe/{TOKEN_PLACEHOLDER}",
                page.trim().trim_end_matches('/')
            ),
            (None, None) => return Ok(None),
        };
        check_unsubscribe_url(&url)?;
        let Some(secret) = &self.link_secret else {
            bail!(
                "TOCSIN_LINK_SECRET is required with TOCSIN_PAGE_URL or TOCSIN_EMAIL_UNSUBSCRIBE_URL: \
                 unsubscribe links are signed so nobody can unsubscribe someone else"
            );
        };
        let secret = tocsin_core::links::LinkSecret::new(secret.expose_secret().as_bytes())
            .context("TOCSIN_LINK_SECRET")?;
        // The preference centre is tocsin-page's; a URL of your own has none.
        let preferences_url = match (&self.email_unsubscribe_url, &self.page_url) {
            (None, Some(page)) => Some(format!(
                "{}/preferences/{TOKEN_PLACEHOLDER}",
                page.trim().trim_end_matches('/')
            )),
            _ => None,
        };
        Ok(Some(UnsubscribeLinks {
            url,
            secret,
            preferences_url,
        }))
    }
}

/// The URL goes into a header between `<` and `>` and must carry the signed token, or a
/// one-click unsubscribe could not tell who clicked.
fn check_unsubscribe_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("TOCSIN_EMAIL_UNSUBSCRIBE_URL {url:?} is not an http(s) URL");
    }
    if !url.contains(TOKEN_PLACEHOLDER) {
        bail!(
            "the unsubscribe URL {url:?} lacks {TOKEN_PLACEHOLDER} (a bare subscriber id would \
             let anyone unsubscribe anyone)"
        );
    }
    if !url
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '<' && c != '>')
    {
        bail!(
            "TOCSIN_EMAIL_UNSUBSCRIBE_URL {url:?} has spaces, angle brackets or non-ASCII characters"
        );
    }
    Ok(())
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        // Flags, not the environment: tests never read or change the process environment
        // for values they assert on.
        Cli::try_parse_from(std::iter::once("tocsin-email").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_build_a_checked_configuration() {
        let cli = parse(&[
            "--smtp-host",
            "smtp.acme.test",
            "--smtp-port",
            "587",
            "--smtp-tls",
            "starttls",
            "--smtp-username",
            "relay",
            "--smtp-password",
            "hunter2",
            "--smtp-timeout-seconds",
            "5",
            "--email-from",
            "Acme Status <status@acme.test>",
            "--email-message-id-domain",
            "status.acme.test",
            "--page-url",
            "https://status.acme.test/",
            "--link-secret",
            "0123456789abcdef0123456789abcdef",
        ]);
        let smtp = cli.email.smtp_config().unwrap();
        assert_eq!(smtp.host, "smtp.acme.test");
        assert_eq!(smtp.port, 587);
        assert_eq!(smtp.tls, TlsMode::StartTls);
        assert_eq!(smtp.send_timeout, Duration::from_secs(5));
        assert_eq!(smtp.connect_timeout, Duration::from_secs(5));
        assert!(
            !format!("{cli:?}").contains("hunter2"),
            "the password is never printed"
        );
        let settings = cli.email.settings(&cli.worker).unwrap();
        assert_eq!(settings.from.email.to_string(), "status@acme.test");
        assert_eq!(settings.message_id_domain, "status.acme.test");
        assert_eq!(settings.retry, cli.worker.retry_policy());
        let links = settings.unsubscribe.expect("links from the page URL");
        assert_eq!(links.url, "https://status.acme.test/unsubscribe/{token}");
        assert_eq!(
            links.preferences_url.as_deref(),
            Some("https://status.acme.test/preferences/{token}")
        );
        assert!(
            !format!("{cli:?}").contains("0123456789abcdef"),
            "the link secret is never printed"
        );
    }

    #[test]
    fn half_credentials_and_bad_identities_are_refused() {
        let cli = parse(&["--smtp-username", "relay"]);
        assert!(cli.email.smtp_config().is_err());
        for args in [
            &["--email-from", "not a mailbox"][..],
            &["--email-message-id-domain", "a b"],
            &["--email-unsubscribe-url", "https://x.test/unsubscribe"],
            // A bare subscriber id would let anyone unsubscribe anyone.
            &[
                "--email-unsubscribe-url",
                "https://x.test/u/{subscriber_id}",
                "--link-secret",
                "0123456789abcdef0123456789abcdef",
            ],
            &[
                "--email-unsubscribe-url",
                "https://x.test/u/{token}>",
                "--link-secret",
                "0123456789abcdef0123456789abcdef",
            ],
            // Links without a secret, or with a short one.
            &["--page-url", "https://status.acme.test"],
            &[
                "--page-url",
                "https://status.acme.test",
                "--link-secret",
                "short",
            ],
        ] {
            let cli = parse(args);
            assert!(
                cli.email.settings(&cli.worker).is_err(),
                "{args:?} accepted"
            );
        }
    }
}
