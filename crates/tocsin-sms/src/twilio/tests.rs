use reqwest::header::HeaderValue;
use time::macros::datetime;

use super::*;

fn error_body(code: u32, status: u16) -> String {
    format!(
        r#"{{"code": {code}, "message": "m{code}", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
    )
}

#[test]
fn success_yields_the_sid_and_tolerates_unknown_statuses() {
    let body = r#"{"sid": "SM123", "status": "teleporting", "error_code": null, "error_message": null, "to": "+1"}"#;
    assert_eq!(
        classify_response(StatusCode::CREATED, body, None),
        SendOutcome::Delivered {
            provider_id: Some("SM123".into())
        }
    );
    let parsed: MessageResource = serde_json::from_str(body).unwrap();
    assert_eq!(
        parsed.status,
        Some(MessageStatus::Other("teleporting".into()))
    );
    assert_eq!(
        classify_response(StatusCode::CREATED, "not json", None),
        SendOutcome::Delivered { provider_id: None }
    );
}

#[test]
fn opted_out_recipients_are_gone() {
    let outcome = classify_response(StatusCode::BAD_REQUEST, &error_body(21610, 400), None);
    assert!(
        matches!(outcome, SendOutcome::Gone { ref reason } if reason.contains("21610")),
        "{outcome:?}"
    );
}

#[test]
fn invalid_numbers_and_auth_failures_are_permanent() {
    for code in [21211, 21212, 21408, 21602, 21603, 21604, 21612, 21614] {
        let outcome = classify_response(StatusCode::BAD_REQUEST, &error_body(code, 400), None);
        assert!(
            matches!(outcome, SendOutcome::Permanent { .. }),
            "{code}: {outcome:?}"
        );
    }
    let outcome = classify_response(StatusCode::UNAUTHORIZED, &error_body(20003, 401), None);
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );
    let outcome = classify_response(StatusCode::NOT_FOUND, "", None);
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );
}

#[test]
fn rate_limits_and_server_errors_are_transient_with_retry_after() {
    let wait = Some(Duration::from_secs(7));
    assert_eq!(
        classify_response(StatusCode::TOO_MANY_REQUESTS, &error_body(20429, 429), wait),
        SendOutcome::Transient {
            reason: "Twilio error 20429 (HTTP 429): m20429".into(),
            retry_after: wait
        }
    );
    assert_eq!(
        classify_response(StatusCode::TOO_MANY_REQUESTS, "", wait),
        SendOutcome::Transient {
            reason: "HTTP 429 from Twilio".into(),
            retry_after: wait
        }
    );
    for status in [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let outcome = classify_response(status, "<html>oops</html>", None);
        assert!(
            matches!(
                outcome,
                SendOutcome::Transient {
                    retry_after: None,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = datetime!(2026-11-23 14:05:00 UTC);
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers, now), None);
    headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Mon, 23 Nov 2026 14:06:30 GMT"),
    );
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Mon, 23 Nov 2026 14:00:00 GMT"),
    );
    assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&headers, now), None);
}

fn config(base: &str) -> TwilioConfig {
    let mut config = TwilioConfig::new(
        "AC123",
        SecretString::from("token"),
        Sender::From("+15005550006".into()),
    );
    config.base_url = Url::parse(base).unwrap();
    config.status_callback =
        Some(Url::parse("https://tocsin.test/twilio/status?tenant=acme").unwrap());
    config
}

#[test]
fn the_status_callback_carries_the_delivery_key() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = TwilioClient::new(config("http://127.0.0.1:1")).unwrap();
    assert_eq!(
        client.status_callback_url("dlv_abc").unwrap().as_str(),
        "https://tocsin.test/twilio/status?tenant=acme&delivery=dlv_abc"
    );
    assert_eq!(
        client.messages_url.as_str(),
        "http://127.0.0.1:1/2010-04-01/Accounts/AC123/Messages.json"
    );
    assert!(
        TwilioClient::new(TwilioConfig {
            account_sid: "../x".into(),
            ..config("http://a.test")
        })
        .is_err()
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = TwilioClient::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let outcome = client.send("+15005550001", "hi", "dlv_1").await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_timeout_after_the_post_was_sent_is_unknown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Accepts the connection, reads the request and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = config(&format!("http://127.0.0.1:{port}"));
    config.timeout = Duration::from_millis(300);
    let client = TwilioClient::new(config).unwrap();
    let outcome = client.send("+15005550001", "hi", "dlv_1").await;
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
}
