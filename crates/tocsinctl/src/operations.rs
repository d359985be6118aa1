//! `tocsinctl replay`, `rebuild` and `republish`: repairs, with progress on the long ones.
//! A replay shows what it would put back and asks first.

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
    /// Only show what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replay without asking (needed when standard input is not a terminal).
    #[arg(long, conflicts_with = "dry_run")]
    yes: bool,
}

/// At most this many dead letters are listed before a replay; the count covers them all.
const SHOWN: usize = 20;

/// What a replay would put back, as far as the API can say beforehand: an incident's dead
/// letters are counted from its ledger and the first ones listed; across every incident the
/// API offers no count, and the plan says so rather than guess.
struct Plan {
    /// The number of dead letters, when it can be known.
    count: Option<u64>,
    text: String,
}

async fn plan(
    server: &Server,
    incident: Option<&str>,
    channel: i32,
    channel_name: Option<&str>,
) -> Result<Plan, CtlError> {
    let on = channel_name.map_or_else(String::new, |c| format!(" on {c}"));
    let Some(incident) = incident else {
        return Ok(Plan {
            count: None,
            text: format!(
                "this replays every dead letter of every incident{on}; the API cannot count \
                 them without an incident (pass --incident to see them first)\n"
            ),
        });
    };
    // Paging the ledger counts exactly what the replay would touch, and needs the same
    // operator role as the replay, so a publisher's token is refused before any question.
    let request = v1::ListDeliveriesRequest {
        incident_id: incident.to_owned(),
        channel,
        states: vec![v1::DeliveryState::Dead as i32],
        page_size: 1_000,
        ..Default::default()
    };
    let dead = crate::deliveries::collect(server, request, usize::MAX).await?;
    let count = dead.len() as u64;
    let mut text = format!("incident {incident} has {count} dead letters{on} to replay\n");
    if count > 0 {
        let rows: Vec<Vec<String>> = dead
            .iter()
            .take(SHOWN)
            .map(|d| {
                vec![
                    d.event_version.to_string(),
                    crate::deliveries::channel_word(d.channel),
                    d.external_id.clone(),
                    d.attempts.to_string(),
                    d.last_error.clone(),
                ]
            })
            .collect();
        text.push_str(&crate::table::render(
            &["VERSION", "CHANNEL", "SUBSCRIBER", "ATTEMPTS", "LAST_ERROR"],
            &rows,
        ));
        if count > rows.len() as u64 {
            text.push_str(&format!("(the first {} of {count})\n", rows.len()));
        }
    }
    Ok(Plan {
        count: Some(count),
        text,
    })
}

pub(crate) async fn replay(server: &Server, args: ReplayArgs) -> Result<(), CtlError> {
    let channel = args
        .channel
        .as_deref()
        .map(crate::deliveries::channel_arg)
        .transpose()?
        .unwrap_or_default();
    let plan = plan(
        server,
        args.incident.as_deref(),
        channel,
        args.channel.as_deref(),
    )
    .await?;
    print!("{}", plan.text);
    if plan.count == Some(0) {
        return Ok(());
    }
    if args.dry_run {
        println!("dry run: nothing was replayed");
        return Ok(());
    }
    let question = match plan.count {
        Some(n) => format!("Put these {n} dead letters back in the queue?"),
        None => "Put every dead letter of every incident back in the queue?".to_owned(),
    };
    if !crate::confirm::confirm(&question, args.yes, "replay")? {
        eprintln!("not confirmed; nothing was replayed");
        return Ok(());
    }
    let request = v1::ReplayDeadLettersRequest {
        incident_id: args.incident.clone().unwrap_or_default(),
        channel,
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

/// Where a long operation stands, as its progress messages say it.
struct Step {
    total: u64,
    done_so_far: u64,
    note: String,
    finished: bool,
}

/// Follows a progress stream with a bar until its last message, which it returns. A stream
/// that ends without one means the server went away mid-way.
async fn follow<T>(
    server: &Server,
    what: &str,
    mut stream: tonic::Streaming<T>,
    step: impl Fn(&T) -> Step,
) -> Result<T, CtlError> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} events {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    while let Some(message) = stream.next().await {
        let message = message.map_err(|status| {
            bar.abandon();
            server.fail(status)
        })?;
        let now = step(&message);
        bar.set_length(now.total.max(now.done_so_far));
        bar.set_position(now.done_so_far);
        bar.set_message(now.note);
        if now.finished {
            bar.finish_and_clear();
            return Ok(message);
        }
    }
    bar.abandon();
    Err(CtlError::Unreachable(format!(
        "{} ended the {what} stream before it finished; run it again (it is safe)",
        server.endpoint
    )))
}

pub(crate) async fn rebuild(server: &Server, dry_run: bool) -> Result<(), CtlError> {
    let stream = server
        .operations()
        .rebuild_projections(v1::RebuildProjectionsRequest { dry_run })
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    let what = if dry_run { "checking" } else { "rebuilding" };
    let last = follow(server, what, stream, |p: &v1::RebuildProgress| Step {
        total: p.total_events,
        done_so_far: p.events,
        note: format!("{} incidents", p.incidents),
        finished: p.done,
    })
    .await?;
    if dry_run {
        println!(
            "checked {} incidents ({} events): {} differ from the fold of their log; nothing changed",
            last.incidents, last.events, last.drifted
        );
    } else {
        println!(
            "rebuilt {} incidents from {} events; {} had drifted and were corrected",
            last.incidents, last.events, last.drifted
        );
    }
    Ok(())
}

pub(crate) async fn republish(server: &Server, from_position: i64) -> Result<(), CtlError> {
    let stream = server
        .operations()
        .republish_events(v1::RepublishEventsRequest { from_position })
        .await
        .map_err(|status| server.fail(status))?
        .into_inner();
    let last = follow(
        server,
        "republishing",
        stream,
        |p: &v1::RepublishProgress| Step {
            total: p.total_events,
            done_so_far: p.events,
            note: format!("up to position {}", p.last_position),
            finished: p.done,
        },
    )
    .await?;
    println!(
        "republished {} events from position {} through {}",
        last.events,
        from_position.max(1),
        last.last_position
    );
    Ok(())
}
