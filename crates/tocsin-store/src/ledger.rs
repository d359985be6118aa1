//! The delivery ledger as the workers use it: claims with leases, outcomes, dead letters.
//!
//! A worker claims a batch of jobs in one statement. A claim succeeds only for a delivery
//! that is due (pending, or retrying with its time come, or held by a lease that expired),
//! whose earlier messages to the same recipient on the same channel are not in flight, so
//! messages go out in event order. For channels read by people, the same statement first
//! supersedes older messages that have not gone out yet, so nobody gets a stale "we are
//! investigating" after the "resolved". Outcomes are recorded in one statement per batch,
//! together with their trail entries, and only by the worker that holds the lease.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::fallback::DeliveryNotice;
use tocsin_core::{Channel, EventId, IncidentId, SubscriberId};
use tracing::instrument;
use uuid::Uuid;

use crate::{Store, StoreError};

/// A delivery this worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_key: String,
    pub incident_id: IncidentId,
    pub event_id: EventId,
    pub event_version: u64,
    pub subscriber_id: SubscriberId,
    pub channel: Channel,
    /// This attempt's number, 1 for the first.
    pub attempt: u32,
    /// The previous holder's lease expired after its send had begun: that attempt's fate is
    /// unknown. (A holder lost before its send began leaves nothing unknown.)
    pub after_lost_attempt: bool,
    /// The delivery was `unknown` and the channel's policy allows another try.
    pub after_unknown: bool,
    /// Attempts so far whose outcome is unknown, a lost one included.
    pub unknowns: u32,
    /// When the previous attempt's send began, if it did: a provider asked whether it has
    /// the message looks from there.
    pub previous_send_started_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// Set when the delivery tells something other than its event's message (a fallback
    /// notice about a failed channel).
    pub notice: Option<DeliveryNotice>,
}

/// What a claim found for one key.
#[derive(Debug, Clone)]
pub enum ClaimResult {
    Claimed(Claimed),
    /// Nothing left to do: delivered, failed, dead, superseded, skipped, or unknown with no
    /// resend allowed.
    Finished {
        state: String,
    },
    /// Not due yet (quiet hours, a scheduled retry, an earlier message to the same recipient
    /// still on its way): parked in the ledger, where the channel's dispatcher publishes it
    /// again when it comes due. The job in hand is done with.
    Parked,
    /// A worker holds it (its lease has not lapsed): the job in hand is a copy, and done
    /// with. The delivery is parked, so that the dispatcher publishes it should the lease
    /// lapse unsettled (its holder died).
    Held,
    /// No such delivery: a job without a ledger row (should not happen; the resolver writes
    /// the row first).
    Missing,
}

/// How a channel's claims behave.
#[derive(Debug, Clone, Copy)]
pub struct ClaimPolicy {
    pub channel: Channel,
    /// How long a claim holds unless its worker extends it.
    pub lease: Duration,
    /// Supersede older unsent messages to the same recipient (channels read by people).
    pub supersede_stale: bool,
    /// Whether a delivery in state `unknown` with another attempt scheduled may be claimed
    /// again (email resends once with the same Message-ID; SMS first asks Twilio whether it
    /// has the message, and sends only if it does not).
    pub resend_unknown: bool,
}

/// A provider's final word on a delivery (a Twilio status callback), to record.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    /// The delivery's key, where the callback carries it.
    pub delivery_key: Option<String>,
    /// The provider's id for the message: how a callback without a key finds its delivery.
    pub provider_id: Option<String>,
    /// `delivered` or `failed`.
    pub state: &'static str,
    /// What the provider said, kept in the trail.
    pub detail: serde_json::Value,
}

