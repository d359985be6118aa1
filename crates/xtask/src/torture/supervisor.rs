//! The processes of one scenario, by name: started from a fixed spec, SIGKILLed and started
//! again with the same spec, watched for exits nobody asked for, and stopped with SIGTERM at
//! the end. Each process writes stdout and stderr to `<dir>/<name>.log`, appended across
//! restarts with a marker line per start, so a failure can be read back in order.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::services::target_bin;

/// How one process is started, every time.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// Unique within the scenario: `tocsin-email-2`.
    pub(super) name: String,
    pub(super) binary: &'static str,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(&'static str, String)>,
}

#[derive(Debug)]
struct Managed {
    spec: Spec,
    child: Option<Child>,
    starts: u32,
}

/// A process that ended without being told to.
#[derive(Debug, Clone)]
pub(super) struct Exit {
    pub(super) name: String,
    pub(super) status: String,
    pub(super) at_s: f64,
}

#[derive(Debug)]
pub(super) struct Supervisor {
    profile: &'static str,
    dir: PathBuf,
    started: Instant,
    processes: Vec<Managed>,
    exits: Vec<Exit>,
    /// Whether a process that exits on its own is started again (as an orchestrator would).
    restart_on_exit: bool,
}

/// A process that keeps exiting is left down after this many unexpected exits.
const MAX_RESTARTS_ON_EXIT: usize = 5;

impl Supervisor {
    pub(super) fn new(profile: &'static str, dir: &Path, restart_on_exit: bool) -> Self {
        Self {
            profile,
            dir: dir.to_owned(),
            started: Instant::now(),
            processes: Vec::new(),
            exits: Vec::new(),
            restart_on_exit,
        }
    }

    pub(super) fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Adds a process and starts it.
    pub(super) fn spawn(&mut self, spec: Spec) -> anyhow::Result<()> {
        if self.processes.iter().any(|p| p.spec.name == spec.name) {
            bail!("two processes named {}", spec.name);
        }
        self.processes.push(Managed {
            spec,
            child: None,
            starts: 0,
        });
        let index = self.processes.len() - 1;
        self.start(index)
    }

    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let log = self.log_path(&self.processes[index].spec.name);
        let managed = &mut self.processes[index];
        managed.starts += 1;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(
            file,
            "=== torture: start #{} of {} at t={elapsed:.2}s ({}) ===",
            managed.starts,
            managed.spec.name,
            utc_now()
        )?;
        let mut command = Command::new(target_bin(self.profile, managed.spec.binary));
        command
            .args(&managed.spec.args)
            .envs(managed.spec.env.iter().map(|(k, v)| (*k, v.as_str())))
            // tracing-subscriber writes colour codes unless told not to; these go to files.
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", managed.spec.name))?;
        managed.child = Some(child);
        Ok(())
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.processes
            .iter()
            .position(|p| p.spec.name == name)
            .with_context(|| format!("no process named {name}"))
    }

    /// Whether `name` is running (as far as the supervisor knows).
    pub(super) fn is_running(&self, name: &str) -> bool {
        self.index(name)
            .is_ok_and(|i| self.processes[i].child.is_some())
    }

    /// SIGKILL, and waits for the process to be gone. The process stays down until
    /// [`Supervisor::restart`].
    pub(super) async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self.index(name)?;
        let elapsed = self.started.elapsed().as_secs_f64();
        let Some(mut child) = self.processes[index].child.take() else {
            bail!("{name} is not running");
        };
        child
            .kill()
            .await
            .with_context(|| format!("killing {name}"))?;
        self.note(name, &format!("SIGKILL at t={elapsed:.2}s ({})", utc_now()));
        Ok(())
    }

    /// Starts a stopped process again with its spec.
    pub(super) fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self.index(name)?;
        if self.processes[index].child.is_some() {
            bail!("{name} is already running");
        }
        self.start(index)
    }

    /// Looks for processes that exited on their own; records each, and starts it again when
    /// the policy says so (a crash loop is left down after a few tries).
    pub(super) fn watch(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut to_restart = Vec::new();
        for (index, managed) in self.processes.iter_mut().enumerate() {
            let Some(child) = managed.child.as_mut() else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => continue,
                Err(e) => format!("unknown ({e})"),
            };
            managed.child = None;
            self.exits.push(Exit {
                name: managed.spec.name.clone(),
                status,
                at_s: elapsed,
            });
            let previous = self
                .exits
                .iter()
                .filter(|e| e.name == managed.spec.name)
                .count();
            if self.restart_on_exit && previous <= MAX_RESTARTS_ON_EXIT {
                to_restart.push(index);
            }
        }
        for index in to_restart {
            if let Err(e) = self.start(index) {
                let name = self.processes[index].spec.name.clone();
                self.note(&name, &format!("restart after an exit failed: {e:#}"));
            }
        }
    }

    /// Exits nobody asked for, so far.
    pub(super) fn exits(&self) -> &[Exit] {
        &self.exits
    }

    /// Appends a line of the harness's own to `name`'s log.
    fn note(&self, name: &str, text: &str) {
        if let Ok(mut file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
        {
            let _ = writeln!(file, "=== torture: {text} ===");
        }
    }

    /// SIGTERM to every running process at once, then waits up to `grace` for each; any left
    /// is SIGKILLed. Returns one line per process that did not stop cleanly with status 0.
    pub(super) async fn stop_all(&mut self, grace: Duration) -> Vec<String> {
        let mut running = Vec::new();
        for managed in &mut self.processes {
            if let Some(child) = managed.child.take() {
                if let Some(pid) = child.id() {
                    // kill(1) rather than a libc binding, which would need unsafe code.
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
                running.push((managed.spec.name.clone(), child));
            }
        }
        let waits = running.into_iter().map(|(name, mut child)| async move {
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(Ok(status)) if status.success() => None,
                Ok(Ok(status)) => Some(format!("{name} exited with {status} after SIGTERM")),
                Ok(Err(e)) => Some(format!("{name}: waiting for it failed: {e}")),
                Err(_) => {
                    let _ = child.kill().await;
                    Some(format!(
                        "{name} did not stop within {} s of SIGTERM and was killed",
                        grace.as_secs()
                    ))
                }
            }
        });
        futures::future::join_all(waits)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The wall-clock time, as the services' own log lines and the ledger's timestamps give it,
/// so that the harness's markers can be read against both.
fn utc_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
