//! Real conversations with the local providers: lettre against the SMTP server, reqwest against
//! the Twilio double, `standardwebhooks`-signed requests against the receiver, and the binary
//! driven through its control API.

mod binary;
mod smtp;
mod twilio;
mod webhook;

use std::net::SocketAddr;

/// A port that was free a moment ago, for the binary tests that need fixed addresses.
pub(crate) fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
