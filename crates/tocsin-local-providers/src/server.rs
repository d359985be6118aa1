//! Binding, serving and stopping: what the three servers share.

use std::net::SocketAddr;

use axum::Router;
use tocsin_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Error;

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` triggers. Requests parked by a `hang` fault
/// wake on the same signal, so the graceful drain cannot wait on them forever.
pub(crate) fn spawn_http(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let signal = shutdown.clone();
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(async move { signal.wait().await })
            .await
        {
            tracing::warn!(%error, "local provider HTTP server stopped with an error");
        }
    })
}

/// The tasks behind one server handle. Dropping it triggers the shutdown; [`stop`](Self::stop)
/// also waits for the tasks to finish.
#[derive(Debug)]
pub(crate) struct ServerTasks {
    pub(crate) shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerTasks {
    pub(crate) fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            tasks: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.trigger();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for ServerTasks {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Parks a request answered by a `hang` fault until the server stops.
pub(crate) async fn hang(shutdown: &Shutdown) {
    shutdown.wait().await;
}
