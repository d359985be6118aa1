//! What ingest tells operators: `tocsin_events_ingested_total` counts new events and not
//! idempotent retries, the relay counts what JetStream acknowledged, and the readiness check
//! follows PostgreSQL.
//!
//! The metrics recorder is global to this test binary and other tests publish at the same
//! time, so the exact counts are read under a publisher only this test uses, and the relay's
//! counters are compared before and after.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tocsin_bus::{Bus, BusConfig};
use tocsin_ingest::config::CallerTokens;
use tocsin_ingest::{IngestConfig, IngestReadiness, RelayConfig};
use tocsin_proto::v1::{EventKind, incident_service_client::IncidentServiceClient};
use tocsin_runtime::{Readiness, Shutdown};
use tocsin_store::Store;

use crate::app::{authed, event, eventually, opened};

const PUBLISHER: &str = "metrics-probe";
const PUBLISHER_TOKEN: &str = "metrics-probe-token-0123";

/// The value of the sample `name` whose labels include every one of `labels`; 0 when absent.
fn sample(name: &str, labels: &[&str]) -> f64 {
    let metrics = tocsin_runtime::recorder::install().render();
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

fn ingested(kind: &str) -> f64 {
    sample(
        "tocsin_events_ingested_total",
        &[
            &format!("kind=\"{kind}\""),
            &format!("publisher=\"{PUBLISHER}\""),
        ],
    )
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn new_events_are_counted_once_and_relayed_events_with_their_lag(pool: PgPool) {
    tocsin_testkit::init_tracing();
    tocsin_runtime::recorder::install();
    let store = Store::from_pool(pool);
    let bus = Bus::connect(
        &tocsin_testkit::nats::nats_url(),
        BusConfig::new(tocsin_testkit::nats::unique_prefix()).unwrap(),
    )
    .await
    .unwrap();
    let config = IngestConfig {
        relay: Some(RelayConfig {
            poll_interval: Duration::from_millis(200),
            ..RelayConfig::default()
        }),
        ..IngestConfig::new(CallerTokens::new([(PUBLISHER, PUBLISHER_TOKEN)]).unwrap())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(tocsin_ingest::run(
        config,
        store.clone(),
        bus.clone(),
        listener,
        shutdown.clone(),
    ));
    let mut client = IncidentServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let published_before = sample("tocsin_relay_published_total", &[]);
    let lags_before = sample("tocsin_relay_lag_seconds_count", &[]);

    let open = client
        .publish_event(authed(opened("open"), PUBLISHER_TOKEN))
        .await
        .unwrap()
        .into_inner();
    // An idempotent retry returns the original event and appends nothing.
    let again = client
        .publish_event(authed(opened("open"), PUBLISHER_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    client
        .publish_event(authed(
            event("update", &open.incident_id, EventKind::Updated),
            PUBLISHER_TOKEN,
        ))
        .await
        .unwrap();
    assert_eq!(ingested("opened"), 1.0);
    assert_eq!(ingested("updated"), 1.0);

    // The in-process relay publishes both events; each is counted and its lag recorded.
    eventually("the relay publishes both events", || async {
        sample("tocsin_relay_published_total", &[]) >= published_before + 2.0
            && sample("tocsin_relay_lag_seconds_count", &[]) >= lags_before + 2.0
    })
    .await;

    shutdown.trigger();
    server.await.unwrap().unwrap();
    let _ = bus.delete_events_stream().await;
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn readiness_follows_postgres_and_nats(pool: PgPool) {
    let bus = Bus::connect(
        &tocsin_testkit::nats::nats_url(),
        BusConfig::new(tocsin_testkit::nats::unique_prefix()).unwrap(),
    )
    .await
    .unwrap();
    // The bus connects in the background; ready once it has.
    let readiness = IngestReadiness::new(Store::from_pool(pool), bus.clone());
    eventually("ready with PostgreSQL and NATS", || async {
        readiness.check().await.is_ok()
    })
    .await;

    // A database that refuses connections: a closed port, so the shared PostgreSQL keeps
    // running for the other tests.
    let port = tocsin_testkit::process::free_port();
    let refused = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/tocsin"))
        .unwrap();
    let reason = IngestReadiness::new(Store::from_pool(refused), bus)
        .check()
        .await
        .unwrap_err();
    assert!(reason.contains("PostgreSQL"), "{reason}");
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn grpc_calls_are_counted_by_method_and_code(pool: PgPool) {
    tocsin_runtime::recorder::install();
    let app = crate::app::TestApp::spawn(pool).await;
    let method = "method=\"/tocsin.v1.IncidentService/PublishEvent\"";
    let calls = |code: &str| sample("tocsin_grpc_requests_total", &[method, code]);
    let (ok_before, refused_before) = (calls("code=\"OK\""), calls("code=\"UNAUTHENTICATED\""));
    let timed_before = sample("tocsin_grpc_request_duration_seconds_count", &[method]);

    let mut client = app.client.clone();
    client
        .publish_event(authed(opened("counted"), crate::app::TOKEN))
        .await
        .unwrap();
    let refused = client
        .publish_event(authed(opened("refused"), "not-a-token-at-all-0000"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // Other tests in this binary publish too: at least ours were counted, each timed.
    assert!(calls("code=\"OK\"") >= ok_before + 1.0);
    assert!(calls("code=\"UNAUTHENTICATED\"") >= refused_before + 1.0);
    assert!(sample("tocsin_grpc_request_duration_seconds_count", &[method]) >= timed_before + 2.0);
    app.stop().await;
}
