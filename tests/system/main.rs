//! System tests: the real `tocsin-ingest` binary as a separate process, killed and restarted,
//! against a per-test PostgreSQL database and a private NATS server; `shutdown` stops the
//! resolver and a worker with SIGTERM mid-work; `readiness` stops a private PostgreSQL under a
//! running resolver; `heal` wipes the private NATS server mid-fan-out; `compose` checks
//! docker-compose.yml and deploy/ against the built binaries (no Docker needed); `alerts`
//! loads and exercises the Prometheus alert rules with promtool; `browser` drives the status
//! page's sign-up and preference centre in headless Chromium.
//!
//! The binaries must be built first (`cargo xtask test` does it).

mod alerts;
mod browser;
mod compose;
mod ctl;
mod heal;
mod readiness;
mod shutdown;
mod workers;

use std::time::Duration;

use tocsin_bus::{Bus, BusConfig};
use tocsin_proto::v1::{self, incident_service_client::IncidentServiceClient};
use tocsin_store::Store;
use tocsin_testkit::database::TestDatabase;
use tocsin_testkit::nats::{NatsServer, unique_prefix};
use tocsin_testkit::process::{ServiceProcess, free_port, wait_for_tcp};

const TOKEN: &str = "system-test-token-0123";
const OPERATOR_TOKEN: &str = "system-operator-token-0123";

fn ingest_env(db: &TestDatabase, nats_url: &str, prefix: &str, port: u16) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", db.url.as_str()),
        ("NATS_URL", nats_url),
        ("TOCSIN_BUS_PREFIX", prefix),
        ("TOCSIN_GRPC_ADDR", &format!("127.0.0.1:{port}")),
        ("TOCSIN_PUBLISHER_TOKENS", &format!("system={TOKEN}")),
        (
            "TOCSIN_OPERATOR_TOKENS",
            &format!("operator={OPERATOR_TOKEN}"),
        ),
        ("TOCSIN_RELAY_POLL_MS", "200"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn publish(
    client: &mut IncidentServiceClient<tonic::transport::Channel>,
    request: v1::PublishEventRequest,
) -> v1::PublishEventResponse {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client
        .publish_event(request)
        .await
        .expect("publish succeeds")
        .into_inner()
}

/// Starts `tocsin-ingest serve` with `env` (listening on `port`), opens an incident and
/// publishes `updates` updates to it. Returns the running process.
async fn serve_and_publish(
    env: &[(String, String)],
    port: u16,
    severity: v1::Severity,
    updates: usize,
) -> ServiceProcess {
    let ingest = ServiceProcess::spawn("tocsin-ingest", &["serve"], env)
        .await
        .unwrap();
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20))
        .await
        .unwrap();
    let mut client = IncidentServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let open = publish(
        &mut client,
        v1::PublishEventRequest {
            idempotency_key: "open".into(),
            kind: v1::EventKind::Opened.into(),
            severity: severity.into(),
            components: vec!["api".into()],
            title: "API errors".into(),
            message: "Some API calls fail. We are on it.".into(),
            ..Default::default()
        },
    )
    .await;
    for i in 0..updates {
        publish(
            &mut client,
            v1::PublishEventRequest {
                idempotency_key: format!("update-{i}"),
                incident_id: open.incident_id.clone(),
                kind: v1::EventKind::Updated.into(),
                message: format!("Update {i}"),
                ..Default::default()
            },
        )
        .await;
    }
    ingest
}

