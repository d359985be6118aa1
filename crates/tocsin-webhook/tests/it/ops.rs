//! The webhook worker's ops server: `/readyz` follows PostgreSQL, NATS and the worker's
//! consumer, and `/metrics` counts what the worker did.
//!
//! The metrics recorder is global to this test binary and other tests deliver webhooks at the
//! same time, so counters are compared before and after, never to absolute values.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tocsin_core::RetryPolicy;
use tocsin_delivery::{Worker, WorkerConfig};
use tocsin_runtime::{Readiness, Shutdown};
use tocsin_store::Store;
use tocsin_testkit::pipeline::Pipeline;
use tocsin_testkit::process::free_port;
use tocsin_webhook::{ClientConfig, WebhookCourier};

use crate::worker::{Harness, key, loopback, quick_retries};

/// An ops server on a free loopback port, stopped when dropped.
struct Ops {
    base: String,
    shutdown: Shutdown,
}

impl Ops {
    async fn start(readiness: impl Readiness) -> Ops {
        tocsin_runtime::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        tokio::spawn(tocsin_runtime::ops::serve(
            listener,
            readiness,
            shutdown.clone(),
        ));
        Ops { base, shutdown }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The value of the sample `name` whose labels include every one of `labels`
/// (`key="value"`); 0 when there is none yet.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name && labels.iter().all(|label| rest.contains(label))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

fn courier() -> WebhookCourier {
    // The courier's reqwest client needs the process's rustls provider, as in the binary.
    tocsin_runtime::tls::install_crypto_provider();
    WebhookCourier::new(ClientConfig::default(), RetryPolicy::default()).unwrap()
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn readyz_needs_postgres_nats_and_the_workers_consumer(pool: PgPool) {
    let pipeline = Pipeline::start(pool).await;
    let worker = Worker::new(
        pipeline.store.clone(),
        pipeline.bus.clone(),
        courier(),
        WorkerConfig::default(),
    );
    let ops = Ops::start(worker.readiness()).await;

    assert_eq!(ops.get("/healthz").await.0, 200);
    // The worker creates its consumer when it starts running; until then it is not ready.
    let (status, body) = ops.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("webhook-worker"), "{body}");

    let shutdown = Shutdown::new();
    let running = tokio::spawn(worker.clone().run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = ops.get("/readyz").await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The running worker reports its consumer's backlog.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ops
        .metrics()
        .await
        .contains("tocsin_consumer_pending{consumer=\"webhook-worker\"}")
    {
        assert!(Instant::now() < deadline, "no tocsin_consumer_pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    running.await.unwrap().unwrap();

    // The same worker with a database that refuses connections (a closed port; the shared
    // PostgreSQL keeps running for the other tests).
    let refused = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!(
            "postgres://postgres@127.0.0.1:{}/tocsin",
            free_port()
        ))
        .unwrap();
    let cut_off = Worker::new(
        Store::from_pool(refused),
        pipeline.bus.clone(),
        courier(),
        WorkerConfig::default(),
    );
    let cut_off_ops = Ops::start(cut_off.readiness()).await;
    let (status, body) = cut_off_ops.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("PostgreSQL"), "{body}");
    // Liveness does not depend on the database.
    assert_eq!(cut_off_ops.get("/healthz").await.0, 200);
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn metrics_move_when_a_webhook_is_delivered(pool: PgPool) {
    let h = Harness::start(pool, loopback(), quick_retries(3)).await;
    let ops = Ops::start(h.worker.readiness()).await;
    let subscriber = h.subscribe("acme", "acme").await;
    let before = ops.metrics().await;

    let opened = h.open().await;
    let delivery = key(&opened, &subscriber);
    h.drain(&[&delivery]).await;
    assert_eq!(
        h.pipeline.delivery_state(&delivery).await.as_deref(),
        Some("delivered")
    );

    let after = ops.metrics().await;
    for (name, kind) in [
        ("tocsin_deliveries_total", "counter"),
        ("tocsin_delivery_attempt_duration_seconds", "histogram"),
        ("tocsin_ingest_to_delivery_seconds", "histogram"),
        ("tocsin_delivery_retries_scheduled_total", "counter"),
        ("tocsin_dead_letters_total", "counter"),
        ("tocsin_fanout_jobs", "histogram"),
        ("tocsin_fanout_duration_seconds", "histogram"),
    ] {
        assert!(
            after.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{after}"
        );
    }
    let grew = |name: &str, labels: &[&str]| {
        let (was, is) = (sample(&before, name, labels), sample(&after, name, labels));
        assert!(
            is >= was + 1.0,
            "{name}{labels:?}: {was} before, {is} after"
        );
    };
    grew(
        "tocsin_deliveries_total",
        &[r#"channel="webhook""#, r#"outcome="delivered""#],
    );
    grew(
        "tocsin_delivery_attempt_duration_seconds_count",
        &[r#"channel="webhook""#],
    );
    let severity = opened.change.severity.unwrap().as_str();
    grew(
        "tocsin_ingest_to_delivery_seconds_count",
        &[r#"channel="webhook""#, &format!("severity=\"{severity}\"")],
    );
    // The pipeline's resolver runs in this process and fanned the event out.
    grew("tocsin_fanout_jobs_count", &[r#"channel="webhook""#]);
    grew("tocsin_fanout_duration_seconds_count", &[]);
    // Latency histograms have buckets from 1 ms to 60 s.
    assert!(after.contains(
        r#"tocsin_delivery_attempt_duration_seconds_bucket{channel="webhook",le="0.001"}"#
    ));
    assert!(
        after.contains(
            r#"tocsin_delivery_attempt_duration_seconds_bucket{channel="webhook",le="60"}"#
        )
    );
}
