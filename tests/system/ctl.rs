//! `tocsinctl` against a running pipeline: the real ingest, resolver, email and webhook
//! worker binaries, the local SMTP server and webhook receiver, PostgreSQL and NATS. An
//! operator imports subscribers, lists, reads, rotates and deletes them, previews the reach of
//! an incident, opens it, watches it to the end (exit code 5: a delivery died), finds the dead
//! letter, replays it once the receiver is fixed (after a dry run and a confirmation), and
//! resolves the incident.

use std::process::Output;
use std::time::Duration;

use tocsin_local_providers::{
    Fault, FaultRule, SmtpConfig, SmtpServer, WebhookReceiver, WebhookReceiverConfig,
};
use tocsin_testkit::database::TestDatabase;
use tocsin_testkit::nats::{nats_url, unique_prefix};
use tocsin_testkit::process::{ServiceProcess, binary_path, free_port, wait_for_tcp};

const TOKEN: &str = "operator-token-0123456789";
/// A monitoring system's: it may publish and read incidents, nothing more.
const PUBLISHER_TOKEN: &str = "monitoring-token-0123456789";

/// The secret the email worker signs links with and the pages verify them with.
const LINK_SECRET: &str = "a link secret of at least thirty-two bytes";

/// The running pipeline; every process gets SIGTERM at the end and must exit 0.
pub(crate) struct Stack {
    endpoint: String,
    /// Where `tocsin-page` serves, when started with it.
    pub(crate) page_url: Option<String>,
    services: Vec<(&'static str, ServiceProcess)>,
}

impl Stack {
    async fn start(db: &TestDatabase, smtp: &SmtpServer) -> Stack {
        Stack::launch(db, smtp, false).await
    }

    /// The pipeline with the public pages (`tocsin-page`), whose links the emails carry.
    pub(crate) async fn start_with_page(db: &TestDatabase, smtp: &SmtpServer) -> Stack {
        Stack::launch(db, smtp, true).await
    }

    async fn launch(db: &TestDatabase, smtp: &SmtpServer, with_page: bool) -> Stack {
        let prefix = unique_prefix();
        let common: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.clone()),
            ("NATS_URL", nats_url()),
            ("TOCSIN_BUS_PREFIX", prefix),
            ("TOCSIN_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("TOCSIN_WEBHOOK_ALLOW", "127.0.0.1".to_owned()),
            // Two quick attempts, so a broken endpoint is dead-lettered within seconds.
            ("TOCSIN_RETRY_BASE_SECONDS", "1".to_owned()),
            ("TOCSIN_RETRY_MAX_ATTEMPTS", "2".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let with = |extra: &[(&str, String)]| {
            let mut env = common.clone();
            env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env
        };
        let port = free_port();
        let ingest_env = with(&[
            ("TOCSIN_GRPC_ADDR", format!("127.0.0.1:{port}")),
            (
                "TOCSIN_PUBLISHER_TOKENS",
                format!("monitoring={PUBLISHER_TOKEN}"),
            ),
            ("TOCSIN_OPERATOR_TOKENS", format!("oncall={TOKEN}")),
            // The maintenance clock looks every second, so a reminder comes within the test.
            ("TOCSIN_MAINTENANCE_CLOCK_SECONDS", "1".to_owned()),
        ]);
        let page_url = with_page.then(|| format!("http://127.0.0.1:{}", free_port()));
        let mut email_env = with(&[
            ("TOCSIN_SMTP_HOST", "127.0.0.1".to_owned()),
            ("TOCSIN_SMTP_PORT", smtp.addr().port().to_string()),
        ]);
        if let Some(url) = &page_url {
            email_env.push(("TOCSIN_COMPANY_NAME".into(), "Acme Cloud".into()));
            email_env.push(("TOCSIN_PAGE_URL".into(), url.clone()));
            email_env.push(("TOCSIN_LINK_SECRET".into(), LINK_SECRET.into()));
        }
        let mut services = vec![(
            "tocsin-ingest",
            ServiceProcess::spawn("tocsin-ingest", &["serve"], &ingest_env)
                .await
                .unwrap(),
        )];
        wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(30))
            .await
            .unwrap();
        for (name, env) in [
            ("tocsin-resolver", with(&[])),
            ("tocsin-email", email_env),
            ("tocsin-webhook", with(&[])),
        ] {
            services.push((name, ServiceProcess::spawn(name, &[], &env).await.unwrap()));
        }
        if let Some(url) = &page_url {
            let addr = url.trim_start_matches("http://").to_owned();
            let env = with(&[
                ("TOCSIN_PAGE_ADDR", addr.clone()),
                ("TOCSIN_PAGE_PUBLIC_URL", url.clone()),
                ("TOCSIN_LINK_SECRET", LINK_SECRET.into()),
                ("TOCSIN_COMPANY_NAME", "Acme Cloud".into()),
                // The test reads the page right after publishing.
                ("TOCSIN_PAGE_CACHE_MS", "0".into()),
            ]);
            let page = ServiceProcess::spawn("tocsin-page", &[], &env)
                .await
                .unwrap();
            wait_for_tcp(addr.parse().unwrap(), Duration::from_secs(30))
                .await
                .unwrap();
            services.push(("tocsin-page", page));
        }
        Stack {
            endpoint: format!("http://127.0.0.1:{port}"),
            page_url,
            services,
        }
    }

