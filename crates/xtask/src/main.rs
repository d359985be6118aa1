//! `cargo xtask`: the project's two commands and its benchmarks.
//!
//! - `cargo xtask demo`: the pipeline end to end against this machine's PostgreSQL and NATS.
//! - `cargo xtask test`: the whole test suite, with the services checked (and started) first.
//! - `cargo xtask bench ingest`: publish throughput, call latency and relay lag.

#![allow(clippy::print_stdout)]

mod bench;
mod demo;
mod pipeline;
mod services;
mod test;

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
        /// Which benchmark: ingest.
        which: String,
        /// Concurrent publishers.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Demo => demo::run().await,
        Task::Test { args } => test::run(&args).await,
        Task::Bench { which, clients, seconds } => {
            bench::run(bench::BenchArgs { which, clients, seconds }).await
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
