//! The Prometheus files in `deploy/` with Prometheus's own tool: the configuration and its
//! alert rules load, and each alert fires on the series it is for and only then
//! (`deploy/alerts.test.yml`). `cargo xtask test` installs promtool from Debian's
//! `prometheus` package.

use std::path::Path;
use std::process::{Command, Output};

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ lives in the workspace")
                .join("deploy"),
        )
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed for this test and could not run ({e}); install it with \
                 `apt-get install -y --no-install-recommends prometheus` (cargo xtask test does it)"
            )
        })
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_prometheus_configuration_and_its_alert_rules_load() {
    assert_ok(
        &promtool(&["check", "config", "prometheus.yml"]),
        "promtool check config",
    );
    let rules = promtool(&["check", "rules", "alerts.yml"]);
    assert_ok(&rules, "promtool check rules");
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("SUCCESS: 5 rules found"),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );
}

#[test]
fn each_alert_fires_on_its_series_and_only_then() {
    assert_ok(
        &promtool(&["test", "rules", "alerts.test.yml"]),
        "promtool test rules",
    );
}
