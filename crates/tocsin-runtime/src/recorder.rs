//! The process's metrics recorder: Prometheus, installed once, rendered by the ops server.
//!
//! Crates record through the `metrics` facade (`counter!`, `histogram!`, `gauge!`); until
//! [`install`] runs, those calls go nowhere. Every service installs it at start (the ops
//! server does), and code that keeps metric handles calls [`install`] before resolving them,
//! because a handle taken before the recorder exists stays a no-op for good.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds, in seconds, of every histogram whose name ends in `_seconds`: 1 ms to 60 s,
/// roughly three per decade.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds of every other histogram, which count things (jobs per event): zero, then
/// 1-2-5 steps up to a million.
pub const COUNT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5,
    2e5, 5e5, 1e6,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder the first time it is
/// called, and returns the handle that renders it; later calls (other tests in the same
/// binary, several ops servers) return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(COUNT_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            // Someone else's recorder is in place: ours renders, but nothing records into it.
            tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics stays empty");
        }
        crate::catalogue::describe();
        // The standard process metrics (CPU seconds, resident memory, open files, threads,
        // start time), collected at each scrape by the ops server.
        metrics_process::Collector::default().describe();
        metrics::gauge!("tocsin_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}
