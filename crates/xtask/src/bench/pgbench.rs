//! The reference for `bench ingest`: PostgreSQL's own `pgbench`, committing one-row
//! transactions durably from 16 clients, on the same server in the same run. What ingest
//! does per publish (a durable append) can never beat this; the ratio says how much of
//! the server's commit rate the service keeps.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// Clients of the reference run: the concurrency the target names.
pub(super) const CLIENTS: u32 = 16;

/// Single-row durable commits per second by `pgbench` at [`CLIENTS`] clients for `run` on
/// the database at `database_url` (a table of its own is created there and dropped after).
pub(super) async fn single_row_commits_per_s(
    database_url: &str,
    run: Duration,
) -> anyhow::Result<f64> {
    let pgbench = find()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS pgbench_reference (id bigserial PRIMARY KEY, client int NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        .execute(&pool)
        .await
        .context("creating the pgbench reference table")?;
    let script = tempfile_path("tocsin-pgbench.sql");
    std::fs::write(
        &script,
        "INSERT INTO pgbench_reference (client) VALUES (:client_id);\n",
    )
    .context("writing the pgbench script")?;
    let output = tokio::process::Command::new(&pgbench)
        .args(["-n", "-c", &CLIENTS.to_string(), "-j", "2", "-T"])
        .arg(run.as_secs().max(1).to_string())
        .arg("-f")
        .arg(&script)
        .arg(database_url)
        .output()
        .await
        .with_context(|| format!("running {}", pgbench.display()))?;
    let _ = std::fs::remove_file(&script);
    let _ = sqlx::query("DROP TABLE pgbench_reference")
        .execute(&pool)
        .await;
    pool.close().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_tps(&stdout).with_context(|| format!("no tps in pgbench's report:\n{stdout}"))
}

/// `pgbench` on the PATH, or in PostgreSQL's own directory as Debian installs it.
fn find() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbench"))
            .find(|p| p.is_file())
    }) {
        return Ok(path);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin/pgbench"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().context(
        "pgbench not found (on the PATH or under /usr/lib/postgresql/*/bin); \
         install it with `apt-get install -y postgresql-contrib` or PostgreSQL's server package",
    )
}

fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", std::process::id()))
}

/// The `tps = 1234.5 (without initial connection time)` line of pgbench's report.
fn parse_tps(report: &str) -> Option<f64> {
    report
        .lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line["tps = ".len()..].split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_tps;

    #[test]
    fn reads_the_tps_line_of_a_pgbench_report() {
        let report = "transaction type: /tmp/x.sql\nnumber of clients: 16\n\
                      latency average = 1.718 ms\n\
                      initial connection time = 12.345 ms\n\
                      tps = 9312.402846 (without initial connection time)\n";
        assert_eq!(parse_tps(report), Some(9312.402846));
        assert_eq!(parse_tps("pgbench: error: connection failed"), None);
    }
}
