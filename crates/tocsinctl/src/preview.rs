//! `tocsinctl preview`: who an event would reach, per channel and per component, before it is
//! published (`PreviewFanout`). Nothing is recorded and nobody is told.

use time::OffsetDateTime;
use tocsin_proto::{timestamp, v1};

use crate::client::{CtlError, Server};
use crate::deliveries::{channel_word, time_text};
use crate::publish::{Impacts, parse_time, severity_arg};
use crate::watch::enum_word;

#[derive(Debug, clap::Args)]
pub(crate) struct PreviewArgs {
    /// The event: opened, updated, resolved, reopened, review, maintenance-scheduled,
    /// maintenance-started or maintenance-completed. By default `opened`, or `updated` with
    /// `--incident`.
    #[arg(long)]
    kind: Option<String>,
    /// A follow-up of this incident: the event is applied to its current state, so everyone
    /// told before counts.
    #[arg(long)]
    incident: Option<String>,
    /// minor, major or critical (required for a new incident).
    #[arg(long)]
    severity: Option<String>,
    /// An affected component; repeat for several. For a new incident `--impact` alone names
    /// them too.
    #[arg(long = "component")]
    components: Vec<String>,
    #[command(flatten)]
    impacts: Impacts,
    /// When the messages would be sent (`+3d`, or a time): they count as held.
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    deliver_at: Option<OffsetDateTime>,
    /// For maintenance-scheduled: when the work starts, so the reminders are listed.
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true, requires = "ends_at")]
    starts_at: Option<OffsetDateTime>,
    /// For maintenance-scheduled: when the work is planned to end.
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true, requires = "starts_at")]
    ends_at: Option<OffsetDateTime>,
    /// For maintenance-scheduled: a reminder this many minutes before the start; repeat for
    /// several (default: the server's, a day and an hour before).
    #[arg(long = "reminder")]
    reminders: Vec<u32>,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

fn kind_arg(name: &str) -> Result<i32, CtlError> {
    crate::subscriber_file::event_kind(&name.replace('-', "_"))
        .map_err(|m| CtlError::Usage(format!("--kind {}", m.replace('_', "-"))))
}

fn request(args: &PreviewArgs) -> Result<v1::PreviewFanoutRequest, CtlError> {
    let kind = match (&args.kind, &args.incident) {
        (Some(name), _) => kind_arg(name)?,
        (None, None) => v1::EventKind::Opened as i32,
        (None, Some(_)) => v1::EventKind::Updated as i32,
    };
    Ok(v1::PreviewFanoutRequest {
        incident_id: args.incident.clone().unwrap_or_default(),
        kind,
        severity: args
            .severity
            .as_deref()
            .map(severity_arg)
            .transpose()?
            .unwrap_or_default(),
        components: args.components.clone(),
        window: args
            .starts_at
            .zip(args.ends_at)
            .map(|(starts_at, ends_at)| v1::MaintenanceWindow {
                starts_at: Some(timestamp(starts_at)),
                ends_at: Some(timestamp(ends_at)),
            }),
        reminders: (!args.reminders.is_empty()).then(|| v1::Reminders {
            minutes_before: args.reminders.clone(),
        }),
        deliver_at: args.deliver_at.map(timestamp),
        impacts: args.impacts.impacts.clone(),
    })
}

pub(crate) async fn run(server: &Server, args: PreviewArgs) -> Result<(), CtlError> {
    let reply = server
        .subscribers()
        .preview_fanout(request(&args)?)
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    if args.json {
        println!("{}", reach_json(&reply));
    } else {
        print!("{}", render(&reply));
    }
    Ok(())
}

fn impact_word(raw: i32) -> String {
    match v1::Impact::try_from(raw) {
        Ok(v1::Impact::Unspecified) | Err(_) => "-".to_owned(),
        Ok(i) => enum_word(i.as_str_name(), "IMPACT_").replace('_', "-"),
    }
}

fn kind_word(raw: i32) -> String {
    v1::EventKind::try_from(raw)
        .map(|k| enum_word(k.as_str_name(), "EVENT_KIND_").replace('_', "-"))
        .unwrap_or_else(|_| raw.to_string())
}

