//! The customer's side in a real browser (Debian's headless Chromium through chromedriver):
//! a visitor subscribes on the status page, confirms by the link in the email the worker
//! sent, is told about an incident, opens the preference centre from that email's footer,
//! stops email there, and hears nothing of the next incident. The binaries run as separate
//! processes (ingest, resolver, email worker, pages) against the local SMTP server.
//!
//! The screenshot of the status page with the incident under way is written to
//! `target/screenshots/status-page.png` (`docs/status-page.png` is a copy of one).

use std::time::{Duration, Instant};

use tocsin_local_providers::{ReceivedMail, SmtpConfig, SmtpServer};
use tocsin_testkit::browser::Browser;
use tocsin_testkit::database::TestDatabase;

use crate::ctl::{Stack, ok};

const DANA: &str = "dana@example.test";

/// The mail's text as a reader sees it: quoted-printable soft line breaks joined.
fn text(mail: &ReceivedMail) -> String {
    mail.data.replace("=\r\n", "")
}

/// Waits up to 20 s for the `n`th mail to `to` whose text contains `needle`.
async fn mail_to(smtp: &SmtpServer, to: &str, needle: &str) -> ReceivedMail {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(mail) = smtp
            .mails()
            .into_iter()
            .find(|m| m.recipients.iter().any(|r| r == to) && text(m).contains(needle))
        {
            return mail;
        }
        assert!(
            Instant::now() < deadline,
            "no mail to {to} with {needle:?} within 20 s; got {} mail(s)",
            smtp.mails().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first URL in `mail` that starts with `prefix`.
fn link(mail: &ReceivedMail, prefix: &str) -> String {
    let body = text(mail);
    let start = body
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{body}"));
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_./:".contains(*c))
        .collect()
}

/// The page's heading once the form just submitted has been answered: a click returns before
/// the browser has loaded the answer, so the old page's heading may still be there. Waits up
/// to 10 s for `expected`, and returns the heading last seen.
async fn heading_after_submit(browser: &Browser, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The old page may be torn down between finding its heading and reading it.
        let seen = match browser.find("h1").await {
            Ok(h1) => h1.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if seen == expected || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn publish(stack: &Stack, key: &str, title: &str) -> String {
    let out = ok(stack.ctl(&[
        "publish",
        "open",
        "--title",
        title,
        "--severity",
        "major",
        "--impact",
        "api=partial-outage",
        "--impact",
        "dashboard=degraded-performance",
        "--message",
        "Some API calls fail and the dashboard is slow to load. We are investigating.",
        "--key",
        key,
        "--json",
    ]));
    let opened: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    opened["incident_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_subscribes_confirms_hears_changes_preferences_and_stops() {
    let db = TestDatabase::create_migrated(&tocsin_store::MIGRATOR)
        .await
        .unwrap();
    let smtp = SmtpServer::start(SmtpConfig::default()).await.unwrap();
    let stack = Stack::start_with_page(&db, &smtp).await;
    let page = stack.page_url.clone().unwrap();
    for (id, name, group) in [
        ("api", "Public API", "Platform"),
        ("dashboard", "Dashboard", "Platform"),
        ("email-relay", "Email delivery", "Messaging"),
    ] {
        ok(stack.ctl(&["components", "put", id, "--name", name, "--group", group]));
    }
    let browser = Browser::start().await.expect("headless Chromium starts");

    // Subscribe: email is the default channel; every part of the service, every severity.
    browser.goto(&format!("{page}/")).await.unwrap();
    browser
        .find("a[href='/subscribe']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find("#email")
        .await
        .unwrap()
        .send_keys(DANA)
        .await
        .unwrap();
    assert!(
        browser
            .find("#channel-email")
            .await
            .unwrap()
            .is_selected()
            .await
            .unwrap()
    );
    browser
        .find("button[type=submit]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        heading_after_submit(&browser, "Check your inbox").await,
        "Check your inbox"
    );

    // The email worker sends the confirmation; nothing is subscribed until its link is used.
    let confirmation = mail_to(&smtp, DANA, "/subscribe/confirm/").await;
    let confirm = link(&confirmation, &format!("{page}/subscribe/confirm/"));
    browser.goto(&confirm).await.unwrap();
    browser
        .find("button[type=submit]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        heading_after_submit(&browser, "You are subscribed").await,
        "You are subscribed"
    );

    // An incident reaches the new subscriber.
    let first = publish(&stack, "browser-1", "API errors");
    let told = mail_to(&smtp, DANA, "API errors").await;
    let watched = ok(stack.ctl(&["watch", &first, "--timeout", "60", "--interval-ms", "200"]));
    assert!(watched.contains("done:"), "{watched}");

    // The status page shows it; its screenshot goes to the docs.
    browser.goto(&format!("{page}/")).await.unwrap();
    let active = browser.find("#active").await.unwrap().text().await.unwrap();
    assert_eq!(active, "Current incidents");
    assert!(browser.page_source().await.unwrap().contains("API errors"));
    let png = browser.screenshot_png().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("status-page.png"), &png).unwrap();

    // The footer's link opens the preference centre; clearing email stops it.
    let preferences = link(&told, &format!("{page}/preferences/"));
    browser.goto(&preferences).await.unwrap();
    let email_box = browser.find("#channel-email").await.unwrap();
    assert!(email_box.is_selected().await.unwrap());
    email_box.click().await.unwrap();
    browser
        .find("button[type=submit]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let saved = browser
        .find("p[role=status]")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(saved.starts_with("Saved"), "{saved}");
    browser.quit().await.unwrap();

    // The next incident is fanned out and settled, and sends Dana nothing.
    let before = smtp.mails().len();
    let second = publish(&stack, "browser-2", "Dashboard slow");
    let watched = ok(stack.ctl(&["watch", &second, "--timeout", "60", "--interval-ms", "200"]));
    assert!(watched.contains("done:"), "{watched}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<ReceivedMail> = smtp.mails().into_iter().skip(before).collect();
    assert!(
        after
            .iter()
            .all(|m| !m.recipients.iter().any(|r| r == DANA)),
        "nothing more to Dana: {:?}",
        after.iter().map(|m| &m.recipients).collect::<Vec<_>>()
    );
    stack.stop().await;
}
