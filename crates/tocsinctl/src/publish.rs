//! `tocsinctl publish open|update|resolve|reopen|review|schedule-maintenance|start-maintenance|
//! complete-maintenance`: one lifecycle event per call.
//!
//! Every publish carries an idempotency key. Without `--key` a fresh one is made and printed,
//! so a publish whose answer was lost can be retried with that key and is recorded once.
//! Times are RFC 3339 (`2026-12-10T10:00:00Z`) or an offset from now (`+30m`, `+2h`, `+3d`,
//! `-15m` for a start already past).

use std::collections::HashMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tocsin_proto::timestamp;
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
        /// An affected component; repeat for several. `--impact` alone names them too.
        #[arg(long = "component", required_unless_present = "impacts")]
        components: Vec<String>,
        #[command(flatten)]
        impacts: Impacts,
        /// The incident id to use (a UUID); the server assigns one when absent.
        #[arg(long)]
        incident: Option<String>,
        /// investigating (the default), identified or monitoring.
        #[arg(long)]
        status: Option<String>,
        /// When the problem began, if before now (`-14m`, or a time).
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        started_at: Option<OffsetDateTime>,
        #[command(flatten)]
        next: NextUpdate,
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
        #[command(flatten)]
        impacts: Impacts,
        /// A changed headline.
        #[arg(long)]
        title: Option<String>,
        /// A corrected start of the problem.
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        started_at: Option<OffsetDateTime>,
        #[command(flatten)]
        next: NextUpdate,
        #[command(flatten)]
        common: Common,
    },
    /// Resolve the incident: everyone told before hears it is over.
    Resolve {
        incident: String,
        /// A corrected start of the problem, so the duration told is true.
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        started_at: Option<OffsetDateTime>,
        /// Promise a review; the messages mention one only then. Publish it with `review`.
        #[arg(long)]
        review_to_follow: bool,
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
        impacts: Impacts,
        #[command(flatten)]
        next: NextUpdate,
        #[command(flatten)]
        common: Common,
    },
    /// Send the post-incident review (or another follow-up) of a resolved incident to those
    /// told about it: now, or at `--deliver-at`.
    Review {
        incident: String,
        /// Where the full review is.
        #[arg(long)]
        link: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Announce a planned maintenance.
    ScheduleMaintenance {
        /// What is being done, e.g. "Database upgrade".
        #[arg(long)]
        title: String,
        /// An affected component; repeat for several.
        #[arg(long = "component", required = true)]
        components: Vec<String>,
        /// When the work starts.
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        starts_at: OffsetDateTime,
        /// When the work is planned to end.
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        ends_at: OffsetDateTime,
        /// Remind subscribers this many minutes before the start; repeat for several
        /// (default: 1440 and 60, a day and an hour before).
        #[arg(long = "reminder", conflicts_with = "no_reminders")]
        reminders: Vec<u32>,
        /// Send no reminders.
        #[arg(long)]
        no_reminders: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Tell customers a planned maintenance has started.
    StartMaintenance {
        incident: String,
        /// Without it, every component of the maintenance is under maintenance.
        #[command(flatten)]
        impacts: Impacts,
        #[command(flatten)]
        next: NextUpdate,
        #[command(flatten)]
        common: Common,
    },
    /// Tell customers a planned maintenance is complete.
    CompleteMaintenance {
        incident: String,
        #[command(flatten)]
        common: Common,
    },
}

/// How hard each component is hit.
#[derive(Debug, clap::Args)]
pub(crate) struct Impacts {
    /// `COMPONENT=IMPACT`, the impact one of degraded-performance, partial-outage,
    /// major-outage or under-maintenance; repeat for several. Replaces the earlier impacts.
    #[arg(long = "impact", value_parser = parse_impact)]
    pub(crate) impacts: Vec<v1::ComponentImpact>,
}

fn parse_impact(raw: &str) -> Result<v1::ComponentImpact, String> {
    let (component, impact) = raw
        .split_once('=')
        .filter(|(c, _)| !c.trim().is_empty())
        .ok_or_else(|| format!("{raw:?} is not of the form COMPONENT=IMPACT"))?;
    let wire_name = format!(
        "IMPACT_{}",
        impact.trim().to_ascii_uppercase().replace(['-', ' '], "_")
    );
    let impact = v1::Impact::from_str_name(&wire_name)
        .filter(|i| *i != v1::Impact::Unspecified)
        .ok_or_else(|| {
            format!(
                "{impact:?} is not an impact; use degraded-performance, partial-outage, \
                 major-outage or under-maintenance"
            )
        })?;
    Ok(v1::ComponentImpact {
        component: component.trim().to_owned(),
        impact: impact as i32,
        name: String::new(),
    })
}

/// The promise of the next update, for events while work goes on.
#[derive(Debug, clap::Args)]
pub(crate) struct NextUpdate {
    /// When customers will hear from us next (`+30m`, or a time): "Next update by 10:30 UTC".
    #[arg(long = "next-update", value_parser = parse_time, allow_hyphen_values = true)]
    at: Option<OffsetDateTime>,
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
    /// What customers need to do, when they must act. Without it no message asks anything.
    #[arg(long)]
    action: Option<String>,
    /// Record the event now but send its messages at this time (`+3d`, or a time).
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    deliver_at: Option<OffsetDateTime>,
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

/// A time on the command line: RFC 3339, or `+N`/`-N` minutes (`m`), hours (`h`) or days
/// (`d`) from now.
pub(crate) fn parse_time(raw: &str) -> Result<OffsetDateTime, String> {
    parse_time_at(raw, OffsetDateTime::now_utc())
}

fn parse_time_at(raw: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let raw = raw.trim();
    if let Some(sign @ ('+' | '-')) = raw.chars().next() {
        let rest = &raw[1..];
        let unit_at = rest.char_indices().last().map_or(0, |(i, _)| i);
        let (number, unit) = rest.split_at(unit_at);
        let n: i64 = number
            .parse()
            .map_err(|_| format!("{raw:?}: expected +N or -N with m, h or d, like +30m"))?;
        let span = match unit {
            "m" => time::Duration::minutes(n),
            "h" => time::Duration::hours(n),
            "d" => time::Duration::days(n),
            _ => return Err(format!("{raw:?}: the unit is m, h or d, like +30m")),
        };
        return Ok(if sign == '+' { now + span } else { now - span });
    }
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|e| {
        format!("{raw:?} is neither an RFC 3339 time (2026-12-10T10:00:00Z) nor an offset like +30m: {e}")
    })
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

pub(crate) fn severity_arg(name: &str) -> Result<i32, CtlError> {
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
            impacts,
            incident,
            status: s,
            started_at,
            next,
            common,
        } => {
            request.kind = v1::EventKind::Opened as i32;
            request.title = title;
            request.severity = severity_arg(&severity)?;
            request.components = components;
            request.impacts = impacts.impacts;
            request.incident_id = incident.unwrap_or_default();
            request.status = s.as_deref().map(status).transpose()?.unwrap_or_default();
            request.started_at = started_at.map(timestamp);
            request.next_update_at = next.at.map(timestamp);
            (common, "opened")
        }
        PublishCommand::Update {
            incident,
            status: s,
            severity,
            components,
            impacts,
            title,
            started_at,
            next,
            common,
        } => {
            request.kind = v1::EventKind::Updated as i32;
            request.impacts = impacts.impacts;
            request.incident_id = incident;
            request.status = s.as_deref().map(status).transpose()?.unwrap_or_default();
            request.severity = severity
                .as_deref()
                .map(severity_arg)
                .transpose()?
                .unwrap_or_default();
            request.components = components;
            request.title = title.unwrap_or_default();
            request.started_at = started_at.map(timestamp);
            request.next_update_at = next.at.map(timestamp);
            (common, "updated")
        }
        PublishCommand::Resolve {
            incident,
            started_at,
            review_to_follow,
            common,
        } => {
            request.kind = v1::EventKind::Resolved as i32;
            request.incident_id = incident;
            request.started_at = started_at.map(timestamp);
            request.review_to_follow = review_to_follow;
            (common, "resolved")
        }
        PublishCommand::Reopen {
            incident,
            status: s,
            impacts,
            next,
            common,
        } => {
            request.kind = v1::EventKind::Reopened as i32;
            request.impacts = impacts.impacts;
            request.incident_id = incident;
            request.status = s.as_deref().map(status).transpose()?.unwrap_or_default();
            request.next_update_at = next.at.map(timestamp);
            (common, "reopened")
        }
        PublishCommand::Review {
            incident,
            link,
            common,
        } => {
            request.kind = v1::EventKind::Review as i32;
            request.incident_id = incident;
            request.link = link.unwrap_or_default();
            (common, "reviewed")
        }
        PublishCommand::ScheduleMaintenance {
            title,
            components,
            starts_at,
            ends_at,
            reminders,
            no_reminders,
            common,
        } => {
            request.reminders = (no_reminders || !reminders.is_empty()).then_some(v1::Reminders {
                minutes_before: reminders,
            });
            request.kind = v1::EventKind::MaintenanceScheduled as i32;
            request.title = title;
            request.components = components;
            request.window = Some(v1::MaintenanceWindow {
                starts_at: Some(timestamp(starts_at)),
                ends_at: Some(timestamp(ends_at)),
            });
            (common, "scheduled maintenance")
        }
        PublishCommand::StartMaintenance {
            incident,
            impacts,
            next,
            common,
        } => {
            request.kind = v1::EventKind::MaintenanceStarted as i32;
            request.impacts = impacts.impacts;
            request.incident_id = incident;
            request.next_update_at = next.at.map(timestamp);
            (common, "started maintenance")
        }
        PublishCommand::CompleteMaintenance { incident, common } => {
            request.kind = v1::EventKind::MaintenanceCompleted as i32;
            request.incident_id = incident;
            (common, "completed maintenance")
        }
    };
    request.customer_action = common.action.clone().unwrap_or_default();
    request.deliver_at = common.deliver_at.map(timestamp);
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

    #[test]
    fn impacts_are_component_equals_impact_and_may_name_an_opening_alone() {
        let (open, _, _) = request_of(&[
            "open",
            "--title",
            "Checkout errors",
            "--severity",
            "major",
            "--impact",
            "payments-api=major-outage",
            "--impact",
            "dashboard=Degraded Performance",
            "--message",
            "m",
        ]);
        assert!(open.components.is_empty());
        let impacts: Vec<(&str, i32)> = open
            .impacts
            .iter()
            .map(|i| (i.component.as_str(), i.impact))
            .collect();
        assert_eq!(
            impacts,
            [
                ("payments-api", v1::Impact::MajorOutage as i32),
                ("dashboard", v1::Impact::DegradedPerformance as i32)
            ]
        );
        let (update, _, _) = request_of(&[
            "update",
            "x",
            "--impact",
            "api=partial_outage",
            "--message",
            "m",
        ]);
        assert_eq!(update.impacts[0].impact, v1::Impact::PartialOutage as i32);
        for bad in ["api", "=major-outage", "api=down", "api=unspecified"] {
            let parsed =
                Cli::try_parse_from(["publish", "update", "x", "--impact", bad, "--message", "m"]);
            assert!(parsed.is_err(), "{bad}");
        }
        // An opening names its components one way or the other.
        let none = Cli::try_parse_from([
            "publish",
            "open",
            "--title",
            "t",
            "--severity",
            "minor",
            "--message",
            "m",
        ]);
        assert!(none.is_err());
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

    #[test]
    fn times_are_rfc3339_or_an_offset_from_now() {
        use time::macros::datetime;
        let now = datetime!(2026-12-07 10:00 UTC);
        assert_eq!(
            parse_time_at("+30m", now).unwrap(),
            datetime!(2026-12-07 10:30 UTC)
        );
        assert_eq!(
            parse_time_at("-14m", now).unwrap(),
            datetime!(2026-12-07 09:46 UTC)
        );
        assert_eq!(
            parse_time_at("+3d", now).unwrap(),
            datetime!(2026-12-10 10:00 UTC)
        );
        assert_eq!(
            parse_time_at("2026-12-10T10:00:00+01:00", now).unwrap(),
            datetime!(2026-12-10 09:00 UTC)
        );
        for bad in ["+30", "+m", "+30s", "+3é", "+", "tomorrow", "2026-12-10"] {
            assert!(parse_time_at(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_kind_can_be_published_with_its_facts_and_promises() {
        let (open, _, _) = request_of(&[
            "open",
            "--title",
            "Checkout errors",
            "--severity",
            "critical",
            "--component",
            "checkout",
            "--message",
            "m",
            "--started-at",
            "2026-12-07T09:12:00Z",
            "--next-update",
            "2026-12-07T10:30:00Z",
            "--action",
            "Retry failed orders.",
        ]);
        assert_eq!(open.started_at.unwrap().seconds, 1_796_634_720);
        assert_eq!(open.next_update_at.unwrap().seconds, 1_796_639_400);
        assert_eq!(open.customer_action, "Retry failed orders.");
        // A start in the past, written as an offset, is a value, not a flag.
        let (update, _, _) = request_of(&["update", "x", "--message", "m", "--started-at", "-14m"]);
        assert!(update.started_at.is_some());
        let (resolve, _, _) = request_of(&["resolve", "x", "--message", "m", "--review-to-follow"]);
        assert!(resolve.review_to_follow);
        let (review, _, done) = request_of(&[
            "review",
            "x",
            "--message",
            "What went wrong.",
            "--link",
            "https://status.acme.test/r/1",
            "--deliver-at",
            "2026-12-10T10:00:00Z",
        ]);
        assert_eq!(done, "reviewed");
        assert_eq!(review.kind, v1::EventKind::Review as i32);
        assert_eq!(review.link, "https://status.acme.test/r/1");
        assert_eq!(review.deliver_at.unwrap().seconds, 1_796_896_800);
        let (scheduled, _, _) = request_of(&[
            "schedule-maintenance",
            "--title",
            "Database upgrade",
            "--component",
            "db",
            "--starts-at",
            "2026-12-12T02:00:00Z",
            "--ends-at",
            "2026-12-12T03:00:00Z",
            "--message",
            "m",
        ]);
        assert_eq!(scheduled.kind, v1::EventKind::MaintenanceScheduled as i32);
        assert_eq!(scheduled.reminders, None, "the defaults unless told");
        let with = |extra: &[&str]| {
            let mut args = vec![
                "schedule-maintenance",
                "--title",
                "t",
                "--component",
                "db",
                "--starts-at",
                "+2d",
                "--ends-at",
                "+3d",
                "--message",
                "m",
            ];
            args.extend_from_slice(extra);
            request_of(&args).0.reminders
        };
        assert_eq!(
            with(&["--reminder", "15", "--reminder", "120"]),
            Some(v1::Reminders {
                minutes_before: vec![15, 120]
            })
        );
        assert_eq!(
            with(&["--no-reminders"]),
            Some(v1::Reminders {
                minutes_before: vec![]
            })
        );
        let window = scheduled.window.unwrap();
        assert_eq!(
            window.ends_at.unwrap().seconds - window.starts_at.unwrap().seconds,
            3600
        );
        let (started, _, _) = request_of(&[
            "start-maintenance",
            "x",
            "--message",
            "m",
            "--next-update",
            "+1h",
        ]);
        assert_eq!(started.kind, v1::EventKind::MaintenanceStarted as i32);
        assert!(started.next_update_at.is_some());
        let (completed, _, _) = request_of(&["complete-maintenance", "x", "--message", "m"]);
        assert_eq!(completed.kind, v1::EventKind::MaintenanceCompleted as i32);
    }
}
