//! release-changed: takes "a new artifact or version exists" events and server-side-applies the
//! Flux HelmRelease (or Helm Operator HelmRelease).
//!
//! Applying releases (a later issue) is not built yet. Events it will act on are answered 503, so
//! the Broker retries them and finally hands them to its dead-letter sink: nothing is lost while
//! the function is incomplete.

use axum::Router;
use axum::response::Response;
use axum::routing::post;
use tekflux_common::cloudevent::{AttributesReader, IncomingEvent};
use tekflux_common::{Error, Result};

/// Event types release-changed acts on.
pub const ACCEPTED_TYPES: [&str; 2] = [
    "dev.cdevents.artifact.published.0.3.0",
    "dev.tekflux.release.changed.v1",
];

/// What release-changed needs to answer requests.
#[derive(Debug, Clone, Default)]
pub struct AppState {}

/// The function's routes: `POST /` takes artifact and release CloudEvents.
pub fn app(state: AppState) -> Router {
    Router::new().route("/", post(receive)).with_state(state)
}

async fn receive(incoming: IncomingEvent) -> Result<Response> {
    let event_type = incoming.event.ty().to_owned();
    if ACCEPTED_TYPES.contains(&event_type.as_str()) {
        return Err(Error::Unavailable(format!(
            "{event_type} is recognised, but applying releases is not available in this version; \
             the event will be retried"
        )));
    }
    Err(Error::BadRequest(format!(
        "unsupported event type {event_type:?}; release-changed takes {}",
        ACCEPTED_TYPES.join(", ")
    )))
}

/// Builds the function's routes the way a `main` does.
pub async fn routes_from_startup(_startup: &tekflux_common::startup::Startup) -> Router {
    app(AppState::default())
}
