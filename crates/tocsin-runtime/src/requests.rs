//! Request metrics for every server a service runs: gRPC calls by method and status code,
//! HTTP requests by route, method and status, each with its latency.
//!
//! Labels stay bounded whatever callers send: a gRPC method Tocsin does not serve (answered
//! `UNIMPLEMENTED`) is counted as `unknown`, an HTTP request is labelled by the route
//! pattern that matched it (`/unsubscribe/{token}`, never the token), and methods outside
//! the standard set are `OTHER`.
//!
//! A gRPC call's code is read from its response headers, where tonic puts it for every
//! failed unary call (a "trailers-only" response); a call whose headers carry no code
//! answered `OK`, or, for a stream, started and ended in its trailers. The latency is the
//! time to the response headers: the whole call for unary methods.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// gRPC status codes by number, as Prometheus labels.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The label for a `grpc-status` header value.
pub fn grpc_code_name(value: Option<&str>) -> &'static str {
    match value.map(str::parse::<usize>) {
        None => "OK",
        Some(Ok(n)) => GRPC_CODES.get(n).copied().unwrap_or("UNKNOWN"),
        Some(Err(_)) => "UNKNOWN",
    }
}

/// Records each gRPC call (`tocsin_grpc_requests_total`,
/// `tocsin_grpc_request_duration_seconds`); for `tonic::transport::Server::layer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // `/tocsin.v1.IncidentService/PublishEvent`: bounded below by the UNIMPLEMENTED rule.
        let path = request.uri().path();
        let method = if path.len() <= 128 {
            path.to_owned()
        } else {
            "unknown".to_owned()
        };
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => grpc_code_name(
                    response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()),
                ),
                Err(_) => "TRANSPORT_ERROR",
            };
            let method = if code == "UNIMPLEMENTED" {
                "unknown".to_owned()
            } else {
                method
            };
            metrics::counter!("tocsin_grpc_requests_total",
                "method" => method.clone(), "code" => code)
            .increment(1);
            metrics::histogram!("tocsin_grpc_request_duration_seconds", "method" => method)
                .record(started.elapsed().as_secs_f64());
            answer
        })
    }
}

/// axum middleware recording each request (`tocsin_http_requests_total`,
/// `tocsin_http_request_duration_seconds`) by the route that matched; add it with
/// `Router::route_layer(axum::middleware::from_fn(http_metrics))`.
pub async fn http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::counter!("tocsin_http_requests_total",
        "route" => route.clone(), "method" => method,
        "status" => response.status().as_u16().to_string())
    .increment(1);
    metrics::histogram!("tocsin_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_read_as_their_names() {
        assert_eq!(grpc_code_name(None), "OK");
        assert_eq!(grpc_code_name(Some("3")), "INVALID_ARGUMENT");
        assert_eq!(grpc_code_name(Some("16")), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(Some("99")), "UNKNOWN");
        assert_eq!(grpc_code_name(Some("x")), "UNKNOWN");
    }
}
