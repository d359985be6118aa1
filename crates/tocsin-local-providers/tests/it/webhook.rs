use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use standardwebhooks::Webhook;
use tocsin_local_providers::{Fault, FaultRule, WebhookReceiver, WebhookReceiverConfig};

use crate::http_client;

fn new_secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs with the reference implementation and posts; returns the status and Retry-After.
async fn deliver(
    url: &str,
    secret: &str,
    id: &str,
    timestamp: i64,
    signed_body: &str,
    sent_body: &str,
) -> reqwest::Response {
    let signature = Webhook::new(secret)
        .unwrap()
        .sign(id, timestamp, signed_body.as_bytes())
        .unwrap();
    http_client()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(sent_body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn receiver_with(endpoint: &str) -> (WebhookReceiver, String) {
    let receiver = WebhookReceiver::start(WebhookReceiverConfig::default())
        .await
        .unwrap();
    let secret = new_secret();
    receiver.register(endpoint, &secret).unwrap();
    (receiver, secret)
}

#[tokio::test]
async fn a_reference_signature_verifies_and_the_body_is_recorded() {
    let (receiver, secret) = receiver_with("ops").await;
    let body = json!({"type": "incident.opened", "data": {"incident": "inc_1"}}).to_string();
    let response = deliver(
        &receiver.url_for("ops"),
        &secret,
        "msg_1",
        now(),
        &body,
        &body,
    )
    .await;
    assert!(response.status().is_success(), "{}", response.status());
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert!(delivery.verified && delivery.accepted);
    assert_eq!(delivery.endpoint, "ops");
    assert_eq!(delivery.webhook_id.as_deref(), Some("msg_1"));
    assert_eq!(delivery.body["data"]["incident"], "inc_1");
}

#[tokio::test]
async fn a_rotated_secret_list_passes_when_one_signature_matches() {
    let (receiver, secret) = receiver_with("ops").await;
    let body = r#"{"n":1}"#;
    let ts = now();
    let good = Webhook::new(&secret)
        .unwrap()
        .sign("msg_r", ts, body.as_bytes())
        .unwrap();
    let stale = Webhook::new(&new_secret())
        .unwrap()
        .sign("msg_r", ts, body.as_bytes())
        .unwrap();
    let response = http_client()
        .post(receiver.url_for("ops"))
        .header("webhook-id", "msg_r")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", format!("{stale} {good}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert!(receiver.deliveries()[0].verified);
}

#[tokio::test]
async fn tampered_stale_and_unsigned_requests_are_refused() {
    let (receiver, secret) = receiver_with("ops").await;
    let url = receiver.url_for("ops");
    let tampered = deliver(
        &url,
        &secret,
        "msg_t",
        now(),
        r#"{"amount":1}"#,
        r#"{"amount":100}"#,
    )
    .await;
    assert_eq!(tampered.status().as_u16(), 401);
    let stale = deliver(&url, &secret, "msg_s", now() - 600, "{}", "{}").await;
    assert_eq!(stale.status().as_u16(), 401);
    let wrong_key = deliver(&url, &new_secret(), "msg_k", now(), "{}", "{}").await;
    assert_eq!(wrong_key.status().as_u16(), 401);
    let unsigned = http_client().post(&url).body("{}").send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let unknown = deliver(
        &receiver.url_for("nobody"),
        &secret,
        "msg_u",
        now(),
        "{}",
        "{}",
    )
    .await;
    assert_eq!(unknown.status().as_u16(), 404);

    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries.len(),
        4,
        "unverified requests are recorded; unknown endpoints are not"
    );
    assert!(deliveries.iter().all(|d| !d.verified && !d.accepted));
    assert_eq!(deliveries[0].body["amount"], 100);
    let summary = receiver.summary();
    assert_eq!((summary.received, summary.rejected), (0, 4));
}

#[tokio::test]
async fn a_repeated_webhook_id_is_a_duplicate() {
    let (receiver, secret) = receiver_with("ops").await;
    let url = receiver.url_for("ops");
    for id in ["msg_1", "msg_1", "msg_2", "msg_1"] {
        assert!(
            deliver(&url, &secret, id, now(), "{}", "{}")
                .await
                .status()
                .is_success()
        );
    }
    let summary = receiver.summary();
    assert_eq!(
        (summary.received, summary.unique, summary.duplicates),
        (4, 2, 2)
    );
}

#[tokio::test]
async fn faults_answer_with_status_retry_after_redirect_and_silence() {
    let (receiver, secret) = receiver_with("ops").await;
    let url = receiver.url_for("ops");
    let faults = receiver.faults();
    faults.push(
        FaultRule::for_target(
            "ops",
            Fault::Status {
                status: 410,
                code: None,
                retry_after_secs: None,
            },
        )
        .times(1),
    );
    faults.push(
        FaultRule::for_target(
            "ops",
            Fault::Status {
                status: 429,
                code: None,
                retry_after_secs: Some(7),
            },
        )
        .times(1),
    );
    faults.push(
        FaultRule::for_target(
            "ops",
            Fault::Redirect {
                location: "http://127.0.0.1:1/elsewhere".into(),
            },
        )
        .times(1),
    );
    faults.push(FaultRule::for_target("ops", Fault::Hang).times(1));

    assert_eq!(
        deliver(&url, &secret, "m1", now(), "{}", "{}")
            .await
            .status()
            .as_u16(),
        410
    );
    let limited = deliver(&url, &secret, "m2", now(), "{}", "{}").await;
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    let redirected = deliver(&url, &secret, "m3", now(), "{}", "{}").await;
    assert_eq!(redirected.status().as_u16(), 302);
    assert_eq!(
        redirected.headers()["location"],
        "http://127.0.0.1:1/elsewhere"
    );

    let signature = Webhook::new(&secret)
        .unwrap()
        .sign("m4", now(), b"{}")
        .unwrap();
    let hung = http_client()
        .post(&url)
        .header("webhook-id", "m4")
        .header("webhook-timestamp", now().to_string())
        .header("webhook-signature", signature)
        .body("{}")
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());

    assert!(
        deliver(&url, &secret, "m5", now(), "{}", "{}")
            .await
            .status()
            .is_success(),
        "the plan is used up"
    );
    let statuses: Vec<Option<u16>> = receiver
        .deliveries()
        .iter()
        .map(|d| d.response_status)
        .collect();
    assert_eq!(statuses, [Some(410), Some(429), Some(302), None, Some(204)]);
    assert_eq!(receiver.summary().received, 1);
}

#[tokio::test]
async fn endpoints_register_in_bulk_over_the_control_api() {
    let receiver = WebhookReceiver::start(WebhookReceiverConfig::default())
        .await
        .unwrap();
    let secrets: Vec<(String, String)> = (0..20_000)
        .map(|n| (format!("ep-{n}"), new_secret()))
        .collect();
    let body: Vec<_> = secrets
        .iter()
        .map(|(name, secret)| json!({"name": name, "secret": secret}))
        .collect();
    let control = format!("{}/_control/endpoints", receiver.base_url());
    let response = http_client()
        .post(&control)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let bad = http_client()
        .post(&control)
        .json(&json!([{"name": "x", "secret": "not-a-secret"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let (name, secret) = &secrets[19_999];
    assert!(
        deliver(
            &receiver.url_for(name),
            secret,
            "msg_bulk",
            now(),
            "{}",
            "{}"
        )
        .await
        .status()
        .is_success()
    );
    let listed: Vec<String> = http_client()
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 20_000);
}
