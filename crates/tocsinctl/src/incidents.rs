//! `tocsinctl incidents`: find incidents again, newest first, filtered.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tocsin_proto::v1;

use crate::client::{CtlError, Server};
use crate::publish::parse_time;
use crate::subscriber_file::severity;
use crate::watch::{affected, enum_word};

#[derive(Debug, clap::Args)]
pub(crate) struct IncidentsArgs {
    /// Only in this status (investigating, identified, monitoring, resolved, scheduled,
    /// in-progress, completed); repeat for several.
    #[arg(long = "status", value_parser = parse_status)]
    statuses: Vec<i32>,
    /// Only those affecting this component.
    #[arg(long)]
    component: Option<String>,
    /// Only those at or above this severity (minor, major, critical).
    #[arg(long, value_parser = severity)]
    min_severity: Option<i32>,
    /// Only those opened at or after this time (`-7d`, or RFC 3339).
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    since: Option<OffsetDateTime>,
    /// Only those opened before this time.
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    until: Option<OffsetDateTime>,
    /// Only incidents, or only maintenances.
    #[arg(long, value_parser = ["incident", "maintenance"])]
    kind: Option<String>,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_status(raw: &str) -> Result<i32, String> {
    let name = format!(
        "INCIDENT_STATUS_{}",
        raw.trim().to_ascii_uppercase().replace(['-', ' '], "_")
    );
    v1::IncidentStatus::from_str_name(&name)
        .filter(|s| *s != v1::IncidentStatus::Unspecified)
        .map(|s| s as i32)
        .ok_or_else(|| format!("{raw:?} is not a status"))
}

impl IncidentsArgs {
    fn request(&self) -> v1::ListIncidentsRequest {
        v1::ListIncidentsRequest {
            statuses: self.statuses.clone(),
            component: self.component.clone().unwrap_or_default(),
            min_severity: self.min_severity.unwrap_or_default(),
            opened_after: self.since.map(tocsin_proto::timestamp),
            opened_before: self.until.map(tocsin_proto::timestamp),
            kind: match self.kind.as_deref() {
                Some("incident") => v1::IncidentKind::Incident as i32,
                Some("maintenance") => v1::IncidentKind::Maintenance as i32,
                _ => 0,
            },
            page_size: self.limit.clamp(1, 1_000),
            page_token: String::new(),
        }
    }
}

fn opened(incident: &v1::Incident) -> String {
    incident
        .opened_at
        .as_ref()
        .and_then(|ts| tocsin_proto::to_offset_datetime("opened_at", ts).ok())
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn word(name: &str, prefix: &str) -> String {
    enum_word(name, prefix).replace('_', "-")
}

fn row(i: &v1::Incident) -> Vec<String> {
    vec![
        i.incident_id.clone(),
        opened(i),
        word(
            v1::IncidentKind::try_from(i.kind).map_or("", |k| k.as_str_name()),
            "INCIDENT_KIND_",
        ),
        word(
            v1::IncidentStatus::try_from(i.status).map_or("", |s| s.as_str_name()),
            "INCIDENT_STATUS_",
        ),
        word(
            v1::Severity::try_from(i.severity).map_or("", |s| s.as_str_name()),
            "SEVERITY_",
        ),
        i.title.clone(),
        affected(&i.affected),
    ]
}

fn as_json(i: &v1::Incident) -> serde_json::Value {
    let cells = row(i);
    serde_json::json!({
        "incident_id": cells[0], "opened_at": cells[1], "kind": cells[2], "status": cells[3],
        "severity": cells[4], "title": cells[5], "version": i.version,
        "components": i.affected.iter().map(|a| a.component.clone()).collect::<Vec<_>>(),
    })
}

pub(crate) async fn run(server: &Server, args: IncidentsArgs) -> Result<(), CtlError> {
    let mut request = args.request();
    let mut found: Vec<v1::Incident> = Vec::new();
    loop {
        let page = server
            .incidents()
            .list_incidents(request.clone())
            .await
            .map_err(|status| server.fail(status))?
            .into_inner();
        found.extend(page.incidents);
        if page.next_page_token.is_empty() || found.len() >= args.limit as usize {
            break;
        }
        request.page_token = page.next_page_token;
    }
    found.truncate(args.limit as usize);
    if args.json {
        for incident in &found {
            println!("{}", as_json(incident));
        }
    } else if found.is_empty() {
        println!("no incidents match");
    } else {
        let rows: Vec<Vec<String>> = found.iter().map(row).collect();
        crate::table::print(
            &[
                "INCIDENT", "OPENED", "KIND", "STATUS", "SEVERITY", "TITLE", "AFFECTED",
            ],
            &rows,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_operators_write_them() {
        assert_eq!(
            parse_status("in-progress"),
            Ok(v1::IncidentStatus::InProgress as i32)
        );
        assert_eq!(
            parse_status("Resolved"),
            Ok(v1::IncidentStatus::Resolved as i32)
        );
        assert!(parse_status("unspecified").is_err());
        assert!(parse_status("fixed").is_err());
    }

    #[test]
    fn a_row_names_everything_an_operator_looks_for() {
        let incident = v1::Incident {
            incident_id: "0193".into(),
            kind: v1::IncidentKind::Incident as i32,
            status: v1::IncidentStatus::InProgress as i32,
            severity: v1::Severity::Major as i32,
            title: "API errors".into(),
            opened_at: Some(prost_types::Timestamp {
                seconds: 1_796_000_000,
                nanos: 0,
            }),
            affected: vec![v1::ComponentImpact {
                component: "api".into(),
                name: "Public API".into(),
                impact: v1::Impact::MajorOutage as i32,
            }],
            ..Default::default()
        };
        assert_eq!(
            row(&incident),
            [
                "0193",
                "2026-11-30T00:53:20Z",
                "incident",
                "in-progress",
                "major",
                "API errors",
                "Public API [api] major outage"
            ]
        );
    }
}
