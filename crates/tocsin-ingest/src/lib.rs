//! Tocsin's ingest service. Internal systems publish incident events over gRPC; each is
//! validated, appended to the PostgreSQL event log with its outbox entry in one transaction,
//! and relayed to NATS JetStream by the outbox relay.
//!
//! - [`config`]: configuration from the environment, with documented defaults.
//! - [`alerts`]: the HTTP receivers for monitoring tools (Alertmanager), served beside gRPC
//!   when `TOCSIN_HTTP_ADDR` is set.
//! - [`auth`]: bearer-token authentication of callers and their roles (publisher, operator).
//! - [`service`]: the `tocsin.v1.IncidentService` handlers (`listing`: `ListIncidents`).
//! - [`operations`]: the `tocsin.v1.OperationsService` handlers: rebuild and republish,
//!   streaming their progress.
//! - [`subscribers`]: the `tocsin.v1.SubscriberService` handlers; contact points are checked
//!   on the way in (`contacts`).
//! - [`components`]: the `tocsin.v1.ComponentService` handlers: the component catalogue,
//!   which [`catalogue`] caches for checking publishes and preferences against it.
//! - [`watch`]: one `LISTEN` connection fanned out to `WatchIncident` streams.
//! - [`relay`]: the outbox relay and the republish command.
//! - [`clock`]: the maintenance clock, which records reminders, starts and completions that
//!   fall due.
//! - [`readiness`]: what `/readyz` on the ops server checks (the binary serves it).
//!
//! Metrics: `tocsin_events_ingested_total{kind,publisher}` counts new events (not
//! duplicates); the relay records `tocsin_relay_published_total` and `tocsin_relay_lag_seconds`.
//!
//! [`run`] starts it all on a given listener and stops on a given signal, so tests run the
//! real service in-process on `127.0.0.1:0`.

pub mod alerts;
pub mod auth;
pub mod catalogue;
pub mod clock;
pub mod components;
pub mod config;
mod contacts;
mod deliveries;
mod listing;
pub mod operations;
pub mod readiness;
pub mod relay;
pub mod service;
mod status;
pub mod subscribers;
pub mod watch;

use anyhow::Context;
use tocsin_bus::Bus;
use tocsin_proto::v1::component_service_server::ComponentServiceServer;
use tocsin_proto::v1::incident_service_server::IncidentServiceServer;
use tocsin_proto::v1::operations_service_server::OperationsServiceServer;
use tocsin_proto::v1::subscriber_service_server::SubscriberServiceServer;
use tocsin_runtime::Shutdown;
use tocsin_store::Store;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Server, ServerTlsConfig};
use tower::util::MapResponseLayer;
use tracing::{info, warn};

pub use config::IngestConfig;
pub use readiness::IngestReadiness;
pub use relay::{Relay, RelayConfig};

/// The fully-qualified gRPC service name, as reported by `grpc.health.v1`.
pub const SERVICE_NAME: &str = "tocsin.v1.IncidentService";
pub const SUBSCRIBER_SERVICE_NAME: &str = "tocsin.v1.SubscriberService";
pub const OPERATIONS_SERVICE_NAME: &str = "tocsin.v1.OperationsService";
pub const COMPONENT_SERVICE_NAME: &str = "tocsin.v1.ComponentService";