    /// Runs `tocsinctl` with the stack's endpoint and token.
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with_token(TOKEN, args)
    }

    fn ctl_with_token(&self, token: &str, args: &[&str]) -> Output {
        self.ctl_at(&self.endpoint, token, args)
    }

    /// Runs `tocsinctl` against `endpoint`. Standard input is not a terminal, as in a script.
    fn ctl_at(&self, endpoint: &str, token: &str, args: &[&str]) -> Output {
        std::process::Command::new(binary_path("tocsinctl").unwrap())
            .args(args)
            .env("TOCSIN_ENDPOINT", endpoint)
            .env("TOCSIN_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("tocsinctl runs")
    }

    pub(crate) async fn stop(mut self) {
        for (name, service) in &mut self.services {
            let status = service.terminate().await.unwrap();
            assert!(status.success(), "{name} exits 0 on SIGTERM: {status:?}");
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One JSON object per line of standard output.
fn json_lines(output: Output) -> Vec<serde_json::Value> {
    ok(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `external_id`s of `subscribers list --json` output.
fn external_ids(list: &[serde_json::Value]) -> Vec<&str> {
    list.iter()
        .map(|s| s["external_id"].as_str().unwrap())
        .collect()
}

/// Asserts success and returns standard output.
pub(crate) fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "tocsinctl failed ({}): {}{}",
        output.status,
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

/// The cells of the `watch`/`show` table row of `channel`.
fn channel_row(table: &str, channel: &str) -> Vec<u64> {
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(channel))
        .unwrap_or_else(|| panic!("no {channel} row in:\n{table}"));
    row.split_whitespace()
        .skip(1)
        .map(|cell| cell.parse().unwrap())
        .collect()
}

/// `tocsinctl` arguments that open the tests' incident.
const OPEN: &[&str] = &[
    "publish",
    "open",
    "--title",
    "API errors",
    "--severity",
    "major",
    "--component",
    "api",
    "--message",
    "Some API calls fail. We are investigating.",
];

// Columns after CHANNEL: RESOLVED DELIVERED PENDING HELD SENDING RETRYING UNKNOWN FAILED DEAD
// SUPERSEDED SKIPPED.
const RESOLVED: usize = 0;
const DELIVERED: usize = 1;
const DEAD: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_imports_publishes_watches_and_replays_with_tocsinctl() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let smtp = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let receiver = WebhookReceiver::start(WebhookReceiverConfig::default())
        .await
        .unwrap();
    let stack = Stack::start(&db, &smtp).await;
    let dir = std::env::temp_dir().join(format!("tocsinctl-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();

    // Import: two rows are refused, one by tocsinctl (an unknown channel), one by the server
    // (a malformed address); the others are created and the webhook secrets saved.
    let csv = format!(
        "external_id,email,webhook_url,channels,components,min_severity\n\
         ann,ann@example.com,,email,api,\n\
         bob,bob@example.com,,email,,major\n\
         cat,cat@example.com,,email,api;dashboard,\n\
         hook-a,,{},webhook,api,\n\
         hook-b,,{},webhook,,\n\
         dan,dan@example.com,,fax,,\n\
         eve,eve@@example.com,,email,,\n\
         billing,bill@example.com,,email,billing,\n",
        receiver.url_for("hook-a"),
        receiver.url_for("hook-b"),
    );
    let file = dir.join("subscribers.csv");
    std::fs::write(&file, csv).unwrap();
    let secrets = dir.join("secrets.csv");
    let imported = ok(stack.ctl(&[
        "import",
        file.to_str().unwrap(),
        "--secrets-file",
        secrets.to_str().unwrap(),
    ]));
    assert!(
        imported.contains("imported 8 rows: 6 created, 0 updated, 2 rejected"),
        "{imported}"
    );
    let rejected_line = |line: &str, who: &str| {
        imported
            .lines()
            .any(|l| l.split_whitespace().take(2).eq([line, who]))
    };
    assert!(
        rejected_line("7", "dan") && rejected_line("8", "eve"),
        "{imported}"
    );
    assert!(
        imported.contains("contacts.email") && imported.contains("\"fax\""),
        "{imported}"
    );
    let secrets = std::fs::read_to_string(&secrets).unwrap();
    for line in secrets.lines().skip(1) {
        let (name, secret) = line.split_once(',').unwrap();
        receiver.register(name, secret).unwrap();
    }
    assert_eq!(
        secrets.lines().count(),
        3,
        "a header and two secrets: {secrets}"
    );

    // The subscribers as imported, listed a page of two at a time and filtered.
    let all = json_lines(stack.ctl(&["subscribers", "list", "--page-size", "2", "--json"]));
    assert_eq!(
        external_ids(&all),
        ["ann", "billing", "bob", "cat", "hook-a", "hook-b"]
    );
    let first = json_lines(stack.ctl(&[
        "subscribers",
        "list",
        "--page-size",
        "2",
        "--limit",
        "3",
        "--json",
    ]));
    assert_eq!(external_ids(&first), ["ann", "billing", "bob"]);
    let hooks = json_lines(stack.ctl(&["subscribers", "list", "--channel", "webhook", "--json"]));
    assert_eq!(external_ids(&hooks), ["hook-a", "hook-b"]);
    // bob and hook-b follow every component, api included.
    let api = json_lines(stack.ctl(&["subscribers", "list", "--component", "api", "--json"]));
    assert_eq!(
        external_ids(&api),
        ["ann", "bob", "cat", "hook-a", "hook-b"]
    );
    let table = ok(stack.ctl(&["subscribers", "list"]));
    assert!(table.contains("6 subscribers"), "{table}");
    let bob_row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("bob "))
        .unwrap_or_else(|| panic!("no bob in {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        bob_row[..5],
        ["bob", "email", "(all)", "major", "-"],
        "{table}"
    );
    let cat = ok(stack.ctl(&["subscribers", "get", "cat"]));
    for line in [
        "subscriber cat (",
        "  email:        cat@example.com",
        "  channels:     email",
        "  components:   api, dashboard",
        "  opted out:    (none)",
    ] {
        assert!(
            cat.lines().any(|l| l.starts_with(line)),
            "{line:?} in {cat}"
        );
    }
    let hook_a = ok(stack.ctl(&["subscribers", "get", "hook-a", "--json"]));
    let hook_a: serde_json::Value = serde_json::from_str(hook_a.trim()).unwrap();
    assert_eq!(
        hook_a["contacts"]["webhook_url"],
        receiver.url_for("hook-a")
    );
    assert_eq!(
        hook_a["preferences"]["channels"],
        serde_json::json!(["webhook"])
    );
    assert_eq!(hook_a["opted_out"], serde_json::json!([]));
    let nobody = stack.ctl(&["subscribers", "get", "nobody"]);
    assert_eq!(nobody.status.code(), Some(1), "{nobody:?}");

    // A rotated secret is printed alone; the receiver verifies hook-a's deliveries below
    // with it, so a wrong one would fail them.
    let rotated = stack.ctl(&["subscribers", "rotate-secret", "hook-a"]);
    let secret = ok(rotated).trim().to_owned();
    assert!(
        secret.starts_with("whsec_") && !secret.contains('\n'),
        "{secret}"
    );
    receiver.register("hook-a", &secret).unwrap();
    let no_hook = stack.ctl(&["subscribers", "rotate-secret", "ann"]);
    assert_eq!(no_hook.status.code(), Some(1), "{no_hook:?}");
    assert!(stderr(&no_hook).contains("no webhook URL"), "{no_hook:?}");

    // A deletion without a terminal to confirm on needs --yes, and until then nothing goes.
    let unconfirmed = stack.ctl(&["subscribers", "delete", "billing"]);
    assert_eq!(unconfirmed.status.code(), Some(2), "{unconfirmed:?}");
    assert!(
        stderr(&unconfirmed).contains("pass --yes"),
        "{unconfirmed:?}"
    );
    ok(stack.ctl(&["subscribers", "get", "billing"]));
    let deleted = ok(stack.ctl(&["subscribers", "delete", "billing", "--yes"]));
    assert!(
        deleted.starts_with("deleted subscriber billing"),
        "{deleted}"
    );
    let gone = stack.ctl(&["subscribers", "get", "billing"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let left = json_lines(stack.ctl(&["subscribers", "list", "--json"]));
    assert_eq!(
        external_ids(&left),
        ["ann", "bob", "cat", "hook-a", "hook-b"]
    );

    // The preview of the opening below, per channel and component, before anything is sent.
    let preview = ok(stack.ctl(&[
        "preview",
        "--severity",
        "major",
        "--component",
        "api",
        "--json",
    ]));
    let preview: serde_json::Value = serde_json::from_str(preview.trim()).unwrap();
    assert_eq!(preview["recipients"], 5, "{preview}");
    assert_eq!(
        preview["channels"],
        serde_json::json!({"email": 3, "webhook": 2})
    );
    assert_eq!(preview["components"][0]["component"], "api");
    assert_eq!(preview["components"][0]["recipients"], 5);
    let preview_table = ok(stack.ctl(&["preview", "--severity", "major", "--component", "api"]));
    assert!(
        preview_table.starts_with("would reach 5 recipients with 5 deliveries"),
        "{preview_table}"
    );
    assert_eq!(channel_row(&preview_table, "email"), [3], "{preview_table}");
    assert_eq!(
        channel_row(&preview_table, "webhook"),
        [2],
        "{preview_table}"
    );

    // hook-b answers 500 to everything: its delivery dies after two attempts.
    receiver.faults().push(FaultRule::for_target(
        "hook-b",
        Fault::Status {
            status: 500,
            code: None,
            retry_after_secs: None,
        },
    ));
    let opened = ok(stack.ctl(&[OPEN, &["--key", "open-1", "--json"]].concat()));
    let opened: serde_json::Value = serde_json::from_str(opened.trim()).unwrap();
    let incident = opened["incident_id"].as_str().unwrap().to_owned();
    assert_eq!(opened["incident_version"], 1);
    assert_eq!(opened["duplicate"], false);
    let again = ok(stack.ctl(&[OPEN, &["--key", "open-1"]].concat()));
    assert!(
        again.starts_with("already recorded"),
        "the retried key is recorded once: {again}"
    );

    // Settled with a dead delivery: `watch` says so with exit code 5.
    let watch = stack.ctl(&[
        "watch",
        &incident,
        "--timeout",
        "90",
        "--interval-ms",
        "200",
    ]);
    assert_eq!(watch.status.code(), Some(5), "{watch:?}");
    let watched = stdout(&watch);
    assert!(watched.contains("done:"), "{watched}");
    let why = stderr(&watch);
    assert!(
        why.contains("1 deliveries ended dead")
            && why.contains(&format!("tocsinctl replay --incident {incident}")),
        "{why}"
    );
    // ann, bob (major meets their threshold) and cat; billing followed another component.
    let email = channel_row(&watched, "email");
    assert_eq!((email[RESOLVED], email[DELIVERED]), (3, 3), "{watched}");
    let webhook = channel_row(&watched, "webhook");
    assert_eq!(
        (webhook[RESOLVED], webhook[DELIVERED], webhook[DEAD]),
        (2, 1, 1),
        "{watched}"
    );
    // The preview counted what the opening delivered.
    assert_eq!(
        (
            preview["channels"]["email"].as_u64(),
            preview["channels"]["webhook"].as_u64()
        ),
        (Some(email[RESOLVED]), Some(webhook[RESOLVED]))
    );

    let dead = ok(stack.ctl(&["deliveries", &incident, "--state", "dead", "--json"]));
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["external_id"], "hook-b");
    assert_eq!(dead[0]["channel"], "webhook");
    assert_eq!(dead[0]["attempts"], 2);
    let emails = ok(stack.ctl(&["deliveries", &incident, "--channel", "email"]));
    assert!(emails.contains("3 deliveries"), "{emails}");
    for who in ["ann", "bob", "cat"] {
        assert!(emails.contains(who), "{who} in {emails}");
    }

    // Fixed: the replay shows what it would put back, asks, and sends it once more.
    receiver.faults().clear();
    let dead_now =
        || json_lines(stack.ctl(&["deliveries", &incident, "--state", "dead", "--json"])).len();
    let dry = ok(stack.ctl(&["replay", "--incident", &incident, "--dry-run"]));
    assert!(
        dry.starts_with(&format!("incident {incident} has 1 dead letters to replay")),
        "{dry}"
    );
    assert!(
        dry.lines()
            .any(|l| l.split_whitespace().take(3).eq(["1", "webhook", "hook-b"])),
        "{dry}"
    );
    assert!(dry.contains("dry run: nothing was replayed"), "{dry}");
    let everything = ok(stack.ctl(&["replay", "--dry-run"]));
    assert!(
        everything.contains("every dead letter of every incident")
            && everything.contains("cannot count"),
        "{everything}"
    );
    let unconfirmed = stack.ctl(&["replay", "--incident", &incident]);
    assert_eq!(unconfirmed.status.code(), Some(2), "{unconfirmed:?}");
    assert!(
        stderr(&unconfirmed).contains("pass --yes"),
        "{unconfirmed:?}"
    );
    assert_eq!(
        dead_now(),
        1,
        "neither a dry run nor an unconfirmed replay changes anything"
    );
    let replayed = ok(stack.ctl(&["replay", "--incident", &incident, "--yes"]));
    assert!(
        replayed.contains(&format!(
            "1 dead letters put back in the queue (incident {incident})"
        )),
        "{replayed}"
    );
    let watched = ok(stack.ctl(&[
        "watch",
        &incident,
        "--timeout",
        "90",
        "--interval-ms",
        "200",
    ]));
    let webhook = channel_row(&watched, "webhook");
    assert_eq!((webhook[DELIVERED], webhook[DEAD]), (2, 0), "{watched}");

    let resolve_preview = ok(stack.ctl(&[
        "preview",
        "--incident",
        &incident,
        "--kind",
        "resolved",
        "--json",
    ]));
    let resolve_preview: serde_json::Value = serde_json::from_str(resolve_preview.trim()).unwrap();
    let resolved = ok(stack.ctl(&[
        "publish",
        "resolve",
        &incident,
        "--message",
        "All API calls succeed again.",
    ]));
    assert!(
        resolved.starts_with(&format!("resolved incident {incident} (version 2")),
        "{resolved}"
    );
    let watched = ok(stack.ctl(&[
        "watch",
        &incident,
        "--timeout",
        "90",
        "--interval-ms",
        "200",
    ]));
    assert!(
        watched.contains("version 2 (fanned out through 2)"),
        "{watched}"
    );
    // The resolution went to everyone told before, as its preview said.
    assert_eq!(
        (
            resolve_preview["channels"]["email"].as_u64(),
            resolve_preview["channels"]["webhook"].as_u64()
        ),
        (Some(3), Some(2)),
        "{resolve_preview}"
    );
    assert_eq!(channel_row(&watched, "email")[DELIVERED], 6, "{watched}");
    assert_eq!(channel_row(&watched, "webhook")[DELIVERED], 4, "{watched}");
    // The providers agree: every message once.
    assert_eq!((smtp.summary().unique, smtp.summary().duplicates), (6, 0));
    assert_eq!(
        (receiver.summary().unique, receiver.summary().duplicates),
        (4, 0)
    );

    let rebuilt = ok(stack.ctl(&["rebuild", "--dry-run"]));
    assert!(
        rebuilt.contains("checked 1 incidents (2 events): 0 differ"),
        "{rebuilt}"
    );
    let republished = ok(stack.ctl(&["republish", "--from-position", "1"]));
    assert!(
        republished.starts_with("republished 2 events"),
        "{republished}"
    );

    // Errors are one line on stderr and an exit code a script can act on.
    let refused = stack.ctl_with_token("not-the-token-0000", &["show", &incident]);
    assert_eq!(refused.status.code(), Some(4));
    // A publisher's token reads incidents but may not touch dead letters.
    ok(stack.ctl_with_token(PUBLISHER_TOKEN, &["show", &incident]));
    let denied = stack.ctl_with_token(PUBLISHER_TOKEN, &["replay", "--incident", &incident]);
    assert_eq!(denied.status.code(), Some(4));
    let why = String::from_utf8_lossy(&denied.stderr);
    assert!(why.contains("operator token"), "{why}");
    let unknown = stack.ctl(&["show", "01900000-0000-7000-8000-000000000000"]);
    assert_eq!(unknown.status.code(), Some(1));
    let invalid = stack.ctl(&["show", "not-an-id"]);
    assert_eq!(invalid.status.code(), Some(2));
    // An endpoint without a scheme, and https:// to this plaintext server, are explained.
    let address = stack.endpoint.trim_start_matches("http://").to_owned();
    let no_scheme = stack.ctl_at(&address, TOKEN, &["show", &incident]);
    assert_eq!(no_scheme.status.code(), Some(2), "{no_scheme:?}");
    assert_eq!(
        stderr(&no_scheme).trim_end(),
        format!(
            "tocsinctl: --endpoint {address} has no scheme; use http://{address} (plaintext) \
             or https://{address} (TLS)"
        )
    );
    let https = stack.ctl_at(&format!("https://{address}"), TOKEN, &["show", &incident]);
    assert_eq!(https.status.code(), Some(3), "{https:?}");
    assert_eq!(
        stderr(&https).trim_end(),
        format!(
            "tocsinctl: the server at https://{address} does not speak TLS; use http://{address}"
        )
    );
    for output in [&refused, &denied, &unknown, &invalid, &no_scheme, &https] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("tocsinctl: "), "{stderr}");
    }

    stack.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    db.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tocsinctl_reaches_an_ingest_serving_tls_only_when_it_trusts_the_ca() {
    use tocsin_testkit::certs;

    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", nats_url()),
        ("TOCSIN_BUS_PREFIX", unique_prefix()),
        ("TOCSIN_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("TOCSIN_GRPC_ADDR", format!("127.0.0.1:{port}")),
        ("TOCSIN_OPERATOR_TOKENS", format!("oncall={TOKEN}")),
        (
            "TOCSIN_PUBLISHER_TOKENS",
            format!("monitoring={PUBLISHER_TOKEN}"),
        ),
        (
            "TOCSIN_TLS_CERT",
            certs::server_cert().display().to_string(),
        ),
        ("TOCSIN_TLS_KEY", certs::server_key().display().to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut ingest = ServiceProcess::spawn("tocsin-ingest", &["serve"], &env)
        .await
        .unwrap();
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(30))
        .await
        .unwrap();
    let ctl = |endpoint: String, ca: Option<std::path::PathBuf>, args: &[&str]| {
        let mut command = std::process::Command::new(binary_path("tocsinctl").unwrap());
        command
            .args(args)
            .env("TOCSIN_ENDPOINT", endpoint)
            .env("TOCSIN_TOKEN", TOKEN)
            .env_remove("TOCSIN_CA_CERT");
        if let Some(ca) = ca {
            command.env("TOCSIN_CA_CERT", ca);
        }
        command.output().expect("tocsinctl runs")
    };
    let https = format!("https://localhost:{port}");
    let open = [OPEN, &["--json"]].concat();

    let published = ok(ctl(https.clone(), Some(certs::ca_cert()), &open));
    let reply: serde_json::Value = serde_json::from_str(published.trim()).unwrap();
    let incident = reply["incident_id"].as_str().unwrap().to_owned();
    let shown = ok(ctl(
        format!("https://127.0.0.1:{port}"),
        Some(certs::ca_cert()),
        &["show", &incident],
    ));
    assert!(shown.contains("API errors"), "{shown}");

    // The system's CAs alone do not vouch for the test CA's certificate.
    let untrusted = ctl(https, None, &["show", &incident]);
    assert_eq!(untrusted.status.code(), Some(3), "{untrusted:?}");
    let why = String::from_utf8_lossy(&untrusted.stderr);
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    // Nor does the server speak plain HTTP/2 once it has a certificate.
    let plain = ctl(
        format!("http://127.0.0.1:{port}"),
        None,
        &["show", &incident],
    );
    assert!(!plain.status.success(), "{plain:?}");

    let status = ingest.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    db.drop_database().await.unwrap();
}

/// Waits until the SMTP server holds a mail whose subject starts with `subject`, and returns
/// its text (quoted-printable soft breaks joined).
async fn mail_with_subject(smtp: &SmtpServer, subject: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(mail) = smtp
            .mails()
            .into_iter()
            .find(|m| m.subject.as_deref().is_some_and(|s| s.starts_with(subject)))
        {
            return mail.data.replace("=\r\n", "");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mail {subject:?} within 45 s; got {:?}",
            smtp.mails()
                .iter()
                .map(|m| m.subject.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_operator_publishes_with_tocsinctl_reads_true_and_schedules_keep_their_time() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let smtp = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let stack = Stack::start(&db, &smtp).await;
    let dir = std::env::temp_dir().join(format!("tocsinctl-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("subscribers.csv");
    std::fs::write(
        &file,
        "external_id,email,channels\nann,ann@example.com,email\n",
    )
    .unwrap();
    ok(stack.ctl(&["import", file.to_str().unwrap()]));

    // The opening says when it began (14 minutes ago) and when the next word comes.
    let opened = ok(stack.ctl(
        &[
            OPEN,
            &["--started-at", "-14m", "--next-update", "+30m", "--json"],
        ]
        .concat(),
    ));
    let opened: serde_json::Value = serde_json::from_str(opened.trim()).unwrap();
    let incident = opened["incident_id"].as_str().unwrap().to_owned();
    let opening = mail_with_subject(&smtp, "[Tocsin] Partial outage: API errors").await;
    assert!(opening.contains("Started: "), "{opening}");
    assert!(opening.contains("Next update: by "), "{opening}");

    // Resolved with a promised review; the review is scheduled two seconds on.
    ok(stack.ctl(&[
        "publish",
        "resolve",
        &incident,
        "--review-to-follow",
        "--message",
        "All API calls succeed again.",
    ]));
    let resolved = mail_with_subject(&smtp, "[Tocsin] Resolved: API errors").await;
    assert!(resolved.contains("It lasted 14 minutes."), "{resolved}");
    assert!(
        resolved.contains("We will email you a review"),
        "{resolved}"
    );
    let deliver_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    ok(stack.ctl(&[
        "publish",
        "review",
        &incident,
        "--link",
        "https://status.example.com/reviews/1",
        "--deliver-at",
        &rfc3339(deliver_at),
        "--message",
        "A bad configuration reached production; checks now run first.",
    ]));
    let review = mail_with_subject(&smtp, "[Tocsin] Incident review: API errors").await;
    assert!(
        time::OffsetDateTime::now_utc() >= deliver_at,
        "the review waited for its time"
    );
    assert!(
        review.contains("The full review: https://status.example.com/reviews/1"),
        "{review}"
    );

    // A maintenance announced a minute and two seconds ahead with a one-minute reminder: the
    // clock sends the reminder by itself; the operator then starts and completes the work.
    let starts_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(62);
    let scheduled = ok(stack.ctl(&[
        "publish",
        "schedule-maintenance",
        "--title",
        "Database upgrade",
        "--component",
        "db",
        "--starts-at",
        &rfc3339(starts_at),
        "--ends-at",
        &rfc3339(starts_at + time::Duration::minutes(30)),
        "--reminder",
        "1",
        "--action",
        "Pause your nightly imports.",
        "--message",
        "Writes pause for a minute.",
        "--json",
    ]));
    let scheduled: serde_json::Value = serde_json::from_str(scheduled.trim()).unwrap();
    let maintenance = scheduled["incident_id"].as_str().unwrap().to_owned();
    let reminder = mail_with_subject(
        &smtp,
        "[Tocsin] Reminder: planned maintenance in 1 minute: Database upgrade",
    )
    .await;
    assert!(
        reminder.contains("What you need to do:\r\nPause your nightly imports."),
        "{reminder}"
    );
    for (command, subject) in [
        (
            "start-maintenance",
            "[Tocsin] Maintenance under way: Database upgrade",
        ),
        (
            "complete-maintenance",
            "[Tocsin] Maintenance complete: Database upgrade",
        ),
    ] {
        ok(stack.ctl(&["publish", command, &maintenance, "--message", "On it."]));
        mail_with_subject(&smtp, subject).await;
    }
    let shown = ok(stack.ctl(&["show", &maintenance]));
    assert!(
        shown.contains("version 4"),
        "scheduled, reminder, started, completed: {shown}"
    );
    // Every message once.
    assert_eq!((smtp.summary().unique, smtp.summary().duplicates), (7, 0));
    stack.stop().await;
    db.drop_database().await.unwrap();
}
