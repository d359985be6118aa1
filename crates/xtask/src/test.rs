//! `cargo xtask test`: services checked, binaries built (system tests spawn them), then the
//! whole suite with cargo-nextest when installed, `cargo test` otherwise, and once it passes
//! the short torture (`cargo xtask torture --short --scenario all`) on the same debug binaries.

use std::fmt;
use std::process::{ExitStatus, Stdio};

use anyhow::Context;

use crate::cleanup;
use crate::services::{build_binaries, cargo, ensure_services};

/// The test runner failed; xtask exits with the runner's own code.
#[derive(Debug)]
pub(crate) struct TestsFailed {
    pub(crate) status: ExitStatus,
}

impl fmt::Display for TestsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tests failed ({})", self.status)
    }
}

impl std::error::Error for TestsFailed {}

/// Runs the suite with `extra` passed to the runner, against the checked services.
pub(crate) async fn run(extra: &[String]) -> anyhow::Result<()> {
    let services = ensure_services().await?;
    crate::tools::ensure_grpcurl().await?;
    crate::tools::ensure_promtool().await?;
    crate::tools::ensure_chromium().await?;
    crate::tools::ensure_alertmanager().await?;
    // `cargo test` builds test binaries only; the system tests need the services' binaries.
    build_binaries(false).await?;
    let nextest = nextest_installed().await;
    let mut command = cargo();
    if nextest {
        command.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        command.args(["test", "--workspace", "--no-fail-fast"]);
    }
    // The children get the URLs that were just checked; xtask's own environment is untouched.
    let tag = cleanup::run_tag();
    command
        .args(extra)
        .env("DATABASE_URL", &services.database_url)
        .env("NATS_URL", &services.nats_url)
        .env(cleanup::RUN_TAG_VAR, &tag);
    let runner = if nextest {
        "cargo nextest"
    } else {
        "cargo test"
    };
    println!("running the test suite with {runner}");
    let status = command
        .status()
        .await
        .with_context(|| format!("running {runner}"))?;
    let removed = cleanup::test_streams(&services.nats_url, &tag).await;
    println!("removed {removed} test streams from {}", services.nats_url);
    if !status.success() {
        return Err(TestsFailed { status }.into());
    }
    println!("\nthe test suite passed; running the short torture");
    crate::torture::run(
        crate::torture::TortureArgs {
            scenario: "all".into(),
            subscribers: None,
            kills: None,
            seed: None,
            short: true,
            release: false,
        },
        false,
    )
    .await
}

async fn nextest_installed() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .output()
        .await
        .is_ok_and(|output| output.status.success())
}
