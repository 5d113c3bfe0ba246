//! CloudEvents in and out: the request extractor, reply events, correlation extensions and
//! delivery of the reply (in the HTTP response, or to `K_SINK`).
//!
//! # Accepted input
//!
//! | mode | how it is recognised | answer |
//! |---|---|---|
//! | binary | a `ce-specversion` header; data in the body, typed by `Content-Type` | parsed |
//! | structured | `Content-Type: application/cloudevents+json` | parsed |
//! | batch | `Content-Type: application/cloudevents-batch+json` | 415 |
//! | other structured formats | `application/cloudevents+<anything but json>` | 415 |
//!
//! Spec versions 1.0 and 0.3 are accepted. Parsing is the SDK's (`cloudevents-sdk` 0.9); this
//! module adds what the SDK leaves out of the spec and answers every failure with a 400 that names
//! the problem:
//! - required attributes must not be empty, nor may `subject` (the SDK accepts `""`);
//! - `datacontenttype` must be an RFC 2046 `type/subtype` (the SDK accepts `"xyz"` and `""`);
//! - extension names must be lowercase ASCII letters and digits (the SDK accepts any JSON key);
//! - binary-mode header values are percent-decoded once, as the HTTP binding requires (the SDK
//!   does not decode), and encoded again on the way out;
//! - binary-mode data with a JSON content type is parsed as JSON (400 when it is not JSON) and
//!   `text/*` data becomes a string, so handlers see the same [`Data`] in both modes.
//!
//! # Correlation extensions
//!
//! Routing facts travel as CloudEvents extension attributes, because Knative Trigger filters
//! cannot see data. [`Correlation`] reads them from the input and stamps them on the reply:
//!
//! | extension | meaning |
//! |---|---|
//! | `tekfluxdelivery` | delivery id of the webhook or event that started the chain |
//! | `tekfluxsha` | commit sha the work is about |
//! | `tekfluxrepo` | repository clone URL |
//! | `tekfluxnamespace` | Kubernetes namespace the work runs in |
//! | `traceparent`, `tracestate` | W3C trace context (CloudEvents distributed-tracing extension), propagated unchanged |
//!
//! When the event carries no `traceparent`, the plain W3C `traceparent`/`tracestate` HTTP headers
//! are used instead (Knative's broker sets them).
//!
//! # Replies
//!
//! [`respond`] answers in binary mode with status 200; [`no_reply`] acknowledges with a JSON
//! summary and no `ce-*` headers, which Knative treats as "no reply event". [`ReplySink`] honours
//! Knative's SinkBinding: with `K_SINK` set the reply is POSTed there and the request answered 202;
//! a failing sink turns into 503 so that the sender retries (the work is idempotent).
//!
//! A reply that is a CDEvent is made by [`cdevent_builder`], which follows the CDEvents
//! CloudEvents binding: the CloudEvent's `id`, `source`, `type`, `subject` and `time` are taken
//! from the CDEvent itself, never set beside it.

mod cdevent;
mod correlation;
mod incoming;
mod oci;
mod outgoing;
mod percent;
mod sink;

pub use cdevent::{CDEVENTS_SPEC_VERSION, cdevent_builder};
pub use cloudevents::{
    AttributesReader, AttributesWriter, Data, Event, EventBuilder, EventBuilderV10,
};
pub use correlation::{
    Correlation, EXT_DELIVERY, EXT_NAMESPACE, EXT_REPO, EXT_SHA, EXT_TRACEPARENT, EXT_TRACESTATE,
};
pub use incoming::{IncomingEvent, Mode, event_from_request};
pub use oci::{is_image_digest, oci_purl, split_image_reference};
pub use outgoing::{
    Reply, build_reply, no_reply, reply_builder, reply_id, reply_to, respond, to_binary,
};
pub use percent::decode_strict as percent_decode_strict;
pub use sink::{ReplySink, SinkError};