/// One attempt's outcome, to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub delivery_key: String,
    pub incident_id: IncidentId,
    pub event_id: EventId,
    /// The new state: delivered, retrying, unknown, failed, dead, skipped.
    pub state: &'static str,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Whether the job is done with and the delivery waits, parked, for `next_attempt_at`
    /// (the channel's dispatcher publishes it then). False when the job goes back to
    /// JetStream as it is (handed back at shutdown) or nothing more is due.
    pub parked: bool,
    /// The attempt's outcome is unknown (counted toward the channel's cap on blind resends).
    pub unknown: bool,
    /// Nothing was sent (handed back at shutdown, or deferred for a busy endpoint): the
    /// attempt the claim counted is given back, so waiting never uses up the retry schedule.
    pub not_attempted: bool,
    pub provider_id: Option<String>,
    pub error: Option<String>,
    /// The trail entry's data: attempt number, outcome detail, latency.
    pub detail: serde_json::Value,
}

/// What recording a batch of outcomes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Outcomes written (rows this worker still held).
    pub recorded: u64,
    /// Settled deliveries with a later message to the same recipient parked behind them:
    /// the channel's dispatcher should look now rather than at its next tick.
    pub unblocked: u64,
}

/// States after which nothing more happens to a delivery.
pub const FINAL_STATES: [&str; 6] = [
    "delivered",
    "failed",
    "dead",
    "superseded",
    "skipped",
    "unknown",
];

#[derive(sqlx::FromRow)]
struct ClaimRow {
    delivery_key: String,
    incident_id: Uuid,
    event_id: Uuid,
    event_version: i64,
    subscriber_id: Uuid,
    channel: String,
    attempts: i32,
    unknowns: i32,
    previous_state: String,
    lost: bool,
    previous_start: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    notice: Option<Json<DeliveryNotice>>,
}

impl TryFrom<ClaimRow> for Claimed {
    type Error = StoreError;

    fn try_from(row: ClaimRow) -> Result<Self, StoreError> {
        let channel = row
            .channel
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("unknown channel {:?}", row.channel)))?;
        Ok(Claimed {
            delivery_key: row.delivery_key,
            incident_id: row.incident_id.into(),
            event_id: row.event_id.into(),
            event_version: u64::try_from(row.event_version).unwrap_or_default(),
            subscriber_id: row.subscriber_id.into(),
            channel,
            attempt: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            after_lost_attempt: row.lost,
            after_unknown: row.previous_state == "unknown",
            unknowns: u32::try_from(row.unknowns).unwrap_or_default(),
            previous_send_started_at: row.previous_start,
            created_at: row.created_at,
            notice: row.notice.map(|n| n.0),
        })
    }
}

/// How a claim treats rows another transaction has locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locks {
    /// Passes them by: for a claim inside a transaction that holds other rows.
    Skip,
    /// Waits for them, locking in key order like every multi-row write here: only for a
    /// statement that holds nothing else.
    Wait,
}

/// Whether the unsent message in row `d` has been overtaken: a newer message to the same
/// recipient about the same incident is on its way (sent, being sent, or perhaps sent), or the
/// incident has since closed and this is not the closing message or a review (a review comes
/// after the close, and one scheduled for later stays due). Notice rows (fallback notices)
/// are outside the sequence: never superseded, never superseding. One definition for the
/// supersession and for the claim's guard, which must never disagree.
const SUPERSEDED_BY_LATER: &str = "(d.notice IS NULL AND (EXISTS (
        SELECT 1 FROM deliveries n
        WHERE n.incident_id = d.incident_id AND n.subscriber_id = d.subscriber_id
          AND n.channel = d.channel AND n.event_version > d.event_version
          AND n.state IN ('delivered', 'sending', 'unknown') AND n.notice IS NULL)
    OR EXISTS (
        SELECT 1 FROM incidents i
        WHERE i.incident_id = d.incident_id AND i.status IN ('resolved', 'completed')
          AND i.version > d.event_version
          AND NOT EXISTS (
              SELECT 1 FROM events x WHERE x.event_id = d.event_id
                AND x.kind IN ('resolved', 'maintenance_completed', 'review')))))";

