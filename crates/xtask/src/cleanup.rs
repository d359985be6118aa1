//! What the test suite leaves on the shared NATS server, removed after the run.
//!
//! Every test works under its own bus prefix, so its streams stay on the shared server unless
//! the test deletes them, and a test that fails half-way never does. `cargo xtask test` gives
//! the run a tag that the testkit puts into every prefix (`t_<tag>_<random>`), and afterwards
//! deletes the streams carrying it. Streams of earlier runs that nobody cleaned (a run killed,
//! tests started without xtask) are removed too once they are an hour old, which no test
//! takes.

use std::time::Duration;

use futures::TryStreamExt;
use time::OffsetDateTime;

/// The environment variable the testkit reads the run's tag from.
pub(crate) const RUN_TAG_VAR: &str = "TOCSIN_TEST_RUN";

/// A fresh tag for one test run: eight hex digits.
pub(crate) fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Whether `stream` was made by a test of the run tagged `tag`, or is an abandoned test
/// stream (any test prefix) created before `stale_before`.
fn is_ours(stream: &str, tag: &str, created: OffsetDateTime, stale_before: OffsetDateTime) -> bool {
    let Some(rest) = stream.strip_prefix("T_") else {
        return false;
    };
    let this_run = rest
        .strip_prefix(&tag.to_ascii_uppercase())
        .is_some_and(|after| after.starts_with('_'));
    this_run || (created < stale_before && is_test_prefix(rest))
}

/// `<12 hex>_…` (a test run without a tag) or `<8 hex>_<8 hex>_…` (a tagged run).
fn is_test_prefix(rest: &str) -> bool {
    let hex =
        |part: &str, len: usize| part.len() == len && part.chars().all(|c| c.is_ascii_hexdigit());
    match rest.split('_').collect::<Vec<_>>().as_slice() {
        [run, _, ..] if hex(run, 12) => true,
        [run, test, _, ..] => hex(run, 8) && hex(test, 8),
        _ => false,
    }
}

/// Deletes the streams this run's tests left on `nats_url`, and abandoned test streams over
/// an hour old. Returns how many; failures are reported, never fatal (the tests are done).
pub(crate) async fn test_streams(nats_url: &str, tag: &str) -> usize {
    match delete_test_streams(nats_url, tag).await {
        Ok(deleted) => deleted,
        Err(e) => {
            eprintln!("warning: could not remove the test streams from {nats_url}: {e:#}");
            0
        }
    }
}

async fn delete_test_streams(nats_url: &str, tag: &str) -> anyhow::Result<usize> {
    let client =
        tokio::time::timeout(Duration::from_secs(5), async_nats::connect(nats_url)).await??;
    let js = async_nats::jetstream::new(client);
    let stale_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let infos: Vec<async_nats::jetstream::stream::Info> = js.streams().try_collect().await?;
    let mut deleted = 0;
    for info in infos {
        if is_ours(&info.config.name, tag, info.created, stale_before) {
            js.delete_stream(&info.config.name).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_runs_streams_and_stale_test_streams_are_ours() {
        let now = OffsetDateTime::now_utc();
        let old = now - time::Duration::hours(2);
        let stale_before = now - time::Duration::hours(1);
        assert!(is_ours(
            "T_1A2B3C4D_0011AABB_EVENTS",
            "1a2b3c4d",
            now,
            stale_before
        ));
        assert!(!is_ours(
            "T_99999999_0011AABB_EVENTS",
            "1a2b3c4d",
            now,
            stale_before
        ));
        assert!(is_ours(
            "T_99999999_0011AABB_EVENTS",
            "1a2b3c4d",
            old,
            stale_before
        ));
        assert!(is_ours(
            "T_0123456789AB_DELIVERIES",
            "1a2b3c4d",
            old,
            stale_before
        ));
        assert!(!is_ours(
            "T_0123456789AB_DELIVERIES",
            "1a2b3c4d",
            now,
            stale_before
        ));
        // Streams that are not a test's are never touched, however old.
        assert!(!is_ours("TOCSIN_EVENTS", "1a2b3c4d", old, stale_before));
        assert!(!is_ours(
            "TOCSIN_DEMO_DELIVERIES",
            "1a2b3c4d",
            old,
            stale_before
        ));
        assert!(!is_ours("T_DEMO_EVENTS", "1a2b3c4d", old, stale_before));
    }
}
