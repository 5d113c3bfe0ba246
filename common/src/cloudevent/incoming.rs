//! Turning an HTTP request into a validated CloudEvent.

use super::correlation::Correlation;
use super::percent;
use crate::error::{Error, Result};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use cloudevents::event::{EventBuilderError, ExtensionValue};
use cloudevents::message::Error as MessageError;
use cloudevents::{AttributesReader, AttributesWriter, Data, Event};
use serde::Deserialize;
use serde_json::Value;

const STRUCTURED_JSON: &str = "application/cloudevents+json";
const BATCH_JSON: &str = "application/cloudevents-batch+json";
const STRUCTURED_PREFIX: &str = "application/cloudevents+";
const SPEC_VERSION_HEADER: &str = "ce-specversion";

/// How the event arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `ce-*` headers, data in the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

/// An axum extractor for a CloudEvent in binary or structured mode, with its correlation facts.
///
/// The body is read with axum's `Bytes` extractor, so the server's body limit applies. Every
/// rejection is the common [`Error`] as JSON (400 or 415), except a body over the limit, which
/// is answered 413 by axum's own rejection (the limit is not known here).
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    /// The parsed and validated event.
    pub event: Event,
    /// Correlation facts of the event, with the trace context from the HTTP headers when the
    /// event carries none.
    pub correlation: Correlation,
    /// Binary or structured.
    pub mode: Mode,
}

impl IncomingEvent {
    /// Parses a request that has already been read: headers and the whole body.
    pub fn from_parts(headers: &HeaderMap, body: &[u8]) -> Result<Self> {
        let mode = detect_mode(headers)?;
        let event = match mode {
            Mode::Binary => parse_binary(headers, body)?,
            Mode::Structured => parse_structured(body)?,
        };
        validate(&event)?;
        let correlation = Correlation::from_request(&event, headers);
        Ok(IncomingEvent {
            event,
            correlation,
            mode,
        })
    }

    /// The event's data as JSON, whichever way it was carried (a JSON value, a string or
    /// bytes holding JSON).
    ///
    /// # Errors
    /// [`Error::BadRequest`] when there is no data (`missing` says what it should have held)
    /// or it is not JSON.
    pub fn data_json(&self, missing: &str) -> Result<Value> {
        let parsed = match self.event.data() {
            Some(Data::Json(value)) => return Ok(value.clone()),
            Some(Data::String(text)) => serde_json::from_str(text),
            Some(Data::Binary(bytes)) => serde_json::from_slice(bytes),
            None => {
                return Err(Error::BadRequest(format!(
                    "the event has no data; {missing}"
                )));
            }
        };
        parsed.map_err(|error| Error::bad_request("the event data is not JSON", error))
    }

    /// Records the event's id, type and source, and the delivery id it carries, on the current
    /// span: the request span of [`crate::server::router`], which declares these fields empty,
    /// so every later line of the request has them. The extractor calls this, so every function
    /// gets them without a line of its own.
    pub fn record_on_current_span(&self) {
        use crate::server::fields;
        let span = tracing::Span::current();
        span.record(fields::CE_ID, self.event.id());
        span.record(fields::CE_TYPE, self.event.ty());
        span.record(fields::CE_SOURCE, self.event.source().as_str());
        if let Some(delivery) = self.correlation.delivery_id.as_deref() {
            span.record(fields::DELIVERY_ID, delivery);
        }
    }

    /// A span carrying the event's id, type and source and the delivery id, for `Instrument`.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "cloudevent",
            ce_id = %self.event.id(),
            ce_type = %self.event.ty(),
            ce_source = %self.event.source(),
            delivery_id = self.correlation.delivery_id.as_deref().unwrap_or(""),
        )
    }
}

/// Parses a CloudEvent from request headers and body, in binary or structured mode.
pub fn event_from_request(headers: &HeaderMap, body: &[u8]) -> Result<Event> {
    IncomingEvent::from_parts(headers, body).map(|incoming| incoming.event)
}

impl<S> FromRequest<S> for IncomingEvent
where
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Unsupported modes are refused before the body is read.
        detect_mode(req.headers()).map_err(IntoResponse::into_response)?;
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                rejection.into_response()
            } else {
                Error::BadRequest(format!("could not read the request body: {rejection}"))
                    .into_response()
            }
        })?;
        let incoming =
            IncomingEvent::from_parts(&headers, &body).map_err(IntoResponse::into_response)?;
        incoming.record_on_current_span();
        Ok(incoming)
    }
}

