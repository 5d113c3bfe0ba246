//! The answers release-changed gives: the refusal body, the summaries of inputs that applied
//! nothing (or were dry runs), and the `dev.tekflux.release.applied.v1` reply.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tekflux_common::cloudevent::{Correlation, EventBuilderV10, build_reply, no_reply, oci_purl};
use tekflux_common::error::{ErrorKind, ResponseError};
use tekflux_common::{Error, Result};

use crate::change::Change;
use crate::helm_release::{self};
use crate::releasing::{ChangeEvent, Outcome, Refused, Released};
use crate::target::Target;

pub(crate) fn refused_json(refused: &[Refused]) -> Vec<Value> {
    refused.iter().map(Refused::json).collect()
}

/// The answer to a `POST /` input of which nothing may be released: the first refusal's status
/// (403 or 422) and the JSON error body, with every refusal listed.
pub(crate) fn refusal_response(refused: &[Refused]) -> Response {
    let Some(first) = refused.first() else {
        return Error::Internal("a refusal without a reason".to_owned()).into_response();
    };
    let status = first.refusal.status();
    let message = first.refusal.to_string();
    let error = if status == StatusCode::FORBIDDEN {
        Error::Forbidden(message)
    } else {
        Error::Unprocessable(message)
    };
    let body = json!({
        "error": error.kind(),
        "reason": first.refusal.kind(),
        "message": error.to_string(),
        "refused": refused_json(refused),
    });
    let mut response = (status, axum::Json(body)).into_response();
    // The middleware logs the refusal from these, as it does for any `Error`.
    response.extensions_mut().insert(ErrorKind(error.kind()));
    response
        .extensions_mut()
        .insert(ResponseError(std::sync::Arc::new(error)));
    response
}

impl Released {
    /// The 200 answer without a reply event, for the cases that applied nothing (on
    /// `/webhooks/registry`, refusals too: registries retry anything but a 2xx).
    pub(crate) fn into_summary(self, changes: &[ChangeEvent]) -> Response {
        let ignored = describe_all(changes);
        match self {
            Released::NoRule => no_reply(
                StatusCode::OK,
                json!({"ignored": ignored, "reason": "no release rule matches it"}),
            ),
            Released::Refused(refused) => no_reply(
                StatusCode::OK,
                json!({
                    "ignored": ignored,
                    "reason": "no matching release may be released by it",
                    "refused": refused_json(&refused),
                }),
            ),
            Released::AllStale { outcomes, refused } | Released::Applied { outcomes, refused } => {
                no_reply(
                    StatusCode::OK,
                    json!({
                        "ignored": ignored,
                        "reason": "every matching release already has a newer version",
                        "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
                        "refused": refused_json(&refused),
                    }),
                )
            }
        }
    }
}

/// What a dry run would have applied; no reply event, since nothing changed.
pub(crate) fn dry_run_summary(
    changes: &[ChangeEvent],
    outcomes: &[Outcome],
    refused: &[Refused],
) -> Response {
    no_reply(
        StatusCode::OK,
        json!({
            "dryRun": true,
            "change": describe_all(changes),
            "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
            "refused": refused_json(refused),
        }),
    )
}

pub(crate) fn describe_all(changes: &[ChangeEvent]) -> String {
    changes
        .iter()
        .map(|event| describe(&event.change))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn describe(change: &Change) -> String {
    match change {
        Change::Image(image) => format!("image {}", image.reference()),
        Change::Chart { name, version } => format!("chart {name} {version}"),
        Change::Release { release, .. } => format!("release {release}"),
    }
}

pub(crate) fn outcome_json(outcome: &Outcome) -> Value {
    let target = &outcome.target;
    json!({
        "namespace": target.namespace,
        "name": target.name,
        "apiVersion": helm_release::api_resource(target.api).api_version,
        "version": target.version,
        "previous": outcome.previous,
        "applied": !outcome.stale,
    })
}

/// The artifact a change is about, as a package URL: the image's, or the chart's.
pub(crate) fn artifact(change: &Change, first: &Target) -> String {
    match change {
        Change::Image(image) => {
            let version = image
                .digest
                .as_deref()
                .or(image.tag.as_deref())
                .unwrap_or_default();
            oci_purl(&image.repository, version, image.tag.as_deref())
        }
        Change::Chart { name, version } => format!("pkg:helm/{name}@{version}"),
        Change::Release { .. } => format!("pkg:helm/{}@{}", first.name, first.version),
    }
}

/// `dev.tekflux.release.applied.v1`: the desired state changed; whether the release then
/// upgraded is Flux's to tell (see [`crate::flux`]). `subject` is the first applied release,
/// `data.releases` lists every release the request touched.
pub(crate) fn applied_reply(
    builder: EventBuilderV10,
    correlation: Correlation,
    changes: &[ChangeEvent],
    outcomes: &[Outcome],
    refused: &[Refused],
) -> Result<cloudevents::Event> {
    let first = outcomes
        .iter()
        .find(|outcome| !outcome.stale)
        .map(|outcome| &outcome.target)
        .ok_or_else(|| Error::Internal("a reply without an applied release".to_owned()))?;
    let first_artifact = changes.first().map(|event| artifact(&event.change, first));
    let mut data = json!({
        "change": describe_all(changes),
        "artifact": first_artifact,
        "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
    });
    if !refused.is_empty() {
        data["refused"] = json!(refused_json(refused));
    }
    let builder = builder
        .subject(first.reference())
        .data("application/json", data);
    let mut reply = build_reply(builder)?;
    correlation
        .with_namespace(first.namespace.clone())
        .stamp(&mut reply);
    Ok(reply)
}
