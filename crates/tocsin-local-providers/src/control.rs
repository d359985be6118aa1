//! The HTTP control API every server serves: `/_control/messages`, `/_control/summary`,
//! `/_control/faults`. The demo and the benchmark run the binary as a separate process and
//! inspect it through these routes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::fault::{FaultRule, Faults};
use crate::inbox::{Inbox, Record, Summary};

struct ControlState<T> {
    inbox: Arc<Inbox<T>>,
    faults: Faults,
}

impl<T> Clone for ControlState<T> {
    fn clone(&self) -> Self {
        Self {
            inbox: self.inbox.clone(),
            faults: self.faults.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

/// One rule or a list of rules, so `curl -d '{"kind":"hang"}'` works as well as a plan.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(FaultRule),
    Many(Vec<FaultRule>),
}

pub(crate) fn routes<T: Record>(inbox: Arc<Inbox<T>>, faults: Faults) -> Router {
    Router::new()
        .route(
            "/_control/messages",
            get(messages::<T>).delete(clear_messages::<T>),
        )
        .route("/_control/summary", get(summary::<T>))
        .route(
            "/_control/faults",
            get(list_faults::<T>)
                .post(add_faults::<T>)
                .delete(clear_faults::<T>),
        )
        .with_state(ControlState { inbox, faults })
}

async fn messages<T: Record>(
    State(state): State<ControlState<T>>,
    Query(page): Query<PageQuery>,
) -> Json<Vec<T>> {
    Json(
        state
            .inbox
            .page(page.offset, page.limit.unwrap_or(usize::MAX)),
    )
}

async fn clear_messages<T: Record>(State(state): State<ControlState<T>>) -> StatusCode {
    state.inbox.clear();
    StatusCode::NO_CONTENT
}

async fn summary<T: Record>(State(state): State<ControlState<T>>) -> Json<Summary> {
    Json(state.inbox.summary())
}

async fn list_faults<T: Record>(State(state): State<ControlState<T>>) -> Json<Vec<FaultRule>> {
    Json(state.faults.rules())
}

async fn add_faults<T: Record>(
    State(state): State<ControlState<T>>,
    Json(rules): Json<OneOrMany>,
) -> StatusCode {
    let rules = match rules {
        OneOrMany::One(rule) => vec![rule],
        OneOrMany::Many(rules) => rules,
    };
    tracing::info!(rules = rules.len(), "fault plan extended");
    state.faults.add(rules);
    StatusCode::NO_CONTENT
}

async fn clear_faults<T: Record>(State(state): State<ControlState<T>>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}