/// Accepted connections with `TCP_NODELAY`: a gRPC reply is several small HTTP/2 frames, and
/// with Nagle's algorithm the last of them waits ~40 ms for the client's delayed ACK.
fn without_nagle(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Serves the ingest API on `listener` (and runs the relay when configured) until `shutdown`.
/// In-flight calls finish before it returns.
pub async fn run(
    config: IngestConfig,
    store: Store,
    bus: Bus,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    run_with_http(config, store, bus, listener, None, shutdown).await
}

/// [`run`], and the HTTP receivers ([`alerts`]) on `http` when given.
pub async fn run_with_http(
    config: IngestConfig,
    store: Store,
    bus: Bus,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let hub = watch::WatchHub::start(store.clone(), shutdown.clone());
    let relay = config.relay.clone().map(|relay_config| {
        let relay_config = RelayConfig {
            idempotency_retention: config.idempotency_retention,
            ..relay_config
        };
        tokio::spawn(Relay::new(store.clone(), bus.clone(), relay_config).run(shutdown.clone()))
    });
    let clock = config.maintenance_clock.map(|interval| {
        tokio::spawn(clock::MaintenanceClock::new(store.clone(), interval).run(shutdown.clone()))
    });

    let authenticator = auth::Authenticator::new(&config.callers);
    let catalogue = catalogue::Catalogue::new(store.clone());
    let incident_api = service::IncidentApi::new(
        store.clone(),
        bus.clone(),
        hub,
        catalogue.clone(),
        shutdown.clone(),
    );
    let receivers = http.map(|listener| {
        let router = alerts::router(
            incident_api.clone(),
            authenticator.clone(),
            config.alert_rules.clone(),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let addr = listener.local_addr().ok();
            info!(?addr, "ingest serving HTTP (alert receivers)");
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await
        })
    });
    let api = IncidentServiceServer::new(incident_api)
        .max_decoding_message_size(config.max_message_bytes);
    let subscribers = SubscriberServiceServer::new(subscribers::SubscriberApi::new(
        store.clone(),
        catalogue.clone(),
        config.webhook_policy.clone(),
        config.fanout,
    ))
    .max_decoding_message_size(config.max_message_bytes);
    let operations =
        OperationsServiceServer::new(operations::OperationsApi::new(store.clone(), bus.clone()));
    let operations = InterceptedService::new(operations, {
        let authenticator = authenticator.clone();
        move |request| authenticator.intercept_operator(request, "the operations service")
    });
    let components =
        ComponentServiceServer::new(components::ComponentApi::new(store.clone(), catalogue));
    let components = InterceptedService::new(components, {
        let authenticator = authenticator.clone();
        move |request| authenticator.intercept_operator(request, "the component service")
    });
    let subscribers = InterceptedService::new(subscribers, {
        let authenticator = authenticator.clone();
        move |request| authenticator.intercept_operator(request, "the subscriber service")
    });
    let api = InterceptedService::new(api, move |request| authenticator.intercept(request));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_service_status(
            SUBSCRIBER_SERVICE_NAME,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    health
        .set_service_status(
            OPERATIONS_SERVICE_NAME,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    health
        .set_service_status(COMPONENT_SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // Both reflection versions: grpcurl before 1.9, Postman and most clients in use still
    // ask the v1alpha service, newer ones v1.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tocsin_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the v1alpha reflection service")?;

    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    info!(%addr, relay = config.relay.is_some(), tls = config.tls.is_some(), "ingest serving gRPC");
    let mut server = Server::builder();
    if let Some(identity) = config.tls.clone() {
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .context("TOCSIN_TLS_CERT / TOCSIN_TLS_KEY: not a usable certificate and key")?;
    }
    let serving = server
        .layer(tocsin_runtime::requests::GrpcMetricsLayer)
        .layer(MapResponseLayer::new(
            status::oversized_as_resource_exhausted::<tonic::body::Body>,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api)
        .add_service(subscribers)
        .add_service(operations)
        .add_service(components)
        .serve_with_incoming_shutdown(without_nagle(listener), shutdown.wait());
    // On the signal the server stops accepting and lets calls in flight finish; one that
    // is still running when the grace period ends is cut. A publish cut there either
    // committed (its retry is answered from the log) or did not (its retry records it).
    let deadline = shutdown.deadline(config.shutdown_grace);
    match deadline.unless_triggered(serving).await {
        Some(served) => served.context("gRPC server failed")?,
        None => warn!(
            grace_ms = config.shutdown_grace.as_millis() as u64,
            "calls still in flight when the shutdown grace period ended were cut"
        ),
    }

    if let Some(receivers) = receivers {
        match deadline.unless_triggered(receivers).await {
            Some(Ok(Err(e))) => warn!(error = %e, "the HTTP receivers failed"),
            Some(Err(e)) => warn!(error = %e, "the HTTP receivers' task panicked"),
            _ => {}
        }
    }
    // The clock stops at the signal; a tick cut short loses nothing, since the next tick of
    // any replica asks for the same events under the same keys.
    if let Some(clock) = clock {
        let _ = deadline.unless_triggered(clock).await;
    }
    // The relay's round in flight gets what is left of the same grace period. A round cut
    // loses nothing: its events stay in the outbox, and those JetStream already holds are
    // dropped by message id when published again.
    if let Some(relay) = relay {
        match deadline.unless_triggered(relay).await {
            Some(relayed) => relayed.context("relay task panicked")?,
            None => warn!(
                grace_ms = config.shutdown_grace.as_millis() as u64,
                "a relay round still in flight when the shutdown grace period ended was cut"
            ),
        }
    }
    info!("ingest stopped");
    Ok(())
}
