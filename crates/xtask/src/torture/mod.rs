//! `cargo xtask torture`: the whole pipeline as separate processes against a private
//! PostgreSQL and nats-server, while the harness kills services, restarts the database,
//! wipes the bus, makes the providers misbehave and floods one recipient; then it counts,
//! from what the provider servers received, whether every message arrived exactly once.
//!
//! Layout:
//! - [`world`]: subscribers and incidents from the seed, and the expected deliveries.
//! - [`scenarios`]: the six scenarios' plans (incidents, kills, faults).
//! - [`rig`]: the private servers, and one scenario's processes started and waited for.
//! - [`supervisor`]: named processes, SIGKILL and restart, logs under `target/torture/`.
//! - [`client`]: the gRPC calls, publishes retried under one idempotency key.
//! - [`drive`]: a plan carried out.
//! - [`check`] and [`ledger`]: counting at the providers, settling, the verdict.
//! - [`report`]: the table, the JSON lines and the diagnosis files.

mod check;
mod client;
mod drive;
mod ledger;
mod report;
mod rig;
mod scenarios;
mod supervisor;
mod world;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;

use report::ScenarioReport;
use rig::{Rig, Servers};
use scenarios::Scenario;

/// The short form runs in CI; the long form is the real torture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    Short,
    Long,
}

#[derive(Debug, Clone)]
pub(crate) struct TortureArgs {
    pub(crate) scenario: String,
    pub(crate) subscribers: Option<usize>,
    pub(crate) kills: Option<usize>,
    pub(crate) seed: Option<u64>,
    pub(crate) short: bool,
    pub(crate) release: bool,
}

