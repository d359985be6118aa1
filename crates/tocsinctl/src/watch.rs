//! `tocsinctl show` and `tocsinctl watch`: an incident's delivery progress per channel, once
//! or live with progress bars until every delivery is settled.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tocsin_proto::v1;

use crate::client::{CtlError, Server};

#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// The incident id.
    incident: String,
    /// How often to ask the server, in milliseconds.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Give up after this many seconds (exit code 1); by default wait until done or Ctrl-C.
    #[arg(long)]
    timeout: Option<u64>,
}

/// What `watch --help` adds below the flags: how a script tells the endings apart.
pub(crate) const WATCH_EXIT_CODES: &str = "Exit codes: 0 every delivery settled and none is dead \
(failed ones, refused for good, do not count); 5 every delivery settled and some are dead (replay \
them with `tocsinctl replay --incident INCIDENT`); 1 --timeout passed first; 2, 3, 4 as for every \
command (bad usage, server unreachable, token refused).";

/// `SEVERITY_MAJOR` -> `major`.
pub(crate) fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn channel_name(raw: i32) -> String {
    v1::Channel::try_from(raw)
        .map(|c| enum_word(c.as_str_name(), "CHANNEL_"))
        .unwrap_or_else(|_| raw.to_string())
}

/// Deliveries the resolver recorded for this channel.
fn resolved(p: &v1::ChannelProgress) -> u64 {
    p.pending
        + p.sending
        + p.retrying
        + p.delivered
        + p.unknown
        + p.failed
        + p.dead
        + p.superseded
        + p.skipped
}

/// Deliveries no worker will pick up again by itself. Held ones wait for quiet hours to end.
fn settled(p: &v1::ChannelProgress) -> u64 {
    p.delivered + p.unknown + p.failed + p.dead + p.superseded + p.skipped
}

/// Done: every event is fanned out, and nothing is pending (other than held by quiet
/// hours), being sent or waiting for a retry.
pub(crate) fn is_done(incident: &v1::Incident) -> bool {
    incident.fanned_out_version >= incident.version
        && incident
            .delivery
            .iter()
            .all(|p| p.pending.saturating_sub(p.held) == 0 && p.sending == 0 && p.retrying == 0)
}

fn channel_line(p: &v1::ChannelProgress) -> String {
    let mut parts = vec![
        format!("delivered {}", p.delivered),
        format!("retrying {}", p.retrying),
        format!("failed {}", p.failed),
        format!("dead {}", p.dead),
    ];
    for (word, n) in [
        ("sending", p.sending),
        ("held", p.held),
        ("unknown", p.unknown),
        ("superseded", p.superseded),
        ("skipped", p.skipped),
    ] {
        if n > 0 {
            parts.push(format!("{word} {n}"));
        }
    }
    parts.join(" · ")
}

fn headline(incident: &v1::Incident) -> String {
    let severity = v1::Severity::try_from(incident.severity)
        .map(|s| enum_word(s.as_str_name(), "SEVERITY_"))
        .unwrap_or_default();
    let status = v1::IncidentStatus::try_from(incident.status)
        .map(|s| enum_word(s.as_str_name(), "INCIDENT_STATUS_"))
        .unwrap_or_default();
    format!(
        "incident {} \"{}\": {severity}, {status}, version {} (fanned out through {})",
        incident.incident_id, incident.title, incident.version, incident.fanned_out_version
    )
}

