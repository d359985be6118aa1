//! The ingest's HTTP side: receivers monitoring tools post their alerts to.
//!
//! - `POST /v1/alerts/alertmanager`: Prometheus Alertmanager's webhook (payload version 4),
//!   turned into incident events by `tocsin-alerts` under the operator's rules
//!   (`TOCSIN_ALERT_RULES`), and recorded through the same path as a gRPC publish.
//! - `POST /v1/alerts/grafana`: Grafana alerting's webhook contact point (the same shape,
//!   version 1), the same way.
//! - `GET /healthz`.
//!
//! Callers authenticate as on gRPC, with `Authorization: Bearer <token>` (Alertmanager's
//! `http_config.authorization.credentials`); the token's name is the events' publisher.
//!
//! | request | answer |
//! |---|---|
//! | recorded, or a repeat of a notification already recorded | 200 `{"incident_id", "event", "duplicate"}` |
//! | an opening under a `hold` rule: kept as a draft for an operator | 200 `{"held", "notifications"}` |
//! | resolved before its draft was published | 200 `{"withdrawn", "draft_was"}` |
//! | nothing for customers (no public rule matches, nothing open to resolve) | 200 `{"ignored": reason}` |
//! | no or unknown token | 401 |
//! | no alert rules configured | 404, saying which setting |
//! | not a notification of the route's source and version | 400 |
//! | refused by the incident's rules (a component outside the catalogue) | 422 |
//! | a concurrent notification about the same group won, or PostgreSQL is unavailable | 503: Alertmanager retries |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use time::OffsetDateTime;
use tocsin_alerts::alertmanager::Source;
use tocsin_alerts::{Decision, Mapping, Notification};
use tonic::Code;
use tonic::metadata::MetadataMap;
use tracing::{info, instrument, warn};

use crate::auth::Authenticator;
use crate::service::IncidentApi;

#[derive(Clone)]
struct Receivers {
    api: IncidentApi,
    authenticator: Authenticator,
    mapping: Option<Arc<Mapping>>,
}

/// The routes, ready to serve.
pub(crate) fn router(
    api: IncidentApi,
    authenticator: Authenticator,
    mapping: Option<Arc<Mapping>>,
) -> Router {
    Router::new()
        .route("/v1/alerts/alertmanager", post(alertmanager))
        .route("/v1/alerts/grafana", post(grafana))
        .route("/healthz", get(|| async { "ok" }))
        .route_layer(axum::middleware::from_fn(
            tocsin_runtime::requests::http_metrics,
        ))
        .with_state(Receivers {
            api,
            authenticator,
            mapping,
        })
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, serde_json::json!({ "error": message.into() }))
}

/// A gRPC status from the shared publish path, as the HTTP status a sender acts on.
fn from_status(status: &tonic::Status) -> Response {
    let code = match status.code() {
        Code::InvalidArgument | Code::NotFound => StatusCode::UNPROCESSABLE_ENTITY,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::AlreadyExists => StatusCode::CONFLICT,
        // Another notification about the group got there first: a retry finds its incident.
        Code::FailedPrecondition | Code::Aborted | Code::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, status.message())
}

async fn alertmanager(
    State(receivers): State<Receivers>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(receivers, headers, body, Source::Alertmanager).await
}

async fn grafana(State(receivers): State<Receivers>, headers: HeaderMap, body: Bytes) -> Response {
    receive(receivers, headers, body, Source::Grafana).await
}

#[instrument(skip_all, fields(source = ?source, group_key, status))]
async fn receive(
    receivers: Receivers,
    headers: HeaderMap,
    body: Bytes,
    source: Source,
) -> Response {
    let caller = match receivers
        .authenticator
        .authenticate(&MetadataMap::from_headers(headers))
    {
        Ok(caller) => caller,
        Err(status) => return from_status(&status),
    };
    let Some(mapping) = &receivers.mapping else {
        return error(
            StatusCode::NOT_FOUND,
            "no alert rules are configured: set TOCSIN_ALERT_RULES to a rules file",
        );
    };
    let notification = match Notification::parse_from(&body, source) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let span = tracing::Span::current();
    span.record("group_key", notification.group_key.as_str());
    span.record("status", notification.status.as_str());
    let current = match receivers
        .api
        .incident(tocsin_alerts::incident_id(&notification))
        .await
    {
        Ok(current) => current,
        Err(status) => return from_status(&status),
    };
    let now = OffsetDateTime::now_utc();
    let incident_id = tocsin_alerts::incident_id(&notification);
    let (request, hold) = match tocsin_alerts::decide(&notification, mapping, current.as_ref(), now)
    {
        Decision::Ignore(reason) => {
            // Resolved before an operator published its draft: the occurrence is over.
            if notification.status == "resolved" && current.is_none() {
                match receivers.api.end_draft(incident_id).await {
                    Ok(Some(state)) => {
                        info!(%incident_id, state, "the alert resolved; its draft is withdrawn");
                        return answer(
                            StatusCode::OK,
                            serde_json::json!({
                                "withdrawn": incident_id.to_string(),
                                "draft_was": state,
                            }),
                        );
                    }
                    Ok(None) => {}
                    Err(status) => return from_status(&status),
                }
            }
            info!(reason, "alert notification ignored");
            return answer(StatusCode::OK, serde_json::json!({ "ignored": reason }));
        }
        Decision::Publish(request) => (request, false),
        Decision::Hold(request) => (request, true),
    };
    let publish = match (*request).validate(now) {
        Ok(publish) => publish,
        Err(e) => {
            warn!(error = %e, "an alert notification made an event the log refuses");
            return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        }
    };
    if hold {
        return match receivers.api.hold_draft(&caller.name, &publish).await {
            Ok(Some(draft)) => {
                info!(%incident_id, notifications = draft.notifications, "alert held as a draft");
                metrics::counter!("tocsin_alert_drafts_total").increment(1);
                answer(
                    StatusCode::OK,
                    serde_json::json!({
                        "held": incident_id.to_string(),
                        "notifications": draft.notifications,
                    }),
                )
            }
            Ok(None) => answer(
                StatusCode::OK,
                serde_json::json!({ "ignored": "an operator discarded this alert's draft" }),
            ),
            Err(status) => from_status(&status),
        };
    }
    match receivers.api.publish(&caller.name, publish, now).await {
        Ok(appended) => answer(
            StatusCode::OK,
            serde_json::json!({
                "incident_id": appended.event.incident_id.to_string(),
                "event": appended.event.change.kind.as_str(),
                "version": appended.event.version,
                "duplicate": appended.duplicate,
            }),
        ),
        Err(status) => from_status(&status),
    }
}
