//! The bare ledger cycle in PostgreSQL, as a yardstick for the fan-out benchmark: the least
//! the database must do for N deliveries, with none of Tocsin around it.
//!
//! N rows are inserted in one `INSERT … SELECT`, then four connections (the machine has two
//! cores) claim them 64 at a time (`FOR UPDATE SKIP LOCKED`, as a job queue does) and record
//! each batch as delivered, until none is left. The table is a scratch one, dropped after.

use std::time::Instant;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;

/// Connections claiming and recording at once.
const CLAIMERS: usize = 4;
/// Rows one claim takes.
const BATCH: i64 = 64;

/// Seconds for the insert, claim and record of `rows` ledger rows.
pub(super) async fn ledger_cycle(database_url: &str, rows: usize) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(CLAIMERS as u32 + 1)
        .connect(database_url)
        .await
        .context("connecting for the raw ledger cycle")?;
    sqlx::query(
        "CREATE TABLE raw_ledger (
             delivery_key text PRIMARY KEY,
             subscriber_id uuid NOT NULL,
             state text NOT NULL DEFAULT 'pending',
             lease_owner text,
             updated_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await
    .context("creating the raw ledger")?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO raw_ledger (delivery_key, subscriber_id)
         SELECT 'dlv_' || md5(n::text), gen_random_uuid() FROM generate_series(1, $1) AS n",
    )
    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
    .execute(&pool)
    .await
    .context("inserting the raw ledger")?;
    let claimers = (0..CLAIMERS).map(|i| {
        let pool = pool.clone();
        async move {
            let owner = format!("raw-{i}");
            loop {
                let claimed: Vec<(String,)> = sqlx::query_as(
                    "UPDATE raw_ledger r SET state = 'sending', lease_owner = $1, updated_at = now()
                     FROM (SELECT delivery_key FROM raw_ledger WHERE state = 'pending'
                           LIMIT $2 FOR UPDATE SKIP LOCKED) c
                     WHERE r.delivery_key = c.delivery_key
                     RETURNING r.delivery_key",
                )
                .bind(&owner)
                .bind(BATCH)
                .fetch_all(&pool)
                .await?;
                if claimed.is_empty() {
                    return Ok::<(), sqlx::Error>(());
                }
                let keys: Vec<String> = claimed.into_iter().map(|(key,)| key).collect();
                sqlx::query(
                    "UPDATE raw_ledger SET state = 'delivered', lease_owner = NULL,
                         updated_at = now()
                     WHERE delivery_key = ANY($1) AND lease_owner = $2",
                )
                .bind(&keys)
                .bind(&owner)
                .execute(&pool)
                .await?;
            }
        }
    });
    for claimer in futures::future::join_all(claimers).await {
        claimer.context("claiming the raw ledger")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE raw_ledger")
        .execute(&pool)
        .await
        .context("dropping the raw ledger")?;
    pool.close().await;
    Ok(seconds)
}
