//! What a scenario reports: a table row, one JSON line, and when it fails a diagnosis (which
//! keys, in which ledger state, with which trail, for which event), printed in short and
//! written in full to `diagnosis.txt` beside the process logs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use sqlx::PgPool;

use super::check::{SETTLE_LIMIT, Settled, Verdict};
use super::drive::Driven;
use super::ledger;
use super::scenarios::Plan;
use super::supervisor::Exit;
use super::world::{ExpectedDelivery, Subscriber};

/// What a scenario measured, for its report.
pub(super) struct Measured<'a> {
    pub(super) verdict: &'a Verdict,
    pub(super) settled: Settled,
    pub(super) driven: &'a Driven,
    /// Provider fault rules installed.
    pub(super) provider_rules: usize,
    pub(super) faults_fired: Option<u64>,
    pub(super) exits: &'a [Exit],
    pub(super) publish_retries: u64,
}

/// One scenario's outcome; the field order is the JSON line's.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ScenarioReport {
    pub(super) torture: String,
    pub(super) seed: u64,
    pub(super) expected: usize,
    pub(super) delivered: usize,
    pub(super) lost: usize,
    pub(super) unexpected: usize,
    pub(super) duplicates: usize,
    pub(super) duplicates_allowed: usize,
    pub(super) stuck: usize,
    pub(super) order_violations: usize,
    /// Email and SMS messages a newer one replaced before they went out (allowed).
    pub(super) superseded: usize,
    /// Fallback notices received, each backed by the failure it tells of (allowed, once).
    pub(super) fallback_notices: usize,
    pub(super) settled: bool,
    pub(super) settle_s: f64,
    pub(super) kills: usize,
    /// PostgreSQL restarts and NATS wipes, plus provider fault rules installed.
    pub(super) faults: usize,
    #[serde(skip)]
    fault_labels: Vec<&'static str>,
    /// Uses of the provider fault rules that were consumed by a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) faults_fired: Option<u64>,
    /// Processes that exited without being killed by the harness.
    pub(super) unexpected_exits: usize,
    pub(super) publish_retries: u64,
    pub(super) pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(skip)]
    pub(super) notes: Vec<String>,
}

impl ScenarioReport {
    pub(super) fn new(name: &str, seed: u64, m: &Measured<'_>) -> Self {
        let (verdict, settled, driven) = (m.verdict, m.settled, m.driven);
        let mut report = ScenarioReport {
            torture: name.to_owned(),
            seed,
            expected: verdict.expected,
            delivered: verdict.delivered,
            lost: verdict.lost.len(),
            unexpected: verdict.unexpected.len() + verdict.misaddressed.len(),
            duplicates: verdict.duplicates.len(),
            duplicates_allowed: verdict.duplicates_allowed.len(),
            stuck: verdict.stuck.len(),
            order_violations: verdict.order_violations.len(),
            superseded: verdict.superseded,
            fallback_notices: verdict.fallback_notices,
            settled: settled.settled,
            settle_s: (settled.settle_s * 10.0).round() / 10.0,
            kills: driven.kills,
            faults: driven.faults.len() + m.provider_rules,
            fault_labels: driven.faults.clone(),
            faults_fired: m.faults_fired,
            unexpected_exits: m.exits.len(),
            publish_retries: m.publish_retries,
            pass: false,
            error: None,
            notes: Vec::new(),
        };
        report.pass = report.lost == 0
            && report.unexpected == 0
            && report.duplicates == 0
            && report.stuck == 0
            && report.order_violations == 0
            && report.settled
            && settled.settle_s <= SETTLE_LIMIT.as_secs_f64();
        report
    }

    /// A scenario that could not run to its verdict.
    pub(super) fn errored(name: &str, seed: u64, error: String) -> Self {
        ScenarioReport {
            torture: name.to_owned(),
            seed,
            expected: 0,
            delivered: 0,
            lost: 0,
            unexpected: 0,
            duplicates: 0,
            duplicates_allowed: 0,
            stuck: 0,
            order_violations: 0,
            superseded: 0,
            fallback_notices: 0,
            settled: false,
            settle_s: 0.0,
            kills: 0,
            faults: 0,
            fault_labels: Vec::new(),
            faults_fired: None,
            unexpected_exits: 0,
            publish_retries: 0,
            pass: false,
            error: Some(error),
            notes: Vec::new(),
        }
    }