fn media_type(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        Error::BadRequest("the Content-Type header is not printable ASCII".to_owned())
    })?;
    Ok(Some(essence(value)))
}

/// The `type/subtype` of a media type, lowercased, without parameters.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn detect_mode(headers: &HeaderMap) -> Result<Mode> {
    match media_type(headers)?.as_deref() {
        Some(BATCH_JSON) => {
            return Err(Error::UnsupportedMediaType(format!(
                "batch mode ({BATCH_JSON}) is not supported: send one event per request, in \
                 binary mode or as {STRUCTURED_JSON}"
            )));
        }
        Some(STRUCTURED_JSON) => return Ok(Mode::Structured),
        Some(other) if other.starts_with(STRUCTURED_PREFIX) => {
            return Err(Error::UnsupportedMediaType(format!(
                "structured mode with the event format {other} is not supported: use \
                 {STRUCTURED_JSON} or binary mode"
            )));
        }
        _ => {}
    }
    if headers.contains_key(SPEC_VERSION_HEADER) {
        return Ok(Mode::Binary);
    }
    if headers.keys().any(|name| name.as_str().starts_with("ce-")) {
        return Err(Error::BadRequest(
            "binary-mode CloudEvent without the ce-specversion header".to_owned(),
        ));
    }
    Err(Error::BadRequest(format!(
        "not a CloudEvent: expected ce-specversion and the other ce-* headers (binary mode) or \
         Content-Type {STRUCTURED_JSON} (structured mode)"
    )))
}

fn parse_structured(body: &[u8]) -> Result<Event> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| Error::bad_request("structured-mode body is not valid JSON", err))?;
    let map = match value {
        Value::Object(map) => map,
        Value::Array(_) => {
            return Err(Error::BadRequest(format!(
                "structured-mode body is a JSON array, which is a batch: batches are not \
                 supported, send one event as a JSON object with Content-Type {STRUCTURED_JSON}"
            )));
        }
        _ => {
            return Err(Error::BadRequest(
                "structured-mode body must be a JSON object".to_owned(),
            ));
        }
    };
    // Checked here for a clearer message than the SDK's serde error.
    match map.get("specversion") {
        None | Some(Value::Null) => {
            return Err(Error::BadRequest(
                "missing required attribute `specversion`".to_owned(),
            ));
        }
        Some(Value::String(v)) if v == "1.0" || v == "0.3" => {}
        Some(Value::String(v)) => return Err(unknown_spec_version(v)),
        Some(_) => {
            return Err(Error::BadRequest(
                "attribute `specversion` must be a string".to_owned(),
            ));
        }
    }
    let has_base64 = map.contains_key("data_base64");
    Event::deserialize(Value::Object(map)).map_err(|err| {
        let err = err.to_string();
        // The SDK reports bad base64 as a bare "decode error", which does not say where.
        if has_base64 && err.starts_with("decode error") {
            Error::BadRequest(format!(
                "attribute `data_base64` is not valid base64: {err}"
            ))
        } else {
            Error::BadRequest(format!("invalid CloudEvent: {err}"))
        }
    })
}

fn unknown_spec_version(version: &str) -> Error {
    Error::BadRequest(format!(
        "unsupported specversion {version:?}: supported are \"1.0\" and \"0.3\""
    ))
}

fn parse_binary(headers: &HeaderMap, body: &[u8]) -> Result<Event> {
    let mut event = cloudevents::binding::http::to_event(headers, body.to_vec())
        .map_err(|err| binary_error(headers, err))?;
    decode_attributes(&mut event)?;
    type_binary_data(&mut event)?;
    Ok(event)
}

