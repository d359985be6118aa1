//! A fresh PostgreSQL database per test, for tests that cannot use `#[sqlx::test]`
//! (system tests whose child processes need a URL).

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// A database of the test's own, next to `DATABASE_URL`'s. Call
/// [`TestDatabase::drop_database`] at the end of the test; a panicking test leaves its
/// database behind for inspection (they are all named `tocsin_test_*`).
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the test's own database, for child processes.
    pub url: String,
    /// `tocsin_test_<uuid>`.
    pub name: String,
    admin: PgConnectOptions,
    pool: PgPool,
}

fn admin_url() -> anyhow::Result<String> {
    std::env::var("DATABASE_URL").context(
        "DATABASE_URL is not set: run the tests with `cargo xtask test`, or export \
         DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
    )
}

impl TestDatabase {
    /// Creates an empty database `tocsin_test_<uuid>` next to `DATABASE_URL`'s.
    pub async fn create() -> anyhow::Result<TestDatabase> {
        let admin_url = admin_url()?;
        let admin: PgConnectOptions = admin_url.parse().context("parsing DATABASE_URL")?;
        let name = format!("tocsin_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin
            .connect()
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin_url}: is it running?"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("creating the test database")?;
        conn.close().await?;
        let url = replace_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(admin.clone().database(&name))
            .await
            .with_context(|| format!("connecting to the new database {name}"))?;
        Ok(TestDatabase {
            url,
            name,
            admin,
            pool,
        })
    }

    /// Creates a database and applies `migrator` to it.
    pub async fn create_migrated(
        migrator: &sqlx::migrate::Migrator,
    ) -> anyhow::Result<TestDatabase> {
        let db = Self::create().await?;
        migrator
            .run(&db.pool)
            .await
            .context("migrating the test database")?;
        Ok(db)
    }

    /// A pool connected to the test's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Drops the database, closing every connection to it first.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut conn = self
            .admin
            .connect()
            .await
            .context("connecting to PostgreSQL to drop the test database")?;
        // FORCE: a killed child process may still hold connections the pool does not own.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping {}", self.name))?;
        conn.close().await?;
        Ok(())
    }
}

/// `url` with its database name (the path) replaced by `name`; query parameters kept.
pub fn replace_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let path_start = rest.find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    let query = url[path_start..]
        .find('?')
        .map_or("", |i| &url[path_start + i..]);
    format!("{}/{name}{query}", &url[..path_start])
}

#[cfg(test)]
mod tests {
    use sqlx::PgConnection;

    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[tokio::test]
    async fn a_test_database_is_created_used_and_dropped() {
        let db = TestDatabase::create().await.unwrap();
        let (one,): (i32,) = sqlx::query_as("SELECT 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(one, 1);
        let name = db.name.clone();
        db.drop_database().await.unwrap();
        let admin: PgConnectOptions = admin_url().unwrap().parse().unwrap();
        let mut conn = admin.connect().await.unwrap();
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        assert!(exists.is_none());
    }

    #[tokio::test]
    async fn a_migrated_database_has_the_migrations_applied() {
        let dir = std::env::temp_dir().join(format!(
            "tocsin-migrations-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("1_widgets.sql"),
            "CREATE TABLE widgets (id int PRIMARY KEY);",
        )
        .unwrap();
        let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
        let db = TestDatabase::create_migrated(&migrator).await.unwrap();
        sqlx::query("INSERT INTO widgets VALUES (1)")
            .execute(db.pool())
            .await
            .unwrap();
        // The URL handed to child processes reaches the same database.
        let mut other = PgConnection::connect(&db.url).await.unwrap();
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM widgets")
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(count, 1);
        other.close().await.unwrap();
        db.drop_database().await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
