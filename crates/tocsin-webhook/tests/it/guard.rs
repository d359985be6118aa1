//! The SSRF guard with the strict policy: every way of naming loopback is refused, and the
//! endpoint listening there never sees a request.

use std::net::IpAddr;

use reqwest::dns::{Name, Resolve};
use reqwest::header::HeaderMap;
use std::sync::Arc;
use tocsin_core::SendOutcome;
use tocsin_core::network::UrlPolicy;
use tocsin_webhook::{GuardedResolver, Refused};

use crate::sender::client;
use crate::server::Endpoint;

async fn assert_refused(url: &str, endpoint: &Endpoint, expected: &str) {
    let outcome = client(UrlPolicy::strict())
        .send(url, HeaderMap::new(), b"{}".to_vec())
        .await;
    match &outcome {
        SendOutcome::Permanent { reason } => assert!(reason.contains(expected), "{url}: {reason}"),
        other => panic!("{url} was not refused: {other:?}"),
    }
    assert_eq!(endpoint.hits(), 0, "{url} reached the endpoint");
}

#[tokio::test]
async fn every_spelling_of_loopback_is_refused_before_connecting() {
    let v4 = Endpoint::start().await;
    let port = v4.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("https://127.0.0.1:{port}/ok"),
        format!("http://127.1:{port}/ok"),
        format!("http://2130706433:{port}/ok"),
        format!("http://0x7f000001:{port}/ok"),
        format!("http://0177.0.0.1:{port}/ok"),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
    ] {
        assert_refused(&url, &v4, "loopback").await;
    }
    assert_refused(&format!("http://0.0.0.0:{port}/ok"), &v4, "this network").await;
    assert_refused(
        &format!("http://localhost:{port}/ok"),
        &v4,
        "private network",
    )
    .await;
}

#[tokio::test]
async fn ipv6_loopback_is_refused_before_connecting() {
    let v6 = Endpoint::start_on("[::1]:0").await;
    assert_refused(
        &format!("http://[::1]:{}/ok", v6.addr.port()),
        &v6,
        "loopback",
    )
    .await;
    assert_refused(
        &format!("http://[64:ff9b::7f00:1]:{}/ok", v6.addr.port()),
        &v6,
        "loopback",
    )
    .await;
}

/// `localhost` is allowed by name here but its addresses are not: the name check passes,
/// so only the resolver stands between the client and the endpoint. This is the path a
/// public name rebound to 127.0.0.1 would take.
#[tokio::test]
async fn the_resolver_refuses_a_name_that_resolves_to_loopback() {
    let endpoint = Endpoint::start().await;
    let by_name_only = UrlPolicy::strict().allow("localhost").unwrap();
    let url = format!("http://localhost:{}/ok", endpoint.addr.port());
    let outcome = client(by_name_only)
        .send(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    match &outcome {
        SendOutcome::Permanent { reason } => {
            assert!(
                reason.contains("SSRF guard") && reason.contains("loopback"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(endpoint.hits(), 0);
}

#[tokio::test]
async fn resolving_localhost_through_the_guard() {
    let strict = GuardedResolver::new(Arc::new(UrlPolicy::strict()));
    let name: Name = "localhost".parse().unwrap();
    let err = match strict.resolve(name).await {
        Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(err) => err,
    };
    let refused = err
        .downcast_ref::<Refused>()
        .unwrap_or_else(|| panic!("not a refusal: {err}"));
    assert_eq!(refused.host, "localhost");
    assert!(refused.ip.is_loopback());
    assert!(refused.range.contains("loopback"), "{refused}");

    // With 127.0.0.1 allowed, that address alone comes back: ::1 is still dropped.
    let dev = GuardedResolver::new(Arc::new(UrlPolicy::strict().allow("127.0.0.1").unwrap()));
    let addrs: Vec<IpAddr> = dev
        .resolve("localhost".parse().unwrap())
        .await
        .unwrap()
        .map(|a| a.ip())
        .collect();
    assert_eq!(addrs, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
}
