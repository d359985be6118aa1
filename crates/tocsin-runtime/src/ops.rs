//! The ops HTTP server every service runs beside its real work:
//!
//! - `GET /metrics`: the process's metrics in the Prometheus text format, with the standard
//!   `process_*` metrics read at each scrape.
//! - `GET /healthz`: 200 while the process runs (a liveness probe).
//! - `GET /readyz`: 200 when the service's [`Readiness`] check passes, otherwise 503 with a
//!   short plain-text reason (a readiness probe; load balancers and `docker compose` wait on it).
//!
//! It listens on its own address (`TOCSIN_METRICS_ADDR`), never on the service's API port,
//! and stops on the process's [`Shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{Shutdown, recorder};

/// A readiness check gives up after this long and answers 503: a probe must not hang on a
/// database that does not answer.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one dependency may take inside a readiness check (see [`dependency`]): well
/// under [`READINESS_TIMEOUT`], so that a dependency that hangs is named in the 503.
pub const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(1);

/// How often histograms are compacted and idle metrics expired, whether or not anyone scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the ops server listens. Each binary sets its own default (see the variable's help),
/// so that every service can run on one machine.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Address of the ops HTTP server: `/metrics` (Prometheus), `/healthz`, `/readyz`.
    /// Defaults: tocsin-ingest 127.0.0.1:9464, tocsin-resolver 127.0.0.1:9465, tocsin-email
    /// 127.0.0.1:9466, tocsin-sms 127.0.0.1:9467, tocsin-webhook 127.0.0.1:9468, tocsin-page
    /// 127.0.0.1:9469. Containers
    /// set 0.0.0.0:9464. Port 0 takes any free port (logged at start).
    #[arg(long, env = "TOCSIN_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
}

impl OpsArgs {
    /// Binds the address and serves the ops endpoints in a task until `shutdown`. Binding
    /// happens here, so an address in use fails the service's start, not later, with an
    /// error that names the address and the variable.
    pub async fn spawn<R: Readiness>(
        &self,
        readiness: R,
        shutdown: Shutdown,
    ) -> std::io::Result<JoinHandle<()>> {
        let listener = TcpListener::bind(self.metrics_addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "binding the ops server on {} (TOCSIN_METRICS_ADDR): {e}",
                    self.metrics_addr
                ),
            )
        })?;
        // Installed now, not when the task first runs, so nothing recorded meanwhile is lost.
        recorder::install();
        Ok(tokio::spawn(async move {
            if let Err(e) = serve(listener, readiness, shutdown).await {
                warn!(error = %e, "the ops server failed; /metrics and the probes are gone");
            }
        }))
    }
}

/// What `/readyz` asks: can this service do its work right now?
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready; otherwise a short reason, sent as the body of the 503. Keep it free
    /// of internal detail (log that instead): probes and load balancers read it.
    fn check(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// One dependency's part of a [`Readiness`] check: `Err("<name> does not answer")` when
/// `check` fails or takes longer than [`DEPENDENCY_TIMEOUT`]. The bound matters: a pool
/// whose server is down keeps retrying refused connections until its own acquire timeout,
/// and without it the probe would say only that the check timed out, not what is down.
/// The error itself is logged at debug level, never sent.
pub async fn dependency<T, E: std::fmt::Display>(
    name: &str,
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(DEPENDENCY_TIMEOUT, check).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::debug!(dependency = name, error = %e, "not ready");
            Err(format!("{name} does not answer"))
        }
        Err(_) => {
            tracing::debug!(
                dependency = name,
                timeout_ms = DEPENDENCY_TIMEOUT.as_millis() as u64,
                "not ready: no answer in time"
            );
            Err(format!("{name} does not answer"))
        }
    }
}

/// Always ready; for processes with nothing to depend on.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Ops<R> {
    readiness: R,
    metrics: &'static PrometheusHandle,
}

/// Serves the ops endpoints on `listener` until `shutdown`. Installs the metrics recorder if
/// no one has yet.
pub async fn serve<R: Readiness>(
    listener: TcpListener,
    readiness: R,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let metrics = recorder::install();
    let upkeep = tokio::spawn(upkeep(metrics, shutdown.clone()));
    let app = Router::new()
        .route("/metrics", get(render::<R>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<R>))
        .with_state(Arc::new(Ops { readiness, metrics }));
    let addr = listener.local_addr()?;
    info!(%addr, "ops server listening: /metrics, /healthz, /readyz");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    upkeep.abort();
    served
}

async fn upkeep(metrics: &'static PrometheusHandle, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = ticks.tick() => metrics.run_upkeep(),
        }
    }
}

async fn render<R: Readiness>(State(ops): State<Arc<Ops<R>>>) -> Response {
    metrics_process::Collector::default().collect();
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        ops.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<R: Readiness>(State(ops): State<Arc<Ops<R>>>) -> Response {
    match tokio::time::timeout(READINESS_TIMEOUT, ops.readiness.check()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the readiness check timed out\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_dependency_that_fails_or_hangs_is_named() {
        let ok = dependency("PostgreSQL", async { Ok::<_, String>(3) }).await;
        assert_eq!(ok, Ok(3));
        let refused = dependency("PostgreSQL", async { Err::<(), _>("connection refused") }).await;
        assert_eq!(refused, Err("PostgreSQL does not answer".to_owned()));
        let hangs = dependency("PostgreSQL", std::future::pending::<Result<(), String>>()).await;
        assert_eq!(hangs, Err("PostgreSQL does not answer".to_owned()));
    }
}