    fn disruption(&self) -> String {
        let mut parts = Vec::new();
        if self.kills > 0 {
            parts.push(format!("{} kills", self.kills));
        }
        parts.extend(self.fault_labels.iter().map(|l| (*l).to_owned()));
        if let Some(fired) = self.faults_fired {
            let rules = self.faults - self.fault_labels.len();
            parts.push(format!("{rules} rules/{fired} fired"));
        }
        if self.unexpected_exits > 0 {
            parts.push(format!("{} exits", self.unexpected_exits));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }
}

pub(super) fn print_table(reports: &[ScenarioReport]) {
    println!(
        "| scenario | expected | delivered | lost | unexpected | duplicates | duplicates_allowed | stuck | order_violations | settle_s | faults/kills | pass |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let settle = if r.error.is_some() {
            "-".to_owned()
        } else if r.settled {
            format!("{:.1}", r.settle_s)
        } else {
            format!(">{:.0} (not settled)", SETTLE_LIMIT.as_secs_f64())
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.torture,
            r.expected,
            r.delivered,
            r.lost,
            r.unexpected,
            r.duplicates,
            r.duplicates_allowed,
            r.stuck,
            r.order_violations,
            settle,
            r.disruption(),
            if r.error.is_some() {
                "error"
            } else if r.pass {
                "yes"
            } else {
                "NO"
            }
        );
    }
}

/// What the diagnosis needs besides the verdict.
pub(super) struct Evidence<'a> {
    pub(super) expected: &'a HashMap<String, ExpectedDelivery>,
    pub(super) plan: &'a Plan,
    pub(super) driven: &'a Driven,
    pub(super) people: &'a [Subscriber],
    pub(super) exits: &'a [Exit],
    /// JetStream's streams and consumers at the end.
    pub(super) bus: &'a [String],
    /// The Twilio double's status callbacks, by delivery key.
    pub(super) callbacks: &'a HashMap<String, Vec<String>>,
}

/// How many examples of each kind of failure are printed; the file has them all.
const SHOWN: usize = 5;

/// Writes `diagnosis.txt` and prints its head: per event how far it went and what of it
/// arrived, then every failing key with its ledger row and trail.
pub(super) async fn diagnose(
    db: &PgPool,
    dir: &Path,
    report: &ScenarioReport,
    verdict: &Verdict,
    evidence: &Evidence<'_>,
) {
    let mut out = String::new();
    let _ = writeln!(out, "{}", serde_json::to_string(report).unwrap_or_default());
    for line in &evidence.driven.log {
        let _ = writeln!(out, "{line}");
    }
    for line in evidence.bus {
        if !report.pass {
            println!("  bus: {line}");
        }
        let _ = writeln!(out, "bus: {line}");
    }
    for exit in evidence.exits {
        let line = format!(
            "{} exited on its own at t={:.1}s ({})",
            exit.name, exit.at_s, exit.status
        );
        println!("  ✗ {line}");
        let _ = writeln!(out, "{line}");
    }

    // Per event: relayed, fanned out, expected, arrived.
    let event_ids: Vec<String> = evidence
        .driven
        .published
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.event_id.clone()))
        .collect();
    let progress = ledger::event_progress(db, &event_ids).await;
    let _ = writeln!(
        out,
        "\nincident version kind event_id relayed fanned_out expected arrived lost"
    );
    let lost: std::collections::HashSet<&str> = verdict.lost.iter().map(String::as_str).collect();
    let mut shown_events = 0;
    for (index, incident) in evidence.driven.published.iter().enumerate() {
        let label = &evidence.plan.incidents[index].label;
        for event in &incident.events {
            let mine = evidence
                .expected
                .iter()
                .filter(|(_, d)| d.incident == index && d.version == event.version);
            let (mut want, mut arrived, mut missing) = (0, 0, 0);
            for (key, _) in mine {
                want += 1;
                arrived += usize::from(verdict.copies.contains_key(key));
                missing += usize::from(lost.contains(key.as_str()));
            }
            let (relayed, fanned) = match &progress {
                Ok(p) => p
                    .get(&event.event_id)
                    .map_or(("?".into(), "?".into()), |p| {
                        (p.relayed.to_string(), p.fanned_out.to_string())
                    }),
                Err(e) => (format!("? ({e})"), "?".into()),
            };
            let line = format!(
                "{label} v{} {:?} {} relayed={relayed} fanned_out={fanned} expected={want} arrived={arrived} lost={missing}",
                event.version, event.kind, event.event_id
            );
            if missing > 0 && shown_events < 2 * SHOWN {
                println!("  lost in: {line}");
                shown_events += 1;
            }
            let _ = writeln!(out, "{line}");
        }
    }

    let mut keys: Vec<String> = verdict.lost.clone();
    keys.extend(verdict.duplicates.iter().cloned());
    keys.extend(verdict.duplicates_allowed.iter().cloned());
    for (late, before) in &verdict.order_violations {
        keys.push(late.clone());
        keys.push(before.clone());
    }
    keys.extend(verdict.stuck.iter().map(|r| r.delivery_key.clone()));
    let rows = ledger::rows(db, &keys).await.unwrap_or_default();
    let raw = ledger::raw_rows(db, &keys).await.unwrap_or_default();
    let trails = ledger::trail(db, &keys).await.unwrap_or_default();
    let describe = |key: &str| -> String {
        let what = evidence
            .expected
            .get(key)
            .map_or("not expected".to_owned(), |d| {
                let person = &evidence.people[d.subscriber];
                format!(
                    "{} v{} {:?} {} to {} ({}){}",
                    evidence.plan.incidents[d.incident].label,
                    d.version,
                    d.kind,
                    d.channel,
                    person.external_id(),
                    person.contact(d.channel),
                    if d.is_final { " final" } else { "" }
                )
            });
        let row = rows.get(key).map_or("no ledger row".to_owned(), |r| {
            format!(
                "ledger {} after {} attempts{}",
                r.state,
                r.attempts,
                r.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )
        });
        let trail = trails.get(key).map_or("no trail".to_owned(), |entries| {
            entries
                .iter()
                .map(|e| format!("{} {}", e.kind, e.data))
                .collect::<Vec<_>>()
                .join(" | ")
        });
        let copies = verdict.copies.get(key).copied().unwrap_or(0);
        let callbacks = evidence
            .callbacks
            .get(key)
            .map(|c| format!("; status callbacks: {}", c.join(", ")))
            .unwrap_or_default();
        format!("{key}: {what}; received {copies}x; {row}; trail: {trail}{callbacks}")
    };
    // The file gets the whole row too; the terminal only the summary.
    let describe_fully = |key: &str| -> String {
        match raw.get(key) {
            Some(row) => format!("{}\n    row: {row}", describe(key)),
            None => describe(key),
        }
    };
    section(
        &mut out,
        "lost",
        verdict.lost.iter().map(|k| describe_fully(k)),
    );
    section(
        &mut out,
        "duplicates",
        verdict.duplicates.iter().map(|k| describe_fully(k)),
    );
    section(
        &mut out,
        "duplicates_allowed",
        verdict.duplicates_allowed.iter().map(|k| describe_fully(k)),
    );
    section(
        &mut out,
        "stuck",
        verdict.stuck.iter().map(|r| {
            let summary = format!(
                "{} {} v{} {} after {} attempts{}",
                r.delivery_key,
                r.channel,
                r.event_version,
                r.state,
                r.attempts,
                r.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            match raw.get(&r.delivery_key) {
                Some(row) => format!("{summary}\n    row: {row}"),
                None => summary,
            }
        }),
    );
    section(
        &mut out,
        "stuck by shape",
        stuck_shapes(&verdict.stuck, &raw).into_iter(),
    );
    section(&mut out, "unexpected", verdict.unexpected.iter().cloned());
    section(
        &mut out,
        "misaddressed",
        verdict.misaddressed.iter().cloned(),
    );
    section(
        &mut out,
        "order_violations",
        verdict.order_violations.iter().map(|(late, before)| {
            format!(
                "{} arrived after {}",
                describe_fully(late),
                describe(before)
            )
        }),
    );
    let path = dir.join("diagnosis.txt");
    match std::fs::write(&path, out) {
        Ok(()) if !report.pass => println!("  diagnosis: {}", path.display()),
        Ok(()) => {}
        Err(e) => println!("  could not write {}: {e}", path.display()),
    }
}

