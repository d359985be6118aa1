//! The ops server on loopback: the probes, the Prometheus rendering of what the process
//! recorded, and its stop on shutdown. Services' own readiness checks are tested in their
//! crates against real PostgreSQL and NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tocsin_runtime::{Readiness, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Ready while the flag is up.
#[derive(Clone, Default)]
struct Switch(Arc<AtomicBool>);

impl Readiness for Switch {
    async fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("switched off".into())
        }
    }
}

/// A plain HTTP/1.1 GET: status, `Content-Type` and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

async fn start(
    readiness: impl Readiness,
) -> (
    std::net::SocketAddr,
    Shutdown,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(tocsin_runtime::ops::serve(
        listener,
        readiness,
        shutdown.clone(),
    ));
    (addr, shutdown, server)
}

#[tokio::test]
async fn probes_answer_and_readiness_follows_the_check() {
    let switch = Switch::default();
    let (addr, shutdown, server) = start(switch.clone()).await;

    let (status, _, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, content_type, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "not ready: switched off\n");

    switch.0.store(true, Ordering::SeqCst);
    let (status, _, body) = get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(get(addr, "/nowhere").await.0, 404);

    shutdown.trigger();
    server.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the server stopped on shutdown"
    );
}

#[tokio::test]
async fn metrics_render_what_the_process_recorded() {
    let (addr, shutdown, server) = start(tocsin_runtime::ops::AlwaysReady).await;
    // `serve` installs the recorder only when its task first runs: install it before recording.
    tocsin_runtime::recorder::install();
    metrics::counter!("tocsin_test_things_total", "kind" => "a").increment(2);
    metrics::histogram!("tocsin_test_wait_seconds").record(0.003);
    metrics::histogram!("tocsin_test_items").record(7.0);

    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.contains("# TYPE tocsin_test_things_total counter\n"),
        "{body}"
    );
    assert!(
        body.contains("tocsin_test_things_total{kind=\"a\"} 2\n"),
        "{body}"
    );
    // Durations get latency buckets (1 ms to 60 s), counts get count buckets.
    assert!(
        body.contains("# TYPE tocsin_test_wait_seconds histogram\n"),
        "{body}"
    );
    assert!(
        body.contains("tocsin_test_wait_seconds_bucket{le=\"0.001\"} 0\n"),
        "{body}"
    );
    assert!(
        body.contains("tocsin_test_wait_seconds_bucket{le=\"0.005\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("tocsin_test_wait_seconds_bucket{le=\"60\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("tocsin_test_items_bucket{le=\"5\"} 0\n"),
        "{body}"
    );
    assert!(
        body.contains("tocsin_test_items_bucket{le=\"10\"} 1\n"),
        "{body}"
    );
    // The standard process metrics, read at the scrape.
    assert!(
        body.contains("# TYPE process_resident_memory_bytes gauge\n"),
        "{body}"
    );
    let resident: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .expect("a resident memory sample")
        .parse()
        .unwrap();
    assert!(resident > 1_000_000.0, "{resident} bytes resident");

    shutdown.trigger();
    server.await.unwrap().unwrap();
}

/// Every metric Tocsin records, each recorded once, rendered as `/metrics` renders it, passes
/// `promtool check metrics` (Prometheus's own linter: help text, types, names, units).
/// `cargo xtask test` installs promtool from Debian's `prometheus` package.
#[tokio::test]
async fn every_metric_passes_promtool() {
    use tocsin_runtime::catalogue::{Kind, METRICS};
    let handle = tocsin_runtime::recorder::install();
    for (name, kind, _) in METRICS {
        match kind {
            Kind::Counter => metrics::counter!(*name, "channel" => "email").increment(1),
            Kind::Gauge => metrics::gauge!(*name, "channel" => "email").set(1.0),
            Kind::Histogram => metrics::histogram!(*name, "channel" => "email").record(0.5),
        }
    }
    metrics_process::Collector::default().collect();
    let rendered = handle.render();
    assert!(rendered.contains("process_cpu_seconds_total"), "{rendered}");
    for (name, _, help) in METRICS {
        assert!(
            rendered.contains(&format!("# HELP {name} {help}")),
            "{name} has its help text:\n{rendered}"
        );
    }
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed for this test and could not run ({e}); install it with \
                 `apt-get install -y --no-install-recommends prometheus` (cargo xtask test does it)"
            )
        });
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(rendered.as_bytes()).await.unwrap();
    drop(stdin);
    let checked = promtool.wait_with_output().await.unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}\n{rendered}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
