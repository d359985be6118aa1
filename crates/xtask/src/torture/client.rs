//! The harness as a customer of the gRPC API: subscribers imported, their internal ids
//! learnt, and events published with retries under one idempotency key each, so that a
//! publish cut by a dead ingest or a restarting PostgreSQL is recorded exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tocsin_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::pipeline::{authed, operator_authed};

/// How long one publish keeps being retried before the scenario gives up.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(120);
/// Between two tries of a publish.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(super) struct Api {
    channel: Channel,
    /// Tries that failed and were made again, in all.
    retries: AtomicU64,
}

impl Api {
    /// A client of the ingest on `port` that connects (and reconnects) on demand, so it
    /// survives the process being killed and started again.
    pub(super) fn new(port: u16) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(Self {
            channel,
            retries: AtomicU64::new(0),
        })
    }

    pub(super) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Imports `rows` in one stream; fails unless every row was taken.
    pub(super) async fn import(
        &self,
        rows: Vec<v1::UpsertSubscriberRequest>,
    ) -> anyhow::Result<v1::ImportSubscribersResponse> {
        let sent = rows.len() as u64;
        let summary = SubscriberServiceClient::new(self.channel.clone())
            .import_subscribers(operator_authed(futures::stream::iter(rows)))
            .await
            .context("ImportSubscribers")?
            .into_inner();
        if summary.received != sent || summary.rejected != 0 {
            bail!(
                "the import took {} of {sent} rows and rejected {}: {:?}",
                summary.received,
                summary.rejected,
                summary.errors.iter().take(5).collect::<Vec<_>>()
            );
        }
        Ok(summary)
    }

    /// Every subscriber's internal id, by external id.
    pub(super) async fn subscriber_ids(&self) -> anyhow::Result<HashMap<String, String>> {
        let mut client = SubscriberServiceClient::new(self.channel.clone());
        let mut ids = HashMap::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_subscribers(operator_authed(v1::ListSubscribersRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                }))
                .await
                .context("ListSubscribers")?
                .into_inner();
            ids.extend(
                page.subscribers
                    .into_iter()
                    .map(|s| (s.external_id, s.subscriber_id)),
            );
            if page.next_page_token.is_empty() {
                return Ok(ids);
            }
            page_token = page.next_page_token;
        }
    }

    /// Publishes `request`, trying again with the same idempotency key for as long as the
    /// service is unreachable or failing (up to [`PUBLISH_DEADLINE`]). A refusal that a retry
    /// cannot change (an invalid event, a key reused with another payload) fails at once.
    pub(super) async fn publish(
        &self,
        request: v1::PublishEventRequest,
    ) -> anyhow::Result<v1::PublishEventResponse> {
        let mut client = IncidentServiceClient::new(self.channel.clone());
        let started = Instant::now();
        loop {
            let status = match client.publish_event(authed(request.clone())).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) => status,
            };
            let transient = matches!(
                status.code(),
                Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::DeadlineExceeded
                    | Code::Cancelled
            );
            if !transient {
                bail!(
                    "PublishEvent {} refused: {:?} {}",
                    request.idempotency_key,
                    status.code(),
                    status.message()
                );
            }
            if started.elapsed() > PUBLISH_DEADLINE {
                bail!(
                    "PublishEvent {} still failing after {} s: {:?} {}",
                    request.idempotency_key,
                    PUBLISH_DEADLINE.as_secs(),
                    status.code(),
                    status.message()
                );
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Waits until the API answers a call (a fresh ingest needs a moment).
    pub(super) async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut client = SubscriberServiceClient::new(self.channel.clone());
        loop {
            let probe = client
                .list_subscribers(operator_authed(v1::ListSubscribersRequest {
                    page_size: 1,
                    ..Default::default()
                }))
                .await;
            match probe {
                Ok(_) => return Ok(()),
                Err(status) if started.elapsed() > timeout => {
                    bail!("the gRPC API did not answer within {timeout:?}: {status}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
