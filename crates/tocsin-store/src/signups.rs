//! Self-service sign-ups (double opt-in) and the consent log's other steps. See
//! `migrations/0011_signups.sql`.
//!
//! A sign-up holds what a visitor asked for until each address is confirmed: the email by the
//! link in a message, the phone by the code in a text. Only then does the address join a
//! subscriber (a new one whose id is the sign-up's, or the one that already had it), so no
//! delivery can reach an address its owner has not confirmed.

use std::net::IpAddr;

use sqlx::types::Json;
use time::OffsetDateTime;
use tocsin_core::account::AccountNotice;
use tocsin_core::{Channel, Preferences, SubscriberId};
use tracing::instrument;

use crate::consent::ADDRESS_HASH_SQL;
use crate::{Store, StoreError};

/// How many sign-ups one client address and one contact address may make.
#[derive(Debug, Clone, Copy)]
pub struct SignupLimits {
    /// Sign-ups from one client IP per hour.
    pub per_client_per_hour: u32,
    /// Sign-ups naming one email address or phone number per day.
    pub per_address_per_day: u32,
}

impl Default for SignupLimits {
    fn default() -> Self {
        SignupLimits {
            per_client_per_hour: 10,
            per_address_per_day: 3,
        }
    }
}

/// One address of a sign-up, and the message it gets.
#[derive(Debug, Clone)]
pub struct SignupAddress {
    /// As checked (lowercase-insensitive email, E.164 phone).
    pub address: String,
    pub message: AccountNotice,
    /// False when the address already hears from us: the sign-up keeps only its hash (for
    /// the limits) and it can never be confirmed through this sign-up.
    pub confirmable: bool,
}

/// What a visitor asked for.
#[derive(Debug, Clone)]
pub struct NewSignup {
    /// The sign-up's id, which a new subscriber takes.
    pub id: SubscriberId,
    pub preferences: Preferences,
    pub client_ip: IpAddr,
    pub email: Option<SignupAddress>,
    pub phone: Option<SignupAddress>,
    /// The keyed digest of the code texted to the phone, and until when it works.
    pub phone_code: Option<([u8; 32], OffsetDateTime)>,
    /// A webhook endpoint, kept only with a confirmable email (it is confirmed through it).
    pub webhook_url: Option<String>,
    pub expires_at: OffsetDateTime,
}

/// What [`Store::record_signup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupRecorded {
    /// Recorded; messages queued on these channels (an address over its daily limit gets
    /// none, and the visitor is told the same as anyone, so the page reveals nothing).
    Recorded { messages: Vec<Channel> },
    /// The client made too many sign-ups this hour: nothing recorded.
    ClientLimited,
}

/// A sign-up not yet expired.
#[derive(Debug, Clone)]
pub struct Signup {
    pub id: SubscriberId,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub webhook_url: Option<String>,
    pub preferences: Preferences,
    pub email_confirmed: bool,
    pub phone_confirmed: bool,
    /// The subscriber the confirmed email address joined.
    pub email_subscriber: Option<SubscriberId>,
    /// The subscriber the confirmed phone number joined.
    pub phone_subscriber: Option<SubscriberId>,
    pub expires_at: OffsetDateTime,
}

impl Signup {
    /// The subscriber the address on `channel` joined when it was confirmed.
    pub fn joined(&self, channel: Channel) -> Option<SubscriberId> {
        match channel {
            Channel::Email => self.email_subscriber,
            Channel::Sms => self.phone_subscriber,
            Channel::Webhook => None,
        }
    }
}

/// What checking a texted code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// The digest matches: the phone may be confirmed.
    Matches,
    /// It does not; this many tries are left.
    Wrong { tries_left: u32 },
    /// Too many wrong tries, or the code's time is over, or no code was sent.
    Spent,
    /// No such sign-up, or it expired.
    Gone,
}

/// A sign-up's code digest, its end, the tries so far, and whether the phone is confirmed.
type CodeRow = (Option<Vec<u8>>, Option<OffsetDateTime>, i32, bool);
/// action, channel, source, detail, when.
type ConsentRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    OffsetDateTime,
);

#[derive(sqlx::FromRow)]
struct SignupRow {
    signup_id: uuid::Uuid,
    email: Option<String>,
    phone: Option<String>,
    webhook_url: Option<String>,
    preferences: Json<Preferences>,
    email_confirmed_at: Option<OffsetDateTime>,
    phone_confirmed_at: Option<OffsetDateTime>,
    email_subscriber: Option<uuid::Uuid>,
    phone_subscriber: Option<uuid::Uuid>,
    expires_at: OffsetDateTime,
}

/// The address of a part the sign-up may confirm.
fn confirmable(part: Option<&SignupAddress>) -> Option<&str> {
    part.filter(|p| p.confirmable).map(|p| p.address.as_str())
}

fn hash_sql(channel: &str, param: u8) -> String {
    // The suppression list's hash of an address, for a channel given literally.
    ADDRESS_HASH_SQL
        .replace("$1", &format!("'{channel}'"))
        .replace("$2", &format!("${param}"))
}

