//! A small endpoint on loopback that counts what reaches it and answers by path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

#[derive(Debug, Default)]
struct Shared {
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    redirect_to: Mutex<String>,
}

/// A running endpoint; it stops when the test's runtime ends.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Endpoint {
    pub(crate) async fn start() -> Endpoint {
        Self::start_on("127.0.0.1:0").await
    }

    pub(crate) async fn start_on(bind: &str) -> Endpoint {
        let listener = TcpListener::bind(bind)
            .await
            .expect("bind a loopback port for the test endpoint");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Endpoint { addr, shared }
    }

    /// `http://127.0.0.1:<port><path>` (or the IPv6 form, as bound).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Where `/redirect` sends its callers.
    pub(crate) fn redirect_to(&self, location: &str) {
        *self.shared.redirect_to.lock().unwrap() = location.to_owned();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    shared.seen.lock().unwrap().push(Seen { headers, body });
    match uri.path() {
        "/ok" => (StatusCode::OK, "thanks").into_response(),
        "/no-content" => StatusCode::NO_CONTENT.into_response(),
        "/gone" => StatusCode::GONE.into_response(),
        "/slow-down" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "30")],
            "slow down",
        )
            .into_response(),
        "/error" => (StatusCode::INTERNAL_SERVER_ERROR, "database on fire").into_response(),
        "/bad" => (StatusCode::BAD_REQUEST, "missing field `foo`").into_response(),
        "/huge-error" => (StatusCode::BAD_GATEWAY, "x".repeat(1 << 20)).into_response(),
        "/redirect" => {
            let location = shared.redirect_to.lock().unwrap().clone();
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        "/hang" => {
            // Longer than any client timeout in these tests: the answer never comes.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
