//! `tocsinctl publish open|update|resolve|reopen`: one lifecycle event per call.
//!
//! Every publish carries an idempotency key. Without `--key` a fresh one is made and printed,
//! so a publish whose answer was lost can be retried with that key and is recorded once.

use std::collections::HashMap;

use tocsin_proto::v1;

use crate::client::{CtlError, Server};
use crate::subscriber_file::severity;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PublishCommand {
    /// Open an incident: customers following its components are told.
    Open {
        /// A short headline customers see, e.g. "Checkout errors".
        #[arg(long)]
        title: String,
        /// minor, major or critical.
        #[arg(long)]
        severity: String,
        /// An affected component; repeat for several.
        #[arg(long = "component", required = true)]
        components: Vec<String>,
        /// The incident id to use (a UUID); the server assigns one when absent.
        #[arg(long)]
        incident: Option<String>,
        /// investigating (the default), identified or monitoring.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Tell customers how things stand.
    Update {
        incident: String,
        /// investigating, identified or monitoring.
        #[arg(long)]
        status: Option<String>,
        /// A changed severity.
        #[arg(long)]
        severity: Option<String>,
        /// The affected components, replacing the earlier set; repeat for several.
        #[arg(long = "component")]
        components: Vec<String>,
        /// A changed headline.
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Resolve the incident: everyone told before hears it is over.
    Resolve {
        incident: String,
        #[command(flatten)]
        common: Common,
    },
    /// Reopen a resolved incident.
    Reopen {
        incident: String,
        /// investigating (the default), identified or monitoring.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// What every publish takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The customer-facing message: plain facts, what is affected, what happens next.
    #[arg(long)]
    message: String,
    /// Idempotency key; a retry with the same key is recorded once. Made up when absent.
    #[arg(long)]
    key: Option<String>,
    /// Fail unless the incident is at this version (optimistic concurrency).
    #[arg(long)]
    expected_version: Option<u64>,
    /// A free label `name=value`; repeat for several.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Print the reply as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_label(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{raw:?} is not of the form name=value"))
}

fn status(name: &str) -> Result<i32, CtlError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "investigating" => v1::IncidentStatus::Investigating,
        "identified" => v1::IncidentStatus::Identified,
        "monitoring" => v1::IncidentStatus::Monitoring,
        _ => {
            return Err(CtlError::Usage(format!(
                "--status {name:?} is not one of investigating, identified, monitoring"
            )));
        }
    } as i32)
}

fn severity_arg(name: &str) -> Result<i32, CtlError> {
    severity(name).map_err(|m| CtlError::Usage(format!("--severity {m}")))
}

/// The request a command asks for, and the word for what it did.
fn request(
    command: PublishCommand,
) -> Result<(v1::PublishEventRequest, Common, &'static str), CtlError> {
    let mut request = v1::PublishEventRequest::default();
    let (common, done) = match command {
        PublishCommand::Open {
            title,
            severity,
            components,
            incident,
            status: s,
            common,
        } => {
            request.kind = v1::EventKind::Opened as i32;
            request.title = title;
            request.severity = severity_arg(&severity)?;
            request.components = components;
            request.incident_id = incident.unwrap_or_default();
            request.status = s.as_deref().map(status).transpose()?.unwrap_or_default();
            (common, "opened")
        }
        PublishCommand::Update {
            incident,
            status: s,
            severity,
            components,
            title,
            common,
        } => {
            request.kind = v1::EventKind::Updated as i32;
            request.incident_id = incident;
            request.status = s.as_deref().map(status).transpose()?.unwrap_or_default();
            request.severity = severity
                .as_deref()
                .map(severity_arg)
                .transpose()?
                .unwrap_or_default();
            request.components = components;
            request.title = title.unwrap_or_default();
            (common, "updated")
        }
        PublishCommand::Resolve { incident, common } => {
            request.kind = v1::EventKind::Resolved as i32;
            request.incident_id = incident;
            (common, "resolved")
        }
        PublishCommand::Reopen {
            incident,
            status: s,
            common,
        } => {
            request.kind = v1::EventKind::Reopened as i32;
            request.incident_id = incident;
            request.status = s.as_deref().map(status).transpose()?.unwrap_or_default();
            (common, "reopened")
        }
    };
    request.message = common.message.clone();
    request.expected_version = common.expected_version;
    request.labels = common.labels.iter().cloned().collect::<HashMap<_, _>>();
    request.idempotency_key = common
        .key
        .clone()
        .unwrap_or_else(|| format!("tocsinctl-{}", uuid::Uuid::new_v4()));
    Ok((request, common, done))
}

pub(crate) async fn run(server: &Server, command: PublishCommand) -> Result<(), CtlError> {
    let (request, common, done) = request(command)?;
    let key = request.idempotency_key.clone();
    let reply = server
        .incidents()
        .publish_event(request)
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    if common.json {
        let json = serde_json::json!({
            "event_id": reply.event_id,
            "incident_id": reply.incident_id,
            "incident_version": reply.incident_version,
            "position": reply.position,
            "duplicate": reply.duplicate,
            "idempotency_key": key,
        });
        println!("{json}");
    } else if reply.duplicate {
        println!(
            "already recorded: key {key} was used before for incident {} (version {}); nothing new was published",
            reply.incident_id, reply.incident_version
        );
    } else {
        println!(
            "{done} incident {} (version {}, event {}, log position {}, key {key})",
            reply.incident_id, reply.incident_version, reply.event_id, reply.position
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PublishCommand,
    }

    fn parse(args: &[&str]) -> PublishCommand {
        Cli::try_parse_from(std::iter::once("publish").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn an_opening_carries_everything_and_gets_a_fresh_key() {
        let command = parse(&[
            "open",
            "--title",
            "Checkout errors",
            "--severity",
            "Major",
            "--component",
            "api",
            "--component",
            "checkout",
            "--message",
            "Payments fail for some customers.",
            "--label",
            "team=payments",
        ]);
        let (request, _, done) = request(command).unwrap();
        assert_eq!(done, "opened");
        assert_eq!(request.kind, v1::EventKind::Opened as i32);
        assert_eq!(request.severity, v1::Severity::Major as i32);
        assert_eq!(request.components, ["api", "checkout"]);
        assert_eq!(
            request.labels.get("team").map(String::as_str),
            Some("payments")
        );
        assert!(request.idempotency_key.starts_with("tocsinctl-"));
        let (again, _, _) = request_of(&["resolve", "x", "--message", "m"]);
        assert_ne!(again.idempotency_key, request.idempotency_key);
    }

    fn request_of(args: &[&str]) -> (v1::PublishEventRequest, Common, &'static str) {
        request(parse(args)).unwrap()
    }

    #[test]
    fn an_update_keeps_the_given_key_and_refuses_unknown_words() {
        let (update, _, _) = request_of(&[
            "update",
            "0190f0a0-0000-7000-8000-000000000000",
            "--status",
            "identified",
            "--message",
            "Found it.",
            "--key",
            "k-1",
            "--expected-version",
            "3",
        ]);
        assert_eq!(update.idempotency_key, "k-1");
        assert_eq!(update.status, v1::IncidentStatus::Identified as i32);
        assert_eq!(update.expected_version, Some(3));
        let err = request(parse(&[
            "update",
            "x",
            "--status",
            "fixed",
            "--message",
            "m",
        ]))
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("\"fixed\""), "{err}");
    }
}