impl Store {
    /// The live subscriber that has `address` on `channel`, and whether it opted out there.
    pub async fn subscriber_with_address(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<Option<(SubscriberId, bool)>, StoreError> {
        let row: Option<(uuid::Uuid, bool)> = sqlx::query_as(
            "SELECT c.subscriber_id, $1 = ANY(c.opted_out)
             FROM subscriber_contacts c JOIN subscribers s USING (subscriber_id)
             WHERE s.deleted_at IS NULL
               AND (($1 = 'email' AND lower(c.email) = lower(btrim($2)))
                 OR ($1 = 'sms' AND c.phone = btrim($2)))
             ORDER BY s.created_at LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, opted_out)| (SubscriberId::from_uuid(id), opted_out)))
    }

    /// Records a sign-up and queues its messages in one transaction, within `limits`, and
    /// logs the request in the consent log (source `status_page`).
    #[instrument(skip_all, fields(signup_id = %signup.id))]
    pub async fn record_signup(
        &self,
        signup: &NewSignup,
        limits: SignupLimits,
    ) -> Result<SignupRecorded, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One client's sign-ups are counted one at a time, so a burst cannot pass the limit.
        let ip = signup.client_ip.to_string();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('signup:' || $1, 0))")
            .bind(&ip)
            .execute(&mut *tx)
            .await?;
        let (from_client,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM signups
             WHERE client_ip = $1::inet AND created_at > now() - interval '1 hour'",
        )
        .bind(&ip)
        .fetch_one(&mut *tx)
        .await?;
        if from_client >= i64::from(limits.per_client_per_hour) {
            return Ok(SignupRecorded::ClientLimited);
        }
        let mut kept: Vec<(Channel, &SignupAddress)> = Vec::new();
        for (channel, part) in [
            (Channel::Email, &signup.email),
            (Channel::Sms, &signup.phone),
        ] {
            let Some(part) = part else { continue };
            let column = if channel == Channel::Email {
                "email_hash"
            } else {
                "phone_hash"
            };
            let (recent,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM signups
                 WHERE {column} = {} AND created_at > now() - interval '1 day'",
                hash_sql(channel.as_str(), 1)
            )))
            .bind(&part.address)
            .fetch_one(&mut *tx)
            .await?;
            if recent < i64::from(limits.per_address_per_day) {
                kept.push((channel, part));
            }
        }
        let part = |channel: Channel| kept.iter().find(|(c, _)| *c == channel).map(|(_, p)| *p);
        let (email, phone) = (part(Channel::Email), part(Channel::Sms));
        let code = phone
            .filter(|p| p.confirmable)
            .and(signup.phone_code.as_ref());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO signups (signup_id, email, phone, preferences, email_hash, phone_hash,
                 client_ip, phone_code_digest, phone_code_expires_at, expires_at, webhook_url)
             VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NULL THEN NULL ELSE {} END,
                     CASE WHEN $6::text IS NULL THEN NULL ELSE {} END,
                     $7::inet, $8, $9, $10, $11)",
            hash_sql("email", 5),
            hash_sql("sms", 6)
        )))
        .bind(signup.id.as_uuid())
        .bind(confirmable(email))
        .bind(confirmable(phone))
        .bind(Json(&signup.preferences))
        .bind(email.map(|p| p.address.as_str()))
        .bind(phone.map(|p| p.address.as_str()))
        .bind(&ip)
        .bind(code.map(|(digest, _)| digest.to_vec()))
        .bind(code.map(|(_, until)| *until))
        .bind(signup.expires_at)
        .bind(confirmable(email).and(signup.webhook_url.as_deref()))
        .execute(&mut *tx)
        .await?;
        for (channel, part) in &kept {
            sqlx::query(
                "INSERT INTO account_messages (channel, address, content) VALUES ($1, $2, $3)",
            )
            .bind(channel.as_str())
            .bind(&part.address)
            .bind(Json(&part.message))
            .execute(&mut *tx)
            .await?;
            if part.confirmable {
                log_consent(
                    &mut tx,
                    &ConsentEntry {
                        channel: Some(*channel),
                        address: Some(&part.address),
                        action: "subscribe",
                        source: "status_page",
                        subscriber: Some(signup.id),
                        detail: Some("asked on the status page; awaiting confirmation"),
                    },
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(SignupRecorded::Recorded {
            messages: kept.iter().map(|(c, _)| *c).collect(),
        })
    }

    /// The sign-up `id`, unless it expired.
    pub async fn signup(&self, id: SubscriberId) -> Result<Option<Signup>, StoreError> {
        let row: Option<SignupRow> = sqlx::query_as(
            "SELECT signup_id, email, phone, webhook_url, preferences, email_confirmed_at, phone_confirmed_at,
                    email_subscriber, phone_subscriber, expires_at
             FROM signups WHERE signup_id = $1 AND expires_at > now()",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Signup {
            id: SubscriberId::from_uuid(r.signup_id),
            email: r.email,
            phone: r.phone,
            webhook_url: r.webhook_url,
            preferences: r.preferences.0,
            email_confirmed: r.email_confirmed_at.is_some(),
            phone_confirmed: r.phone_confirmed_at.is_some(),
            email_subscriber: r.email_subscriber.map(SubscriberId::from_uuid),
            phone_subscriber: r.phone_subscriber.map(SubscriberId::from_uuid),
            expires_at: r.expires_at,
        }))
    }

    /// Counts a try of the code texted for sign-up `id` and says whether `digest` is its
    /// digest; at most `max_tries` tries per code.
    pub async fn try_phone_code(
        &self,
        id: SubscriberId,
        digest: &[u8; 32],
        max_tries: u32,
    ) -> Result<CodeCheck, StoreError> {
        let row: Option<CodeRow> = sqlx::query_as(
            "UPDATE signups SET phone_attempts = phone_attempts + 1
             WHERE signup_id = $1 AND expires_at > now()
             RETURNING phone_code_digest, phone_code_expires_at, phone_attempts,
                       phone_confirmed_at IS NOT NULL",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        let Some((stored, until, tries, confirmed)) = row else {
            return Ok(CodeCheck::Gone);
        };
        let tries = u32::try_from(tries).unwrap_or(u32::MAX);
        let (Some(stored), Some(until)) = (stored, until) else {
            return Ok(CodeCheck::Spent);
        };
        if confirmed {
            return Ok(CodeCheck::Matches);
        }
        if tries > max_tries || until <= OffsetDateTime::now_utc() {
            return Ok(CodeCheck::Spent);
        }
        // Constant time: the comparison must not tell how much of a guess was right.
        let same = stored.len() == digest.len()
            && stored
                .iter()
                .zip(digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        Ok(if same {
            CodeCheck::Matches
        } else {
            CodeCheck::Wrong {
                tries_left: max_tries.saturating_sub(tries),
            }
        })
    }

    /// Records that the sign-up's address on `channel` was confirmed and joined
    /// `subscriber`, with its consent entry (`source`: how it was confirmed).
    #[instrument(skip(self))]
    pub async fn confirm_signup(
        &self,
        id: SubscriberId,
        channel: Channel,
        subscriber: SubscriberId,
        source: &str,
    ) -> Result<(), StoreError> {
        let (confirmed_at, subscriber_column, address_column) = match channel {
            Channel::Email => ("email_confirmed_at", "email_subscriber", "email"),
            _ => ("phone_confirmed_at", "phone_subscriber", "phone"),
        };
        let mut tx = self.pool.begin().await?;
        let address: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE signups SET {confirmed_at} = coalesce({confirmed_at}, now()),
                 {subscriber_column} = $2
             WHERE signup_id = $1 RETURNING {address_column}"
        )))
        .bind(id.as_uuid())
        .bind(subscriber.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        log_consent(
            &mut tx,
            &ConsentEntry {
                channel: Some(channel),
                address: address.as_ref().and_then(|(a,)| a.as_deref()),
                action: "confirm",
                source,
                subscriber: Some(subscriber),
                detail: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes expired sign-ups (and with them the addresses they held) and finished account
    /// messages older than 30 days; returns how many sign-ups went.
    pub async fn expire_signups(&self) -> Result<u64, StoreError> {
        let gone = sqlx::query("DELETE FROM signups WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM account_messages
             WHERE finished_at IS NOT NULL AND finished_at < now() - interval '30 days'",
        )
        .execute(&self.pool)
        .await?;
        Ok(gone)
    }

    /// The consent log of a subscriber, oldest first: (action, channel, source, detail,
    /// when). What answers "why did this person get this message".
    pub async fn consent_history(
        &self,
        subscriber: SubscriberId,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows: Vec<ConsentRow> = sqlx::query_as(
            "SELECT action, channel, source, detail, recorded_at FROM consent_log
                 WHERE subscriber_id = $1 ORDER BY id",
        )
        .bind(subscriber.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(action, channel, source, detail, recorded_at)| ConsentRecord {
                    action,
                    channel: channel.and_then(|c| c.parse().ok()),
                    source,
                    detail,
                    recorded_at,
                },
            )
            .collect())
    }
}

/// One entry of the consent log, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub action: String,
    pub channel: Option<Channel>,
    pub source: String,
    pub detail: Option<String>,
    pub recorded_at: OffsetDateTime,
}

/// One entry to append to the consent log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsentEntry<'a> {
    pub channel: Option<Channel>,
    pub address: Option<&'a str>,
    pub action: &'a str,
    pub source: &'a str,
    pub subscriber: Option<SubscriberId>,
    pub detail: Option<&'a str>,
}

/// Appends `entry` to the consent log inside `tx`; the address is kept only as its hash.
pub(crate) async fn log_consent(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    entry: &ConsentEntry<'_>,
) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO consent_log (channel, address_hash, action, source, subscriber_id, detail)
         VALUES ($1, CASE WHEN $2::text IS NULL THEN NULL ELSE {ADDRESS_HASH_SQL} END,
                 $3, $4, $5, $6)"
    )))
    .bind(entry.channel.map(|c| c.as_str()))
    .bind(entry.address)
    .bind(entry.action)
    .bind(entry.source)
    .bind(entry.subscriber.map(|s| *s.as_uuid()))
    .bind(entry.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
