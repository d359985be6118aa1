//! The `tocsin-sms` binary's settings, from the environment (or flags) with documented
//! defaults, validated at start. Tests build the parts they need directly.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use tocsin_delivery::config::WorkerArgs;
use tocsin_runtime::{Connections, OpsArgs};
use url::Url;

use crate::callbacks::STATUS_PATH;
use crate::error::Error;
use crate::twilio::{Sender, TwilioConfig};

/// Everything `tocsin-sms` reads.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tocsin-sms",
    version,
    about = "Tocsin SMS worker: sends delivery jobs through Twilio and records its status callbacks"
)]
#[command(mut_arg("metrics_addr", |arg| arg.default_value("127.0.0.1:9467")))]
pub struct Cli {
    #[command(flatten)]
    pub connections: Connections,
    /// The ops server (metrics and probes), apart from the status-callback server.
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub sms: SmsArgs,
}

/// The SMS channel's own settings.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("sender").required(true).multiple(false))]
pub struct SmsArgs {
    /// Twilio's API base URL; point it at a local Twilio-compatible server for tests and demos.
    #[arg(long, env = "TOCSIN_TWILIO_BASE_URL", default_value = TwilioConfig::DEFAULT_BASE_URL)]
    pub twilio_base_url: Url,
    /// The Twilio account sid (`AC...`).
    #[arg(long, env = "TOCSIN_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: String,
    /// The account's auth token: Basic auth for the API, and the key of callback signatures.
    #[arg(long, env = "TOCSIN_TWILIO_AUTH_TOKEN", value_parser = secret, hide_env_values = true)]
    pub twilio_auth_token: SecretString,
    /// The number or alphanumeric sender id to send from. Exactly one of this and
    /// `TOCSIN_TWILIO_MESSAGING_SERVICE_SID`.
    #[arg(long, env = "TOCSIN_TWILIO_FROM", group = "sender")]
    pub twilio_from: Option<String>,
    /// A messaging service (`MG...`) that picks the sending number itself.
    #[arg(long, env = "TOCSIN_TWILIO_MESSAGING_SERVICE_SID", group = "sender")]
    pub twilio_messaging_service_sid: Option<String>,
    /// Where the status-callback server listens.
    #[arg(
        long,
        env = "TOCSIN_SMS_CALLBACK_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    pub callback_addr: SocketAddr,
    /// The URL Twilio reaches the callback server at, e.g.
    /// `https://status.example.com/twilio/status`; signatures are checked against it.
    /// Default: `http://<TOCSIN_SMS_CALLBACK_ADDR>/twilio/status`.
    #[arg(long, env = "TOCSIN_SMS_CALLBACK_PUBLIC_URL")]
    pub callback_public_url: Option<Url>,
    /// Most segments one message may use; longer texts are shortened to fit.
    #[arg(long, env = "TOCSIN_SMS_MAX_SEGMENTS", default_value_t = 3,
        value_parser = clap::value_parser!(u16).range(1..=10))]
    pub max_segments: u16,
    /// A directory of template overrides (same file names as the built-in templates).
    #[arg(long, env = "TOCSIN_SMS_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Seconds allowed for one request to Twilio; past it, after the request went out, the
    /// outcome is unknown (and reconciled with Twilio later).
    #[arg(long, env = "TOCSIN_TWILIO_TIMEOUT_SECONDS", default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=300))]
    pub twilio_timeout_seconds: u64,
}

impl SmsArgs {
    /// The URL Twilio is given for status callbacks (before our `delivery` parameter).
    pub fn public_callback_url(&self) -> Result<Url, Error> {
        let url = match &self.callback_public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{}{STATUS_PATH}", self.callback_addr))
                .map_err(|e| Error::Config(format!("callback URL: {e}")))?,
        };
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::Config(format!(
                "TOCSIN_SMS_CALLBACK_PUBLIC_URL {url} is not an http(s) URL"
            )));
        }
        Ok(url)
    }

    /// The Twilio client's settings.
    pub fn twilio_config(&self) -> Result<TwilioConfig, Error> {
        let sender = match (&self.twilio_from, &self.twilio_messaging_service_sid) {
            (Some(from), None) => Sender::From(from.clone()),
            (None, Some(sid)) => Sender::MessagingServiceSid(sid.clone()),
            _ => {
                return Err(Error::Config(
                    "set exactly one of TOCSIN_TWILIO_FROM and TOCSIN_TWILIO_MESSAGING_SERVICE_SID"
                        .into(),
                ));
            }
        };
        let mut config = TwilioConfig::new(
            self.twilio_account_sid.clone(),
            self.twilio_auth_token.clone(),
            sender,
        );
        config.base_url = self.twilio_base_url.clone();
        config.status_callback = Some(self.public_callback_url()?);
        config.timeout = std::time::Duration::from_secs(self.twilio_timeout_seconds);
        config.connect_timeout = config.connect_timeout.min(config.timeout);
        Ok(config)
    }
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            [
                "tocsin-sms",
                "--twilio-account-sid",
                "AC1",
                "--twilio-auth-token",
                "t",
            ]
            .iter()
            .chain(args),
        )
    }

    #[test]
    fn defaults_and_the_default_public_url() {
        let cli = parse(&["--twilio-from", "+15005550006"]).unwrap();
        let sms = &cli.sms;
        assert_eq!(sms.max_segments, 3);
        assert_eq!(sms.callback_addr, "127.0.0.1:8090".parse().unwrap());
        assert_eq!(sms.twilio_base_url.as_str(), "https://api.twilio.com/");
        assert_eq!(
            sms.public_callback_url().unwrap().as_str(),
            "http://127.0.0.1:8090/twilio/status"
        );
        let config = sms.twilio_config().unwrap();
        assert_eq!(config.sender, Sender::From("+15005550006".into()));
        assert!(
            !format!("{cli:?}").contains("\"t\""),
            "the token is never printed"
        );
    }

    #[test]
    fn exactly_one_sender() {
        assert!(parse(&[]).is_err(), "a sender is required");
        assert!(
            parse(&[
                "--twilio-from",
                "+1",
                "--twilio-messaging-service-sid",
                "MG1"
            ])
            .is_err()
        );
        let cli = parse(&["--twilio-messaging-service-sid", "MG1"]).unwrap();
        assert_eq!(
            cli.sms.twilio_config().unwrap().sender,
            Sender::MessagingServiceSid("MG1".into())
        );
    }

    #[test]
    fn the_public_url_is_checked() {
        let cli = parse(&[
            "--twilio-from",
            "+1",
            "--callback-public-url",
            "https://status.example.com/twilio/status",
        ])
        .unwrap();
        assert_eq!(
            cli.sms
                .twilio_config()
                .unwrap()
                .status_callback
                .unwrap()
                .as_str(),
            "https://status.example.com/twilio/status"
        );
        let cli = parse(&["--twilio-from", "+1", "--callback-public-url", "ftp://x/y"]).unwrap();
        assert!(cli.sms.public_callback_url().is_err());
        assert!(parse(&["--twilio-from", "+1", "--max-segments", "0"]).is_err());
    }
}
