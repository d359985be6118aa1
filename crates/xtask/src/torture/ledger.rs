//! What the harness reads from Tocsin's database, always as a second witness after the
//! providers: delivery states (to find what is stuck and why something is missing), the
//! delivery trail (to tell an allowed second send from a duplicate), and, for the diagnosis
//! only, how far each event went through the relay and the resolver.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use sqlx::PgPool;

/// States in which a delivery still waits for something to happen.
pub(super) const UNSETTLED: [&str; 4] = ["pending", "sending", "retrying", "unknown"];

/// One ledger row, as much as the verdict and the diagnosis need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Row {
    pub(super) delivery_key: String,
    pub(super) channel: String,
    pub(super) state: String,
    pub(super) attempts: i32,
    pub(super) last_error: Option<String>,
    pub(super) event_version: i64,
}

/// Counts per state, for the settle loop.
pub(super) async fn state_counts(db: &PgPool) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM deliveries GROUP BY state")
            .fetch_all(db)
            .await
            .context("counting deliveries by state")?;
    Ok(rows.into_iter().collect())
}

/// How many of `keys` have a ledger row.
pub(super) async fn present(db: &PgPool, keys: &[String]) -> anyhow::Result<i64> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE delivery_key = ANY($1)")
            .bind(keys)
            .fetch_one(db)
            .await
            .context("counting expected keys in the ledger")?;
    Ok(count)
}

/// Fallback notices in the ledger (rows carrying a notice), with whether the failure they
/// tell of is there: a delivery to the same subscriber about the same incident on the failed
/// channel that ended `failed` or `dead`. A notice without such a cause is not allowed.
pub(super) async fn fallback_notices(db: &PgPool) -> anyhow::Result<HashMap<String, bool>> {
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT f.delivery_key, EXISTS (
             SELECT 1 FROM deliveries c
             WHERE c.incident_id = f.incident_id AND c.subscriber_id = f.subscriber_id
               AND c.channel = f.notice->>'failed_channel' AND c.notice IS NULL
               AND c.state IN ('failed', 'dead'))
         FROM deliveries f WHERE f.notice IS NOT NULL",
    )
    .fetch_all(db)
    .await
    .context("reading fallback notices")?;
    Ok(rows.into_iter().collect())
}

/// The ledger rows of `keys` (those that exist).
pub(super) async fn rows(db: &PgPool, keys: &[String]) -> anyhow::Result<HashMap<String, Row>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT delivery_key, channel, state, attempts, last_error, event_version
         FROM deliveries WHERE delivery_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(db)
    .await
    .context("reading ledger rows")?;
    Ok(rows
        .into_iter()
        .map(|r| (r.delivery_key.clone(), r))
        .collect())
}

/// The whole ledger row of each of `keys` as JSON, whatever columns today's schema has: the
/// diagnosis shows what the pipeline itself knows about a failing delivery.
pub(super) async fn raw_rows(
    db: &PgPool,
    keys: &[String],
) -> anyhow::Result<HashMap<String, serde_json::Value>> {
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT delivery_key, to_jsonb(d) - 'delivery_key' - 'incident_id' - 'event_id'
         FROM deliveries d WHERE delivery_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(db)
    .await
    .context("reading whole ledger rows")?;
    Ok(rows.into_iter().collect())
}

/// Every row still unsettled.
pub(super) async fn unsettled(db: &PgPool) -> anyhow::Result<Vec<Row>> {
    sqlx::query_as(
        "SELECT delivery_key, channel, state, attempts, last_error, event_version
         FROM deliveries WHERE state = ANY($1) ORDER BY delivery_key",
    )
    .bind(UNSETTLED)
    .fetch_all(db)
    .await
    .context("reading unsettled deliveries")
}

/// One trail entry of a delivery.
#[derive(Debug, Clone)]
pub(super) struct TrailEntry {
    pub(super) kind: String,
    pub(super) data: serde_json::Value,
}

impl TrailEntry {
    /// An attempt whose outcome nobody could know, or one made after a worker died holding
    /// the claim: the two cases where a channel's policy may send a second copy.
    pub(super) fn licenses_a_resend(&self) -> bool {
        self.data.get("outcome").and_then(|o| o.as_str()) == Some("unknown")
            || self
                .data
                .get("after_lost_attempt")
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
    }
}

/// The trail of `keys`, oldest first per key.
pub(super) async fn trail(
    db: &PgPool,
    keys: &[String],
) -> anyhow::Result<HashMap<String, Vec<TrailEntry>>> {
    let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT delivery_key, kind, data FROM delivery_trail WHERE delivery_key = ANY($1)
         ORDER BY position",
    )
    .bind(keys)
    .fetch_all(db)
    .await
    .context("reading the delivery trail")?;
    let mut trail: HashMap<String, Vec<TrailEntry>> = HashMap::new();
    for (key, kind, data) in rows {
        trail
            .entry(key)
            .or_default()
            .push(TrailEntry { kind, data });
    }
    Ok(trail)
}

/// How far one event went: relayed to JetStream (the outbox row stamped) and fanned out (the
/// resolver's `recipients_resolved` trail entry). Only for the diagnosis: the queries follow
/// today's schema and a failure is reported as such, never as a verdict.
#[derive(Debug, Clone)]
pub(super) struct EventProgress {
    pub(super) relayed: bool,
    pub(super) fanned_out: bool,
}

pub(super) async fn event_progress(
    db: &PgPool,
    event_ids: &[String],
) -> anyhow::Result<HashMap<String, EventProgress>> {
    let ids: Vec<uuid::Uuid> = event_ids
        .iter()
        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
        .collect();
    let rows: Vec<(uuid::Uuid, bool, bool)> = sqlx::query_as(
        "SELECT e.event_id,
                coalesce(o.published_at IS NOT NULL, false),
                EXISTS (SELECT 1 FROM delivery_trail t
                        WHERE t.event_id = e.event_id AND t.kind = 'recipients_resolved')
         FROM events e LEFT JOIN outbox o ON o.position = e.position
         WHERE e.event_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(db)
    .await
    .context("reading how far each event went")?;
    Ok(rows
        .into_iter()
        .map(|(id, relayed, fanned_out)| {
            (
                id.hyphenated().to_string(),
                EventProgress {
                    relayed,
                    fanned_out,
                },
            )
        })
        .collect())
}
