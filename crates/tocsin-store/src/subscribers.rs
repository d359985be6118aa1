//! Subscribers, their contact details and their preference history.
//!
//! Writes go in batches: one upsert and one bulk import share [`Store::upsert_subscribers`],
//! which writes a whole batch with three `UNNEST` statements in one transaction. Every write
//! takes a new global revision and records the preferences it set in `subscriber_revisions`.

use std::collections::HashMap;

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::{Contacts, Preferences, Severity, Subscriber, SubscriberId};
use tracing::instrument;
use uuid::Uuid;

use crate::{Store, StoreError};

/// One subscriber to create or update, already validated by the caller.
#[derive(Debug, Clone)]
pub struct SubscriberWrite {
    pub external_id: String,
    pub preferences: Preferences,
    pub contacts: Contacts,
    /// A freshly generated `whsec_` secret, used only if the subscriber has a webhook URL and
    /// no secret yet. Secrets are never replaced by an upsert; rotation is explicit.
    pub candidate_webhook_secret: String,
    /// For an operator's write: how the person agreed to be told, logged in the consent log
    /// as an import. `None` for writes that log their own consent (a confirmed sign-up).
    pub consent: Option<String>,
}

/// What an upsert did to one subscriber.
#[derive(Debug, Clone)]
pub struct Upserted {
    pub subscriber: Subscriber,
    pub created: bool,
    /// The webhook signing secret, present only when this write created it: it is shown once.
    pub new_webhook_secret: Option<String>,
}

/// A page of subscribers, in external-id order.
#[derive(Debug, Clone)]
pub struct SubscriberPage {
    pub subscribers: Vec<Subscriber>,
    /// The external id to continue after, when there may be more.
    pub next_after: Option<String>,
}

/// Narrows a listing.
#[derive(Debug, Clone, Default)]
pub struct SubscriberFilter {
    /// Only subscribers who chose this channel.
    pub channel: Option<tocsin_core::Channel>,
    /// Only subscribers who follow this component (or follow all).
    pub component: Option<String>,
}

/// The rank stored in `subscribers.min_severity`, so SQL can compare severities.
pub(crate) fn severity_rank(severity: Severity) -> i16 {
    match severity {
        Severity::Minor => 1,
        Severity::Major => 2,
        Severity::Critical => 3,
    }
}

