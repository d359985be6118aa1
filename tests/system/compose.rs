//! `docker-compose.yml` and `deploy/` checked against the workspace, without Docker: every
//! variable compose sets is one the binary reads (from the built binary's `--help`), every
//! service binary has a service, runs from the one image `deploy/Dockerfile` builds and is a
//! binary that image carries, scalable services can scale, dependencies are well-founded,
//! Prometheus scrapes every service that serves metrics, and compose waits out every
//! service's shutdown grace period before killing it.
//!
//! The binaries must be built first (`cargo xtask test` does it).

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_norway::Value;
use tocsin_testkit::process::binary_path;

use self::model::{
    Healthcheck, Service, Words, compose_seconds, load_compose, normalise, read, repo_root,
};

mod model;

/// The workspace binaries that run as compose services.
const SERVICE_BINARIES: &[&str] = &[
    "tocsin-ingest",
    "tocsin-resolver",
    "tocsin-email",
    "tocsin-sms",
    "tocsin-webhook",
    "tocsin-page",
    "tocsin-local-providers",
];

/// Workspace binaries that are tools, not services: the developers' xtask and the operators'
/// CLI (which the image also carries, for `docker compose exec`).
const TOOL_BINARIES: &[&str] = &["xtask", "tocsinctl"];

/// Services that scale with `docker compose up --scale`: no container name, no host port.
const SCALABLE_BINARIES: &[&str] = &[
    "tocsin-resolver",
    "tocsin-email",
    "tocsin-sms",
    "tocsin-webhook",
];

/// Variables the binaries read outside clap: `RUST_LOG`, by tracing-subscriber's `EnvFilter`
/// in `tocsin_runtime::init_tracing`.
const READ_OUTSIDE_CLAP: &[&str] = &["RUST_LOG"];

const DOCKERFILE: &str = "deploy/Dockerfile";