/// How long every service gets to stop on SIGTERM at the end of a scenario (their own grace
/// period is 20 s).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs the chosen scenarios; `build` builds the binaries first (`cargo xtask test` already
/// has). Fails if any scenario fails.
pub(crate) async fn run(args: TortureArgs, build: bool) -> anyhow::Result<()> {
    let scenarios = Scenario::parse(&args.scenario)?;
    let form = if args.short { Form::Short } else { Form::Long };
    let subscribers = args.subscribers.unwrap_or(match form {
        Form::Short => 500,
        Form::Long => 2000,
    });
    let kills = args.kills.unwrap_or(match form {
        Form::Short => 6,
        Form::Long => 40,
    });
    let seed = args.seed.unwrap_or_else(rand::random);
    let profile = if args.release { "release" } else { "debug" };
    if build {
        crate::services::build_binaries(args.release).await?;
    }
    let run_name = format!(
        "{}-{seed}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let run_dir = crate::services::target_dir()
        .join("torture")
        .join(&run_name);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    println!(
        "torture: {} form, seed {seed}, {subscribers} subscribers, {kills} kills, {profile} binaries",
        if form == Form::Short { "short" } else { "long" },
    );
    println!("logs: {}", run_dir.display());
    println!(
        "replay: cargo xtask torture --scenario {} --seed {seed}{}{}{}{}",
        args.scenario,
        if args.short { " --short" } else { "" },
        if args.release { " --release" } else { "" },
        args.subscribers
            .map(|n| format!(" --subscribers {n}"))
            .unwrap_or_default(),
        args.kills
            .map(|n| format!(" --kills {n}"))
            .unwrap_or_default(),
    );

    let mut servers = Servers::start().await?;
    let mut reports = Vec::new();
    let options = Options {
        form,
        subscribers,
        kills,
        seed,
        profile,
        run_name: &run_name,
    };
    // A Ctrl-C ends the run through the normal path, so that the private servers (PostgreSQL
    // runs as a daemon) are stopped and their directories removed.
    let interrupted = tokio::select! {
        () = run_all(&mut servers, &scenarios, &options, &run_dir, &mut reports) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    servers.keep_logs(&run_dir);
    drop(servers);
    if interrupted {
        bail!("interrupted; logs so far in {}", run_dir.display());
    }

    println!();
    report::print_table(&reports);
    for r in &reports {
        println!("{}", serde_json::to_string(r)?);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.torture.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "torture failed: {} (seed {seed}; logs and diagnosis in {})",
            failed.join(", "),
            run_dir.display()
        );
    }
    Ok(())
}

/// Runs `scenarios` one after the other, each on a fresh database and bus prefix; a scenario
/// that cannot run is reported as an error and the next one still runs.
async fn run_all(
    servers: &mut Servers,
    scenarios: &[Scenario],
    options: &Options<'_>,
    run_dir: &Path,
    reports: &mut Vec<ScenarioReport>,
) {
    let mut printed_settings = false;
    for &scenario in scenarios {
        let dir = run_dir.join(scenario.name());
        println!("\n== {} ==", scenario.name());
        let started = Instant::now();
        let mut attempt =
            run_scenario(servers, scenario, options, &dir, &mut printed_settings).await;
        if let Err(e) = &attempt
            && format!("{e:#}").contains("exited at start")
        {
            // Free ports are picked by binding and letting go, so another process can take
            // one in between ("Address already in use"): the rig, not the code under test.
            // Once more, on fresh ports; a service that cannot start fails again.
            println!("  a process could not start ({e:#}); once more, on fresh ports");
            attempt = run_scenario(servers, scenario, options, &dir, &mut printed_settings).await;
        }
        let report = match attempt {
            Ok(report) => report,
            Err(e) => {
                println!("  ✗ {} could not run: {e:#}", scenario.name());
                ScenarioReport::errored(scenario.name(), options.seed, format!("{e:#}"))
            }
        };
        println!(
            "  {} in {:.0} s; logs in {}",
            if report.pass { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        reports.push(report);
    }
}

struct Options<'a> {
    form: Form,
    subscribers: usize,
    kills: usize,
    seed: u64,
    profile: &'static str,
    run_name: &'a str,
}

async fn run_scenario(
    servers: &mut Servers,
    scenario: Scenario,
    options: &Options<'_>,
    dir: &Path,
    printed_settings: &mut bool,
) -> anyhow::Result<ScenarioReport> {
    let mut rng = StdRng::seed_from_u64(scenario.seed(options.seed));
    let mut people = world::subscribers(&mut rng, options.subscribers, scenario.population());
    let rig = Rig::start(
        servers,
        scenario.name(),
        options.profile,
        scenario.replicas(options.form),
        dir,
        scenario.restarts_exited(),
    )
    .await?;
    if !*printed_settings {
        println!("  settings (everything else is the services' defaults):");
        for line in rig::settings_lines(&rig.specs) {
            println!("    {line}");
        }
        println!(
            "    private PostgreSQL: fsync=off (testkit), {}",
            rig::POSTGRES_SETTINGS
                .map(|(k, v)| format!("{k}={v}"))
                .join(" ")
        );
        *printed_settings = true;
    }
    let outcome = exercise(servers, scenario, options, &rig, &mut people, &mut rng, dir).await;
    let stop_notes = rig.supervisor.lock().await.stop_all(STOP_GRACE).await;
    rig.db.close().await;
    let mut report = outcome?;
    for note in stop_notes {
        println!("  note: {note}");
        report.notes.push(note);
    }
    Ok(report)
}

/// Imports the subscribers, carries out the plan, waits for the pipeline to settle and judges.
async fn exercise(
    servers: &mut Servers,
    scenario: Scenario,
    options: &Options<'_>,
    rig: &Rig,
    people: &mut [world::Subscriber],
    rng: &mut StdRng,
    dir: &Path,
) -> anyhow::Result<ScenarioReport> {
    let http = reqwest::Client::new();
    let rows = people.iter().map(|s| s.row(rig.ports.webhook)).collect();
    let summary = rig.api.import(rows).await?;
    crate::stack::register_webhook_endpoints(&http, rig.ports.webhook, summary.webhook_secrets)
        .await?;
    let ids = rig.api.subscriber_ids().await?;
    for person in people.iter_mut() {
        person.subscriber_id = ids
            .get(&person.external_id())
            .cloned()
            .with_context(|| format!("{} is not listed after the import", person.external_id()))?;
    }
    println!("  {} subscribers imported", people.len());

    let plan = scenarios::plan(
        scenario,
        options.form,
        options.kills,
        rng,
        people,
        rig.killable.len(),
    );
    install_provider_faults(&http, rig, &plan).await?;
    let run_id = format!("{}-{}", options.run_name, scenario.name());
    let driven = drive::drive(rig, servers, &plan, &run_id).await?;
    for line in &driven.log {
        println!("  {line}");
    }
    let expected = world::expected(people, &plan.incidents, &driven.published);
    let keys: Vec<String> = expected.keys().cloned().collect();
    println!("  {} deliveries expected; settling", keys.len());
    let supervisor = rig.supervisor.clone();
    let settled = check::settle(
        &rig.db,
        &http,
        rig.ports,
        &keys,
        driven.quiet_since,
        async || {
            supervisor.lock().await.watch();
        },
    )
    .await;
    let received = crate::received::received(&http, rig.ports).await?;
    let verdict = check::judge(&rig.db, &expected, people, &received).await?;
    let fired = faults_fired(&http, rig, &plan).await;
    let exits = rig.supervisor.lock().await.exits().to_vec();
    let report = ScenarioReport::new(
        scenario.name(),
        options.seed,
        &report::Measured {
            verdict: &verdict,
            settled,
            driven: &driven,
            provider_rules: plan.provider_faults.len(),
            faults_fired: fired,
            exits: &exits,
            publish_retries: rig.api.retries(),
        },
    );
    let bus = rig.bus_state().await;
    let callbacks = check::sms_callbacks(&http, rig.ports)
        .await
        .unwrap_or_default();
    let evidence = report::Evidence {
        expected: &expected,
        plan: &plan,
        driven: &driven,
        people,
        exits: &exits,
        bus: &bus,
        callbacks: &callbacks,
    };
    report::diagnose(&rig.db, dir, &report, &verdict, &evidence).await;
    Ok(report)
}

/// Posts the plan's provider faults, grouped per provider.
async fn install_provider_faults(
    http: &reqwest::Client,
    rig: &Rig,
    plan: &scenarios::Plan,
) -> anyhow::Result<()> {
    for channel in tocsin_core::Channel::ALL {
        let rules: Vec<&serde_json::Value> = plan
            .provider_faults
            .iter()
            .filter(|f| f.channel == channel)
            .map(|f| &f.rule)
            .collect();
        if rules.is_empty() {
            continue;
        }
        let url = format!(
            "http://127.0.0.1:{}/_control/faults",
            rig.ports.control(channel)
        );
        http.post(&url)
            .json(&rules)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("installing faults at {url}"))?;
        println!("  {} {channel} fault rules installed", rules.len());
    }
    Ok(())
}

/// How many of the installed provider fault uses were consumed: planned uses minus what the
/// providers still hold.
async fn faults_fired(http: &reqwest::Client, rig: &Rig, plan: &scenarios::Plan) -> Option<u64> {
    if plan.provider_faults.is_empty() {
        return None;
    }
    let planned: u64 = plan
        .provider_faults
        .iter()
        .filter_map(|f| f.rule.get("times").and_then(serde_json::Value::as_u64))
        .sum();
    let mut left = 0;
    for channel in tocsin_core::Channel::ALL {
        let url = format!(
            "http://127.0.0.1:{}/_control/faults",
            rig.ports.control(channel)
        );
        let rules: Vec<serde_json::Value> = http.get(&url).send().await.ok()?.json().await.ok()?;
        left += rules
            .iter()
            .filter_map(|r| r.get("times").and_then(serde_json::Value::as_u64))
            .sum::<u64>();
    }
    Some(planned - left)
}
