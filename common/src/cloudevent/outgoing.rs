//! Reply events and how they are put on the wire.

use super::incoming::IncomingEvent;
use super::percent;
use crate::error::{Error, Result};
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use cloudevents::event::AttributeValue;
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use uuid::Uuid;

/// Namespace of reply ids, so that they cannot collide with v5 ids made for other purposes.
const REPLY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_4c1e_1f7a_4f0e_9a57_3b0e_7c2a_51d4);

/// A builder for a reply event (spec 1.0) with a fresh random id and the current time.
pub fn reply_builder(event_type: &str, source: &str) -> EventBuilderV10 {
    EventBuilderV10::new()
        .id(Uuid::new_v4().to_string())
        .ty(event_type)
        .source(source)
        .time(Utc::now())
}

/// A builder for the reply to `input`: its id is derived from the input (so a redelivery
/// produces the same reply id and consumers can deduplicate) and the input's correlation
/// facts are stamped on it.
pub fn reply_to(input: &IncomingEvent, event_type: &str, source: &str) -> EventBuilderV10 {
    let builder = EventBuilderV10::new()
        .id(reply_id(&input.event, event_type))
        .ty(event_type)
        .source(source)
        .time(Utc::now());
    input.correlation.stamp_builder(builder)
}

/// The deterministic id of the reply of type `event_type` to `input`, from the input's source
/// and id (which the spec makes unique together).
pub fn reply_id(input: &Event, event_type: &str) -> String {
    // Length prefixes keep the fields from running into each other whatever they contain.
    let (source, id) = (input.source(), input.id());
    let name = format!("{}:{source}{}:{id}{event_type}", source.len(), id.len());
    Uuid::new_v5(&REPLY_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Finishes a reply builder; an incomplete reply is a bug on our side (500).
pub fn build_reply(builder: EventBuilderV10) -> Result<Event> {
    builder
        .build()
        .map_err(|err| Error::Internal(format!("reply event is incomplete: {err}")))
}

/// Serialises `event` in binary mode: `ce-*` headers (percent-encoded as the HTTP binding
/// requires), `Content-Type` from `datacontenttype`, and the data as the body.
pub fn to_binary(event: &Event) -> Result<(HeaderMap, Bytes)> {
    let mut headers = HeaderMap::new();
    for (name, value) in event.iter_attributes() {
        if name == "datacontenttype" {
            let value = HeaderValue::from_str(&value.to_string()).map_err(|_| {
                Error::Internal(format!(
                    "datacontenttype {value} is not a valid header value"
                ))
            })?;
            headers.insert(header::CONTENT_TYPE, value);
            continue;
        }
        let text = match value {
            // RFC 3339 with `Z`, as the spec's examples write it.
            AttributeValue::Time(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            other => other.to_string(),
        };
        insert_ce(&mut headers, name, &text)?;
    }
    for (name, value) in event.iter_extensions() {
        insert_ce(&mut headers, name, &value.to_string())?;
    }
    let body = match event.data() {
        None => Bytes::new(),
        Some(Data::Binary(bytes)) => Bytes::from(bytes.clone()),
        Some(Data::String(text)) => Bytes::from(text.clone()),
        Some(Data::Json(value)) => {
            if event.datacontenttype().is_none() {
                // JSON data without a content type is JSON by the spec's default.
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Bytes::from(
                serde_json::to_vec(value)
                    .map_err(|err| Error::internal("could not serialise the reply data", err))?,
            )
        }
    };
    Ok((headers, body))
}

fn insert_ce(headers: &mut HeaderMap, name: &str, value: &str) -> Result<()> {
    let header_name = HeaderName::try_from(format!("ce-{name}"))
        .map_err(|_| Error::Internal(format!("attribute name {name:?} cannot be a header")))?;
    let header_value = HeaderValue::from_str(&percent::encode(value))
        .map_err(|_| Error::Internal(format!("attribute {name} cannot be a header value")))?;
    headers.insert(header_name, header_value);
    Ok(())
}

/// Answers with `event` in binary mode and status 200, which Knative routes as the reply.
pub fn respond(event: Event) -> Response {
    match to_binary(&event) {
        Ok((headers, body)) => (StatusCode::OK, headers, body).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Acknowledges without a reply event: a JSON summary and no `ce-*` headers, which Knative
/// treats as "delivered, nothing to route". Meant for 2xx statuses.
pub fn no_reply(status: StatusCode, summary: serde_json::Value) -> Response {
    (status, Json(summary)).into_response()
}

/// A reply event answered in the HTTP response, in binary mode with status 200.
#[derive(Debug, Clone)]
pub struct Reply(pub Event);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        respond(self.0)
    }
}
