//! A running ingest service and a client for it.

use std::net::SocketAddr;

use sqlx::PgPool;
use tocsin_bus::{Bus, BusConfig};
use tocsin_ingest::config::{CallerTokens, Role};
use tocsin_ingest::{IngestConfig, RelayConfig};
use tocsin_proto::v1::{self, incident_service_client::IncidentServiceClient};
use tocsin_runtime::Shutdown;
use tocsin_store::Store;
use tonic::Request;
use tonic::transport::Channel;

pub(crate) const TOKEN: &str = "test-token-0123456789";
pub(crate) const OTHER_TOKEN: &str = "other-token-0123456789";
/// The `oncall` operator's: subscribers, deliveries, replays, rebuild and republish.
pub(crate) const OPERATOR_TOKEN: &str = "operator-token-0123456789";

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    /// The HTTP receivers' address, when the options asked for them.
    pub(crate) http_addr: Option<SocketAddr>,
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) client: IncidentServiceClient<Channel>,
    pub(crate) shutdown: Shutdown,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub(crate) struct Options {
    pub(crate) relay: bool,
    /// The relay's fallback poll; notifications normally wake it long before.
    pub(crate) relay_poll: std::time::Duration,
    pub(crate) nats_url: String,
    pub(crate) max_message_bytes: usize,
    /// Serve the HTTP receivers, with these alert rules.
    pub(crate) alert_rules: Option<tocsin_alerts::Mapping>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            relay: true,
            relay_poll: std::time::Duration::from_millis(200),
            nats_url: tocsin_testkit::nats::nats_url(),
            max_message_bytes: 65_536,
            alert_rules: None,
        }
    }
}

impl TestApp {
    pub(crate) async fn spawn(pool: PgPool) -> TestApp {
        Self::spawn_with(pool, Options::default()).await
    }

    pub(crate) async fn spawn_with(pool: PgPool, options: Options) -> TestApp {
        tocsin_testkit::init_tracing();
        let store = Store::from_pool(pool);
        let bus_config = BusConfig::new(tocsin_testkit::nats::unique_prefix()).unwrap();
        let bus = Bus::connect(&options.nats_url, bus_config).await.unwrap();
        let callers = CallerTokens::new([("monitoring", TOKEN), ("deploy-tool", OTHER_TOKEN)])
            .and_then(|t| t.with(Role::Operator, [("oncall", OPERATOR_TOKEN)]))
            .unwrap();
        let config = IngestConfig {
            max_message_bytes: options.max_message_bytes,
            relay: options.relay.then(|| RelayConfig {
                poll_interval: options.relay_poll,
                max_backoff: std::time::Duration::from_millis(500),
                ..RelayConfig::default()
            }),
            alert_rules: options.alert_rules.clone().map(std::sync::Arc::new),
            ..IngestConfig::new(callers)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let http = match options.alert_rules {
            Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let http_addr = http.as_ref().map(|l| l.local_addr().unwrap());
        let server = tokio::spawn(tocsin_ingest::run_with_http(
            config,
            store.clone(),
            bus.clone(),
            listener,
            http,
            shutdown.clone(),
        ));
        let client = IncidentServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        TestApp {
            addr,
            http_addr,
            store,
            bus,
            client,
            shutdown,
            server: Some(server),
        }
    }

    /// Publishes as the `monitoring` publisher.
    pub(crate) async fn publish(
        &self,
        request: v1::PublishEventRequest,
    ) -> Result<v1::PublishEventResponse, tonic::Status> {
        self.client
            .clone()
            .publish_event(authed(request, TOKEN))
            .await
            .map(|r| r.into_inner())
    }

    pub(crate) async fn open(&self, key: &str) -> v1::PublishEventResponse {
        self.publish(opened(key)).await.expect("open succeeds")
    }

    /// Stops the server and the relay and waits for them; then deletes the test's streams.
    pub(crate) async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        let _ = self.bus.delete_events_stream().await;
    }
}

pub(crate) fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(crate) fn opened(key: &str) -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        idempotency_key: key.into(),
        kind: v1::EventKind::Opened.into(),
        severity: v1::Severity::Major.into(),
        components: vec!["api".into(), "dashboard".into()],
        title: "Elevated API error rates".into(),
        message: "Some API requests are failing. We are investigating.".into(),
        ..Default::default()
    }
}

pub(crate) fn event(key: &str, incident_id: &str, kind: v1::EventKind) -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        idempotency_key: key.into(),
        incident_id: incident_id.into(),
        kind: kind.into(),
        message: format!("{kind:?} message for {key}"),
        ..Default::default()
    }
}

/// Waits until `check` returns true, polling; panics with `what` after 15 seconds.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
