//! The test certificates in `crates/tocsin-testkit/certs` (see the README there): a private
//! CA and a server certificate for `localhost` and `127.0.0.1` that it signed.

use std::path::PathBuf;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("certs")
        .join(name)
}

/// The test CA's certificate (PEM): trust it to reach a server using [`server_cert`].
pub fn ca_cert() -> PathBuf {
    path("ca.pem")
}

/// The server's certificate (PEM), for `localhost` and `127.0.0.1`.
pub fn server_cert() -> PathBuf {
    path("server.pem")
}

/// The server certificate's private key (PEM, PKCS#8).
pub fn server_key() -> PathBuf {
    path("server.key")
}
