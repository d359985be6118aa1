//! The account-message queue: confirmations and other messages about a subscription, which
//! the email and SMS workers send (see `tocsin_core::account` and
//! `migrations/0011_signups.sql`).
//!
//! A message is claimed with a lease (`claimed`), marked `sending` just before the provider
//! is called, and finished `sent`, `failed` or back to `pending` for a retry. A claim whose
//! worker vanished before sending is claimed again after its lease; one that vanished while
//! sending becomes `unknown` and is never sent again: a visitor who got nothing asks again.

use std::time::Duration;

use sqlx::types::Json;
use tocsin_core::Channel;
use tocsin_core::account::AccountNotice;
use tracing::instrument;

use crate::{Store, StoreError};

/// A claimed account message.
#[derive(Debug, Clone)]
pub struct AccountMessage {
    pub id: i64,
    pub channel: Channel,
    pub address: String,
    pub notice: AccountNotice,
    /// Earlier attempts that ended in a transient failure.
    pub attempts: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountOutcome {
    Sent,
    /// Try again after this long.
    Retry {
        after: Duration,
        error: String,
    },
    Failed {
        error: String,
    },
    Unknown {
        error: String,
    },
}

impl Store {
    /// Claims up to `limit` due messages on `channel` for `lease` (and those whose claim's
    /// lease ran out before they began).
    #[instrument(skip(self))]
    pub async fn claim_account_messages(
        &self,
        channel: Channel,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<AccountMessage>, StoreError> {
        let rows: Vec<(i64, String, Json<serde_json::Value>, i32)> = sqlx::query_as(
            "UPDATE account_messages m SET state = 'claimed',
                 lease_until = now() + make_interval(secs => $3)
             WHERE m.message_id IN (
                 SELECT message_id FROM account_messages
                 WHERE channel = $1
                   AND ((state = 'pending' AND due_at <= now())
                     OR (state = 'claimed' AND lease_until < now()))
                 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING m.message_id, m.address, m.content, m.attempts",
        )
        .bind(channel.as_str())
        .bind(i64::from(limit))
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for (id, address, content, attempts) in rows {
            match serde_json::from_value::<AccountNotice>(content.0) {
                Ok(notice) => claimed.push(AccountMessage {
                    id,
                    channel,
                    address,
                    notice,
                    attempts: u32::try_from(attempts).unwrap_or_default(),
                }),
                // Written by a newer version, or damaged: never sendable, so say so once.
                Err(e) => {
                    self.finish_account_message(
                        id,
                        &AccountOutcome::Failed {
                            error: format!("unreadable content: {e}"),
                        },
                    )
                    .await?;
                }
            }
        }
        Ok(claimed)
    }

    /// Marks the send of a claimed message begun, holding it `sending` for `lease`; false
    /// when the claim was lost (its lease ran out and another worker has it): do not send.
    pub async fn begin_account_message(
        &self,
        id: i64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let begun = sqlx::query(
            "UPDATE account_messages SET state = 'sending', attempts = attempts + 1,
                 lease_until = now() + make_interval(secs => $2)
             WHERE message_id = $1 AND state = 'claimed' AND lease_until > now()",
        )
        .bind(id)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(begun == 1)
    }

    /// Records how the send of `id` ended. A finished message keeps neither its address nor
    /// what it said.
    pub async fn finish_account_message(
        &self,
        id: i64,
        outcome: &AccountOutcome,
    ) -> Result<(), StoreError> {
        let (state, error, retry_after) = match outcome {
            AccountOutcome::Sent => ("sent", None, None),
            AccountOutcome::Retry { after, error } => ("pending", Some(error), Some(after)),
            AccountOutcome::Failed { error } => ("failed", Some(error), None),
            AccountOutcome::Unknown { error } => ("unknown", Some(error), None),
        };
        sqlx::query(
            "UPDATE account_messages SET state = $2, last_error = $3, lease_until = NULL,
                 due_at = CASE WHEN $4::float8 IS NULL THEN due_at
                               ELSE now() + make_interval(secs => $4) END,
                 finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END,
                 address = CASE WHEN $2 = 'pending' THEN address ELSE '' END,
                 content = CASE WHEN $2 = 'pending' THEN content ELSE '{}'::jsonb END
             WHERE message_id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(error)
        .bind(retry_after.map(Duration::as_secs_f64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Settles messages whose worker vanished mid-send as `unknown` (never resent); returns
    /// how many.
    pub async fn settle_vanished_account_messages(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE account_messages SET state = 'unknown', finished_at = now(),
                 last_error = 'the worker stopped while sending; not sent again',
                 address = '', content = '{}'::jsonb, lease_until = NULL
             WHERE state = 'sending' AND lease_until < now()",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