fn binary_error(headers: &HeaderMap, err: MessageError) -> Error {
    match err {
        MessageError::UnknownSpecVersion { .. } => unknown_spec_version(
            headers
                .get(SPEC_VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(not ASCII)"),
        ),
        MessageError::EventBuilderError {
            source: EventBuilderError::MissingRequiredAttribute { attribute_name },
        } => Error::BadRequest(format!(
            "missing required attribute `{attribute_name}` (header ce-{attribute_name})"
        )),
        MessageError::ParseTimeError { source } => Error::BadRequest(format!(
            "header ce-time is not an RFC 3339 timestamp: {source}"
        )),
        MessageError::ParseUrlError { source } => Error::BadRequest(format!(
            "header ce-dataschema (ce-schemaurl) is not an absolute URI: {source}"
        )),
        other => Error::BadRequest(format!("invalid binary-mode CloudEvent: {other}")),
    }
}

/// Undoes the binding's percent-encoding of string attributes, which the SDK leaves in place.
/// `dataschema` is a URL and `time` a timestamp: both were parsed from the raw header and need
/// no decoding in practice, because neither contains a `%` the sender had to add.
fn decode_attributes(event: &mut Event) -> Result<()> {
    let decode = |name: &str, value: &str| -> Result<Option<String>> {
        if !value.contains('%') {
            return Ok(None);
        }
        percent::decode(value)
            .map(|decoded| Some(decoded.into_owned()))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "header ce-{name} is not UTF-8 after percent-decoding"
                ))
            })
    };
    if let Some(v) = decode("id", event.id())? {
        event.set_id(v);
    }
    if let Some(v) = decode("type", event.ty())? {
        event.set_type(v);
    }
    if let Some(v) = decode("source", event.source())? {
        event.set_source(v);
    }
    if let Some(subject) = event.subject().map(str::to_owned)
        && let Some(v) = decode("subject", &subject)?
    {
        event.set_subject(Some(v));
    }
    let mut decoded = Vec::new();
    for (name, value) in event.iter_extensions() {
        if let ExtensionValue::String(s) = value
            && let Some(v) = decode(name, s)?
        {
            decoded.push((name.to_owned(), v));
        }
    }
    for (name, value) in decoded {
        event.set_extension(&name, value);
    }
    Ok(())
}

/// Gives binary-mode data the type structured mode would give it: JSON for JSON media types,
/// a string for text and XML, bytes otherwise.
fn type_binary_data(event: &mut Event) -> Result<()> {
    let Some(content_type) = event.datacontenttype().map(essence) else {
        return Ok(());
    };
    let Some(Data::Binary(bytes)) = event.data() else {
        return Ok(());
    };
    let typed = if is_json(&content_type) {
        let value: Value = serde_json::from_slice(bytes).map_err(|err| {
            Error::bad_request(
                format!("the body is declared as {content_type} but is not valid JSON"),
                err,
            )
        })?;
        Data::Json(value)
    } else if is_text(&content_type) {
        match std::str::from_utf8(bytes) {
            Ok(text) => Data::String(text.to_owned()),
            // Text in another charset stays bytes for the handler to decode.
            Err(_) => return Ok(()),
        }
    } else {
        return Ok(());
    };
    event.set_data_unchecked(typed);
    Ok(())
}

fn is_text(essence: &str) -> bool {
    essence.starts_with("text/") || essence == "application/xml" || essence.ends_with("+xml")
}

fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// What the spec requires and the SDK does not check.
fn validate(event: &Event) -> Result<()> {
    for (name, value) in [
        ("id", event.id()),
        ("source", event.source().as_str()),
        ("type", event.ty()),
    ] {
        if value.is_empty() {
            return Err(Error::BadRequest(format!(
                "attribute `{name}` must not be empty"
            )));
        }
    }
    if event.subject() == Some("") {
        return Err(Error::BadRequest(
            "attribute `subject` must not be empty when present".to_owned(),
        ));
    }
    if let Some(content_type) = event.datacontenttype()
        && !is_media_type(content_type)
    {
        return Err(Error::BadRequest(format!(
            "attribute `datacontenttype` {content_type:?} is not an RFC 2046 media type \
             (type/subtype, parameters in visible ASCII)"
        )));
    }
    for (name, _) in event.iter_extensions() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(Error::BadRequest(format!(
                "extension attribute name {name:?} is invalid: names are lowercase ASCII letters \
                 and digits only"
            )));
        }
    }
    Ok(())
}

fn is_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    // The parameters too must be what an HTTP header holds (visible ASCII, spaces and tabs):
    // in binary mode the attribute is the `Content-Type` header, and an event that could not
    // be sent on that way must not be accepted.
    let header_safe = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    is_token(kind) && is_token(subtype) && header_safe
}

/// An RFC 7230 token, the grammar of both halves of a media type.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