#[derive(sqlx::FromRow)]
struct SubscriberRow {
    subscriber_id: Uuid,
    external_id: Option<String>,
    revision: i64,
    preferences: Json<Preferences>,
    email: Option<String>,
    phone: Option<String>,
    webhook_url: Option<String>,
    webhook_disabled_reason: Option<String>,
    webhook_disabled_at: Option<OffsetDateTime>,
    opted_out: Vec<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<SubscriberRow> for Subscriber {
    fn from(row: SubscriberRow) -> Self {
        Subscriber {
            id: row.subscriber_id.into(),
            external_id: row.external_id.unwrap_or_default(),
            revision: row.revision,
            preferences: row.preferences.0,
            contacts: Contacts {
                email: row.email,
                phone: row.phone,
                webhook_url: row.webhook_url,
            },
            webhook_disabled: row
                .webhook_disabled_at
                .map(|_| row.webhook_disabled_reason.unwrap_or_default()),
            opted_out: row
                .opted_out
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const SELECT_SUBSCRIBER: &str = "SELECT s.subscriber_id, s.external_id, s.revision, s.preferences, \
     c.email, c.phone, c.webhook_url, c.webhook_disabled_reason, c.webhook_disabled_at, \
     c.opted_out, s.created_at, s.updated_at \
     FROM subscribers s JOIN subscriber_contacts c USING (subscriber_id) ";

impl Store {
    /// Creates or updates a batch of subscribers by external id, in one transaction. External
    /// ids must be unique within the batch (the caller reports duplicates per row).
    #[instrument(skip_all, fields(subscribers = writes.len()))]
    pub async fn upsert_subscribers(
        &self,
        writes: &[SubscriberWrite],
    ) -> Result<Vec<Upserted>, StoreError> {
        let new_ids: Vec<Uuid> = writes.iter().map(|_| Uuid::now_v7()).collect();
        self.upsert_with_ids(writes, new_ids).await
    }

    /// Creates or updates the subscriber a self-service sign-up became: a new one takes the
    /// sign-up's id (the links sent before confirmation already name it), under the
    /// external id `write` gives.
    #[instrument(skip_all, fields(subscriber_id = %id))]
    pub async fn upsert_signed_up(
        &self,
        id: SubscriberId,
        write: &SubscriberWrite,
    ) -> Result<Upserted, StoreError> {
        let mut upserted = self
            .upsert_with_ids(std::slice::from_ref(write), vec![*id.as_uuid()])
            .await?;
        upserted
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an upserted subscriber was not returned".into()))
    }

    async fn upsert_with_ids(
        &self,
        writes: &[SubscriberWrite],
        new_ids: Vec<Uuid>,
    ) -> Result<Vec<Upserted>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let external_ids: Vec<&str> = writes.iter().map(|w| w.external_id.as_str()).collect();
        let preferences: Vec<Json<&Preferences>> =
            writes.iter().map(|w| Json(&w.preferences)).collect();
        let severities: Vec<i16> = writes
            .iter()
            .map(|w| severity_rank(w.preferences.min_severity))
            .collect();
        let emails: Vec<Option<&str>> =
            writes.iter().map(|w| w.contacts.email.as_deref()).collect();
        let phones: Vec<Option<&str>> =
            writes.iter().map(|w| w.contacts.phone.as_deref()).collect();
        let urls: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.contacts.webhook_url.as_deref())
            .collect();
        let secrets: Vec<&str> = writes
            .iter()
            .map(|w| w.candidate_webhook_secret.as_str())
            .collect();

        let mut tx = self.pool.begin().await?;
        // The component copy is derived in SQL from the document itself, so the column can
        // never disagree with what was stored.
        let upserted: Vec<(Uuid, String, bool)> = sqlx::query_as(
            "INSERT INTO subscribers AS s (subscriber_id, external_id, revision, preferences,
                 min_severity, components, created_at, updated_at)
             SELECT id, ext, nextval('subscriber_revision_seq'), prefs, sev,
                 CASE WHEN jsonb_typeof(prefs->'components') = 'object'
                      THEN ARRAY(SELECT jsonb_array_elements_text(prefs->'components'->'only'))
                 END,
                 now(), now()
             FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int2[])
                 AS u(id, ext, prefs, sev)
             ON CONFLICT (external_id) DO UPDATE SET
                 revision = EXCLUDED.revision,
                 preferences = EXCLUDED.preferences,
                 min_severity = EXCLUDED.min_severity,
                 components = EXCLUDED.components,
                 updated_at = now()
             RETURNING s.subscriber_id, s.external_id, (xmax = 0) AS created",
        )
        .bind(&new_ids)
        .bind(&external_ids)
        .bind(&preferences)
        .bind(&severities)
        .fetch_all(&mut *tx)
        .await?;
        let ids_by_external: std::collections::HashMap<&str, (Uuid, bool)> = upserted
            .iter()
            .map(|(id, ext, created)| (ext.as_str(), (*id, *created)))
            .collect();
        let ids: Vec<Uuid> = external_ids
            .iter()
            .map(|ext| ids_by_external.get(ext).map(|(id, _)| *id))
            .collect::<Option<_>>()
            .ok_or_else(|| StoreError::Corrupt("an upserted subscriber was not returned".into()))?;

        // A new URL re-enables a disabled endpoint: the subscriber fixed it. Removing the URL
        // removes the secret with it.
        let secrets_set: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "INSERT INTO subscriber_contacts AS c (subscriber_id, email, phone, webhook_url,
                 webhook_secret)
             SELECT id, email, phone, url, CASE WHEN url IS NULL THEN NULL ELSE secret END
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                 AS u(id, email, phone, url, secret)
             ON CONFLICT (subscriber_id) DO UPDATE SET
                 email = EXCLUDED.email,
                 phone = EXCLUDED.phone,
                 webhook_url = EXCLUDED.webhook_url,
                 webhook_secret = CASE WHEN EXCLUDED.webhook_url IS NULL THEN NULL
                     ELSE COALESCE(c.webhook_secret, EXCLUDED.webhook_secret) END,
                 webhook_disabled_at = CASE
                     WHEN EXCLUDED.webhook_url IS DISTINCT FROM c.webhook_url THEN NULL
                     ELSE c.webhook_disabled_at END,
                 webhook_disabled_reason = CASE
                     WHEN EXCLUDED.webhook_url IS DISTINCT FROM c.webhook_url THEN NULL
                     ELSE c.webhook_disabled_reason END
             RETURNING c.subscriber_id, c.webhook_secret",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(&phones)
        .bind(&urls)
        .bind(&secrets)
        .fetch_all(&mut *tx)
        .await?;
        let stored_secrets: std::collections::HashMap<Uuid, Option<String>> =
            secrets_set.into_iter().collect();
        // Addresses that opted out stay opted out, whoever writes them.
        sqlx::query(sqlx::AssertSqlSafe(crate::consent::refresh_upserted()))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;

