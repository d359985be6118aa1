//! The `tocsin.v1.OperationsService` handlers: rebuilding projections and republishing the
//! log, each streaming its progress.
//!
//! The work runs in its own task, so a caller that goes away (a closed terminal, a lost
//! connection) never leaves a rebuild half done; the stream only reports. Intermediate
//! progress is dropped when the caller reads slowly; the final counts are always sent.

use std::pin::Pin;

use futures::Stream;
use tocsin_bus::Bus;
use tocsin_proto::v1::{self, operations_service_server::OperationsService};
use tocsin_store::{RebuildReport, Store};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, error, info, instrument};

use crate::relay::{self, RepublishReport};
use crate::status::status;

type ProgressStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OperationsApi {
    store: Store,
    bus: Bus,
}

impl OperationsApi {
    pub fn new(store: Store, bus: Bus) -> Self {
        Self { store, bus }
    }
}

fn rebuild_progress(report: RebuildReport, total_events: u64, done: bool) -> v1::RebuildProgress {
    v1::RebuildProgress {
        events: report.events,
        incidents: report.incidents,
        drifted: report.drifted,
        total_events,
        done,
    }
}

fn republish_progress(
    report: RepublishReport,
    total_events: u64,
    done: bool,
) -> v1::RepublishProgress {
    v1::RepublishProgress {
        events: report.events,
        last_position: report.last_position.unwrap_or(0),
        total_events,
        done,
    }
}

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    type RebuildProjectionsStream = ProgressStream<v1::RebuildProgress>;
    type RepublishEventsStream = ProgressStream<v1::RepublishProgress>;

    #[instrument(skip_all, fields(dry_run = request.get_ref().dry_run))]
    async fn rebuild_projections(
        &self,
        request: Request<v1::RebuildProjectionsRequest>,
    ) -> Result<Response<Self::RebuildProjectionsStream>, Status> {
        let dry_run = request.into_inner().dry_run;
        let total = self.store.count_events_from(1).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(
            async move {
                let _ = tx.try_send(Ok(rebuild_progress(RebuildReport::default(), total, false)));
                let reporter = tx.clone();
                let result = store
                    .rebuild_projections_reporting(dry_run, move |report| {
                        let _ = reporter.try_send(Ok(rebuild_progress(report, total, false)));
                    })
                    .await;
                let last = match result {
                    Ok(report) => {
                        info!(?report, dry_run, "rebuild requested over gRPC finished");
                        Ok(rebuild_progress(report, total, true))
                    }
                    Err(e) => {
                        error!(error = %e, "rebuild requested over gRPC failed");
                        Err(status(e))
                    }
                };
                let _ = tx.send(last).await;
            }
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(from_position = request.get_ref().from_position))]
    async fn republish_events(
        &self,
        request: Request<v1::RepublishEventsRequest>,
    ) -> Result<Response<Self::RepublishEventsStream>, Status> {
        let from_position = request.into_inner().from_position;
        if from_position < 0 {
            return Err(Status::invalid_argument(format!(
                "from_position: {from_position} is negative; log positions start at 1"
            )));
        }
        let from_position = from_position.max(1);
        let total = self
            .store
            .count_events_from(from_position)
            .await
            .map_err(status)?;
        let (tx, rx) = mpsc::channel(16);
        let (store, bus) = (self.store.clone(), self.bus.clone());
        tokio::spawn(
            async move {
                let start = RepublishReport::default();
                let _ = tx.try_send(Ok(republish_progress(start, total, false)));
                let reporter = tx.clone();
                let result =
                    relay::republish_reporting(&store, &bus, from_position, move |report| {
                        let _ = reporter.try_send(Ok(republish_progress(report, total, false)));
                    })
                    .await;
                let last = match result {
                    Ok(report) => {
                        info!(?report, "republish requested over gRPC finished");
                        Ok(republish_progress(report, total, true))
                    }
                    Err(relay::RelayError::Store(e)) => Err(status(e)),
                    Err(relay::RelayError::Bus(e)) => {
                        error!(error = %e, "republish requested over gRPC failed");
                        Err(Status::unavailable(
                            "JetStream is unavailable; nothing is lost, run the republish again",
                        ))
                    }
                };
                let _ = tx.send(last).await;
            }
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
