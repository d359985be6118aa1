//! `tocsinctl drafts list|publish|discard`: incidents that alerts under a rule with `hold`
//! proposed, waiting for an operator (see README, "Monitoring tools").

use tocsin_proto::v1;

use crate::client::{CtlError, Server};
use crate::deliveries::time_text;
use crate::watch::enum_word;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DraftsCommand {
    /// The drafts waiting, oldest first.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish a draft: customers following its components are told, as for any opening.
    Publish {
        /// The draft's incident id (from `drafts list`).
        incident: String,
    },
    /// Discard a draft: customers hear nothing of this occurrence of the alert.
    Discard {
        /// The draft's incident id (from `drafts list`).
        incident: String,
    },
}

pub(crate) async fn run(server: &Server, command: DraftsCommand) -> Result<(), CtlError> {
    match command {
        DraftsCommand::List { json } => {
            let drafts = server
                .incidents()
                .list_drafts(v1::ListDraftsRequest { page_size: 1_000 })
                .await
                .map_err(|status| server.fail(status))?
                .into_inner()
                .drafts;
            print!("{}", render(&drafts, json));
            Ok(())
        }
        DraftsCommand::Publish { incident } => {
            let published = server
                .incidents()
                .publish_draft(v1::PublishDraftRequest {
                    incident_id: incident,
                })
                .await
                .map_err(|status| server.fail(status))?
                .into_inner();
            println!(
                "published incident {} (version {}); `tocsinctl watch {0}` follows its deliveries",
                published.incident_id, published.incident_version
            );
            Ok(())
        }
        DraftsCommand::Discard { incident } => {
            server
                .incidents()
                .discard_draft(v1::DiscardDraftRequest {
                    incident_id: incident.clone(),
                })
                .await
                .map_err(|status| server.fail(status))?;
            println!("discarded the draft of incident {incident}; customers hear nothing of it");
            Ok(())
        }
    }
}

fn render(drafts: &[v1::Draft], json: bool) -> String {
    let severity = |raw: i32| {
        v1::Severity::try_from(raw)
            .map(|s| enum_word(s.as_str_name(), "SEVERITY_"))
            .unwrap_or_default()
    };
    let when = |at: &Option<prost_types::Timestamp>| time_text(at.as_ref());
    if json {
        return drafts
            .iter()
            .map(|d| {
                serde_json::json!({
                    "incident_id": d.incident_id,
                    "title": d.title,
                    "severity": severity(d.severity),
                    "components": d.components,
                    "message": d.message,
                    "source": d.source,
                    "notifications": d.notifications,
                    "created_at": when(&d.created_at),
                    "updated_at": when(&d.updated_at),
                })
                .to_string()
                    + "\n"
            })
            .collect();
    }
    if drafts.is_empty() {
        return "no drafts waiting\n".to_owned();
    }
    let rows: Vec<Vec<String>> = drafts
        .iter()
        .map(|d| {
            vec![
                d.incident_id.clone(),
                when(&d.created_at),
                severity(d.severity),
                d.components.join(","),
                d.title.clone(),
                d.notifications.to_string(),
                d.source.clone(),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "INCIDENT",
            "HELD SINCE",
            "SEVERITY",
            "COMPONENTS",
            "TITLE",
            "ALERTS",
            "SOURCE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_render_as_a_table_and_as_json_lines() {
        let draft = v1::Draft {
            incident_id: "0193-draft".into(),
            title: "Payments API errors".into(),
            severity: v1::Severity::Critical as i32,
            components: vec!["api".into()],
            message: "Some card payments fail.".into(),
            source: "monitoring".into(),
            notifications: 3,
            ..Default::default()
        };
        let table = render(std::slice::from_ref(&draft), false);
        assert!(table.starts_with("INCIDENT"), "{table}");
        assert!(
            table.contains("critical") && table.contains("Payments API errors"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(render(&[draft], true).trim()).unwrap();
        assert_eq!(json["notifications"], 3);
        assert_eq!(json["severity"], "critical");
        assert_eq!(render(&[], false), "no drafts waiting\n");
    }
}
