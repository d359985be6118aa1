//! The SMS channel's one error type. Send failures are not errors: they are a
//! [`tocsin_core::SendOutcome`]. These are the mistakes a caller must fix, and callbacks that
//! must be refused.

use std::path::PathBuf;

/// What went wrong.
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
    /// The Twilio client could not be configured.
    #[error("invalid Twilio configuration: {0}")]
    Config(String),
    /// A status callback is malformed; answer it with 400.
    #[error("invalid status callback: {0}")]
    InvalidCallback(String),
}