/// "Payments API [payments-api] major outage, Dashboard [dashboard]": names as customers
/// read them, ids as publishers write them.
pub(crate) fn affected(components: &[v1::ComponentImpact]) -> String {
    components
        .iter()
        .map(|c| {
            let impact = v1::Impact::try_from(c.impact)
                .ok()
                .filter(|i| *i != v1::Impact::Unspecified)
                .map(|i| {
                    format!(
                        " {}",
                        enum_word(i.as_str_name(), "IMPACT_").replace('_', " ")
                    )
                })
                .unwrap_or_default();
            if c.name == c.component || c.name.is_empty() {
                format!("{}{impact}", c.component)
            } else {
                format!("{} [{}]{impact}", c.name, c.component)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The incident and its table of deliveries per channel and state.
pub(crate) fn render(incident: &v1::Incident) -> String {
    let mut out = format!("{}\n", headline(incident));
    if !incident.affected.is_empty() {
        out.push_str(&format!("affected: {}\n", affected(&incident.affected)));
    }
    if incident.delivery.is_empty() {
        out.push_str(
            "no deliveries (nobody follows what it affects, or the fan-out is still running)\n",
        );
        return out;
    }
    let header = [
        "CHANNEL",
        "RESOLVED",
        "DELIVERED",
        "PENDING",
        "HELD",
        "SENDING",
        "RETRYING",
        "UNKNOWN",
        "FAILED",
        "DEAD",
        "SUPERSEDED",
        "SKIPPED",
    ];
    let rows: Vec<Vec<String>> = incident
        .delivery
        .iter()
        .map(|p| {
            let mut row = vec![channel_name(p.channel)];
            row.extend(
                [
                    resolved(p),
                    p.delivered,
                    p.pending,
                    p.held,
                    p.sending,
                    p.retrying,
                    p.unknown,
                    p.failed,
                    p.dead,
                    p.superseded,
                    p.skipped,
                ]
                .iter()
                .map(u64::to_string),
            );
            row
        })
        .collect();
    out.push_str(&crate::table::render(&header, &rows));
    out
}

async fn fetch(server: &Server, incident: &str) -> Result<v1::Incident, CtlError> {
    server
        .incidents()
        .get_incident(v1::GetIncidentRequest {
            incident_id: incident.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| server.fail(status))
}

pub(crate) async fn show(server: &Server, incident: &str) -> Result<(), CtlError> {
    print!("{}", render(&fetch(server, incident).await?));
    Ok(())
}

/// Bars on a terminal; elsewhere (a pipe, CI) one line on stderr whenever the counts change.
struct Display {
    multi: MultiProgress,
    header: ProgressBar,
    bars: Vec<(i32, ProgressBar)>,
    plain: bool,
    last_plain: String,
}

impl Display {
    fn new() -> Display {
        let multi = MultiProgress::new();
        let header = multi.add(ProgressBar::new_spinner());
        header.enable_steady_tick(Duration::from_millis(120));
        Display {
            multi,
            header,
            bars: Vec::new(),
            plain: !std::io::stderr().is_terminal(),
            last_plain: String::new(),
        }
    }

    fn update(&mut self, incident: &v1::Incident) {
        self.header.set_message(headline(incident));
        for p in &incident.delivery {
            let bar = match self.bars.iter().find(|(c, _)| *c == p.channel) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>8} [{bar:30}] {pos}/{len} settled  {msg}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(channel_name(p.channel));
                    self.bars.push((p.channel, bar.clone()));
                    bar
                }
            };
            bar.set_length(resolved(p));
            bar.set_position(settled(p));
            bar.set_message(channel_line(p));
        }
        if self.plain {
            let line = incident
                .delivery
                .iter()
                .map(|p| {
                    format!(
                        "{} {}/{} settled ({})",
                        channel_name(p.channel),
                        settled(p),
                        resolved(p),
                        channel_line(p)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            if line != self.last_plain {
                eprintln!("{line}");
                self.last_plain = line;
            }
        }
    }

    fn finish(self) {
        self.header.finish_and_clear();
        for (_, bar) in self.bars {
            bar.finish();
        }
    }
}

pub(crate) async fn watch(server: &Server, args: WatchArgs) -> Result<(), CtlError> {
    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut display = Display::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(args.interval_ms.max(50)));
    let incident = loop {
        ticks.tick().await;
        let incident = fetch(server, &args.incident).await?;
        display.update(&incident);
        if is_done(&incident) {
            break incident;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            display.finish();
            print!("{}", render(&incident));
            return Err(CtlError::Refused(format!(
                "not done after {} s: deliveries are still pending, sending or retrying",
                args.timeout.unwrap_or_default()
            )));
        }
    };
    display.finish();
    print!("{}", render(&incident));
    let total: u64 = incident.delivery.iter().map(resolved).sum();
    let sum = |f: fn(&v1::ChannelProgress) -> u64| incident.delivery.iter().map(f).sum::<u64>();
    println!(
        "done: {total} deliveries settled: {} delivered, {} failed, {} dead, {} unknown{}",
        sum(|p| p.delivered),
        sum(|p| p.failed),
        sum(|p| p.dead),
        sum(|p| p.unknown),
        match sum(|p| p.held) {
            0 => String::new(),
            held => format!("; {held} held by quiet hours go out when the windows end"),
        }
    );
    // A script waiting on `watch` must see that some customers were not told.
    match sum(|p| p.dead) {
        0 => Ok(()),
        dead => Err(CtlError::DeliveriesDead(format!(
            "{dead} deliveries ended dead; replay them once the cause is fixed: tocsinctl \
             replay --incident {}",
            incident.incident_id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(version: u64, fanned_out: u64, progress: Vec<v1::ChannelProgress>) -> v1::Incident {
        v1::Incident {
            incident_id: "i".into(),
            version,
            fanned_out_version: fanned_out,
            delivery: progress,
            ..Default::default()
        }
    }

    fn email(f: impl FnOnce(&mut v1::ChannelProgress)) -> v1::ChannelProgress {
        let mut p = v1::ChannelProgress {
            channel: v1::Channel::Email as i32,
            ..Default::default()
        };
        f(&mut p);
        p
    }

    #[test]
    fn done_only_when_fanned_out_and_nothing_is_in_flight() {
        let settled = email(|p| {
            p.delivered = 3;
            p.dead = 1;
        });
        assert!(is_done(&incident(2, 2, vec![settled])));
        assert!(
            !is_done(&incident(3, 2, vec![settled])),
            "event 3 not fanned out yet"
        );
        assert!(!is_done(&incident(1, 1, vec![email(|p| p.retrying = 1)])));
        assert!(!is_done(&incident(1, 1, vec![email(|p| p.sending = 1)])));
        assert!(!is_done(&incident(1, 1, vec![email(|p| p.pending = 2)])));
        assert!(
            is_done(&incident(
                1,
                1,
                vec![email(|p| {
                    p.pending = 2;
                    p.held = 2;
                })]
            )),
            "held by quiet hours: nothing to wait for now"
        );
        assert!(is_done(&incident(1, 1, vec![])), "nobody to tell");
    }

    #[test]
    fn the_table_counts_every_state() {
        let text = render(&incident(
            1,
            1,
            vec![email(|p| {
                p.delivered = 5;
                p.failed = 1;
                p.pending = 2;
                p.held = 2;
            })],
        ));
        let row = text.lines().find(|l| l.starts_with("email")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "email", "8", "5", "2", "2", "0", "0", "0", "1", "0", "0", "0"
            ]
        );
    }
}