/// Supersedes the messages `keys` make stale, and returns how many. A message that has not
/// gone out yet (pending, retrying, or unknown with a resend scheduled) is stale when the
/// same recipient has a newer message about the same incident in `keys` or already on its way
/// (sent, being sent, or perhaps sent), or when the incident has since closed (the closing
/// message itself excepted). Nobody should read "we are investigating" after "resolved".
async fn supersede(
    db: impl sqlx::PgExecutor<'_>,
    keys: &[String],
    locks: Locks,
) -> Result<u64, StoreError> {
    let lock = match locks {
        // A row another transaction holds is being claimed or sent: not stale any more,
        // and not waited for by a claim holding other rows.
        Locks::Skip => "FOR UPDATE OF d SKIP LOCKED",
        Locks::Wait => "ORDER BY d.delivery_key FOR UPDATE OF d",
    };
    // Every lookup starts from the batch's keys and goes through an index: a scan of all
    // unsent rows here made each claim cost as much as the fan-out had rows still to send,
    // and a big fan-out quadratic.
    let sql = format!(
        r#"WITH batch AS (
             SELECT incident_id, subscriber_id, channel, max(event_version) AS version
             FROM deliveries WHERE delivery_key = ANY($1) AND notice IS NULL GROUP BY 1, 2, 3
         ), stale_keys AS (
             SELECT d.delivery_key FROM batch b
             JOIN deliveries d ON d.incident_id = b.incident_id
                  AND d.subscriber_id = b.subscriber_id AND d.channel = b.channel
                  AND d.event_version < b.version AND d.notice IS NULL
             WHERE d.state IN ('pending', 'retrying')
                OR (d.state = 'unknown' AND d.next_attempt_at IS NOT NULL)
             UNION
             SELECT d.delivery_key FROM deliveries d
             WHERE d.delivery_key = ANY($1)
               AND (d.state IN ('pending', 'retrying')
                    OR (d.state = 'unknown' AND d.next_attempt_at IS NOT NULL))
               AND {SUPERSEDED_BY_LATER}
         ), stale AS (
             SELECT d.delivery_key FROM deliveries d
             WHERE d.delivery_key = ANY (ARRAY(SELECT delivery_key FROM stale_keys))
               AND (d.state IN ('pending', 'retrying')
                    OR (d.state = 'unknown' AND d.next_attempt_at IS NOT NULL))
             {lock}
         ), marked AS (
             UPDATE deliveries d SET state = 'superseded', finished_at = now(),
                 updated_at = now(), parked = false, next_attempt_at = NULL
             FROM stale WHERE d.delivery_key = stale.delivery_key
             RETURNING d.delivery_key, d.incident_id, d.event_id
         )
         INSERT INTO delivery_trail (incident_id, event_id, kind, delivery_key, data)
         SELECT incident_id, event_id, 'superseded', delivery_key,
                '{{"reason": "a newer message to the same recipient replaced it"}}'
         FROM marked"#
    );
    // Safe: the only text put in is fixed: a lock clause above and a constant condition.
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(keys)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Claims for `owner` those of `keys` that are due and not behind an earlier message to the
/// same recipient. A previous holder whose lease expired counts as an attempt only if its
/// send had begun; one lost before that leaves its attempt number to this claim.
async fn claim_rows(
    db: impl sqlx::PgExecutor<'_>,
    keys: &[String],
    owner: &str,
    policy: ClaimPolicy,
    locks: Locks,
) -> Result<Vec<ClaimRow>, StoreError> {
    let lock = match locks {
        Locks::Skip => "FOR UPDATE OF d SKIP LOCKED",
        Locks::Wait => "ORDER BY d.delivery_key FOR UPDATE OF d",
    };
    let sql = format!(
        "WITH due AS (
             SELECT d.delivery_key, d.state AS previous_state,
                    (d.state = 'sending' AND d.send_started_at IS NOT NULL) AS lost,
                    d.send_started_at AS previous_start
             FROM deliveries d
             WHERE d.delivery_key = ANY($1)
               AND (d.state IN ('pending', 'retrying')
                    OR (d.state = 'sending' AND d.lease_expires_at < now())
                    OR (d.state = 'unknown' AND $4 AND d.next_attempt_at IS NOT NULL))
               AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
               AND (d.send_after IS NULL OR d.send_after <= now())
               AND (d.notice IS NOT NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries e
                   WHERE e.incident_id = d.incident_id AND e.subscriber_id = d.subscriber_id
                     AND e.channel = d.channel AND e.event_version < d.event_version
                     AND e.state IN ('pending', 'sending', 'retrying') AND e.notice IS NULL))
               -- Never a stale unsent message where messages supersede (the supersession
               -- that should have caught it may have passed it by, locked at that moment).
               -- An attempt lost mid-send is no unsent message: the channel's policy for
               -- unknown outcomes decides it, as supersession does not touch it either.
               AND NOT ($5 AND d.state <> 'sending' AND {SUPERSEDED_BY_LATER})
             {lock}
         )
         UPDATE deliveries d SET state = 'sending', lease_owner = $2,
             lease_expires_at = now() + make_interval(secs => $3 / 1000.0),
             attempts = d.attempts
                 + CASE WHEN due.previous_state = 'sending' AND NOT due.lost THEN 0 ELSE 1 END,
             unknowns = d.unknowns + CASE WHEN due.lost THEN 1 ELSE 0 END,
             send_started_at = NULL, parked = false, updated_at = now()
         FROM due WHERE d.delivery_key = due.delivery_key
         RETURNING d.delivery_key, d.incident_id, d.event_id, d.event_version,
             d.subscriber_id, d.channel, d.attempts, d.unknowns, due.previous_state,
             due.lost, due.previous_start, d.created_at, d.notice"
    );
    // Safe: the only text put in is fixed: a lock clause above and a constant condition.
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(keys)
        .bind(owner)
        .bind(policy.lease.as_millis() as f64)
        .bind(policy.resend_unknown)
        .bind(policy.supersede_stale)
        .fetch_all(db)
        .await?)
}

