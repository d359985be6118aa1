//! The sender against real endpoints on loopback, with 127.0.0.1 allow-listed as a
//! developer would; the guard's refusals are in `guard.rs`.

use std::time::Duration;

use reqwest::header::HeaderMap;
use time::OffsetDateTime;
use tocsin_core::SendOutcome;
use tocsin_core::network::UrlPolicy;
use tocsin_webhook::{ClientConfig, WebhookClient, WebhookSecret, signature_headers};

use crate::server::Endpoint;

/// A client that may reach 127.0.0.1, with a short total timeout so the hanging endpoint
/// costs the suite under a second.
pub(crate) fn client(policy: UrlPolicy) -> WebhookClient {
    tocsin_runtime::tls::install_crypto_provider();
    WebhookClient::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_millis(700),
        policy,
        ..ClientConfig::default()
    })
    .unwrap()
}

pub(crate) fn loopback_allowed() -> UrlPolicy {
    UrlPolicy::strict().allow("127.0.0.1").unwrap()
}

async fn send(endpoint: &Endpoint, path: &str) -> SendOutcome {
    client(loopback_allowed())
        .send(&endpoint.url(path), HeaderMap::new(), b"{}".to_vec())
        .await
}

#[tokio::test]
async fn a_2xx_is_delivered_and_arrives_signed() {
    let endpoint = Endpoint::start().await;
    let secret = WebhookSecret::generate();
    let body = br#"{"type":"incident.opened"}"#.to_vec();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let headers = signature_headers(std::slice::from_ref(&secret), "dlv_1", now, &body).unwrap();

    let outcome = client(loopback_allowed())
        .send(&endpoint.url("/ok"), headers, body.clone())
        .await;

    assert_eq!(outcome, SendOutcome::Delivered { provider_id: None });
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), body.as_slice());
    assert_eq!(seen[0].headers["content-type"], "application/json");
    // The receiver's view: the request verifies with the independent implementation.
    let verifier = standardwebhooks::Webhook::new(&secret.expose()).unwrap();
    verifier.verify(&seen[0].body, &seen[0].headers).unwrap();

    assert_eq!(send(&endpoint, "/no-content").await.as_str(), "delivered");
}

#[tokio::test]
async fn a_410_means_the_endpoint_is_gone() {
    let endpoint = Endpoint::start().await;
    assert!(matches!(
        send(&endpoint, "/gone").await,
        SendOutcome::Gone { .. }
    ));
}

#[tokio::test]
async fn a_429_is_transient_and_carries_retry_after() {
    let endpoint = Endpoint::start().await;
    match send(&endpoint, "/slow-down").await {
        SendOutcome::Transient {
            retry_after,
            reason,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)));
            assert!(reason.contains("429"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_500_is_transient_and_a_huge_error_body_is_cut_short() {
    let endpoint = Endpoint::start().await;
    match send(&endpoint, "/error").await {
        SendOutcome::Transient {
            retry_after: None,
            reason,
        } => {
            assert!(
                reason.contains("500") && reason.contains("database on fire"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    let huge = send(&endpoint, "/huge-error").await;
    assert_eq!(huge.as_str(), "transient");
    assert!(
        huge.reason().len() < 1024,
        "{} bytes of reason",
        huge.reason().len()
    );
}

#[tokio::test]
async fn a_400_is_permanent() {
    let endpoint = Endpoint::start().await;
    match send(&endpoint, "/bad").await {
        SendOutcome::Permanent { reason } => {
            assert!(reason.contains("400") && reason.contains("foo"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let endpoint = Endpoint::start().await;
    let target = Endpoint::start().await;
    // A redirect to another allow-listed endpoint: not contacted either.
    endpoint.redirect_to(&target.url("/ok"));
    let outcome = send(&endpoint, "/redirect").await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent { reason } if reason.contains("redirect not followed")),
        "{outcome:?}"
    );
    assert_eq!(target.hits(), 0);

    // The attack itself: bounce us to the metadata service.
    endpoint.redirect_to("http://169.254.169.254/latest/meta-data/");
    let outcome = send(&endpoint, "/redirect").await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent { reason } if reason.contains("redirect not followed")),
        "{outcome:?}"
    );
    assert_eq!(endpoint.hits(), 2);
}

#[tokio::test]
async fn no_answer_after_sending_is_unknown() {
    let endpoint = Endpoint::start().await;
    let outcome = send(&endpoint, "/hang").await;
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    // The request did arrive: this is exactly the case a resend with the same id covers.
    assert_eq!(endpoint.hits(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port that was just free: nothing listens there now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let outcome = client(loopback_allowed())
        .send(&format!("http://{addr}/ok"), HeaderMap::new(), Vec::new())
        .await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );
}
