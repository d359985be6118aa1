//! Counting from the customers' side: every message each provider server says it accepted,
//! keyed by the delivery key it carries (the email `Message-ID`'s local part, the SMS status
//! callback's `delivery` parameter, the `webhook-id`), checked against the expected set, with
//! the ledger consulted only to explain (superseded, stuck) and to license second sends.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use sqlx::PgPool;
use tocsin_core::Channel;

use super::ledger;
use super::world::{ExpectedDelivery, Subscriber};
use crate::received::Received;
use crate::stack::Ports;

/// The Twilio double's status callbacks by delivery key, each as `status -> answer`, for the
/// diagnosis of SMS deliveries the ledger never settled.
pub(super) async fn sms_callbacks(
    http: &reqwest::Client,
    ports: Ports,
) -> anyhow::Result<HashMap<String, Vec<String>>> {
    #[derive(Deserialize)]
    struct Attempt {
        status: String,
        url: String,
        response_status: Option<u16>,
        error: Option<String>,
    }
    let url = format!("http://127.0.0.1:{}/_control/callbacks", ports.twilio);
    let attempts: Vec<Attempt> = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {url}"))?
        .json()
        .await?;
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for attempt in attempts {
        let key = url::Url::parse(&attempt.url).ok().and_then(|u| {
            u.query_pairs()
                .find(|(name, _)| name == "delivery")
                .map(|(_, v)| v.into_owned())
        });
        let answer = match (attempt.response_status, attempt.error) {
            (Some(status), _) => status.to_string(),
            (None, Some(error)) => format!("failed: {error}"),
            (None, None) => "no answer".to_owned(),
        };
        let port = url::Url::parse(&attempt.url)
            .ok()
            .and_then(|u| u.port())
            .map_or_else(String::new, |p| format!(" to :{p}"));
        by_key
            .entry(key.unwrap_or_default())
            .or_default()
            .push(format!("{}{port} -> {answer}", attempt.status));
    }
    Ok(by_key)
}

/// What the providers' summaries say, for the settle loop: (accepted, refused) per channel.
async fn provider_counts(http: &reqwest::Client, ports: Ports) -> anyhow::Result<Vec<(u64, u64)>> {
    #[derive(Deserialize, PartialEq)]
    struct Summary {
        received: u64,
        rejected: u64,
    }
    let mut counts = Vec::new();
    for channel in Channel::ALL {
        let url = format!(
            "http://127.0.0.1:{}/_control/summary",
            ports.control(channel)
        );
        let summary: Summary = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("asking {url}"))?
            .json()
            .await?;
        counts.push((summary.received, summary.rejected));
    }
    Ok(counts)
}

/// How the wait for a quiet pipeline ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settled {
    pub(super) settled: bool,
    /// From the last fault or publish to the last change seen (or to the limit).
    pub(super) settle_s: f64,
}

/// The limit on settling, from the last fault or publish.
pub(super) const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// Nothing may change for this long before the pipeline counts as settled.
const QUIET: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(500);

