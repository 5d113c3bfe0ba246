//! CDEvents on the wire, by the CDEvents CloudEvents binding.

use crate::error::{Error, Result};
use cdevents_sdk::CDEvent;
use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};

/// The CDEvents spec release tekflux's CDEvents follow and claim in `context.specversion`.
///
/// cdevents-sdk 0.4 writes `0.5.0`; the event versions tekflux emits are those of the v0.5.1
/// release, whose published schemas the tests validate every reply against, so the replies claim
/// the release they are checked against.
pub const CDEVENTS_SPEC_VERSION: &str = "0.5.1";

/// The CloudEvent that carries `cdevent`, as the CDEvents CloudEvents binding requires: `id`,
/// `source`, `type`, `subject` and `time` are the CDEvent's `context.id`, `context.source`,
/// `context.type`, `subject.id` and `context.timestamp`, and the data is the whole CDEvent as
/// `application/json`. Set those on the CDEvent, not on the CloudEvent.
///
/// # Errors
/// [`Error::Internal`] when the CDEvent cannot be serialised (a bug).
pub fn cdevent_builder(cdevent: &CDEvent) -> Result<EventBuilderV10> {
    let timestamp = cdevent.timestamp();
    let time = DateTime::<Utc>::from_timestamp(timestamp.unix_timestamp(), timestamp.nanosecond())
        .ok_or_else(|| {
            Error::Internal(format!("the CDEvent timestamp {timestamp} is out of range"))
        })?;
    let mut data = serde_json::to_value(cdevent)
        .map_err(|error| Error::internal("cannot serialise the CDEvent", error))?;
    data["context"]["specversion"] = CDEVENTS_SPEC_VERSION.into();
    Ok(EventBuilderV10::new()
        .id(cdevent.id().as_str())
        .ty(cdevent.ty())
        .source(cdevent.source().as_str())
        .subject(cdevent.subject().id().as_str())
        .time(time)
        .data("application/json", data))
}
