//! Server scaffolding every function runs on: health, readiness, metrics, request tracing, body
//! limit, request timeout, panic safety, graceful shutdown, and the AWS Lambda front door.
//!
//! A function's `main` builds its own routes and hands them to [`router`], which adds `/healthz`,
//! `/readyz` and `/metrics` and wraps everything in the shared middleware; [`run`] then serves the
//! result over HTTP on `$PORT`, or through the Lambda Runtime API when it runs on AWS Lambda.
//!
//! Middleware, outermost first, all in one layer (one layer's boxing per request, not five's):
//! 1. observe: a tracing span per request (method, route template, `traceparent`, and empty
//!    CloudEvent fields that the CloudEvent extractor fills), request metrics, and the one log
//!    line for a server error or refusal, with the error's message and cause;
//! 2. panic catcher: a panicking handler is answered 500 with the JSON error body;
//! 3. timeout: answered 503 with the JSON error body (see [`router`] for why 503);
//! 4. body limit: enforced before any extractor runs, answered 413 with the JSON error body
//!    (`server.bodyLimit` here; routes whose senders send less add their own, see [`limit_body`],
//!    and a handler that learns its limit from the request reads with [`read_limited`]);
//! 5. load shedding: a cap on requests in progress and on body bytes held, answered 503 with
//!    `Retry-After` (Knative and the git providers retry) rather than running out of memory.

use crate::metrics;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use std::time::Duration;

mod dry_run;
#[cfg(feature = "lambda")]
pub mod lambda;
mod layers;
mod readiness;
mod serving;
mod trace_context;

pub use dry_run::{DRY_RUN_HEADER, DryRunQuery};
pub use layers::{KUBERNETES_OBJECT_EVENT_BYTES, NOTIFICATION_BYTES, limit_body, read_limited};
pub use readiness::{Readiness, ServerState};
pub use serving::{BoundServer, ServeError, bind, run, serve, shutdown_signal};
pub use trace_context::TraceParent;

use layers::{Expected, Middleware, Shedding, serve_request};

/// Environment variable that AWS Lambda sets to the Runtime API's `host:port`.
pub const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// Names of the span fields filled with `Span::current().record(…)`: the CloudEvent ones by
/// the [`crate::cloudevent::IncomingEvent`] extractor for every function, the delivery id and
/// the sender by the code that learns them.
///
/// They are declared empty on the request span so that recording them later works; code inside
/// a span of its own (`#[instrument]`) must record them on the request span, not its own.
pub mod fields {
    /// The CloudEvent `id` attribute.
    pub const CE_ID: &str = "ce_id";
    /// The CloudEvent `type` attribute.
    pub const CE_TYPE: &str = "ce_type";
    /// The CloudEvent `source` attribute.
    pub const CE_SOURCE: &str = "ce_source";
    /// The git provider's delivery id (`X-GitHub-Delivery`, …) or the derived one.
    pub const DELIVERY_ID: &str = "delivery_id";
    /// Who sent a CloudEvent: an OIDC subject, `events.token`, or unauthenticated.
    pub const SENDER: &str = "sender";
    /// The git provider a webhook came from (`github`, `gitlab`, …).
    pub const PROVIDER: &str = "provider";
}

/// Adds `/healthz`, `/readyz` and `/metrics` to the function's routes and wraps all of them in
/// the shared middleware (see the module docs for the order).
///
/// The request timeout is answered `503 Service Unavailable` with the JSON error body, not 408:
/// Knative retries both, but 408 says the *client* was too slow to send its request and invites
/// proxies to close the connection, while our timeout means a dependency (Kubernetes, S3) was
/// slow, which is what 503 ("try again later") says. Keep `request_timeout_seconds` below the
/// pod's termination grace period and Knative's own revision timeout.
///
/// Panics like [`Router::merge`] when `function_routes` already has one of the three paths.
pub fn router(function_routes: Router, state: ServerState) -> Router {
    let shared = Middleware {
        shedding: Shedding::new(&state.settings, &state.metrics),
        metrics: state.metrics.clone(),
        timeout: Duration::from_secs(state.settings.request_timeout_seconds),
        body_limit: state.settings.body_limit,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(function_routes)
        // `Router::layer` wraps every route and the fallback after routing, which is what puts
        // `MatchedPath` in reach of the metrics. Our limit replaces axum's 2 MB default, which
        // would otherwise reject bodies that the configured limit allows.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(shared, serve_request))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ServerState>) -> Response {
    if state.readiness.is_ready() {
        let limited = state.readiness.limits();
        let body = if limited.is_empty() {
            serde_json::json!({ "status": "ready" })
        } else {
            serde_json::json!({ "status": "ready", "limited": limited })
        };
        axum::Json(body).into_response()
    } else {
        let body = serde_json::json!({
            "error": "not_ready",
            "message": "the function is still building its clients",
        });
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        response.extensions_mut().insert(Expected);
        response
    }
}

async fn metrics_text(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
