//! Every metric Tocsin records, with its help text: Prometheus and `promtool check metrics`
//! want a `# HELP` for each, and one list keeps the names, kinds and meanings in one place.
//!
//! A metric recorded anywhere must be listed here; a test reads the workspace's sources and
//! fails naming any that is not.

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, kind and help text of every metric.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "tocsin_build_info",
        Kind::Gauge,
        "Always 1; its label is the running version.",
    ),
    (
        "tocsin_events_ingested_total",
        Kind::Counter,
        "Incident events recorded in the log (not duplicates), by kind and publisher.",
    ),
    (
        "tocsin_relay_published_total",
        Kind::Counter,
        "Events the outbox relay published to JetStream and had acknowledged.",
    ),
    (
        "tocsin_relay_lag_seconds",
        Kind::Histogram,
        "Time from an event's commit in the log to its acknowledgement by JetStream.",
    ),
    (
        "tocsin_maintenance_clock_events_total",
        Kind::Counter,
        "Reminders, starts and completions the maintenance clock recorded, by kind.",
    ),
    (
        "tocsin_fanout_duration_seconds",
        Kind::Histogram,
        "Time to resolve one event's recipients and record its deliveries.",
    ),
    (
        "tocsin_fanout_jobs",
        Kind::Histogram,
        "Deliveries one event's fan-out planned.",
    ),
    (
        "tocsin_deliveries_total",
        Kind::Counter,
        "Deliveries settled by a worker, by channel and outcome.",
    ),
    (
        "tocsin_delivery_retries_scheduled_total",
        Kind::Counter,
        "Failed attempts given a later retry, by channel.",
    ),
    (
        "tocsin_dead_letters_total",
        Kind::Counter,
        "Deliveries dead-lettered after their retries ran out, by channel.",
    ),
    (
        "tocsin_delivery_attempt_duration_seconds",
        Kind::Histogram,
        "Time one send attempt took at the provider, by channel.",
    ),
    (
        "tocsin_ingest_to_delivery_seconds",
        Kind::Histogram,
        "Time from an event's commit in the log to its message's acceptance by the provider, by channel.",
    ),
    (
        "tocsin_consumer_pending",
        Kind::Gauge,
        "Messages waiting in a JetStream consumer (the resolver's, or a worker lane's), by consumer.",
    ),
    (
        "tocsin_fallback_notices_total",
        Kind::Counter,
        "Notices telling a subscriber that one of their channels stopped working, by failed channel and channel used.",
    ),
    (
        "tocsin_unsubscribes_total",
        Kind::Counter,
        "Unsubscribe requests served by tocsin-page, by source (one-click or the page).",
    ),
    (
        "tocsin_alert_drafts_total",
        Kind::Counter,
        "Alert notifications held as drafts for an operator's approval (rules with hold).",
    ),
    (
        "tocsin_grpc_requests_total",
        Kind::Counter,
        "gRPC calls served, by method (unknown for methods not served) and status code.",
    ),
    (
        "tocsin_grpc_request_duration_seconds",
        Kind::Histogram,
        "Time from a gRPC call's arrival to its response headers (the whole call for unary methods), by method.",
    ),
    (
        "tocsin_http_requests_total",
        Kind::Counter,
        "HTTP requests served (pages, alert receivers, Twilio callbacks), by route pattern, method and status.",
    ),
    (
        "tocsin_http_request_duration_seconds",
        Kind::Histogram,
        "Time to answer an HTTP request, by route pattern.",
    ),
    (
        "tocsin_db_pool_connections",
        Kind::Gauge,
        "PostgreSQL connections this process holds, by state (idle, in_use).",
    ),
    (
        "tocsin_db_pool_max_connections",
        Kind::Gauge,
        "The most PostgreSQL connections this process may open (TOCSIN_DB_MAX_CONNECTIONS).",
    ),
    (
        "tocsin_signups_total",
        Kind::Counter,
        "Sign-ups submitted on the status page, by outcome (recorded, or refused for the client's hourly limit).",
    ),
    (
        "tocsin_signups_confirmed_total",
        Kind::Counter,
        "Sign-up addresses confirmed (email by link, SMS by code), by channel.",
    ),
    (
        "tocsin_account_messages_total",
        Kind::Counter,
        "Messages about a subscription (sign-up confirmations, codes) by channel, kind and outcome.",
    ),
    (
        "tocsin_preference_changes_total",
        Kind::Counter,
        "Preferences saved by readers in the preference centre.",
    ),
];

/// Gives the installed recorder every help text.
pub(crate) fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every `tocsin_…` name in a `counter!`, `gauge!` or `histogram!` call under `dir`.
    fn recorded(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    recorded(&path, found);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in source.match_indices(macro_name) {
                    let rest = source[at + macro_name.len()..].trim_start();
                    if let Some(name) = rest
                        .strip_prefix("\"tocsin_")
                        .and_then(|r| r.split('"').next())
                    {
                        found.push((format!("tocsin_{name}"), path.display().to_string()));
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_recorded_in_the_workspace_has_help_text() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        recorded(&crates, &mut found);
        assert!(found.len() > 10, "the scan found the metrics: {found:?}");
        let missing: Vec<&(String, String)> = found
            .iter()
            .filter(|(name, path)| {
                // Test code records made-up names.
                !path.contains("/tests/")
                    && !name.starts_with("tocsin_test_")
                    && !METRICS.iter().any(|(listed, _, _)| listed == name)
            })
            .collect();
        assert!(missing.is_empty(), "metrics without help text: {missing:?}");
    }
}
