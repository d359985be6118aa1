//! The transactional outbox, from the relay's side.
//!
//! The relay never reads "positions above the last one seen": positions become visible out
//! of commit order under concurrency, and such a cursor would skip an event committed late.
//! Instead every event leaves an outbox row in its own transaction, and the relay takes
//! whatever rows are still unpublished, however late they committed.

use sqlx::postgres::PgListener;
use tocsin_core::{IncidentId, RecordedEvent};
use tracing::instrument;

use crate::rows::{EventRow, event_columns, events};
use crate::{EVENTS_CHANNEL, Store, StoreError};

impl Store {
    /// The oldest `limit` events not yet acknowledged by JetStream, in position order.
    ///
    /// Per incident, position order is version order: version N+1 is computed under the lock
    /// that version N's transaction held until it committed, so it was inserted later.
    #[instrument(skip(self))]
    pub async fn unpublished_events(&self, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM outbox o JOIN events e ON e.position = o.position
             WHERE o.published_at IS NULL ORDER BY o.position LIMIT $1"
        );
        let rows: Vec<EventRow> = sqlx::query_as(sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        events(rows)
    }

    /// Marks events as acknowledged by JetStream.
    ///
    /// The mark commits without waiting for its fsync (`SET LOCAL synchronous_commit = off`),
    /// so the disk's flushes go to the appends that need them. A mark lost in a crash only
    /// makes the relay publish those events again, which JetStream drops by message id,
    /// exactly as after a crash between ack and mark. The statements go as one simple query,
    /// which PostgreSQL runs as one implicit transaction in one round trip; positions are
    /// integers, written into the text as such.
    #[instrument(skip_all, fields(count = positions.len()))]
    pub async fn mark_published(&self, positions: &[i64]) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = positions.iter().map(i64::to_string).collect();
        let sql = format!(
            "SET LOCAL synchronous_commit = off;
             UPDATE outbox SET published_at = clock_timestamp()
             WHERE position = ANY('{{{}}}'::bigint[]) AND published_at IS NULL",
            list.join(",")
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many events wait in the outbox.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Forgets outbox rows published more than `keep` ago; the events themselves stay.
    pub async fn prune_outbox(&self, keep: time::Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM outbox
             WHERE published_at < now() - make_interval(secs => $1)",
        )
        .bind(keep.as_seconds_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Subscribes to append notifications. A dedicated connection, outside the pool.
    pub async fn listen(&self) -> Result<LogNotifications, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(LogNotifications { listener })
    }
}

/// An append seen through `LISTEN`: which incident reached which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogNotification {
    pub incident_id: IncidentId,
    pub version: u64,
}

/// A stream of [`LogNotification`]s, announced in batches after commit. They are hints, not
/// data: after a reconnect some may be missing, so consumers also poll.
#[derive(Debug)]
pub struct LogNotifications {
    listener: PgListener,
}

impl LogNotifications {
    /// Waits for the next announcement: the appends it reports. Reconnects transparently;
    /// `Err` only when the database stays unreachable.
    pub async fn next(&mut self) -> Result<Vec<LogNotification>, StoreError> {
        let note = self.listener.recv().await?;
        Ok(crate::announce::parse(note.payload()))
    }
}

/// The advisory-lock key that elects one active relay per database.
const RELAY_LOCK_KEY: i64 = 0x746f_6373_696e_0001;

/// The exclusive right to relay, held as a session advisory lock on a dedicated connection.
/// PostgreSQL releases it when the connection ends, so a crashed relay's lease frees itself.
#[derive(Debug)]
pub struct RelayLease {
    conn: sqlx::PgConnection,
}

impl Store {
    /// Takes the relay lease if no other relay holds it.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&self.pool.connect_options()).await?;
        let (acquired,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        Ok(acquired.then_some(RelayLease { conn }))
    }
}

impl RelayLease {
    /// Whether the lease's connection (and so the lock) is still alive.
    pub async fn is_held(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }
}
