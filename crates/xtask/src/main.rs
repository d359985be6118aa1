//! `cargo xtask`: the project's two commands and its benchmarks.
//!
//! - `cargo xtask demo`: the pipeline end to end against this machine's PostgreSQL and NATS.
//! - `cargo xtask test`: the whole test suite, with the services checked (and started) first.
//! - `cargo xtask bench ingest`: publish throughput, call latency and relay lag.
//! - `cargo xtask bench fanout-plan`: one incident fanned out to many subscribers by the
//!   resolver: time to every job recorded and published, and the resolver's peak memory.
//! - `cargo xtask torture`: the whole stack as processes under kills, database restarts, a
//!   wiped bus, provider faults and one very busy recipient, judged from the providers' side.

#![allow(clippy::print_stdout)]

mod bench;
mod cleanup;
mod demo;
mod pipeline;
mod received;
mod services;
mod stack;
mod test;
mod tools;
mod torture;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Tocsin's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the pipeline end to end on local PostgreSQL and NATS, and report.
    Demo,
    /// Run the whole test suite (extra arguments go to the test runner).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a benchmark and print a results table and one JSON line.
    Bench {
        /// Which benchmark: ingest, fanout-plan, fanout or ordered.
        which: String,
        /// Concurrent publishers.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Stop after this many measured events, or after --seconds if that comes first.
        #[arg(long)]
        events: Option<u64>,
        /// fanout-plan, fanout: subscribers of the incident.
        #[arg(long, default_value_t = 100_000)]
        recipients: usize,
        /// fanout: also publish this many small critical incidents (three recipients each,
        /// one per channel), one a second from 2 s into the big fan-out, and report how long
        /// their messages took (`small_incident_p99_ms`).
        #[arg(long, default_value_t = 0)]
        small_incidents: usize,
        /// fanout: every subscriber by webhook (one message to N endpoints).
        #[arg(long)]
        webhooks_only: bool,
        /// fanout: every webhook endpoint answers after this many milliseconds.
        #[arg(long, default_value_t = 0)]
        endpoint_delay_ms: u64,
        /// ordered: updates published to one incident, one subscriber by webhook.
        #[arg(long, default_value_t = 100)]
        updates: usize,
        /// ingest: offer this many events per second in all (open loop: each client keeps its
        /// own schedule and latency counts from when a call was due), instead of publishing
        /// as fast as the service answers.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Run the torture scenarios against private PostgreSQL and NATS servers, and report.
    Torture {
        /// burst, kills, postgres, nats, providers, busy, or all.
        #[arg(long, default_value = "all")]
        scenario: String,
        /// Subscribers to import (500 in the short form, 2,000 in the long one).
        #[arg(long)]
        subscribers: Option<usize>,
        /// SIGKILLs in the kills scenario (6 in the short form, 40 in the long one).
        #[arg(long)]
        kills: Option<usize>,
        /// The seed of everything the harness draws; random (and printed) by default.
        #[arg(long)]
        seed: Option<u64>,
        /// The CI form: fewer subscribers, kills and messages.
        #[arg(long)]
        short: bool,
        /// Run release builds of the services.
        #[arg(long)]
        release: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the benchmarks talk HTTP to the local providers with reqwest, which is
    // built without a default TLS provider in this workspace.
    tocsin_runtime::tls::install_crypto_provider();
    let result = match cli.command {
        Task::Demo => demo::run().await,
        Task::Test { args } => test::run(&args).await,
        Task::Bench {
            which,
            clients,
            seconds,
            events,
            recipients,
            small_incidents,
            webhooks_only,
            endpoint_delay_ms,
            updates,
            rate,
        } => {
            bench::run(bench::BenchArgs {
                which,
                clients,
                seconds,
                events,
                recipients,
                small_incidents,
                webhooks_only,
                endpoint_delay_ms,
                updates,
                rate,
            })
            .await
        }
        Task::Torture {
            scenario,
            subscribers,
            kills,
            seed,
            short,
            release,
        } => {
            let args = torture::TortureArgs {
                scenario,
                subscribers,
                kills,
                seed,
                short,
                release,
            };
            torture::run(args, true).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// The test runner's own exit code when it failed (CI tells "tests failed" from "could not
/// run"), 1 for every other error.
fn exit_code(error: &anyhow::Error) -> ExitCode {
    error
        .downcast_ref::<test::TestsFailed>()
        .and_then(|failed| failed.status.code())
        .and_then(|code| u8::try_from(code).ok())
        .filter(|&code| code != 0)
        .map_or(ExitCode::FAILURE, ExitCode::from)
}
