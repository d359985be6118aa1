use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Form, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use tocsin_local_providers::{Fault, FaultRule, TwilioConfig, TwilioServer};
use tokio::sync::mpsc;

use crate::http_client;

struct Callback {
    signature: String,
    params: BTreeMap<String, String>,
}

/// A tiny listener standing in for the ingest side that receives status callbacks.
async fn callback_listener() -> (String, mpsc::UnboundedReceiver<Callback>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/twilio/status",
            post(
                |State(sender): State<mpsc::UnboundedSender<Callback>>,
                 headers: HeaderMap,
                 Form(params): Form<BTreeMap<String, String>>| async move {
                    let signature = headers["x-twilio-signature"].to_str().unwrap().to_owned();
                    sender.send(Callback { signature, params }).unwrap();
                    ""
                },
            ),
        )
        .with_state(sender);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/twilio/status", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

/// Twilio's algorithm, written again here so the test does not trust the server's code.
fn expected_signature(token: &str, url: &str, params: &BTreeMap<String, String>) -> String {
    let mut content = url.to_owned();
    for (name, value) in params {
        content.push_str(name);
        content.push_str(value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(content.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn post_message(server: &TwilioServer, form: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let response = http_client()
        .post(server.messages_url())
        .basic_auth(server.account_sid(), Some(server.auth_token()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

fn quick_callbacks() -> TwilioConfig {
    TwilioConfig {
        callback_delay: Duration::from_millis(10),
        ..TwilioConfig::default()
    }
}

#[tokio::test]
async fn a_valid_message_is_created_like_twilio_does() {
    let server = TwilioServer::start(quick_callbacks()).await.unwrap();
    let (status, _, body) = post_message(
        &server,
        &[
            ("To", "+15551230001"),
            ("From", "+15550000000"),
            ("Body", "Disk full"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sid = body["sid"].as_str().unwrap();
    assert!(
        sid.starts_with("SM") && sid.len() == 34 && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{sid}"
    );
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+15551230001");
    assert_eq!(body["from"], "+15550000000");
    assert_eq!(body["body"], "Disk full");
    assert_eq!(body["num_segments"], "1");
    assert_eq!(body["account_sid"], server.account_sid());
    assert!(body["error_code"].is_null() && body["error_message"].is_null());
    assert!(body["date_created"].as_str().unwrap().ends_with("+0000"));
    assert_eq!(
        body["uri"],
        format!(
            "/2010-04-01/Accounts/{}/Messages/{sid}.json",
            server.account_sid()
        )
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sid, sid);
    assert!(messages[0].accepted);
}

#[tokio::test]
async fn bad_credentials_get_twilios_20003() {
    let server = TwilioServer::start(TwilioConfig::default()).await.unwrap();
    let response = http_client()
        .post(server.messages_url())
        .basic_auth(server.account_sid(), Some("wrong-token"))
        .form(&[
            ("To", "+15551230001"),
            ("From", "+15550000000"),
            ("Body", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 20003);
    assert_eq!(body["status"], 401);
    assert_eq!(
        body["more_info"],
        "https://www.twilio.com/docs/errors/20003"
    );
    let anonymous = http_client()
        .post(server.messages_url())
        .form(&[("To", "+15551230001")])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn validation_errors_carry_twilios_codes() {
    let server = TwilioServer::start(TwilioConfig::default()).await.unwrap();
    let cases: [(&[(&str, &str)], u32); 5] = [
        (&[("From", "+15550000000"), ("Body", "x")], 21604),
        (
            &[
                ("To", "5551230001"),
                ("From", "+15550000000"),
                ("Body", "x"),
            ],
            21211,
        ),
        (
            &[("To", "+1555-123"), ("From", "+15550000000"), ("Body", "x")],
            21211,
        ),
        (&[("To", "+15551230001"), ("Body", "x")], 21603),
        (&[("To", "+15551230001"), ("From", "+15550000000")], 21602),
    ];
    for (form, code) in cases {
        let (status, _, body) = post_message(&server, form).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (400, Some(u64::from(code))),
            "{form:?}: {body}"
        );
        assert_eq!(
            body["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}")
        );
    }
    // A messaging service stands in for From.
    let (status, _, body) = post_message(
        &server,
        &[
            ("To", "+15551230001"),
            ("MessagingServiceSid", "MG123"),
            ("Body", "x"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["from"].is_null());
}

#[tokio::test]
async fn rate_limit_and_refusal_faults() {
    let server = TwilioServer::start(TwilioConfig::default()).await.unwrap();
    server.faults().push(
        FaultRule::for_target(
            "+15551230001",
            Fault::Status {
                status: 429,
                code: None,
                retry_after_secs: Some(3),
            },
        )
        .times(1),
    );
    server.faults().push(FaultRule::for_target(
        "+15551230002",
        Fault::Status {
            status: 400,
            code: Some(21610),
            retry_after_secs: None,
        },
    ));
    server.faults().push(
        FaultRule::for_target(
            "+15551230003",
            Fault::Status {
                status: 503,
                code: None,
                retry_after_secs: None,
            },
        )
        .times(1),
    );
    let form = |to| [("To", to), ("From", "+15550000000"), ("Body", "Disk full")];

    let (status, headers, body) = post_message(&server, &form("+15551230001")).await;
    assert_eq!((status, body["code"].as_u64()), (429, Some(20429)));
    assert_eq!(headers["retry-after"], "3");
    let (status, _, _) = post_message(&server, &form("+15551230001")).await;
    assert_eq!(status, 201, "the 429 was for one request only");

    let (status, _, body) = post_message(&server, &form("+15551230002")).await;
    assert_eq!((status, body["code"].as_u64()), (400, Some(21610)));
    let (status, _, body) = post_message(&server, &form("+15551230003")).await;
    assert_eq!((status, body["code"].as_u64()), (503, Some(20503)));

    let summary = server.summary();
    assert_eq!((summary.received, summary.rejected), (1, 3));
}

#[tokio::test]
async fn status_callbacks_are_signed_and_report_delivery_or_failure() {
    let server = TwilioServer::start(quick_callbacks()).await.unwrap();
    server.faults().push(FaultRule::for_target(
        "+15551230009",
        Fault::Undelivered { error_code: None },
    ));
    let (callback_url, mut callbacks) = callback_listener().await;
    let delivered_url = format!("{callback_url}?delivery=d-1");
    let undelivered_url = format!("{callback_url}?delivery=d-2");

    let (status, _, created) = post_message(
        &server,
        &[
            ("To", "+15551230001"),
            ("From", "+15550000000"),
            ("Body", "Disk full"),
            ("StatusCallback", &delivered_url),
        ],
    )
    .await;
    assert_eq!(status, 201);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let callback = tokio::time::timeout(Duration::from_secs(5), callbacks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            callback.signature,
            expected_signature(server.auth_token(), &delivered_url, &callback.params)
        );
        assert_eq!(
            callback.params["MessageSid"],
            created["sid"].as_str().unwrap()
        );
        assert_eq!(callback.params["To"], "+15551230001");
        assert_eq!(callback.params["From"], "+15550000000");
        assert_eq!(callback.params["AccountSid"], server.account_sid());
        assert_eq!(callback.params["ApiVersion"], "2010-04-01");
        seen.push(callback.params["MessageStatus"].clone());
    }
    assert_eq!(seen, ["sent", "delivered"]);

    let (status, _, _) = post_message(
        &server,
        &[
            ("To", "+15551230009"),
            ("From", "+15550000000"),
            ("Body", "Disk full"),
            ("StatusCallback", &undelivered_url),
        ],
    )
    .await;
    assert_eq!(status, 201, "an undelivered message is still accepted");
    let mut last = None;
    for _ in 0..2 {
        let callback = tokio::time::timeout(Duration::from_secs(5), callbacks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            callback.signature,
            expected_signature(server.auth_token(), &undelivered_url, &callback.params)
        );
        last = Some(callback.params);
    }
    let last = last.unwrap();
    assert_eq!(last["MessageStatus"], "undelivered");
    assert_eq!(last["ErrorCode"], "30003");
    assert!(
        server
            .callbacks()
            .iter()
            .all(|c| c.response_status == Some(200))
    );
}

#[tokio::test]
async fn a_resent_delivery_counts_as_a_duplicate() {
    let server = TwilioServer::start(TwilioConfig {
        callback_delay: Duration::from_secs(60),
        ..TwilioConfig::default()
    })
    .await
    .unwrap();
    let send = |delivery: &'static str| {
        let callback = format!("http://127.0.0.1:9/cb?delivery={delivery}");
        let url = server.messages_url();
        let (sid, token) = (
            server.account_sid().to_owned(),
            server.auth_token().to_owned(),
        );
        async move {
            let form = [
                ("To", "+15551230001"),
                ("From", "+15550000000"),
                ("Body", "Disk full"),
                ("StatusCallback", callback.as_str()),
            ];
            http_client()
                .post(url)
                .basic_auth(sid, Some(token))
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send("d-1").await, 201);
    assert_eq!(send("d-1").await, 201);
    assert_eq!(send("d-2").await, 201);
    let summary = server.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (3, 2, 1)
    );
}
