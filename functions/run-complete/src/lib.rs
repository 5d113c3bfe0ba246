//! run-complete: takes Tekton's CloudEvents when a run finishes, archives the run's workspace and
//! logs to S3/MinIO and frees the volume.
//!
//! This version classifies Tekton's events: the non-terminal ones (`queued`, `started`,
//! `running`, `unknown`) are acknowledged and ignored, as the event vocabulary in DESIGN.md says.
//! Archiving (issue 4) is not built yet, so terminal events are answered 503: the Broker retries
//! them and finally hands them to its dead-letter sink, so nothing is lost while the function is
//! incomplete.

pub mod archive;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use tekflux_common::cloudevent::{AttributesReader, IncomingEvent, no_reply};
use tekflux_common::{Error, Result};

/// Tekton event types that mark a finished run, and so an archive to write.
pub const TERMINAL_TYPES: [&str; 4] = [
    "dev.tekton.event.taskrun.successful.v1",
    "dev.tekton.event.taskrun.failed.v1",
    "dev.tekton.event.pipelinerun.successful.v1",
    "dev.tekton.event.pipelinerun.failed.v1",
];

/// Prefix of every Tekton event type.
const TEKTON_TYPE_PREFIX: &str = "dev.tekton.event.";

/// What run-complete needs to answer requests.
#[derive(Debug, Clone, Default)]
pub struct AppState {}

/// The function's routes: `POST /` takes Tekton CloudEvents.
pub fn app(state: AppState) -> Router {
    Router::new().route("/", post(receive)).with_state(state)
}

async fn receive(incoming: IncomingEvent) -> Result<Response> {
    let event_type = incoming.event.ty().to_owned();
    if TERMINAL_TYPES.contains(&event_type.as_str()) {
        return Err(Error::Unavailable(format!(
            "{event_type} is recognised, but archiving runs is not available in this version; \
             the event will be retried"
        )));
    }
    if event_type.starts_with(TEKTON_TYPE_PREFIX) {
        return Ok(no_reply(
            StatusCode::OK,
            serde_json::json!({
                "ignored": event_type,
                "reason": "only successful and failed runs are archived",
            }),
        ));
    }
    Err(Error::BadRequest(format!(
        "unsupported event type {event_type:?}; run-complete takes Tekton's dev.tekton.event.* events"
    )))
}

/// Builds the function's routes the way a `main` does.
pub async fn routes_from_startup(_startup: &tekflux_common::startup::Startup) -> Router {
    app(AppState::default())
}
