//! The binary as the demo and the benchmark run it: a separate process driven over HTTP.

use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::{free_addr, http_client};

async fn wait_until_up(url: &str) {
    for _ in 0..100 {
        if let Ok(response) = http_client().get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

#[tokio::test]
async fn the_binary_serves_all_three_and_exits_cleanly_on_sigterm() {
    let (smtp, smtp_control, twilio, webhook) =
        (free_addr(), free_addr(), free_addr(), free_addr());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tocsin-local-providers"))
        .arg("all")
        .env("TOCSIN_LOCAL_SMTP_ADDR", smtp.to_string())
        .env("TOCSIN_LOCAL_SMTP_CONTROL_ADDR", smtp_control.to_string())
        .env("TOCSIN_LOCAL_TWILIO_ADDR", twilio.to_string())
        .env("TOCSIN_LOCAL_WEBHOOK_ADDR", webhook.to_string())
        .env(
            "TOCSIN_LOCAL_WEBHOOK_ENDPOINTS",
            "ops=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let control = format!("http://{smtp_control}/_control");
    wait_until_up(&format!("{control}/summary")).await;
    wait_until_up(&format!("http://{twilio}/_control/summary")).await;
    wait_until_up(&format!("http://{webhook}/_control/summary")).await;

    // A fault set over HTTP applies to the next mail only.
    let client = http_client();
    let rule = json!({"target": "oncall@example.com", "times": 1, "kind": "reject", "code": 451, "stage": "rcpt"});
    assert_eq!(
        client
            .post(format!("{control}/faults"))
            .json(&rule)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(smtp.port())
        .build();
    let mail = || {
        Message::builder()
            .from("alerts@tocsin.test".parse().unwrap())
            .to("oncall@example.com".parse().unwrap())
            .subject("Over the wire")
            .message_id(Some("<wire-1@tocsin.test>".into()))
            .body(String::from("hello"))
            .unwrap()
    };
    assert!(transport.send(mail()).await.unwrap_err().is_transient());
    transport.send(mail()).await.unwrap();

    let messages: Vec<Value> = client
        .get(format!("{control}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["message_id"], "<wire-1@tocsin.test>");
    assert_eq!(messages[0]["subject"], "Over the wire");
    let summary: Value = client
        .get(format!("{control}/summary"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            summary["received"].as_u64(),
            summary["unique"].as_u64(),
            summary["duplicates"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    let faults: Vec<Value> = client
        .get(format!("{control}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(faults.is_empty(), "the one-shot rule expired: {faults:?}");
    assert_eq!(
        client
            .delete(format!("{control}/messages"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    let messages: Vec<Value> = client
        .get(format!("{control}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(messages.is_empty());

    // The endpoint from the environment is registered; the default Twilio credentials work.
    let endpoints: Vec<String> = client
        .get(format!("http://{webhook}/_control/endpoints"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(endpoints, ["ops"]);
    let sms = client
        .post(format!(
            "http://{twilio}/2010-04-01/Accounts/{}/Messages.json",
            tocsin_local_providers::twilio::DEFAULT_ACCOUNT_SID
        ))
        .basic_auth(
            tocsin_local_providers::twilio::DEFAULT_ACCOUNT_SID,
            Some(tocsin_local_providers::twilio::DEFAULT_AUTH_TOKEN),
        )
        .form(&[
            ("To", "+15551230001"),
            ("From", "+15550000000"),
            ("Body", "hi"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(sms.status().as_u16(), 201);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
