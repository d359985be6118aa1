//! The Twilio client and the callback verifier against `tocsin-local-providers`' Twilio
//! double: real HTTP, real Basic auth, real signed status callbacks, and faults on demand.
//! The SMS worker end to end is in [`worker`].

mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use secrecy::SecretString;
use tocsin_core::SendOutcome;
use tocsin_local_providers::{Fault, FaultRule, TwilioServer};
use tocsin_sms::{Progress, Sender, StatusCallback, TwilioClient, TwilioConfig, verify_signature};
use url::Url;

const TO: &str = "+15005550001";

/// Records every callback as (signature valid, parsed callback).
#[derive(Clone)]
struct Receiver {
    base: String,
    token: SecretString,
    seen: Arc<Mutex<Vec<(bool, StatusCallback)>>>,
}

async fn status(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> StatusCode {
    let url = format!("{}{}", receiver.base, uri);
    let header = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid = verify_signature(&url, &params, header, &receiver.token);
    let callback = StatusCallback::parse(&url, &params).unwrap();
    receiver.seen.lock().unwrap().push((valid, callback));
    if valid {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::FORBIDDEN
    }
}

struct Fixture {
    twilio: TwilioServer,
    client: TwilioClient,
    seen: Arc<Mutex<Vec<(bool, StatusCallback)>>>,
}

async fn fixture(timeout: Duration) -> Fixture {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let twilio = TwilioServer::start(Default::default()).await.unwrap();
    let token = SecretString::from(twilio.auth_token().to_owned());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver {
        base: base.clone(),
        token: token.clone(),
        seen: seen.clone(),
    };
    let app = Router::new()
        .route("/twilio/status", post(status))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = TwilioConfig::new(
        twilio.account_sid(),
        token,
        Sender::From("+15005550006".into()),
    );
    config.base_url = Url::parse(&twilio.base_url()).unwrap();
    config.status_callback = Some(Url::parse(&format!("{base}/twilio/status")).unwrap());
    config.timeout = timeout;
    let client = TwilioClient::new(config).unwrap();
    Fixture {
        twilio,
        client,
        seen,
    }
}

async fn wait_for_callbacks(
    seen: &Mutex<Vec<(bool, StatusCallback)>>,
    n: usize,
) -> Vec<(bool, StatusCallback)> {
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn a_message_is_accepted_and_its_signed_callbacks_reconcile_by_delivery_key() {
    let f = fixture(Duration::from_secs(10)).await;
    let outcome = f
        .client
        .send(
            TO,
            "[Acme] Service problem: Payments API affected.",
            "dlv_one",
        )
        .await;
    let SendOutcome::Delivered {
        provider_id: Some(sid),
    } = outcome
    else {
        panic!("{outcome:?}")
    };

    let sms = f.twilio.messages();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].sid, sid);
    assert_eq!(sms[0].to, TO);
    assert_eq!(sms[0].from.as_deref(), Some("+15005550006"));
    assert_eq!(
        sms[0].body,
        "[Acme] Service problem: Payments API affected."
    );
    assert!(
        sms[0]
            .status_callback
            .as_deref()
            .unwrap()
            .ends_with("/twilio/status?delivery=dlv_one")
    );

    let seen = wait_for_callbacks(&f.seen, 2).await;
    assert_eq!(seen.len(), 2, "sent, then delivered");
    for (valid, callback) in &seen {
        assert!(valid, "our verifier accepts the double's signature");
        assert_eq!(callback.message_sid, sid);
        assert_eq!(callback.delivery_key.as_deref(), Some("dlv_one"));
    }
    assert_eq!(seen[0].1.progress(), Progress::InProgress);
    assert_eq!(seen[1].1.progress(), Progress::Delivered);
}

#[tokio::test]
async fn an_undelivered_message_reports_failure_with_its_error_code() {
    let f = fixture(Duration::from_secs(10)).await;
    f.twilio.faults().push(FaultRule::for_target(
        TO,
        Fault::Undelivered {
            error_code: Some(30003),
        },
    ));
    let outcome = f.client.send(TO, "hi", "dlv_two").await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "accepted first: {outcome:?}"
    );
    let seen = wait_for_callbacks(&f.seen, 2).await;
    let (valid, last) = seen.last().unwrap();
    assert!(valid);
    assert_eq!(
        (last.progress(), last.error_code),
        (Progress::Failed, Some(30003))
    );
}

#[tokio::test]
async fn provider_errors_map_to_outcomes() {
    let f = fixture(Duration::from_secs(10)).await;
    let faults = f.twilio.faults();
    let status = |status: u16, code: Option<u32>, retry_after_secs: Option<u64>| {
        FaultRule::for_target(
            TO,
            Fault::Status {
                status,
                code,
                retry_after_secs,
            },
        )
        .times(1)
    };

    faults.push(status(400, Some(21610), None));
    let outcome = f.client.send(TO, "hi", "dlv_a").await;
    assert!(matches!(outcome, SendOutcome::Gone { .. }), "{outcome:?}");

    faults.push(status(400, Some(21211), None));
    let outcome = f.client.send(TO, "hi", "dlv_b").await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "{outcome:?}"
    );

    faults.push(status(429, None, Some(3)));
    let outcome = f.client.send(TO, "hi", "dlv_c").await;
    assert!(
        matches!(outcome, SendOutcome::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)),
        "{outcome:?}"
    );

    faults.push(status(503, None, None));
    let outcome = f.client.send(TO, "hi", "dlv_d").await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );

    faults.push(
        FaultRule::for_target(
            TO,
            Fault::Redirect {
                location: "http://127.0.0.1:1/".into(),
            },
        )
        .times(1),
    );
    let outcome = f.client.send(TO, "hi", "dlv_e").await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { .. }),
        "a redirect is not followed: {outcome:?}"
    );

    let outcome = f.client.send(TO, "hi", "dlv_f").await;
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_permanent() {
    let f = fixture(Duration::from_secs(10)).await;
    let mut config = TwilioConfig::new(
        f.twilio.account_sid(),
        SecretString::from("wrong"),
        Sender::MessagingServiceSid("MG1".into()),
    );
    config.base_url = Url::parse(&f.twilio.base_url()).unwrap();
    let outcome = TwilioClient::new(config)
        .unwrap()
        .send(TO, "hi", "dlv_auth")
        .await;
    assert!(
        matches!(outcome, SendOutcome::Permanent { ref reason } if reason.contains("20003")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_lost_reply_is_unknown_and_the_callback_still_names_the_delivery() {
    let f = fixture(Duration::from_millis(500)).await;
    f.twilio
        .faults()
        .push(FaultRule::for_target(TO, Fault::Drop).times(1));
    let outcome = f.client.send(TO, "hi", "dlv_lost").await;
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    // The SMS policy: do not resend; the callback tells us the message exists after all.
    let seen = wait_for_callbacks(&f.seen, 2).await;
    assert!(
        seen.iter()
            .all(|(valid, cb)| *valid && cb.delivery_key.as_deref() == Some("dlv_lost"))
    );
    assert_eq!(seen.last().unwrap().1.progress(), Progress::Delivered);
    assert_eq!(f.twilio.summary().received, 1);
}

#[tokio::test]
async fn a_stopped_provider_is_transient() {
    let f = fixture(Duration::from_secs(5)).await;
    f.twilio.shutdown().await;
    let outcome = f.client.send(TO, "hi", "dlv_down").await;
    assert!(
        matches!(outcome, SendOutcome::Transient { .. }),
        "{outcome:?}"
    );
}
