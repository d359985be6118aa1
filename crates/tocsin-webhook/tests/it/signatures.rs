//! Our signatures, checked by the independent `standardwebhooks` crate.

use standardwebhooks::Webhook;
use time::OffsetDateTime;
use tocsin_webhook::{WebhookSecret, sign, signature_headers};

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn standardwebhooks_verifies_our_headers() {
    let secret = WebhookSecret::generate();
    let body = br#"{"type":"incident.opened","schema_version":1}"#;
    let headers = signature_headers(std::slice::from_ref(&secret), "dlv_42", now(), body).unwrap();
    let verifier = Webhook::new(&secret.expose()).unwrap();
    verifier.verify(body, &headers).unwrap();
}

#[test]
fn standardwebhooks_rejects_a_tampered_body_or_another_secret() {
    let secret = WebhookSecret::generate();
    let body = br#"{"n":1}"#;
    let headers = signature_headers(std::slice::from_ref(&secret), "dlv_42", now(), body).unwrap();
    let verifier = Webhook::new(&secret.expose()).unwrap();
    assert!(verifier.verify(br#"{"n":2}"#, &headers).is_err());
    let stranger = Webhook::new(&WebhookSecret::generate().expose()).unwrap();
    assert!(stranger.verify(body, &headers).is_err());
}

#[test]
fn both_secrets_verify_during_a_rotation() {
    let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
    let body = b"{}";
    let headers = signature_headers(&[new.clone(), old.clone()], "dlv_7", now(), body).unwrap();
    Webhook::new(&new.expose())
        .unwrap()
        .verify(body, &headers)
        .unwrap();
    Webhook::new(&old.expose())
        .unwrap()
        .verify(body, &headers)
        .unwrap();
}

#[test]
fn our_sign_matches_theirs_byte_for_byte() {
    let secret = WebhookSecret::generate();
    let theirs = Webhook::new(&secret.expose()).unwrap();
    for (id, ts, body) in [
        ("msg_1", 0, &b""[..]),
        ("dlv_x", 1_700_000_000, &b"{\"a\":\"\xc3\xa9\"}"[..]),
    ] {
        assert_eq!(
            sign(&secret, id, ts, body),
            theirs.sign(id, ts, body).unwrap()
        );
    }
}
