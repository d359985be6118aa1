//! The one place where errors become gRPC statuses. Internal detail is logged, never sent.

use tocsin_core::DomainError;
use tocsin_store::StoreError;
use tonic::Status;
use tracing::error;

/// Maps a store error to the status a client can act on.
pub(crate) fn status(e: StoreError) -> Status {
    match e {
        StoreError::Domain(d) => domain_status(d),
        StoreError::IdempotencyKeyReused { key } => Status::already_exists(capped(format!(
            "idempotency key {key:?} was already used for a different request; use a new key"
        ))),
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
    let message = capped(e.to_string());
    match e {
        DomainError::Invalid { .. } => Status::invalid_argument(message),
        DomainError::NotFound(_) => Status::not_found(message),
        DomainError::InvalidTransition(_) => Status::failed_precondition(message),
        DomainError::VersionConflict { .. } => Status::aborted(message),
    }
}

/// The longest message a status carries, in characters.
pub(crate) const MAX_MESSAGE_CHARS: usize = 400;

/// `message`, cut to [`MAX_MESSAGE_CHARS`]: errors quote the input they refuse, and a
/// 60,000-character id must not come back as a 60 KB message (or overflow a header).
pub(crate) fn capped(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    format!("{cut}… (cut at {MAX_MESSAGE_CHARS} characters)")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_and_short_ones_kept() {
        let long = domain_status(DomainError::invalid("incident_id", "x".repeat(60_000)));
        assert!(long.message().chars().count() < MAX_MESSAGE_CHARS + 40);
        assert!(long.message().ends_with("(cut at 400 characters)"));
        let short = domain_status(DomainError::invalid("title", "is required"));
        assert_eq!(short.message(), "title: is required");
    }
}
