//! `/readyz` follows PostgreSQL: a real resolver process against a private PostgreSQL server
//! that the test stops and starts again (the shared one keeps running for other tests).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tocsin_testkit::nats::{nats_url, unique_prefix};
use tocsin_testkit::postgres::PostgresServer;
use tocsin_testkit::process::{ServiceProcess, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One plain HTTP/1.1 GET; returns the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

/// Polls `/readyz` until it answers `status` with a body containing `needle`.
async fn wait_for_readyz(addr: SocketAddr, status: u16, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some((got, body)) = get(addr, "/readyz").await {
            if got == status && body.contains(needle) {
                return body;
            }
            last = Some((got, body));
        }
        assert!(
            Instant::now() < deadline,
            "/readyz is not {status} {needle:?} after {within:?}; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_false_while_postgresql_is_stopped() {
    let mut postgres = PostgresServer::start().await.expect(
        "this test needs its own PostgreSQL server (initdb and pg_ctl from \
         /usr/lib/postgresql/<version>/bin, run as the postgres user when the tests run as root)",
    );
    let url = postgres.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    tocsin_store::MIGRATOR.run(&pool).await.unwrap();
    pool.close().await;

    let ops: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", url),
        ("NATS_URL", nats_url()),
        ("TOCSIN_BUS_PREFIX", unique_prefix()),
        ("TOCSIN_METRICS_ADDR", ops.to_string()),
        ("TOCSIN_RESOLVER_REQUEUE_INTERVAL_SECONDS", "0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut resolver = ServiceProcess::spawn("tocsin-resolver", &[], &env)
        .await
        .unwrap();
    wait_for_readyz(ops, 200, "ready", Duration::from_secs(20)).await;

    postgres.stop().await.unwrap();
    let body = wait_for_readyz(ops, 503, "PostgreSQL", Duration::from_secs(10)).await;
    assert_eq!(body, "not ready: PostgreSQL does not answer\n");
    assert_eq!(
        get(ops, "/healthz").await.map(|(s, _)| s),
        Some(200),
        "alive all the same"
    );

    postgres.start_again().await.unwrap();
    wait_for_readyz(ops, 200, "ready", Duration::from_secs(20)).await;

    let status = resolver.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// A service that cannot start says so in one line naming what failed and where, in the
/// log format it was given (one JSON object here), and exits non-zero.
#[tokio::test]
async fn a_resolver_started_while_nats_is_down_says_which_url_in_one_json_line() {
    let db = tocsin_testkit::database::TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let port = tocsin_testkit::process::free_port();
    let nats = format!("nats://127.0.0.1:{port}");
    let run = tokio::process::Command::new(
        tocsin_testkit::process::binary_path("tocsin-resolver").unwrap(),
    )
    .env("DATABASE_URL", &db.url)
    .env("NATS_URL", &nats)
    .env("TOCSIN_LOG_FORMAT", "json")
    .env("TOCSIN_METRICS_ADDR", "127.0.0.1:0")
    .env("RUST_LOG", "error")
    .kill_on_drop(true)
    .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the resolver gives up within 90 s")
        .unwrap();
    assert!(!output.status.success());
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let fatal: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "tocsin-resolver stopped")
        .unwrap_or_else(|| panic!("no fatal line in:\n{logs}"));
    assert_eq!(fatal["level"], "ERROR");
    let error = fatal["error"].as_str().unwrap();
    assert!(error.contains(&nats), "names the URL: {error}");
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "every line is JSON:\n{logs}"
    );
}
