//! The email channel's one error type. Send failures are not errors: they are a
//! [`tocsin_core::SendOutcome`]. These are the mistakes a caller must fix before sending.

use std::path::PathBuf;

/// What went wrong preparing an email.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template override could not be read.
    #[error("cannot read template {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A template does not compile or does not render for a notice.
    #[error("template {name}: {source:#}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    /// The message could not be assembled (a malformed address or header).
    #[error("invalid email: {0}")]
    Invalid(String),
    /// The SMTP transport could not be configured.
    #[error("invalid SMTP configuration: {0}")]
    Config(String),
}