/// Waits (30 s at most) for a relay to empty the outbox, then returns the versions the
/// events stream holds, in stream order.
async fn relayed_versions(store: &Store, nats_url: &str, prefix: &str) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.outbox_backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a relay drains the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bus = Bus::connect(nats_url, BusConfig::new(prefix).unwrap())
        .await
        .unwrap();
    bus.read_all_events()
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_between_commit_and_publish_relays_each_event_once_after_restart() {
    tocsin_testkit::init_tracing();
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let store = Store::from_pool(db.pool().clone());
    let mut nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix();
    // NATS is down while the first process runs, so every event commits but none is published.
    nats.stop().await;

    let port = free_port();
    let env = ingest_env(&db, &nats.url(), &prefix, port);
    let mut ingest = serve_and_publish(&env, port, v1::Severity::Critical, 4).await;
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        5,
        "committed, not yet published"
    );

    ingest.kill().await;
    nats.start_again().await.unwrap();
    let mut restarted = ServiceProcess::spawn("tocsin-ingest", &["serve"], &env)
        .await
        .unwrap();
    let versions = relayed_versions(&store, &nats.url(), &prefix).await;
    assert_eq!(versions, [1, 2, 3, 4, 5], "each event once, in order");

    let status = restarted.terminate().await.unwrap();
    assert!(status.success(), "SIGTERM ends ingest cleanly: {status:?}");
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_on_sigterm_cuts_a_call_still_open_at_the_end_of_its_grace_period() {
    use tocsin_proto::v1::subscriber_service_client::SubscriberServiceClient;

    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let port = free_port();
    let mut env = ingest_env(
        &db,
        &tocsin_testkit::nats::nats_url(),
        &unique_prefix(),
        port,
    );
    env.push(("TOCSIN_SHUTDOWN_GRACE_SECONDS".into(), "1".into()));
    env.push(("TOCSIN_METRICS_ADDR".into(), "127.0.0.1:0".into()));
    let mut ingest = ServiceProcess::spawn("tocsin-ingest", &["serve"], &env)
        .await
        .unwrap();
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(20))
        .await
        .unwrap();

    // An import whose client never ends its stream: without a deadline the server would wait
    // for it forever.
    let mut client = SubscriberServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let (rows, stream) = tokio::sync::mpsc::channel::<v1::UpsertSubscriberRequest>(1);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(stream));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {OPERATOR_TOKEN}").parse().unwrap(),
    );
    let import = tokio::spawn(async move { client.import_subscribers(request).await });
    rows.send(v1::UpsertSubscriberRequest {
        external_id: "open-stream".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !import.is_finished(),
        "the import is open when the signal comes"
    );

    let took = ingest.stop_cleanly_within(Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(900),
        "the open call had its grace period: {took:?}"
    );
    let cut = import.await.unwrap();
    assert!(cut.is_err(), "the import never completed: {cut:?}");
    drop(rows);
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_run_alone_stops_on_sigterm_while_nats_is_down_and_loses_nothing() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let store = Store::from_pool(db.pool().clone());
    let mut nats = NatsServer::start().await.unwrap();
    let prefix = unique_prefix();
    let port = free_port();
    let mut env = ingest_env(&db, &nats.url(), &prefix, port);
    env.push(("TOCSIN_METRICS_ADDR".into(), "127.0.0.1:0".into()));
    env.push(("TOCSIN_SHUTDOWN_GRACE_SECONDS".into(), "1".into()));
    let mut serve_env = env.clone();
    serve_env.push(("TOCSIN_RELAY".into(), "false".into()));
    let mut ingest = serve_and_publish(&serve_env, port, v1::Severity::Major, 2).await;
    let status = ingest.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        3,
        "an ingest without its relay publishes nothing"
    );

    // The relay alone, with NATS gone: its rounds fail and back off; SIGTERM still ends it
    // within its grace period, with status 0, and every event still waits in the outbox.
    nats.stop().await;
    let mut relay = ServiceProcess::spawn("tocsin-ingest", &["relay"], &env)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    relay.stop_cleanly_within(Duration::from_secs(8)).await;
    assert_eq!(store.outbox_backlog().await.unwrap(), 3);

    nats.start_again().await.unwrap();
    let mut relay = ServiceProcess::spawn("tocsin-ingest", &["relay"], &env)
        .await
        .unwrap();
    let versions = relayed_versions(&store, &nats.url(), &prefix).await;
    assert_eq!(versions, [1, 2, 3], "each event once, in order");
    let status = relay.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    db.drop_database().await.unwrap();
}