#[derive(sqlx::FromRow)]
struct StateRow {
    delivery_key: String,
    state: String,
    /// An unknown outcome with one resend scheduled (the channel's policy allows it).
    resend_due: bool,
    /// Claimed by a worker whose lease still runs.
    held: bool,
}

impl Store {
    /// Claims what it can of `keys` for `owner`, superseding stale messages first when the
    /// policy says so, and parks what is not due yet. Returns one result per key, in input
    /// order, and how many messages were superseded.
    #[instrument(skip_all, fields(channel = %policy.channel, keys = keys.len()))]
    pub async fn claim_deliveries(
        &self,
        keys: &[String],
        owner: &str,
        policy: ClaimPolicy,
    ) -> Result<(Vec<ClaimResult>, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let superseded = if policy.supersede_stale {
            supersede(&mut *tx, keys, Locks::Skip).await?
        } else {
            0
        };
        let claimed = claim_rows(&mut *tx, keys, owner, policy, Locks::Skip).await?;
        let mut by_key: HashMap<String, ClaimResult> = HashMap::with_capacity(keys.len());
        for row in claimed {
            by_key.insert(
                row.delivery_key.clone(),
                ClaimResult::Claimed(row.try_into()?),
            );
        }
        let others: Vec<&String> = keys.iter().filter(|k| !by_key.contains_key(*k)).collect();
        let mut unsettled = Vec::new();
        if !others.is_empty() {
            let rows: Vec<StateRow> = sqlx::query_as(
                "SELECT delivery_key, state, next_attempt_at IS NOT NULL AS resend_due,
                        (state = 'sending' AND lease_expires_at >= now()) AS held
                 FROM deliveries WHERE delivery_key = ANY($1)",
            )
            .bind(&others)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let resendable = row.state == "unknown" && policy.resend_unknown && row.resend_due;
                if FINAL_STATES.contains(&row.state.as_str()) && !resendable {
                    by_key.insert(row.delivery_key, ClaimResult::Finished { state: row.state });
                } else if row.held {
                    by_key.insert(row.delivery_key.clone(), ClaimResult::Held);
                } else {
                    unsettled.push(row.delivery_key);
                }
            }
        }
        tx.commit().await?;
        let mut superseded = superseded;
        let mut to_park = Vec::new();
        if !unsettled.is_empty() {
            // Not claimed, yet still to be sent: due later, behind an earlier message, or
            // locked a moment ago by another writer. The commonest such writer is the
            // dispatcher that published this very job and has not committed yet; skipping its
            // row would park it again, and the recipient's next message would wait a whole
            // dispatch round. So these are superseded (where messages supersede) and claimed
            // again, waiting for the locks this time, each in a statement of its own that
            // holds nothing else.
            if policy.supersede_stale {
                superseded += supersede(&self.pool, &unsettled, Locks::Wait).await?;
            }
            for row in claim_rows(&self.pool, &unsettled, owner, policy, Locks::Wait).await? {
                by_key.insert(
                    row.delivery_key.clone(),
                    ClaimResult::Claimed(row.try_into()?),
                );
            }
            let left: Vec<&String> = unsettled
                .iter()
                .filter(|k| !by_key.contains_key(*k))
                .collect();
            if !left.is_empty() {
                let states: Vec<(String, String, bool)> = sqlx::query_as(
                    "SELECT delivery_key, state, next_attempt_at IS NOT NULL
                     FROM deliveries WHERE delivery_key = ANY($1)",
                )
                .bind(&left)
                .fetch_all(&self.pool)
                .await?;
                for (key, state, resend_due) in states {
                    let resendable = state == "unknown" && policy.resend_unknown && resend_due;
                    let result = if FINAL_STATES.contains(&state.as_str()) && !resendable {
                        ClaimResult::Finished { state }
                    } else {
                        // Due later, or behind an earlier message (or one on its way): the
                        // ledger brings it back when due.
                        to_park.push(key.clone());
                        ClaimResult::Parked
                    };
                    by_key.insert(key, result);
                }
            }
        }
        for (key, result) in &by_key {
            if matches!(result, ClaimResult::Held) {
                // Held by a worker whose lease may be about to lapse (its job came back
                // because the worker died): parked, for the dispatcher to publish should the
                // lease lapse; a live holder's record unparks it.
                to_park.push(key.clone());
            }
        }
        if !to_park.is_empty() {
            self.park(&to_park).await?;
        }
        Ok((
            keys.iter()
                .map(|k| by_key.remove(k).unwrap_or(ClaimResult::Missing))
                .collect(),
            superseded,
        ))
    }

    /// Parks `keys` (not due, behind an earlier message, or held by another worker): the
    /// dispatcher publishes each again when it comes due or its holder's lease lapses.
    ///
    /// Unconditional on `parked`: a dispatcher that published this very job may still hold
    /// the row, about to commit `parked = false`. A condition on the flag would be judged on
    /// the snapshot (still parked), skip the row without waiting, and leave it unparked with
    /// its job answered: lost. Without one, this waits for the dispatcher's commit and parks
    /// the row after it. A row a concurrent claim took meanwhile is `sending` by then and
    /// parked too: if its holder lives, its record unparks it; if not, the dispatcher
    /// publishes it once the lease lapses. Run outside the claim's transaction, so that a
    /// claim never holds its rows while waiting for another's; rows are locked in key order,
    /// as every multi-row write here does, so that two writers never wait for each other.
    async fn park(&self, keys: &[String]) -> Result<(), StoreError> {
        sqlx::query(
            "WITH locked AS (
                 SELECT delivery_key FROM deliveries
                 WHERE delivery_key = ANY($1)
                   AND state IN ('pending', 'retrying', 'unknown', 'sending')
                 ORDER BY delivery_key
                 FOR UPDATE
             )
             UPDATE deliveries d SET parked = true
             FROM locked WHERE d.delivery_key = locked.delivery_key",
        )
        .bind(keys)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the sends of `keys` as begun, just before the provider is called, and returns
    /// the keys `owner` still holds: only those may be sent. From here on, losing the worker
    /// leaves the attempt's outcome unknown; before it, nothing can have gone out.
    #[instrument(skip_all, fields(keys = keys.len()))]
    pub async fn start_sends(&self, owner: &str, keys: &[&str]) -> Result<Vec<String>, StoreError> {
        let started: Vec<(String,)> = sqlx::query_as(
            "WITH locked AS (
                 SELECT delivery_key FROM deliveries
                 WHERE delivery_key = ANY($1) AND lease_owner = $2 AND state = 'sending'
                 ORDER BY delivery_key
                 FOR UPDATE
             )
             UPDATE deliveries d SET send_started_at = now()
             FROM locked WHERE d.delivery_key = locked.delivery_key
             RETURNING d.delivery_key",
        )
        .bind(keys)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(started.into_iter().map(|(key,)| key).collect())
    }

    /// Extends the leases `owner` holds on `keys` to `lease` from now: a live worker keeps
    /// the claims it is working on however long its sends take, and a dead one's lapse within
    /// one lease.
    pub async fn extend_leases(
        &self,
        owner: &str,
        keys: &[String],
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "WITH locked AS (
                 SELECT delivery_key FROM deliveries
                 WHERE delivery_key = ANY($2) AND lease_owner = $1 AND state = 'sending'
                 ORDER BY delivery_key
                 FOR UPDATE
             )
             UPDATE deliveries d
             SET lease_expires_at = now() + make_interval(secs => $3 / 1000.0)
             FROM locked WHERE d.delivery_key = locked.delivery_key",
        )
        .bind(owner)
        .bind(keys)
        .bind(lease.as_millis() as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records outcomes and their trail entries in one statement. Only rows still leased by
    /// `owner` change: a worker whose lease expired and was taken over records nothing, and
    /// neither does one whose delivery a provider's callback settled meanwhile.
    #[instrument(skip_all, fields(outcomes = outcomes.len()))]
    pub async fn record_attempts(
        &self,
        owner: &str,
        outcomes: &[AttemptOutcome],
    ) -> Result<Recorded, StoreError> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        let keys: Vec<&str> = outcomes.iter().map(|o| o.delivery_key.as_str()).collect();
        let states: Vec<&str> = outcomes.iter().map(|o| o.state).collect();
        let next: Vec<Option<OffsetDateTime>> =
            outcomes.iter().map(|o| o.next_attempt_at).collect();
        let parked: Vec<bool> = outcomes.iter().map(|o| o.parked).collect();
        let unknown: Vec<i32> = outcomes.iter().map(|o| i32::from(o.unknown)).collect();
        let refund: Vec<i32> = outcomes
            .iter()
            .map(|o| i32::from(o.not_attempted))
            .collect();
        let providers: Vec<Option<&str>> =
            outcomes.iter().map(|o| o.provider_id.as_deref()).collect();
        let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
        let details: Vec<Json<&serde_json::Value>> =
            outcomes.iter().map(|o| Json(&o.detail)).collect();
        let (recorded, unblocked): (i64, i64) = sqlx::query_as(
            "WITH o AS (
                 SELECT * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::bool[],
                     $6::int4[], $7::text[], $8::text[], $9::jsonb[], $10::int4[])
                     AS o(delivery_key, state, next_at, parked, unknown, provider_id, error,
                          detail, refund)
             ), locked AS (
                 -- By primary key: a join with the unnested rows let the planner, misled by
                 -- a fresh table's statistics, scan every unsettled row once per outcome.
                 SELECT delivery_key FROM deliveries
                 WHERE delivery_key = ANY($2::text[]) AND lease_owner = $1 AND state = 'sending'
                 ORDER BY delivery_key
                 FOR UPDATE
             ), updated AS (
                 UPDATE deliveries d SET state = o.state, next_attempt_at = o.next_at,
                     parked = o.parked, unknowns = d.unknowns + o.unknown,
                     attempts = greatest(d.attempts - o.refund, 0),
                     provider_id = coalesce(o.provider_id, d.provider_id), last_error = o.error,
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
                     finished_at = CASE WHEN o.next_at IS NOT NULL THEN NULL ELSE now() END
                 FROM o JOIN locked USING (delivery_key)
                 WHERE d.delivery_key = o.delivery_key
                 RETURNING d.delivery_key, d.incident_id, d.event_id, d.event_version,
                     d.subscriber_id, d.channel, d.attempts, o.state, o.detail
             ), trail AS (
                 INSERT INTO delivery_trail (incident_id, event_id, kind, delivery_key, data)
                 SELECT incident_id, event_id, state, delivery_key,
                        detail || jsonb_build_object('channel', channel, 'attempt', attempts)
                 FROM updated
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM trail),
                    (SELECT count(*) FROM updated u
                     WHERE u.state NOT IN ('retrying', 'sending') AND EXISTS (
                         SELECT 1 FROM deliveries s
                         WHERE s.parked AND s.incident_id = u.incident_id
                           AND s.subscriber_id = u.subscriber_id AND s.channel = u.channel
                           AND s.event_version > u.event_version))",
        )
        .bind(owner)
        .bind(&keys)
        .bind(&states)
        .bind(&next)
        .bind(&parked)
        .bind(&unknown)
        .bind(&providers)
        .bind(&errors)
        .bind(&details)
        .bind(&refund)
        .fetch_one(&self.pool)
        .await?;
        Ok(Recorded {
            recorded: u64::try_from(recorded).unwrap_or_default(),
            unblocked: u64::try_from(unblocked).unwrap_or_default(),
        })
    }

    /// Dead letters back to pending, with their attempts reset: for an operator who fixed the
    /// cause. Filters are optional. Returns the deliveries to publish again.
    #[instrument(skip(self))]
    pub async fn revive_dead_letters(
        &self,
        incident_id: Option<IncidentId>,
        channel: Option<Channel>,
    ) -> Result<Vec<tocsin_core::Delivery>, StoreError> {
        let rows: Vec<crate::fanout::DeliveryRow> = sqlx::query_as(
            "WITH revived AS (
                 UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = NULL,
                     unknowns = 0, parked = false, finished_at = NULL, updated_at = now()
                 WHERE state = 'dead' AND ($1::uuid IS NULL OR incident_id = $1)
                   AND ($2::text IS NULL OR channel = $2)
                 RETURNING delivery_key, incident_id, event_id, event_version, subscriber_id,
                     channel, send_after, lane
             ), trail AS (
                 INSERT INTO delivery_trail (incident_id, event_id, kind, delivery_key, data)
                 SELECT incident_id, event_id, 'replayed', delivery_key, '{}' FROM revived
             ), reenabled AS (
                 -- A replay means the cause was fixed: endpoints disabled by these deliveries'
                 -- failures take them again.
                 UPDATE subscriber_contacts SET webhook_disabled_at = NULL,
                     webhook_disabled_reason = NULL
                 WHERE webhook_disabled_at IS NOT NULL AND subscriber_id IN
                     (SELECT subscriber_id FROM revived WHERE channel = 'webhook')
             )
             SELECT * FROM revived ORDER BY event_version",
        )
        .bind(incident_id.map(|id| *id.as_uuid()))
        .bind(channel.map(|c| c.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(tocsin_core::Delivery::try_from)
            .collect()
    }

    /// Records providers' final words on deliveries (Twilio status callbacks): delivered, or
    /// failed with a reason. Each settles its delivery whatever state the row is in when it
    /// arrives: a worker still recording its attempt (`sending`), a retry scheduled after a
    /// lost reply, or an outcome recorded as `unknown` all yield to the provider, who knows.
    /// The worker's own record then finds the row no longer `sending` and changes nothing.
    /// A delivery is found by its key (carried in the callback URL, so even an attempt whose
    /// reply was lost is reconciled) or else by the provider's id. Answers, for each status in
    /// order, whether such a delivery exists. One statement for all: callbacks arrive one per
    /// message, and a transaction each cost PostgreSQL more than the rest of an SMS.
    #[instrument(skip_all, fields(statuses = statuses.len()))]
    pub async fn record_provider_statuses(
        &self,
        statuses: &[ProviderStatus],
    ) -> Result<Vec<bool>, StoreError> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Option<&str>> = statuses.iter().map(|s| s.delivery_key.as_deref()).collect();
        let providers: Vec<Option<&str>> =
            statuses.iter().map(|s| s.provider_id.as_deref()).collect();
        let states: Vec<&str> = statuses.iter().map(|s| s.state).collect();
        let details: Vec<Json<&serde_json::Value>> =
            statuses.iter().map(|s| Json(&s.detail)).collect();
        let found: Vec<(i64,)> = sqlx::query_as(
            "WITH s AS (
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[])
                     WITH ORDINALITY AS s(delivery_key, provider_id, state, detail, n)
             ), target AS (
                 SELECT s.n, d.delivery_key, d.incident_id, d.event_id, d.channel,
                        d.state AS ledger_state, s.state, s.detail, s.provider_id
                 FROM s JOIN deliveries d ON d.delivery_key = s.delivery_key
                 UNION ALL
                 SELECT s.n, d.delivery_key, d.incident_id, d.event_id, d.channel,
                        d.state AS ledger_state, s.state, s.detail, s.provider_id
                 FROM s JOIN deliveries d ON d.provider_id = s.provider_id
                 WHERE s.delivery_key IS NULL
             ), locked AS (
                 -- In key order, as every multi-row write here locks: two callbacks of one
                 -- batch and a worker's record must never wait on each other in a circle.
                 SELECT delivery_key FROM deliveries
                 WHERE delivery_key IN (SELECT delivery_key FROM target)
                 ORDER BY delivery_key
                 FOR UPDATE
             ), last AS (
                 -- Two words on one delivery in one batch: the later one stands, as it
                 -- would have one statement after the other.
                 SELECT DISTINCT ON (delivery_key) delivery_key, state, provider_id
                 FROM target ORDER BY delivery_key, n DESC
             ), updated AS (
                 UPDATE deliveries d SET state = t.state, updated_at = now(),
                     finished_at = now(), provider_id = coalesce(d.provider_id, t.provider_id),
                     lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL,
                     parked = false
                 FROM last t JOIN locked USING (delivery_key)
                 WHERE d.delivery_key = t.delivery_key AND d.state <> t.state
             ), trail AS (
                 INSERT INTO delivery_trail (incident_id, event_id, kind, delivery_key, data)
                 SELECT incident_id, event_id, state, delivery_key,
                        detail || jsonb_build_object('channel', channel,
                            'source', 'provider callback', 'ledger_state', ledger_state)
                 FROM target ORDER BY n
             )
             SELECT DISTINCT n FROM target",
        )
        .bind(&keys)
        .bind(&providers)
        .bind(&states)
        .bind(&details)
        .fetch_all(&self.pool)
        .await?;
        let found: std::collections::HashSet<i64> = found.into_iter().map(|(n,)| n).collect();
        Ok((1..=statuses.len() as i64)
            .map(|n| found.contains(&n))
            .collect())
    }
}
