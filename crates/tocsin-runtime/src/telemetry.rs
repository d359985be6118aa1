use tracing_subscriber::EnvFilter;

/// How logs are written: `pretty` for people, `json` for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Installs the global tracing subscriber. The filter comes from `RUST_LOG`, `info` by default.
/// Logs go to stderr so that stdout stays free for a command's output.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}
