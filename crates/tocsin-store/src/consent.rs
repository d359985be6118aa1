//! Opt-outs by address: the suppression list, its mirror on each subscriber's contacts, and
//! the consent log. See `migrations/0010_consent.sql`.
//!
//! An opt-out belongs to the address, not to a subscriber record: every subscriber with that
//! address stops hearing on that channel, and one imported with it later starts opted out. No
//! operator write undoes it; only the reader does (a START reply, the preference centre).

use tocsin_core::{Channel, SubscriberId};
use tracing::instrument;

use crate::{Store, StoreError};

/// An address as the suppression list hashes it: emails lowercased, the rest as stored.
pub(crate) const ADDRESS_HASH_SQL: &str =
    "sha256(convert_to(CASE $1 WHEN 'email' THEN lower(btrim($2)) ELSE btrim($2) END, 'UTF8'))";

/// Recomputes `opted_out` for the contacts matched by `filter` (a SQL condition on `c`).
fn refresh(filter: &str) -> String {
    format!(
        "UPDATE subscriber_contacts c SET opted_out = ARRAY(
             SELECT s.channel FROM suppressions s
             WHERE (s.channel = 'email' AND c.email IS NOT NULL
                    AND s.address_hash = sha256(convert_to(lower(c.email), 'UTF8')))
                OR (s.channel = 'sms' AND c.phone IS NOT NULL
                    AND s.address_hash = sha256(convert_to(c.phone, 'UTF8')))
                OR (s.channel = 'webhook' AND c.webhook_url IS NOT NULL
                    AND s.address_hash = sha256(convert_to(c.webhook_url, 'UTF8')))
             ORDER BY s.channel)
         WHERE {filter}"
    )
}

/// The contacts an address belongs to, as a condition on `c` with the channel in `$1` and
/// the address in `$2`.
const BY_ADDRESS: &str = "(($1 = 'email' AND lower(c.email) = lower(btrim($2)))
      OR ($1 = 'sms' AND c.phone = btrim($2))
      OR ($1 = 'webhook' AND c.webhook_url = btrim($2)))";

/// The mirror refresh after an upsert of `$1` (subscriber ids), skipped while nobody has
/// opted out (then every mirror is empty already).
pub(crate) fn refresh_upserted() -> String {
    refresh("c.subscriber_id = ANY($1) AND EXISTS (SELECT 1 FROM suppressions)")
}

impl Store {
    /// Records that `address` wants no more messages on `channel`, from `source` ("sms_stop",
    /// "unsubscribe_link", "carrier_21610", ...); returns how many subscribers it silences.
    /// Repeating it changes nothing but the log.
    #[instrument(skip(self, address))]
    pub async fn opt_out_address(
        &self,
        channel: Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        self.set_consent(channel, address, source, false).await
    }

    /// Records that `address` may hear on `channel` again (a START reply, a re-subscription
    /// by the reader); returns how many subscribers it concerns.
    #[instrument(skip(self, address))]
    pub async fn opt_in_address(
        &self,
        channel: Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        self.set_consent(channel, address, source, true).await
    }

    async fn set_consent(
        &self,
        channel: Channel,
        address: &str,
        source: &str,
        opt_in: bool,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let change = if opt_in {
            format!(
                "DELETE FROM suppressions WHERE channel = $1 AND address_hash = {ADDRESS_HASH_SQL}"
            )
        } else {
            format!(
                "INSERT INTO suppressions (channel, address_hash, source)
                 VALUES ($1, {ADDRESS_HASH_SQL}, $3) ON CONFLICT DO NOTHING"
            )
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(change))
            .bind(channel.as_str())
            .bind(address);
        if !opt_in {
            query = query.bind(source);
        }
        query.execute(&mut *tx).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO consent_log (channel, address_hash, action, source)
             VALUES ($1, {ADDRESS_HASH_SQL}, $3, $4)"
        )))
        .bind(channel.as_str())
        .bind(address)
        .bind(if opt_in { "opt_in" } else { "opt_out" })
        .bind(source)
        .execute(&mut *tx)
        .await?;
        let touched = sqlx::query(sqlx::AssertSqlSafe(refresh(BY_ADDRESS)))
            .bind(channel.as_str())
            .bind(address)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(touched)
    }

    /// Opts the subscriber's addresses on `channels` out (each channel they have an address
    /// for); returns the channels opted out. `None` when there is no such live subscriber.
    pub async fn opt_out_subscriber(
        &self,
        id: SubscriberId,
        channels: &[Channel],
        source: &str,
    ) -> Result<Option<Vec<Channel>>, StoreError> {
        let Some(contacts) = self.contacts_of(id).await? else {
            return Ok(None);
        };
        let mut done = Vec::new();
        for channel in channels {
            if let Some(address) = contacts.address(*channel) {
                self.opt_out_address(*channel, address, source).await?;
                done.push(*channel);
            }
        }
        Ok(Some(done))
    }

    /// A live subscriber's contact details.
    async fn contacts_of(
        &self,
        id: SubscriberId,
    ) -> Result<Option<tocsin_core::Contacts>, StoreError> {
        let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT c.email, c.phone, c.webhook_url
             FROM subscriber_contacts c JOIN subscribers s USING (subscriber_id)
             WHERE c.subscriber_id = $1 AND s.deleted_at IS NULL",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(email, phone, webhook_url)| tocsin_core::Contacts {
                email,
                phone,
                webhook_url,
            }),
        )
    }
}

impl Store {
    /// Replaces a subscriber's preferences with the ones they chose themselves (the
    /// preference centre, a confirmed sign-up), as a new revision logged in the consent log
    /// as a change from `source`; `None` when there is no such live subscriber.
    /// `preferences` must be validated.
    pub async fn set_own_preferences(
        &self,
        id: SubscriberId,
        preferences: &tocsin_core::Preferences,
        source: &str,
    ) -> Result<Option<tocsin_core::Subscriber>, StoreError> {
        let updated: Option<(uuid::Uuid,)> = sqlx::query_as(
            "WITH updated AS (
                 UPDATE subscribers s SET revision = nextval('subscriber_revision_seq'),
                     preferences = $2, min_severity = $3,
                     components = CASE WHEN jsonb_typeof($2->'components') = 'object'
                         THEN ARRAY(SELECT jsonb_array_elements_text($2->'components'->'only'))
                     END,
                     updated_at = now()
                 WHERE s.subscriber_id = $1 AND s.deleted_at IS NULL
                 RETURNING s.revision, s.subscriber_id, s.preferences
             ), logged AS (
                 INSERT INTO consent_log (action, source, subscriber_id, detail)
                 SELECT 'change', $4, subscriber_id, 'preferences revision ' || revision
                 FROM updated
             )
             INSERT INTO subscriber_revisions (revision, subscriber_id, preferences)
             SELECT revision, subscriber_id, preferences FROM updated
             RETURNING subscriber_id",
        )
        .bind(id.as_uuid())
        .bind(sqlx::types::Json(preferences))
        .bind(crate::subscribers::severity_rank(preferences.min_severity))
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        match updated {
            Some(_) => Ok(self.subscriber_by_id(id).await?.map(|(s, _)| s)),
            None => Ok(None),
        }
    }
}
