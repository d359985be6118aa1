//! `tocsinctl`: the operator's CLI for Tocsin, over the same gRPC API publishers use.
//!
//! - [`client`]: the connection, the bearer token, and errors as one line and an exit code.
//! - [`publish`]: open, update, resolve and reopen incidents.
//! - [`import`] and [`subscriber_file`]: subscribers from CSV or JSON lines.
//! - [`incidents`]: find incidents again (`ListIncidents`).
//! - [`watch`]: an incident's delivery progress, once (`show`) or live (`watch`).
//! - [`components`]: the component catalogue.
//! - [`deliveries`]: an incident's deliveries, filtered.
//! - [`operations`]: dead-letter replay, projection rebuild and log republish.
//! - [`subscribers`]: list, show, delete subscribers and rotate their webhook secrets.
//! - [`preview`]: who an event would reach, before it is published.
//! - [`confirm`]: the question before a deletion or a replay, and `--yes`.
//!
//! Exit codes: 0 done; 1 the server refused the request (or `watch` timed out); 2 bad usage
//! or input (also a confirmation nobody can give); 3 the server is unreachable or
//! unavailable; 4 the token was refused; 5 `watch` saw deliveries end dead.

// A CLI's results are its standard output.
#![allow(clippy::print_stdout)]

mod client;
mod components;
mod confirm;
mod deliveries;
mod drafts;
mod import;
mod incidents;
mod operations;
mod preview;
mod publish;
mod subscriber_file;
mod subscribers;
mod table;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::client::{CtlError, Server};

#[derive(Debug, Parser)]
#[command(
    name = "tocsinctl",
    version,
    about = "Drive Tocsin from a terminal: publish incidents, import subscribers, watch deliveries, repair"
)]
struct Cli {
    /// The gRPC address of `tocsin-ingest serve`: `http://` in the clear, `https://` over TLS.
    #[arg(
        long,
        env = "TOCSIN_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// A bearer token from the server's TOCSIN_OPERATOR_TOKENS (a publisher's token from
    /// TOCSIN_PUBLISHER_TOKENS may only publish and read incidents).
    #[arg(long, env = "TOCSIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A PEM file of a CA to trust, besides the system's, for an `https://` endpoint whose
    /// certificate a private CA signed.
    #[arg(long, env = "TOCSIN_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish an incident event: open, update, resolve, reopen.
    #[command(subcommand)]
    Publish(publish::PublishCommand),
    /// Keep the component catalogue: the names customers read for what incidents affect.
    #[command(subcommand)]
    Components(components::ComponentsCommand),
    /// Import subscribers from a CSV or JSON-lines file, with a summary of rejected rows.
    #[command(long_about = import::long_help())]
    Import(import::ImportArgs),
    /// List, show and delete subscribers; rotate their webhook signing secrets.
    #[command(subcommand)]
    Subscribers(subscribers::SubscribersCommand),
    /// Incidents alerts proposed under a rule with `hold`: list, publish or discard them.
    #[command(subcommand)]
    Drafts(drafts::DraftsCommand),
    /// Who an event would reach, per channel and per component, without publishing it.
    Preview(preview::PreviewArgs),
    /// List incidents, newest first: by status, component, severity, kind and time.
    Incidents(incidents::IncidentsArgs),
    /// Show an incident and its deliveries per channel.
    Show {
        /// The incident id.
        incident: String,
    },
    /// Follow an incident's deliveries live until every one is settled; exit code 5 when
    /// some ended dead.
    #[command(after_long_help = watch::WATCH_EXIT_CODES)]
    Watch(watch::WatchArgs),
    /// List an incident's deliveries, filtered by channel, state, subscriber or event.
    Deliveries(deliveries::DeliveriesArgs),
    /// Put dead-lettered deliveries back in the queue (all, or by incident and/or channel),
    /// after showing them and asking (`--yes` answers, `--dry-run` only shows).
    Replay(operations::ReplayArgs),
    /// Recompute every incident projection from the event log.
    Rebuild {
        /// Only count projections that differ from their log; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Publish the event log to JetStream again from a position (a lost or purged stream).
    Republish {
        /// The first log position to publish.
        #[arg(long, default_value_t = 1)]
        from_position: i64,
    },
}

async fn run(cli: Cli) -> Result<(), CtlError> {
    let token = cli.token.map(SecretString::from);
    let server = Server::connect(&cli.endpoint, token.as_ref(), cli.ca_cert.as_deref()).await?;
    match cli.command {
        Command::Publish(command) => publish::run(&server, command).await,
        Command::Components(command) => components::run(&server, command).await,
        Command::Import(args) => import::run(&server, args).await,
        Command::Subscribers(command) => subscribers::run(&server, command).await,
        Command::Drafts(command) => drafts::run(&server, command).await,
        Command::Preview(args) => preview::run(&server, args).await,
        Command::Incidents(args) => incidents::run(&server, args).await,
        Command::Show { incident } => watch::show(&server, &incident).await,
        Command::Watch(args) => watch::watch(&server, args).await,
        Command::Deliveries(args) => deliveries::run(&server, args).await,
        Command::Replay(args) => operations::replay(&server, args).await,
        Command::Rebuild { dry_run } => operations::rebuild(&server, dry_run).await,
        Command::Republish { from_position } => operations::republish(&server, from_position).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tocsinctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    fn long_help(subcommand: &str) -> String {
        Cli::command()
            .find_subcommand_mut(subcommand)
            .expect("the subcommand exists")
            .render_long_help()
            .to_string()
    }

    #[test]
    fn import_help_lists_every_csv_column_with_its_format() {
        let help = long_help("import");
        for column in &crate::subscriber_file::CSV_COLUMNS {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(column.name) && l.contains(column.format)),
                "{} in\n{help}",
                column.name
            );
        }
    }

    #[test]
    fn watch_help_names_its_exit_codes() {
        let help = long_help("watch");
        assert!(
            help.contains("5 every delivery settled and some are dead"),
            "{help}"
        );
        assert!(help.contains("1 --timeout passed first"), "{help}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
