//! The CloudEvent a push CloudEvent is answered with: a CDEvents `pipelineRun queued` for the
//! first run created, which Knative routes onward.

use cdevents_sdk::latest::pipelinerun_queued;
use cdevents_sdk::{CDEvent, Subject};
use serde_json::json;
use tekflux_common::cloudevent::{IncomingEvent, build_reply, cdevent_builder};
use tekflux_common::run_contract::{TEKTON_GROUP, TEKTON_VERSION};

use crate::error::DeliveryError;
use crate::push::Push;
use crate::summary::{RunSummary, Summary};

/// The CDEvents `pipelineRun queued` reply for the first run of a push CloudEvent; the other
/// runs are listed in the event's custom data.
pub(crate) fn queued_reply(
    incoming: &IncomingEvent,
    push: &Push,
    first: &RunSummary,
    summary: &Summary,
) -> Result<cloudevents::Event, DeliveryError> {
    let subject_source = format!(
        "/apis/{TEKTON_GROUP}/{TEKTON_VERSION}/namespaces/{}/{}",
        first.namespace,
        first.kind.to_ascii_lowercase()
    );
    let content = pipelinerun_queued::Content {
        pipeline_name: Some(first.target.clone()),
        uri: None,
    };
    fn internal(what: &'static str) -> impl Fn(cdevents_sdk::Error) -> DeliveryError {
        move |error| DeliveryError::Reply { what, error }
    }
    let subject = Subject::from(content)
        .with_id(
            first
                .name
                .as_str()
                .try_into()
                .map_err(internal("run name is not a CDEvents id"))?,
        )
        .with_source(
            subject_source
                .as_str()
                .try_into()
                .map_err(internal("bad subject source"))?,
        );
    let cdevent = CDEvent::from(subject)
        .with_source(
            push.repo_url
                .as_str()
                .try_into()
                .map_err(internal("repository URL is not a URI"))?,
        )
        .with_custom_data(json!({ "runs": summary.runs }));
    // The id a redelivery of the push gets again, so that consumers can deduplicate.
    let id = tekflux_common::cloudevent::reply_id(&incoming.event, cdevent.ty());
    let cdevent = cdevent.with_id(id.as_str().try_into().map_err(internal("bad CDEvent id"))?);
    // The CloudEvent's id, source, type, subject and time are the CDEvent's (the binding).
    let builder = incoming
        .correlation
        .stamp_builder(cdevent_builder(&cdevent)?);
    let mut reply = build_reply(builder)?;
    incoming
        .correlation
        .clone()
        .with_delivery_id(push.delivery_id.clone())
        .with_sha(push.after.clone())
        .with_repo(push.repo_url.clone())
        .with_namespace(first.namespace.clone())
        .stamp(&mut reply);
    Ok(reply)
}
