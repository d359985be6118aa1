//! The one place where errors become gRPC statuses. Internal detail is logged, never sent.

use tocsin_core::DomainError;
use tocsin_store::StoreError;
use tonic::Status;
use tracing::error;

/// Maps a store error to the status a client can act on.
pub(crate) fn status(e: StoreError) -> Status {
    match e {
        StoreError::Domain(d) => domain_status(d),
        StoreError::IdempotencyKeyReused { key } => Status::already_exists(format!(
            "idempotency key {key:?} was already used for a different request; use a new key"
        )),
        StoreError::Conflict { constraint } => {
            tracing::info!(%constraint, "concurrent write conflict");
            Status::aborted("a concurrent write to this incident won; retry the request")
        }
        StoreError::Unavailable(source) => {
            error!(error = %source, "database unavailable");
            Status::unavailable("the event log is unavailable; retry shortly")
        }
        other => {
            error!(error = %other, detail = ?other, "internal error");
            Status::internal("internal error")
        }
    }
}

pub(crate) fn domain_status(e: DomainError) -> Status {
    match e {
        DomainError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        DomainError::NotFound(_) => Status::not_found(e.to_string()),
        DomainError::InvalidTransition(_) => Status::failed_precondition(e.to_string()),
        DomainError::VersionConflict { .. } => Status::aborted(e.to_string()),
    }
}

/// gRPC says an over-limit message is RESOURCE_EXHAUSTED; tonic's decoder answers
/// OUT_OF_RANGE. This rewrites that one answer on the way out.
pub(crate) fn oversized_as_resource_exhausted<B>(
    mut response: http::Response<B>,
) -> http::Response<B> {
    let headers = response.headers_mut();
    let is_oversized = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if is_oversized {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}