/// Panics with every problem found, one a line, when there are any.
fn assert_none(problems: Vec<String>, what: &str) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Every variable named by clap's `[env: NAME=...]` (or `[env: NAME]`) in a help text.
fn env_names_in_help(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// What `binary [subcommands...] --help` prints, in a clean environment so that clap shows no
/// inherited values.
fn help(binary: &str, subcommands: &[String]) -> anyhow::Result<String> {
    let path = binary_path(binary)?;
    let output = Command::new(&path)
        .args(subcommands)
        .arg("--help")
        .env_clear()
        .output()
        .with_context(|| format!("running {} --help", path.display()))?;
    ensure!(
        output.status.success(),
        "{binary} {} --help failed: {}",
        subcommands.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// The variables a service's command reads: the binary's top-level options plus those of
/// each subcommand on the command line (`tocsin-ingest serve` reads the connection settings
/// declared before the subcommand and `serve`'s own).
fn variables_read(command: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let Some((binary, rest)) = command.split_first() else {
        bail!("empty command")
    };
    let subcommands: Vec<String> = rest
        .iter()
        .take_while(|w| !w.starts_with('-'))
        .cloned()
        .collect();
    let mut names: BTreeSet<String> = READ_OUTSIDE_CLAP.iter().map(|&s| s.to_owned()).collect();
    for depth in 0..=subcommands.len() {
        names.extend(env_names_in_help(&help(binary, &subcommands[..depth])?));
    }
    Ok(names)
}

#[test]
fn help_parsing_finds_plain_and_hidden_env_names() {
    let help = "  --a <A>  Alpha [env: TOCSIN_A=] [default: 1]\n  --b <B>  Beta [env: TOCSIN_B]\n  --c  [env: C=x]";
    let names: Vec<String> = env_names_in_help(help).into_iter().collect();
    assert_eq!(names, ["C", "TOCSIN_A", "TOCSIN_B"]);
}

#[test]
fn every_variable_compose_sets_is_read_by_the_service_binary() {
    let compose = load_compose();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, service) in &compose.services {
        if service.binary().is_none() {
            continue;
        }
        let command = service.command_words();
        let read = variables_read(&command).unwrap_or_else(|e| panic!("service {name}: {e:#}"));
        for variable in service.environment.names() {
            if !read.contains(&variable) {
                problems.push(format!(
                    "{name}: `{}` does not read {variable}",
                    command.join(" ")
                ));
            }
        }
        checked += 1;
    }
    assert!(
        checked >= SERVICE_BINARIES.len(),
        "only {checked} Tocsin services found"
    );
    assert_none(
        problems,
        "variables set in docker-compose.yml that no binary reads",
    );
}

#[test]
fn every_service_binary_has_a_compose_service_and_every_binary_is_classified() {
    let compose = load_compose();
    let run: BTreeSet<String> = compose
        .services
        .values()
        .filter_map(Service::binary)
        .collect();
    let missing: Vec<String> = SERVICE_BINARIES
        .iter()
        .filter(|b| !run.contains(**b))
        .map(|b| format!("{b} has no service whose command runs it"))
        .collect();
    assert_none(missing, "service binaries missing from docker-compose.yml");

    // A new binary must be added to the compose file or named a tool, not forgotten.
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut binaries = BTreeSet::new();
    for package in metadata["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            if target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "bin")
            {
                binaries.insert(target["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(
        binaries.contains("tocsin-ingest"),
        "cargo metadata lists the workspace binaries: {binaries:?}"
    );
    let unclassified: Vec<String> = binaries
        .iter()
        .filter(|b| !SERVICE_BINARIES.contains(&b.as_str()) && !TOOL_BINARIES.contains(&b.as_str()))
        .map(|b| format!("{b} is neither a service (add it to docker-compose.yml) nor a tool"))
        .collect();
    assert_none(unclassified, "workspace binaries this test does not know");
}

/// The words of `ARG BINARIES="..."` in the Dockerfile's builder stage.
fn dockerfile_binaries(dockerfile: &str) -> BTreeSet<String> {
    let line = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG BINARIES="))
        .expect("deploy/Dockerfile declares ARG BINARIES=\"...\"");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_tocsin_service_runs_a_binary_of_the_one_image_from_deploy_dockerfile() {
    let dockerfile = read(DOCKERFILE);
    let carried = dockerfile_binaries(&dockerfile);
    // The builder copies each of $BINARIES to /out, and the runtime stage puts /out on PATH.
    assert!(
        dockerfile.contains(r#"cp "target/release/$bin" /out/"#),
        "the builder copies every binary to /out"
    );
    assert!(
        dockerfile.contains("COPY --from=builder /out/ /usr/local/bin/"),
        "the runtime stage installs /out"
    );
    assert!(
        !dockerfile.contains("\nENTRYPOINT"),
        "no ENTRYPOINT: compose's command names the binary"
    );

    let compose = load_compose();
    let expected = normalise(&repo_root().join(DOCKERFILE));
    let mut images = BTreeSet::new();
    let mut problems = Vec::new();
    for (name, service) in &compose.services {
        let built_here = service.dockerfile().is_some_and(|d| d == expected);
        let Some(binary) = service.binary() else {
            if built_here {
                problems.push(format!(
                    "{name}: built from {DOCKERFILE} but runs no Tocsin binary"
                ));
            }
            continue;
        };
        if !built_here {
            problems.push(format!(
                "{name}: not built from {DOCKERFILE} ({:?})",
                service.build
            ));
        }
        if service.entrypoint.is_some() {
            problems.push(format!("{name}: overrides the entrypoint"));
        }
        if !carried.contains(&binary) {
            problems.push(format!(
                "{name}: runs {binary}, which {DOCKERFILE} does not build and copy"
            ));
        }
        images.insert(
            service
                .image
                .clone()
                .unwrap_or_else(|| format!("<none: {name}>")),
        );
    }
    if images.len() != 1 {
        problems.push(format!(
            "Tocsin services should share one image tag, found {images:?}"
        ));
    }
    assert_none(problems, "Tocsin services and their image");
}

/// A service that reads `TOCSIN_SHUTDOWN_GRACE_SECONDS` sets it, and compose gives it longer
/// than that before SIGKILL (`stop_grace_period`, 10 s if unset), or a stop would cut its
/// grace period short.
#[test]
fn stop_grace_periods_outlast_the_shutdown_grace() {
    assert_eq!(compose_seconds("1m30s"), Some(90));
    let compose = load_compose();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, service) in &compose.services {
        if service.binary().is_none() {
            continue;
        }
        let read = variables_read(&service.command_words())
            .unwrap_or_else(|e| panic!("service {name}: {e:#}"));
        if !read.contains("TOCSIN_SHUTDOWN_GRACE_SECONDS") {
            continue;
        }
        checked += 1;
        let grace = service.environment.get("TOCSIN_SHUTDOWN_GRACE_SECONDS");
        let stop = service.stop_grace_period.as_deref();
        let grace_secs = grace.as_deref().and_then(|g| g.parse::<u64>().ok());
        if !matches!((grace_secs, stop.and_then(compose_seconds)), (Some(g), Some(s)) if s > g) {
            problems.push(format!(
                "{name}: sets TOCSIN_SHUTDOWN_GRACE_SECONDS {grace:?} and stop_grace_period {stop:?}; both must be set, the second longer"
            ));
        }
    }
    assert!(
        checked >= 4,
        "the resolver and three workers read the grace period; found {checked}"
    );
    assert_none(
        problems,
        "services compose would kill within their grace period",
    );
}

#[test]
fn workers_and_the_resolver_can_scale() {
    let compose = load_compose();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, service) in &compose.services {
        let Some(binary) = service.binary() else {
            continue;
        };
        if !SCALABLE_BINARIES.contains(&binary.as_str()) {
            continue;
        }
        seen.insert(binary);
        if let Some(container) = &service.container_name {
            problems.push(format!(
                "{name}: container_name {container} allows one replica only"
            ));
        }
        if !service.ports.is_empty() {
            problems.push(format!(
                "{name}: publishes ports {:?}; replicas would collide",
                service.ports
            ));
        }
    }
    assert_eq!(
        seen.len(),
        SCALABLE_BINARIES.len(),
        "every scalable binary has a service: {seen:?}"
    );
    assert_none(problems, "services that cannot scale");
}

#[test]
fn every_dependency_exists_and_its_condition_can_be_met() {
    let compose = load_compose();
    let mut problems = Vec::new();
    for (name, service) in &compose.services {
        for (target, condition) in service.depends_on.conditions() {
            let Some(dependency) = compose.services.get(&target) else {
                problems.push(format!(
                    "{name} depends on {target}, which is not a service"
                ));
                continue;
            };
            match condition.as_str() {
                "service_healthy"
                    if !dependency
                        .healthcheck
                        .as_ref()
                        .is_some_and(Healthcheck::is_active) =>
                {
                    problems.push(format!(
                        "{name} waits for {target} to be healthy; it has no health check"
                    ));
                }
                "service_completed_successfully"
                    if dependency
                        .restart
                        .as_deref()
                        .is_some_and(|r| r != "no" && r != "on-failure") =>
                {
                    problems.push(format!(
                        "{name} waits for {target} to complete; it restarts {:?}",
                        dependency.restart
                    ));
                }
                "service_healthy" | "service_completed_successfully" | "service_started" => {}
                other => problems.push(format!("{name} -> {target}: unknown condition {other}")),
            }
            if service.profiles.is_empty() && !dependency.profiles.is_empty() {
                problems.push(format!(
                    "{name} starts by default but {target} only with profiles {:?}",
                    dependency.profiles
                ));
            }
        }
    }
    assert_none(problems, "depends_on");
}

/// The port of `host:port`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

#[test]
fn prometheus_scrapes_and_compose_health_checks_every_metrics_server() {
    let compose = load_compose();
    let prometheus: Value = serde_norway::from_str(&read("deploy/prometheus.yml"))
        .expect("deploy/prometheus.yml is YAML");
    // Every (name, port) a dns_sd_configs block of type A discovers.
    let mut discovered = BTreeSet::new();
    for job in prometheus["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            assert_eq!(
                sd["type"].as_str(),
                Some("A"),
                "A records list every replica: {sd:?}"
            );
            for name in sd["names"].as_sequence().into_iter().flatten() {
                discovered.insert((
                    name.as_str().unwrap().to_owned(),
                    sd["port"].as_u64().unwrap(),
                ));
            }
        }
    }
    let mut problems = Vec::new();
    let mut servers = 0;
    for (name, service) in &compose.services {
        let Some(addr) = service.environment.get("TOCSIN_METRICS_ADDR") else {
            continue;
        };
        servers += 1;
        let Some(port) = port_of(&addr) else {
            problems.push(format!("{name}: TOCSIN_METRICS_ADDR {addr} has no port"));
            continue;
        };
        if !addr.starts_with("0.0.0.0:") && !addr.starts_with("[::]:") {
            problems.push(format!(
                "{name}: TOCSIN_METRICS_ADDR {addr} is not reachable from other containers"
            ));
        }
        if !discovered.contains(&(name.clone(), u64::from(port))) {
            problems.push(format!(
                "{name}: Prometheus does not discover {name}:{port}"
            ));
        }
        let test = service
            .healthcheck
            .as_ref()
            .and_then(|h| h.test.as_ref())
            .map(Words::words)
            .unwrap_or_default();
        if !test.iter().any(|w| w.ends_with(&format!(":{port}/readyz"))) {
            problems.push(format!(
                "{name}: the health check does not ask :{port}/readyz ({test:?})"
            ));
        }
    }
    // Ingest as well as every scalable service.
    assert!(
        servers > SCALABLE_BINARIES.len(),
        "ingest, the resolver and the workers serve metrics"
    );
    assert_none(problems, "metrics servers");
}

#[test]
fn mounted_deploy_files_exist_and_the_dashboard_uses_the_provisioned_datasource() {
    let compose = load_compose();
    let mut problems = Vec::new();
    for (name, service) in &compose.services {
        for volume in &service.volumes {
            let Some(source) = volume.as_str().and_then(|v| v.split(':').next()) else {
                continue;
            };
            if source.starts_with("./") && !repo_root().join(source).exists() {
                problems.push(format!("{name}: mounts {source}, which does not exist"));
            }
        }
    }
    assert_none(problems, "bind mounts");

    let datasources: Value = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    let uid = datasources["datasources"][0]["uid"]
        .as_str()
        .expect("the datasource has a uid")
        .to_owned();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/tocsin.json"))
            .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"],
            uid.as_str(),
            "panel {}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("tocsin_")),
                "panel {}",
                panel["title"]
            );
            queries += 1;
        }
    }
    assert!(queries > 10, "the dashboard has its queries");
}
