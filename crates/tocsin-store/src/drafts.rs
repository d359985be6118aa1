//! Incidents held for approval (`migrations/0012_drafts.sql`): an alert under a `hold` rule
//! becomes a draft; an operator publishes it (through the normal publish path, as the alert
//! source) or discards it; when the alert resolves first, the draft goes (the occurrence is
//! over, and the group's next firing drafts anew).

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::{Change, IncidentId};

use crate::{Store, StoreError};

/// A draft as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub incident_id: IncidentId,
    /// Who would have published it (the alert source's token name).
    pub publisher: String,
    pub idempotency_key: String,
    pub change: Change,
    /// `pending`, `published` or `discarded`.
    pub state: String,
    /// How many notifications made or refreshed it.
    pub notifications: u32,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

type DraftRow = (
    uuid::Uuid,
    String,
    String,
    Json<Change>,
    String,
    i32,
    OffsetDateTime,
    OffsetDateTime,
);

fn draft(row: DraftRow) -> Draft {
    let (id, publisher, key, change, state, notifications, created_at, updated_at) = row;
    Draft {
        incident_id: IncidentId::from_uuid(id),
        publisher,
        idempotency_key: key,
        change: change.0,
        state,
        notifications: u32::try_from(notifications).unwrap_or_default(),
        created_at,
        updated_at,
    }
}

const COLUMNS: &str = "incident_id, publisher, idempotency_key, change, state, notifications, \
     created_at, updated_at";

impl Store {
    /// Holds `change` as the pending draft of `incident_id`, or refreshes the pending one
    /// (its text and severity follow the latest notification). Returns `None` when the
    /// incident's draft was already decided (published, discarded or withdrawn): the caller
    /// leaves it so.
    pub async fn hold_draft(
        &self,
        incident_id: IncidentId,
        publisher: &str,
        idempotency_key: &str,
        change: &Change,
    ) -> Result<Option<Draft>, StoreError> {
        let row: Option<DraftRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO drafts (incident_id, publisher, idempotency_key, change)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (incident_id) DO UPDATE SET
                 change = EXCLUDED.change, idempotency_key = EXCLUDED.idempotency_key,
                 notifications = drafts.notifications + 1, updated_at = now()
             WHERE drafts.state = 'pending'
             RETURNING {COLUMNS}"
        )))
        .bind(incident_id.as_uuid())
        .bind(publisher)
        .bind(idempotency_key)
        .bind(Json(change))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(draft))
    }

    /// The drafts waiting for an operator, oldest first.
    pub async fn pending_drafts(&self, limit: u32) -> Result<Vec<Draft>, StoreError> {
        let rows: Vec<DraftRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM drafts WHERE state = 'pending' ORDER BY created_at LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(draft).collect())
    }

    /// The draft of `incident_id`, in any state.
    pub async fn draft(&self, incident_id: IncidentId) -> Result<Option<Draft>, StoreError> {
        let row: Option<DraftRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM drafts WHERE incident_id = $1"
        )))
        .bind(incident_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(draft))
    }

    /// Moves the pending draft of `incident_id` to `state` (`published` or `discarded`),
    /// recording who decided; false when it was not pending.
    pub async fn decide_draft(
        &self,
        incident_id: IncidentId,
        state: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE drafts SET state = $2, decided_by = $3, decided_at = now(), updated_at = now()
             WHERE incident_id = $1 AND state = 'pending'",
        )
        .bind(incident_id.as_uuid())
        .bind(state)
        .bind(by)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Ends the draft of an alert group that resolved: a pending one is withdrawn, a
    /// discarded one forgotten, so the group's next firing drafts anew. Returns the state the
    /// deleted draft was in.
    pub async fn end_draft(&self, incident_id: IncidentId) -> Result<Option<String>, StoreError> {
        let state: Option<(String,)> = sqlx::query_as(
            "DELETE FROM drafts WHERE incident_id = $1 AND state IN ('pending', 'discarded')
             RETURNING state",
        )
        .bind(incident_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(state.map(|(s,)| s))
    }
}