/// Stuck rows grouped by what the ledger says of them (channel, state, parked, dispatched,
/// send begun, attempts), most common first: one line per way of being stuck. The columns
/// are read when the schema has them and shown as `?` otherwise.
fn stuck_shapes(stuck: &[ledger::Row], raw: &HashMap<String, serde_json::Value>) -> Vec<String> {
    let mut shapes: HashMap<String, usize> = HashMap::new();
    for row in stuck {
        let whole = raw.get(&row.delivery_key);
        let field = |name: &str| {
            whole
                .and_then(|w| w.get(name))
                .map_or("?".to_owned(), |v| match v {
                    serde_json::Value::Null => "null".to_owned(),
                    other => other.to_string(),
                })
        };
        let begun = whole
            .and_then(|w| w.get("send_started_at"))
            .map_or("?", |v| if v.is_null() { "no" } else { "yes" });
        let shape = format!(
            "{} {} parked={} dispatches={} send_begun={begun} attempts={}",
            row.channel,
            row.state,
            field("parked"),
            field("dispatches"),
            row.attempts
        );
        *shapes.entry(shape).or_default() += 1;
    }
    let mut shapes: Vec<(String, usize)> = shapes.into_iter().collect();
    shapes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    shapes
        .into_iter()
        .map(|(shape, n)| format!("{n} x {shape}"))
        .collect()
}

/// Appends a titled list to the file and prints its first few lines.
fn section(out: &mut String, title: &str, lines: impl Iterator<Item = String>) {
    let lines: Vec<String> = lines.collect();
    if lines.is_empty() {
        return;
    }
    println!("  {title}: {}", lines.len());
    let _ = writeln!(out, "\n{title}: {}", lines.len());
    for (i, line) in lines.iter().enumerate() {
        if i < SHOWN {
            // The first line only: whole ledger rows are for the file.
            println!("    {}", line.lines().next().unwrap_or_default());
        }
        let _ = writeln!(out, "{line}");
    }
}