        let consents: Vec<Option<&str>> = writes.iter().map(|w| w.consent.as_deref()).collect();
        sqlx::query(
            "INSERT INTO consent_log (action, source, subscriber_id, detail)
             SELECT 'import', 'operator_import', id, note
             FROM UNNEST($1::uuid[], $2::text[]) AS u(id, note)
             WHERE note IS NOT NULL",
        )
        .bind(&ids)
        .bind(&consents)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subscriber_revisions (revision, subscriber_id, preferences)
             SELECT s.revision, s.subscriber_id, s.preferences
             FROM subscribers s WHERE s.subscriber_id = ANY($1)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;

        let sql = format!("{SELECT_SUBSCRIBER} WHERE s.subscriber_id = ANY($1)");
        let rows: Vec<SubscriberRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

        let mut by_id: std::collections::HashMap<Uuid, Subscriber> = rows
            .into_iter()
            .map(|row| (row.subscriber_id, Subscriber::from(row)))
            .collect();
        writes
            .iter()
            .zip(&ids)
            .map(|(write, id)| {
                let subscriber = by_id
                    .remove(id)
                    .ok_or_else(|| StoreError::Corrupt("an upserted subscriber vanished".into()))?;
                let created = ids_by_external[write.external_id.as_str()].1;
                let stored = stored_secrets.get(id).cloned().flatten();
                // Candidates are random, so a stored secret equal to this write's candidate
                // was set by this write.
                let new_webhook_secret =
                    stored.filter(|secret| *secret == write.candidate_webhook_secret);
                Ok(Upserted {
                    subscriber,
                    created,
                    new_webhook_secret,
                })
            })
            .collect()
    }

    /// The subscriber with this external id, if it exists and was not deleted.
    #[instrument(skip(self))]
    pub async fn subscriber(&self, external_id: &str) -> Result<Option<Subscriber>, StoreError> {
        let sql = format!("{SELECT_SUBSCRIBER} WHERE s.external_id = $1");
        let row: Option<SubscriberRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Subscriber::from))
    }

    /// The subscriber with this id, with their webhook secret, for the workers. `None` once
    /// deleted: their contact details are gone.
    #[instrument(skip(self))]
    pub async fn subscriber_by_id(
        &self,
        id: SubscriberId,
    ) -> Result<Option<(Subscriber, Option<String>)>, StoreError> {
        Ok(self.subscribers_for_delivery(&[id]).await?.remove(&id))
    }

    /// Live subscribers by id, with their webhook secrets, for the workers. Deleted ones are
    /// absent: their contact details are gone.
    #[instrument(skip_all, fields(subscribers = ids.len()))]
    pub async fn subscribers_for_delivery(
        &self,
        ids: &[SubscriberId],
    ) -> Result<HashMap<SubscriberId, (Subscriber, Option<String>)>, StoreError> {
        use sqlx::{FromRow, Row};
        let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        let sql = format!(
            "{} WHERE s.subscriber_id = ANY($1) AND s.deleted_at IS NULL",
            SELECT_SUBSCRIBER.replace(" FROM", ", c.webhook_secret FROM")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let secret: Option<String> = row.try_get("webhook_secret")?;
                let subscriber = Subscriber::from(SubscriberRow::from_row(row)?);
                Ok((subscriber.id, (subscriber, secret)))
            })
            .collect()
    }

    /// A page of live subscribers after `after` (an external id), in external-id order.
    #[instrument(skip(self))]
    pub async fn list_subscribers(
        &self,
        filter: &SubscriberFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<SubscriberPage, StoreError> {
        let sql = format!(
            "{SELECT_SUBSCRIBER}
             WHERE s.deleted_at IS NULL AND s.external_id > $1
               AND ($2::text IS NULL OR s.preferences->'channels' ? $2)
               AND ($3::text IS NULL OR s.components IS NULL OR s.components @> ARRAY[$3])
             ORDER BY s.external_id LIMIT $4"
        );
        let rows: Vec<SubscriberRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(filter.channel.map(|c| c.as_str()))
            .bind(filter.component.as_deref())
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut subscribers: Vec<Subscriber> = rows.into_iter().map(Subscriber::from).collect();
        let next_after = if subscribers.len() > limit as usize {
            subscribers.truncate(limit as usize);
            subscribers.last().map(|s| s.external_id.clone())
        } else {
            None
        };
        Ok(SubscriberPage {
            subscribers,
            next_after,
        })
    }

    /// Deletes a subscriber: erases their contact details and external id, and records the
    /// deletion as a revision. Their id stays in the ledger and the trail, anonymised.
    /// Returns false when there was no such subscriber.
    #[instrument(skip(self))]
    pub async fn delete_subscriber(&self, external_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted: Option<(Uuid, i64)> = sqlx::query_as(
            "UPDATE subscribers SET external_id = NULL, deleted_at = now(), updated_at = now(),
                 preferences = jsonb_build_object('channels', '[]'::jsonb,
                     'min_severity', 'critical'),
                 revision = nextval('subscriber_revision_seq')
             WHERE external_id = $1 AND deleted_at IS NULL
             RETURNING subscriber_id, revision",
        )
        .bind(external_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, revision)) = deleted else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM subscriber_contacts WHERE subscriber_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO subscriber_revisions (revision, subscriber_id, preferences)
             VALUES ($1, $2, NULL)",
        )
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces a subscriber's webhook signing secret. Returns false when the subscriber does
    /// not exist or has no webhook URL.
    #[instrument(skip_all)]
    pub async fn rotate_webhook_secret(
        &self,
        external_id: &str,
        new_secret: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE subscriber_contacts c SET webhook_secret = $2
             FROM subscribers s
             WHERE s.subscriber_id = c.subscriber_id AND s.external_id = $1
               AND c.webhook_url IS NOT NULL",
        )
        .bind(external_id)
        .bind(new_secret)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Disables a subscriber's webhook endpoint (410 Gone, sustained failure) until its URL
    /// changes, and records that in the trail of the incident whose delivery found out.
    #[instrument(skip(self))]
    pub async fn disable_webhook(
        &self,
        id: SubscriberId,
        incident_id: tocsin_core::IncidentId,
        event_id: tocsin_core::EventId,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH disabled AS (
                 UPDATE subscriber_contacts SET webhook_disabled_at = now(),
                     webhook_disabled_reason = $2
                 WHERE subscriber_id = $1 AND webhook_disabled_at IS NULL
                 RETURNING subscriber_id
             )
             INSERT INTO delivery_trail (incident_id, event_id, kind, data)
             SELECT $3, $4, 'endpoint_disabled',
                    jsonb_build_object('subscriber_id', subscriber_id, 'reason', $2::text)
             FROM disabled",
        )
        .bind(id.as_uuid())
        .bind(reason)
        .bind(incident_id.as_uuid())
        .bind(event_id.as_uuid())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The preferences a subscriber had at `revision`: the last change at or before it.
    /// `None` if they did not exist yet, `Some(None)` if they were deleted by then.
    #[instrument(skip(self))]
    pub async fn preferences_at(
        &self,
        id: SubscriberId,
        revision: i64,
    ) -> Result<Option<Option<Preferences>>, StoreError> {
        let row: Option<(Option<Json<Preferences>>,)> = sqlx::query_as(
            "SELECT preferences FROM subscriber_revisions
             WHERE subscriber_id = $1 AND revision <= $2
             ORDER BY revision DESC LIMIT 1",
        )
        .bind(id.as_uuid())
        .bind(revision)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(prefs,)| prefs.map(|p| p.0)))
    }
}
