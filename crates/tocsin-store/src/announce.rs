//! Tells listeners about appends, after commit and in batches.
//!
//! A transaction that `NOTIFY`s takes a cluster-wide lock at commit, which serialises every
//! such commit and defeats group commit: throughput falls to one fsync at a time. So appends
//! never notify themselves. Each process has one announcer task that gathers what was
//! appended and sends it in as few `pg_notify` calls as the 8000-byte payload limit allows.

use sqlx::PgPool;
use tokio::sync::mpsc;
use tracing::warn;

use crate::EVENTS_CHANNEL;
use crate::outbox::LogNotification;

/// Stays under PostgreSQL's 8000-byte `NOTIFY` payload limit.
const MAX_PAYLOAD: usize = 7_900;

pub(crate) fn start(pool: PgPool) -> mpsc::UnboundedSender<LogNotification> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<LogNotification>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        // Ends when every Store clone (and so every sender) is gone.
        while receiver.recv_many(&mut batch, 4096).await > 0 {
            for payload in payloads(&batch) {
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(notify_sql(&payload)))
                    .execute(&pool)
                    .await
                {
                    // Listeners also poll, so a lost announcement only delays them.
                    warn!(error = %e, "could not announce appended events");
                }
            }
            batch.clear();
        }
    });
    sender
}

/// One simple query, so one round trip and one implicit transaction: the `NOTIFY`.
///
/// `pg_notify` gives its transaction an id, so under `synchronous_commit = on` every
/// announcement would wait for its own WAL flush, hundreds a second under load, each taking
/// a turn at the disk the appends need. Delivery to listeners happens at commit either way;
/// a crash may lose an unflushed announcement, which only delays listeners (they also poll).
fn notify_sql(payload: &str) -> String {
    format!(
        "SET LOCAL synchronous_commit = off; SELECT pg_notify('{EVENTS_CHANNEL}', '{}')",
        payload.replace('\'', "''")
    )
}

/// `incident version` pairs separated by `;`, split to fit the payload limit.
fn payloads(batch: &[LogNotification]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for note in batch {
        let item = format!("{} {}", note.incident_id, note.version);
        if !current.is_empty() && current.len() + 1 + item.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(';');
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Parses a payload written by [`payloads`]; malformed items are skipped.
pub(crate) fn parse(payload: &str) -> Vec<LogNotification> {
    payload
        .split(';')
        .filter_map(|item| {
            let (incident, version) = item.split_once(' ')?;
            Some(LogNotification {
                incident_id: incident.parse().ok()?,
                version: version.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_respect_the_limit() {
        let batch: Vec<LogNotification> = (1..=500)
            .map(|v| LogNotification {
                incident_id: tocsin_core::IncidentId::new(),
                version: v,
            })
            .collect();
        let payloads = payloads(&batch);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let parsed: Vec<LogNotification> = payloads.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(parsed, batch);
    }
}
