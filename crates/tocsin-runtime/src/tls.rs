//! The process-wide TLS crypto provider.
//!
//! Every TLS user in the workspace (reqwest, lettre, sqlx, async-nats) runs on rustls, and
//! reqwest is built without a provider of its own. rustls refuses to pick one when none or
//! several are compiled in, and reqwest panics when building a client without one, so each
//! binary (and each test that builds an HTTP client) installs ring once at start.

/// Installs ring as the process's rustls crypto provider.
///
/// Safe to call more than once and from several tests at once: a second install finds a
/// provider already in place, which is the outcome we want, so that error is ignored.
pub fn install_crypto_provider() {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::trace!("a rustls crypto provider was already installed");
    }
}
