//! The webhook crate's errors. A failed *delivery* is not an error: it is a
//! [`tocsin_core::SendOutcome`]. These are the mistakes a caller can fix.

/// What went wrong before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input is malformed (a secret that is not `whsec_<base64>`, a message id that
    /// cannot be a header value); fix it and call again.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The HTTP client could not be built; the process is misconfigured (for example no
    /// rustls crypto provider is installed) and should not start.
    #[error("cannot build the webhook HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