fn render(reach: &v1::PreviewFanoutResponse) -> String {
    let deliveries: u64 = reach.channels.iter().map(|c| c.deliveries).sum();
    let mut out = format!(
        "would reach {} recipients with {deliveries} deliveries ({} held until later)\n",
        reach.recipients, reach.held
    );
    if reach.channels.is_empty() {
        out.push_str("nobody follows what it affects\n");
        return out;
    }
    let channels: Vec<Vec<String>> = reach
        .channels
        .iter()
        .map(|c| vec![channel_word(c.channel), c.deliveries.to_string()])
        .collect();
    out.push_str(&crate::table::render(&["CHANNEL", "DELIVERIES"], &channels));
    if !reach.components.is_empty() {
        let components: Vec<Vec<String>> = reach
            .components
            .iter()
            .map(|c| {
                vec![
                    c.component.clone(),
                    c.recipients.to_string(),
                    impact_word(c.impact),
                    c.name.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::table::render(
            &["COMPONENT", "RECIPIENTS", "IMPACT", "NAME"],
            &components,
        ));
    }
    if !reach.scheduled.is_empty() {
        let scheduled: Vec<Vec<String>> = reach
            .scheduled
            .iter()
            .map(|n| {
                let channels = n
                    .channels
                    .iter()
                    .map(|c| format!("{} {}", channel_word(c.channel), c.deliveries))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![
                    time_text(n.at.as_ref()),
                    kind_word(n.kind),
                    n.recipients.to_string(),
                    channels,
                ]
            })
            .collect();
        out.push_str("\nlater, by the maintenance clock:\n");
        out.push_str(&crate::table::render(
            &["AT", "KIND", "RECIPIENTS", "DELIVERIES"],
            &scheduled,
        ));
    }
    out
}

fn reach_json(reach: &v1::PreviewFanoutResponse) -> serde_json::Value {
    let channels = |counts: &[v1::ChannelCount]| {
        counts
            .iter()
            .map(|c| (channel_word(c.channel), serde_json::json!(c.deliveries)))
            .collect::<serde_json::Map<_, _>>()
    };
    serde_json::json!({
        "recipients": reach.recipients,
        "held": reach.held,
        "channels": channels(&reach.channels),
        "components": reach.components.iter().map(|c| serde_json::json!({
            "component": c.component,
            "name": c.name,
            "impact": impact_word(c.impact),
            "recipients": c.recipients,
        })).collect::<Vec<_>>(),
        "scheduled": reach.scheduled.iter().map(|n| serde_json::json!({
            "kind": kind_word(n.kind),
            "at": time_text(n.at.as_ref()),
            "recipients": n.recipients,
            "channels": channels(&n.channels),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PreviewArgs,
    }

    fn request_of(args: &[&str]) -> Result<v1::PreviewFanoutRequest, CtlError> {
        let cli = Cli::try_parse_from(std::iter::once("preview").chain(args.iter().copied()))
            .expect("parses");
        request(&cli.args)
    }

    #[test]
    fn an_opening_by_default_and_an_update_of_a_named_incident() {
        let open = request_of(&[
            "--severity",
            "major",
            "--component",
            "api",
            "--impact",
            "db=partial-outage",
        ])
        .unwrap();
        assert_eq!(open.kind, v1::EventKind::Opened as i32);
        assert_eq!(open.severity, v1::Severity::Major as i32);
        assert_eq!(open.components, ["api"]);
        assert_eq!(open.impacts[0].impact, v1::Impact::PartialOutage as i32);
        let follow_up = request_of(&["--incident", "x"]).unwrap();
        assert_eq!(follow_up.kind, v1::EventKind::Updated as i32);
        assert_eq!(follow_up.incident_id, "x");
        let resolve = request_of(&["--incident", "x", "--kind", "resolved"]).unwrap();
        assert_eq!(resolve.kind, v1::EventKind::Resolved as i32);
        let maintenance = request_of(&[
            "--kind",
            "maintenance-scheduled",
            "--component",
            "db",
            "--starts-at",
            "+2d",
            "--ends-at",
            "+3d",
            "--reminder",
            "60",
        ])
        .unwrap();
        assert_eq!(maintenance.kind, v1::EventKind::MaintenanceScheduled as i32);
        assert!(maintenance.window.is_some());
        assert_eq!(maintenance.reminders.unwrap().minutes_before, [60]);
        let err = request_of(&["--kind", "closed"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("maintenance-scheduled"), "{err}");
        assert_eq!(
            request_of(&["--severity", "huge"]).unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn the_reach_reads_per_channel_and_per_component() {
        let reach = v1::PreviewFanoutResponse {
            recipients: 5,
            held: 1,
            channels: vec![
                v1::ChannelCount {
                    channel: v1::Channel::Email as i32,
                    deliveries: 3,
                },
                v1::ChannelCount {
                    channel: v1::Channel::Webhook as i32,
                    deliveries: 2,
                },
            ],
            components: vec![v1::ComponentCount {
                component: "api".into(),
                recipients: 5,
                name: "Public API".into(),
                impact: v1::Impact::MajorOutage as i32,
            }],
            scheduled: Vec::new(),
        };
        let text = render(&reach);
        assert!(
            text.starts_with("would reach 5 recipients with 5 deliveries (1 held until later)\n"),
            "{text}"
        );
        let row = |first: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(first))
                .unwrap_or_else(|| panic!("no {first} row in {text}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(row("email"), ["email", "3"]);
        assert_eq!(row("webhook"), ["webhook", "2"]);
        assert_eq!(row("api"), ["api", "5", "major-outage", "Public", "API"]);
        let json = reach_json(&reach);
        assert_eq!(json["channels"]["email"], 3);
        assert_eq!(json["components"][0]["impact"], "major-outage");
    }
}
