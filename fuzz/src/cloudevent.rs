//! CloudEvents as the functions receive them: binary mode (attributes in `ce-*` headers, built
//! from a structured input) and structured mode (the input is the body).

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tekflux_common::cloudevent::{AttributesReader, Data, Event, IncomingEvent, to_binary};
use tekflux_git_push::providers::{self, normalized};

use crate::webhook::check_webhook;

/// Event types git-push parses, so that decoded events reach its push parsers.
const TYPES: &[&str] = &[
    normalized::EVENT_TYPE,
    "dev.knative.source.github.push",
    "dev.knative.source.github.ping",
    "dev.knative.sources.gitlab.push",
    "dev.knative.sources.gitlab.tag_push",
    "dev.knative.sources.gitlabsource.Push Hook",
    "dev.tekton.event.pipelinerun.successful.v1",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/octet-stream",
    "application/xml",
];

/// A header value: one of the usual ones, or any bytes.
#[derive(Arbitrary, Debug)]
pub enum Text {
    /// An entry of the list the field picks from (index modulo its length).
    Known(u8),
    /// Anything; dropped when it is not a valid header value.
    Raw(Vec<u8>),
}

impl Text {
    fn pick(&self, known: &[&str]) -> Vec<u8> {
        match self {
            Text::Known(i) => known[usize::from(*i) % known.len()].as_bytes().to_vec(),
            Text::Raw(bytes) => bytes.clone(),
        }
    }
}

/// A binary-mode request.
#[derive(Arbitrary, Debug)]
pub struct BinaryRequest {
    pub specversion: Option<Text>,
    pub id: Option<Text>,
    pub source: Option<Text>,
    pub ty: Option<Text>,
    pub subject: Option<Text>,
    pub time: Option<Text>,
    pub dataschema: Option<Text>,
    pub content_type: Option<Text>,
    /// `ce-<name>` headers, and W3C trace headers when the name is `traceparent` or `tracestate`.
    pub extensions: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl BinaryRequest {
    /// The request's headers and body.
    pub fn into_parts(self) -> (HeaderMap, Vec<u8>) {
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: Vec<u8>| {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                headers.append(name, value);
            }
        };
        let fields = [
            (
                "ce-specversion",
                &self.specversion,
                &["1.0", "0.3", "1.1"][..],
            ),
            ("ce-id", &self.id, &["A234-1234-1234", "%41%zz", ""][..]),
            (
                "ce-source",
                &self.source,
                &["https://github.com/acme/shop", "/tekton/ns", "%2F%"][..],
            ),
            ("ce-type", &self.ty, TYPES),
            ("ce-subject", &self.subject, &["refs/heads/main", ""][..]),
            (
                "ce-time",
                &self.time,
                &[
                    "2024-05-01T12:00:00Z",
                    "2024-05-01T12:00:00.123456789+02:00",
                ][..],
            ),
            (
                "ce-dataschema",
                &self.dataschema,
                &["https://example.com/schema.json", "urn:x"][..],
            ),
            (
                header::CONTENT_TYPE.as_str(),
                &self.content_type,
                CONTENT_TYPES,
            ),
        ];
        for (name, text, known) in fields {
            if let Some(text) = text {
                put(name, text.pick(known));
            }
        }
        for (name, value) in self.extensions {
            if name == "traceparent" || name == "tracestate" {
                put(&name, value.clone());
            }
            put(&format!("ce-{name}"), value);
        }
        (headers, self.body)
    }
}

/// Decodes the request; what decodes must hold the spec's rules, survive our own binary encoding
/// unchanged, and go through git-push's event parser without a panic.
pub fn check(headers: &HeaderMap, body: &[u8]) {
    let Ok(incoming) = IncomingEvent::from_parts(headers, body) else {
        return;
    };
    let event = &incoming.event;
    assert!(!event.id().is_empty() && !event.source().is_empty() && !event.ty().is_empty());
    let _ = incoming.data_json("fuzz");
    if let Ok(webhook) = providers::parse_event(event) {
        check_webhook(&webhook, None, event.ty() == normalized::EVENT_TYPE);
    }
    // `to_binary` is how events leave a function: what was accepted must read back the same.
    if let Ok((headers, body)) = to_binary(event)
        && !json_data_left_untyped(event)
        && !data_is_a_cloudevent(event)
    {
        let again = IncomingEvent::from_parts(&headers, &body)
            .unwrap_or_else(|e| panic!("our binary encoding of {event:?} is refused: {e}"));
        assert_eq!(attributes(event), attributes(&again.event), "{headers:?}");
    }
}

/// Known gap, left out: binary mode turns data declared as JSON (tekflux's rule: the lowercased
/// media type without parameters) into a JSON value or refuses it, structured mode does not: a
/// `data_base64`, or a string under a type the SDK's case-sensitive test does not take for JSON
/// (`application/Json`), stays bytes or a string, unchecked. `to_binary` sends those as the raw
/// body, which binary mode then refuses when it is not JSON. docs/fuzzing.md has the details.
fn json_data_left_untyped(event: &Event) -> bool {
    let Some(content_type) = event.datacontenttype() else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json =
        essence == "application/json" || essence == "text/json" || essence.ends_with("+json");
    json && matches!(event.data(), Some(Data::String(_) | Data::Binary(_)))
}

/// Left out: data whose type is itself a CloudEvents format cannot go in binary mode, where
/// `Content-Type: application/cloudevents+…` tells the receiver the request is structured
/// (the HTTP binding's own rule).
fn data_is_a_cloudevent(event: &Event) -> bool {
    event.datacontenttype().is_some_and(|content_type| {
        content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/cloudevents")
    })
}

/// The attributes that must survive encoding, as text.
fn attributes(event: &Event) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = event
        .iter_extensions()
        .map(|(name, value)| (format!("ext:{name}"), value.to_string()))
        .collect();
    map.insert("id".into(), event.id().to_owned());
    map.insert("source".into(), event.source().to_string());
    map.insert("type".into(), event.ty().to_owned());
    map.insert("specversion".into(), event.specversion().to_string());
    if let Some(subject) = event.subject() {
        map.insert("subject".into(), subject.to_owned());
    }
    if let Some(time) = event.time() {
        map.insert("time".into(), time.to_rfc3339());
    }
    // Known gap, left out: `to_binary` percent-encodes `dataschema` but decoding does not undo
    // it (see `decode_attributes`), so a URL holding `%` or a space comes back changed. tekflux
    // sends no `dataschema` today; docs/fuzzing.md has the details.
    if let Some(schema) = event.dataschema().map(ToString::to_string)
        && schema
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'"')
    {
        map.insert("dataschema".into(), schema);
    }
    map
}
