//! `tocsinctl replay`, `rebuild` and `republish`: repairs, with progress on the long ones.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tocsin_proto::v1;

use crate::client::{CtlError, Server};

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// Only this incident's dead letters.
    #[arg(long)]
    incident: Option<String>,
    /// Only this channel's: email, sms or webhook.
    #[arg(long)]
    channel: Option<String>,
}

pub(crate) async fn replay(server: &Server, args: ReplayArgs) -> Result<(), CtlError> {
    let request = v1::ReplayDeadLettersRequest {
        incident_id: args.incident.clone().unwrap_or_default(),
        channel: args
            .channel
            .as_deref()
            .map(crate::deliveries::channel_arg)
            .transpose()?
            .unwrap_or_default(),
    };
    let reply = server
        .incidents()
        .replay_dead_letters(request)
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    println!(
        "{} dead letters put back in the queue{}",
        reply.replayed,
        match (&args.incident, &args.channel) {
            (Some(i), Some(c)) => format!(" (incident {i}, {c})"),
            (Some(i), None) => format!(" (incident {i})"),
            (None, Some(c)) => format!(" ({c})"),
            (None, None) => String::new(),
        }
    );
    Ok(())
}

fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} events {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

pub(crate) async fn rebuild(server: &Server, dry_run: bool) -> Result<(), CtlError> {
    let mut stream = server
        .operations()
        .rebuild_projections(v1::RebuildProjectionsRequest { dry_run })
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    let bar = bar(if dry_run { "checking" } else { "rebuilding" });
    while let Some(progress) = stream.next().await {
        let progress = progress.map_err(|status| {
            bar.abandon();
            server.fail(status)
        })?;
        bar.set_length(progress.total_events.max(progress.events));
        bar.set_position(progress.events);
        bar.set_message(format!("{} incidents", progress.incidents));
        if progress.done {
            bar.finish_and_clear();
            if dry_run {
                println!(
                    "checked {} incidents ({} events): {} differ from the fold of their log; nothing changed",
                    progress.incidents, progress.events, progress.drifted
                );
            } else {
                println!(
                    "rebuilt {} incidents from {} events; {} had drifted and were corrected",
                    progress.incidents, progress.events, progress.drifted
                );
            }
            return Ok(());
        }
    }
    bar.abandon();
    Err(CtlError::Unreachable(format!(
        "{} ended the rebuild's stream before it finished; run it again (it is safe)",
        server.endpoint
    )))
}

pub(crate) async fn republish(server: &Server, from_position: i64) -> Result<(), CtlError> {
    let mut stream = server
        .operations()
        .republish_events(v1::RepublishEventsRequest { from_position })
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    let bar = bar("republishing");
    while let Some(progress) = stream.next().await {
        let progress = progress.map_err(|status| {
            bar.abandon();
            server.fail(status)
        })?;
        bar.set_length(progress.total_events.max(progress.events));
        bar.set_position(progress.events);
        bar.set_message(format!("up to position {}", progress.last_position));
        if progress.done {
            bar.finish_and_clear();
            println!(
                "republished {} events from position {} through {}",
                progress.events,
                from_position.max(1),
                progress.last_position
            );
            return Ok(());
        }
    }
    bar.abandon();
    Err(CtlError::Unreachable(format!(
        "{} ended the republish's stream before it finished; run it again (it is safe)",
        server.endpoint
    )))
}