/// Polls the ledger and the providers until nothing is unsettled, every expected key has a
/// ledger row, and no count has moved for [`QUIET`]; or until the limit. `tick` runs on every
/// poll (the supervisor watches its processes there).
pub(super) async fn settle(
    db: &PgPool,
    http: &reqwest::Client,
    ports: Ports,
    expected_keys: &[String],
    since: Instant,
    mut tick: impl AsyncFnMut(),
) -> Settled {
    /// Ledger counts by state, expected keys with a row, providers' (taken, refused).
    type Snapshot = (BTreeMap<String, i64>, i64, Vec<(u64, u64)>);
    let mut last: Option<Snapshot> = None;
    let mut last_change = Instant::now();
    let mut last_report = Instant::now();
    loop {
        tick().await;
        let snapshot = async {
            let states = ledger::state_counts(db).await?;
            let present = ledger::present(db, expected_keys).await?;
            let providers = provider_counts(http, ports).await?;
            anyhow::Ok((states, present, providers))
        }
        .await;
        let now = Instant::now();
        match snapshot {
            Ok(snapshot) => {
                let unsettled: i64 = ledger::UNSETTLED
                    .iter()
                    .filter_map(|s| snapshot.0.get(*s))
                    .sum();
                let complete = snapshot.1 == expected_keys.len() as i64;
                if last.as_ref() != Some(&snapshot) {
                    last_change = now;
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    eprintln!(
                        "    settling {:>4.0} s: ledger {:?}, {} of {} expected keys recorded, providers (taken, refused) {:?}",
                        since.elapsed().as_secs_f64(),
                        snapshot.0,
                        snapshot.1,
                        expected_keys.len(),
                        snapshot.2
                    );
                    last_report = now;
                }
                last = Some(snapshot);
                if unsettled == 0 && complete && now - last_change >= QUIET {
                    return Settled {
                        settled: true,
                        settle_s: last_change.saturating_duration_since(since).as_secs_f64(),
                    };
                }
            }
            // PostgreSQL may be on its way back up; a failed poll is no change.
            Err(e) => eprintln!("    settle poll failed: {e:#}"),
        }
        if now.saturating_duration_since(since) > SETTLE_LIMIT + QUIET {
            return Settled {
                settled: false,
                settle_s: since.elapsed().as_secs_f64(),
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The verdict's counts and the keys behind each, for the diagnosis.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    pub(super) expected: usize,
    pub(super) delivered: usize,
    pub(super) lost: Vec<String>,
    /// Expected email or SMS messages that never went out because a newer one replaced
    /// them, as the ledger says: allowed.
    pub(super) superseded: usize,
    pub(super) unexpected: Vec<String>,
    /// Fallback notices received (a subscriber told on another channel that one of theirs
    /// failed), each backed in the ledger by the failure it tells of: allowed, once.
    pub(super) fallback_notices: usize,
    /// Records whose key was expected but whose recipient or channel was not that key's.
    pub(super) misaddressed: Vec<String>,
    pub(super) duplicates: Vec<String>,
    pub(super) duplicates_allowed: Vec<String>,
    pub(super) stuck: Vec<ledger::Row>,
    /// (key received late, key of the later version received before it).
    pub(super) order_violations: Vec<(String, String)>,
    /// Copies per received key.
    pub(super) copies: HashMap<String, usize>,
}

/// Judges what the providers received against `expected`.
pub(super) async fn judge(
    db: &PgPool,
    expected: &HashMap<String, ExpectedDelivery>,
    subscribers: &[Subscriber],
    received: &[Received],
) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict {
        expected: expected.len(),
        ..Verdict::default()
    };
    let fallbacks = ledger::fallback_notices(db).await?;
    // First arrival per key, per channel, and the copies.
    let mut first: HashMap<&str, &Received> = HashMap::new();
    for record in received {
        let Some(key) = record.key.as_deref() else {
            verdict
                .unexpected
                .push(format!("{} message without a delivery key", record.channel));
            continue;
        };
        *verdict.copies.entry(key.to_owned()).or_default() += 1;
        first.entry(key).or_insert(record);
        match expected.get(key) {
            None => match fallbacks.get(key) {
                Some(true) if verdict.copies[key] == 1 => verdict.fallback_notices += 1,
                Some(true) => {}
                Some(false) if verdict.copies[key] == 1 => verdict.unexpected.push(format!(
                    "{key}: a fallback notice without the failure it tells of"
                )),
                _ if verdict.copies[key] == 1 => verdict.unexpected.push(key.to_owned()),
                _ => {}
            },
            Some(want) => {
                let contact = subscribers[want.subscriber].contact(want.channel);
                if record.channel != want.channel
                    || !record
                        .recipients
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(&contact))
                {
                    verdict.misaddressed.push(format!(
                        "{key}: expected {} to {contact}, got {} to {:?}",
                        want.channel, record.channel, record.recipients
                    ));
                }
            }
        }
    }
    verdict.delivered = expected
        .keys()
        .filter(|k| first.contains_key(k.as_str()))
        .count();

    // Missing: every webhook counts; for email and SMS only the final message, or an
    // intermediate one the ledger does not say was superseded.
    let missing: Vec<String> = expected
        .keys()
        .filter(|k| !first.contains_key(k.as_str()))
        .cloned()
        .collect();
    let rows = ledger::rows(db, &missing).await?;
    for key in missing {
        let want = &expected[&key];
        let superseded = rows.get(&key).is_some_and(|r| r.state == "superseded");
        if want.channel != Channel::Webhook && !want.is_final && superseded {
            verdict.superseded += 1;
        } else {
            verdict.lost.push(key);
        }
    }

    // Second copies: allowed only where the channel's policy allows that many and the trail
    // shows the attempt that licensed it.
    let repeated: Vec<String> = verdict
        .copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    let trail = ledger::trail(db, &repeated).await?;
    for key in repeated {
        let copies = verdict.copies[&key];
        let channel = first[key.as_str()].channel;
        let policy_allows = match channel {
            Channel::Webhook => true,
            Channel::Email => copies <= 2,
            Channel::Sms => false,
        };
        let licensed = trail
            .get(&key)
            .is_some_and(|entries| entries.iter().any(ledger::TrailEntry::licenses_a_resend));
        if policy_allows && licensed {
            verdict.duplicates_allowed.push(key);
        } else {
            verdict.duplicates.push(key);
        }
    }

    verdict.stuck = ledger::unsettled(db).await?;

    // Order: per incident, recipient and channel, first arrivals in event-version order.
    // (incident, subscriber, channel) -> (arrival, version, key) of each first arrival.
    type Arrival<'k> = (usize, u64, &'k str);
    let mut streams: HashMap<(usize, usize, Channel), Vec<Arrival<'_>>> = HashMap::new();
    for (key, record) in &first {
        if let Some(want) = expected.get(*key) {
            streams
                .entry((want.incident, want.subscriber, want.channel))
                .or_default()
                .push((record.seq, want.version, key));
        }
    }
    for stream in streams.values_mut() {
        stream.sort();
        let mut highest: Option<(u64, &str)> = None;
        for &(_, version, key) in stream.iter() {
            match highest {
                Some((top, top_key)) if version < top => verdict
                    .order_violations
                    .push((key.to_owned(), top_key.to_owned())),
                Some((top, _)) if version <= top => {}
                _ => highest = Some((version, key)),
            }
        }
    }
    Ok(verdict)
}
