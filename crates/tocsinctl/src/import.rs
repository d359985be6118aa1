//! `tocsinctl import`: streams a subscriber file to `ImportSubscribers` with a progress bar,
//! then prints the summary and every rejected row by its line in the file.

use std::io::Write;
use std::path::PathBuf;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{CtlError, Server};
use crate::subscriber_file::{self, Format, Rejected};

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The subscriber file: CSV with a header row, or JSON lines; `-` reads standard input.
    file: String,
    /// The file's format; by default taken from its extension (.csv, .jsonl, .ndjson, .json).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write the webhook signing secrets the import creates to this file (CSV, mode 0600)
    /// instead of printing them. They are shown only once.
    #[arg(long)]
    secrets_file: Option<PathBuf>,
    /// How the people in the file agreed to be told ("opted in at checkout"), for rows
    /// without a `consent` of their own; kept in the consent log. Rows without either are
    /// logged as "not stated".
    #[arg(long)]
    consent: Option<String>,
}

/// `import --help` below the flags: every CSV column and its format, from the parser's own
/// list.
pub(crate) fn long_help() -> String {
    format!(
        "Import subscribers from a CSV or JSON-lines file, with a summary of rejected rows.\n\n\
         CSV: a header row naming columns in any order, then one subscriber a row:\n{}\n\n\
         JSON lines: one object a line with external_id, consent, contacts {{email, phone, \
         webhook_url}} and preferences {{channels, components, min_severity, kinds (event kinds \
         per channel), quiet_hours {{time_zone, start, end}}}}.\n\n\
         Rows are upserts by external_id: a row for an existing subscriber replaces their \
         contacts and preferences.",
        subscriber_file::csv_columns_help()
    )
}

pub(crate) async fn run(server: &Server, args: ImportArgs) -> Result<(), CtlError> {
    let format = args
        .format
        .or_else(|| Format::from_path(&args.file))
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "cannot tell the format of {:?}; pass --format csv or --format jsonl",
                args.file
            ))
        })?;
    let parsed = if args.file == "-" {
        subscriber_file::parse(format, std::io::stdin().lock())?
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| CtlError::Usage(format!("cannot open {:?}: {e}", args.file)))?;
        subscriber_file::parse(format, std::io::BufReader::new(file))?
    };
    let mut rejected = parsed.rejected;
    let lines: Vec<u64> = parsed.rows.iter().map(|row| row.line).collect();

    let bar = ProgressBar::new(parsed.rows.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} importing [{bar:30}] {pos}/{len} rows {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let counter = bar.clone();
    let consent = args.consent.unwrap_or_default();
    let requests = futures::stream::iter(parsed.rows.into_iter().map(move |row| {
        let mut request = row.request;
        if request.consent.trim().is_empty() {
            request.consent.clone_from(&consent);
        }
        request
    }))
    .inspect(move |_| counter.inc(1));
    let summary = server
        .subscribers()
        .import_subscribers(requests)
        .await
        .map_err(|status| {
            bar.abandon();
            server.fail(status)
        })?
        .into_inner();
    bar.finish_and_clear();

    // The server numbers rows by their place in the stream; the operator needs file lines.
    for error in &summary.errors {
        let line = usize::try_from(error.row)
            .ok()
            .and_then(|row| row.checked_sub(1))
            .and_then(|index| lines.get(index))
            .copied()
            .unwrap_or(0);
        rejected.push(Rejected {
            line,
            external_id: error.external_id.clone(),
            field: error.field.clone(),
            message: error.message.clone(),
        });
    }
    rejected.sort_by_key(|r| r.line);
    let rejected_here = rejected.len() as u64 - summary.errors.len() as u64;
    let total_rejected = summary.rejected + rejected_here;
    println!(
        "imported {} rows: {} created, {} updated, {} rejected",
        summary.received + rejected_here,
        summary.created,
        summary.updated,
        total_rejected
    );
    if !rejected.is_empty() {
        println!("rejected rows:");
        let rows: Vec<Vec<String>> = rejected
            .iter()
            .map(|r| {
                vec![
                    r.line.to_string(),
                    r.external_id.clone(),
                    r.field.clone(),
                    r.message.clone(),
                ]
            })
            .collect();
        crate::table::print(&["LINE", "EXTERNAL_ID", "FIELD", "PROBLEM"], &rows);
        if summary.rejected > summary.errors.len() as u64 {
            println!(
                "(the server listed the first {} of its {} rejected rows)",
                summary.errors.len(),
                summary.rejected
            );
        }
    }
    write_secrets(&summary.webhook_secrets, args.secrets_file.as_deref())
}

/// Webhook secrets exist only in this reply, so they go to a private file or to stdout.
fn write_secrets(
    secrets: &std::collections::HashMap<String, String>,
    path: Option<&std::path::Path>,
) -> Result<(), CtlError> {
    if secrets.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<(&String, &String)> = secrets.iter().collect();
    sorted.sort();
    match path {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| CtlError::Usage(format!("cannot write {}: {e}", path.display())))?;
            let mut text = String::from("external_id,webhook_secret\n");
            for (id, secret) in &sorted {
                text.push_str(&format!("{id},{secret}\n"));
            }
            file.write_all(text.as_bytes())
                .map_err(|e| CtlError::Usage(format!("cannot write {}: {e}", path.display())))?;
            println!(
                "{} new webhook signing secrets written to {}",
                sorted.len(),
                path.display()
            );
        }
        None => {
            println!("new webhook signing secrets (shown once; give each to its receiver):");
            for (id, secret) in sorted {
                println!("{id} {secret}");
            }
        }
    }
    Ok(())
}
