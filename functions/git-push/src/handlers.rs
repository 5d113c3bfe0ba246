//! The HTTP handlers: each reads its input, checks it, asks for a [`crate::plan::Plan`],
//! applies it ([`crate::apply`]) and answers once the runs exist.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tekflux_common::Result;
use tekflux_common::cloudevent::{AttributesReader, IncomingEvent, no_reply};
use tekflux_common::server::{self, DryRunQuery, fields};
use tracing::Span;

use crate::app::AppState;
use crate::apply::apply;
use crate::error::WebhookError;
use crate::providers::{self, Webhook};
use crate::push::{Provider, Push};
use crate::reply::queued_reply;
use crate::signature;
use crate::summary::Summary;

/// `POST /webhooks/{provider}`.
pub(crate) async fn receive_named_webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<DryRunQuery>,
    request: Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let dry_run = query.wanted(&parts.headers)?;
    let provider = parse_provider(&provider)?;
    let request = Span::current();
    handle_webhook(&state, &request, provider, dry_run, &parts.headers, body).await
}

/// `POST /webhooks`: the provider is told by the headers.
pub(crate) async fn receive_detected_webhook(
    State(state): State<AppState>,
    Query(query): Query<DryRunQuery>,
    request: Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let dry_run = query.wanted(&parts.headers)?;
    let Some(provider) = providers::detect(&parts.headers) else {
        state
            .inner
            .metrics
            .rejected
            .inc(&["unknown", "unknown_provider"]);
        return Err(WebhookError::UnknownProvider.into());
    };
    let request = Span::current();
    handle_webhook(&state, &request, provider, dry_run, &parts.headers, body).await
}

/// The provider a `/webhooks/{provider}` path names.
fn parse_provider(name: &str) -> Result<Provider, WebhookError> {
    Provider::from_path_segment(name).ok_or_else(|| WebhookError::UnknownProviderInPath {
        name: name.to_owned(),
    })
}

/// A raw webhook of `provider`: read up to what the provider sends at most
/// ([`Provider::max_webhook_bytes`]), signature checked on the raw bytes, payload read, its
/// pushes planned and applied. The provider and the delivery id go on `request`, the request's span,
/// so every line the request logs carries them (a span of its own would cost every request and
/// not reach the line that logs the outcome).
async fn handle_webhook(
    state: &AppState,
    request: &Span,
    provider: Provider,
    dry_run: bool,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    request.record(fields::PROVIDER, provider.as_str());
    let body = server::read_limited(headers, body, provider.max_webhook_bytes()).await?;
    let body = body.as_ref();
    let metrics = &state.inner.metrics;
    metrics.received.inc(&[provider.as_str()]);
    // The signature is checked on the raw bytes before anything parses them.
    if let Err(error) =
        signature::verify_with(provider, &state.inner.config.providers, headers, body)
    {
        metrics.rejected.inc(&[provider.as_str(), error.kind()]);
        return Err(error.into());
    }
    metrics.verified.inc(&[provider.as_str()]);
    let webhook = providers::parse(provider, headers, body).inspect_err(|error| {
        metrics.rejected.inc(&[provider.as_str(), error.kind()]);
    })?;
    match webhook {
        Webhook::Ping(ping) => Ok((
            StatusCode::OK,
            Json(json!({
                "ping": "pong",
                "provider": provider.as_str(),
                "hookId": ping.hook_id,
                "repository": ping.repo_url,
            })),
        )
            .into_response()),
        Webhook::Ignored { event, reason } => {
            metrics.ignored.inc(&["event"]);
            Ok((
                StatusCode::OK,
                Json(json!({ "ignored": event, "reason": reason })),
            )
                .into_response())
        }
        Webhook::Pushes(pushes) => {
            record_delivery(request, &pushes);
            let summary = process(state, &pushes, dry_run).await?;
            Ok((StatusCode::OK, Json(summary)).into_response())
        }
    }
}

/// Puts the delivery id on the request's span, so every log line of the request carries it.
fn record_delivery(request: &Span, pushes: &[Push]) {
    if let Some(push) = pushes.first() {
        request.record(fields::DELIVERY_ID, push.delivery_id.as_str());
    }
}

/// Plans the pushes and applies the plan.
async fn process(state: &AppState, pushes: &[Push], dry_run: bool) -> Result<Summary> {
    let plan = state.planner().plan(pushes)?;
    Ok(apply(state, plan, dry_run).await?)
}

/// `POST /`: a push CloudEvent from an authenticated sender.
pub(crate) async fn receive_event(
    State(state): State<AppState>,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    incoming: IncomingEvent,
) -> Result<Response> {
    let dry_run = query.wanted(&headers)?;
    // The extractor put the event's id, type and source on the request span already.
    let span = Span::current();
    {
        let metrics = &state.inner.metrics;
        let provider_label = push_provider_label(incoming.event.ty());
        metrics.received.inc(&[provider_label]);
        let webhook = providers::parse_event(&incoming.event).inspect_err(|error| {
            metrics.rejected.inc(&[provider_label, error.kind()]);
        })?;
        let pushes = match webhook {
            Webhook::Pushes(pushes) => pushes,
            Webhook::Ping(_) => {
                return Ok(no_reply(StatusCode::OK, json!({ "ping": "pong" })));
            }
            Webhook::Ignored { event, reason } => {
                metrics.ignored.inc(&["event"]);
                return Ok(no_reply(
                    StatusCode::OK,
                    json!({ "ignored": event, "reason": reason }),
                ));
            }
        };
        record_delivery(&span, &pushes);
        let summary = process(&state, &pushes, dry_run).await?;
        match (summary.runs.first(), pushes.first()) {
            (Some(first), Some(push)) if !summary.dry_run => {
                let reply = queued_reply(&incoming, push, first, &summary)?;
                state.inner.replies.deliver(reply).await
            }
            _ => Ok(no_reply(
                StatusCode::OK,
                serde_json::to_value(&summary).unwrap_or_default(),
            )),
        }
    }
}

/// The provider label for a push CloudEvent, from its type (bounded set, for metrics).
fn push_provider_label(event_type: &str) -> &'static str {
    if event_type.starts_with(providers::knative::GITHUB_PREFIX) {
        Provider::Github.as_str()
    } else if event_type.starts_with(providers::knative::GITLAB_PREFIX)
        || event_type.starts_with(providers::knative::GITLAB_LEGACY_PREFIX)
    {
        Provider::Gitlab.as_str()
    } else if event_type == providers::normalized::EVENT_TYPE {
        "tekflux"
    } else {
        "other"
    }
}
