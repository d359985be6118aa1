use std::net::SocketAddr;

/// What can go wrong when starting or configuring a local provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address is taken or not permitted: choose another one.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A configuration value (a webhook secret, a fault) is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// The HTTP client for Twilio status callbacks could not be built.
    #[error("cannot build the callback HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}
