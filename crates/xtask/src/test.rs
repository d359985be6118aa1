//! `cargo xtask test`: services checked, binaries built (system tests spawn them), then the
//! whole suite with cargo-nextest when installed, `cargo test` otherwise.

use anyhow::bail;

use crate::services::{build_binaries, cargo, ensure_services};

pub(crate) async fn run(extra: &[String]) -> anyhow::Result<()> {
    let services = ensure_services().await?;
    build_binaries(false).await?;
    let nextest = cargo().args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success());
    let mut command = cargo();
    if nextest {
        command.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        command.args(["test", "--workspace", "--no-fail-fast"]);
    }
    command.args(extra).env("DATABASE_URL", &services.database_url).env("NATS_URL", &services.nats_url);
    println!("running the test suite with {}", if nextest { "cargo nextest" } else { "cargo test" });
    let status = command.status()?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}
