//! CloudEvents in and out, through a tiny Router that uses the extractor and answers with
//! replies, called in-process and over real loopback sockets.

// A panic is how a test reports failure, so unwrapping is the point here.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tekflux_common::Error;
use tekflux_common::cloudevent::{
    AttributesReader, Correlation, Data, EXT_DELIVERY, EXT_NAMESPACE, EXT_REPO, EXT_SHA,
    EXT_TRACEPARENT, EXT_TRACESTATE, Event, EventBuilder, EventBuilderV10, IncomingEvent, Mode,
    Reply, ReplySink, SinkError, build_reply, event_from_request, no_reply, reply_id, reply_to,
    to_binary,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

const REPLY_TYPE: &str = "dev.tekflux.test.replied.v1";
const REPLY_SOURCE: &str = "/tests/cloudevent";
/// The reply id for `cloudevent-v10-correlated.json`, computed once outside the code under test
/// (UUIDv5 of the length-prefixed source, id and reply type): a redelivery, even to a newer
/// version, must get this same id.
const CORRELATED_REPLY_ID: &str = "b9a06cb4-2183-591b-b06f-9c9e0d207f81";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------------------------------------
// The Router under test

fn app(sink: ReplySink) -> Router {
    Router::new()
        .route("/echo", post(echo))
        .route("/reply", post(reply))
        .route("/ack", post(ack))
        .with_state(sink)
}

/// Answers with the input event unchanged, so a round trip shows what was parsed.
async fn echo(incoming: IncomingEvent) -> Reply {
    Reply(incoming.event)
}

/// Answers with a reply carrying the input's data and correlation, through the sink.
async fn reply(State(sink): State<ReplySink>, incoming: IncomingEvent) -> Result<Response, Error> {
    let mut builder = reply_to(&incoming, REPLY_TYPE, REPLY_SOURCE);
    if let Some(data) = incoming.event.data() {
        let content_type = incoming
            .event
            .datacontenttype()
            .unwrap_or("application/json");
        builder = builder.data(content_type, data.clone());
    }
    sink.deliver(build_reply(builder)?).await
}

async fn ack(incoming: IncomingEvent) -> Response {
    no_reply(StatusCode::OK, json!({ "ignored": incoming.event.ty() }))
}

fn no_sink() -> ReplySink {
    ReplySink::new(None).unwrap()
}

async fn call(router: Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = router.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

fn binary_request(path: &str, event: &Event) -> Request<Body> {
    let (headers, body) = to_binary(event).unwrap();
    let mut request = Request::post(path).body(Body::from(body)).unwrap();
    *request.headers_mut() = headers;
    request
}

fn structured_request(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn raw_request(path: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Body> {
    let mut builder = Request::post(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body)).unwrap()
}

/// Parses a binary-mode response back into an event.
fn reply_event(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Event {
    assert_eq!(
        status,
        StatusCode::OK,
        "body: {}",
        String::from_utf8_lossy(body)
    );
    assert!(
        headers.contains_key("ce-specversion"),
        "not a binary-mode reply: {headers:?}"
    );
    event_from_request(headers, body).unwrap()
}

/// Asserts a JSON error body of the given kind and returns its message.
fn error_message(status: StatusCode, headers: &HeaderMap, body: &Bytes, kind: &str) -> String {
    let content_type = headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["error"], kind, "status {status}, body {body}");
    body["message"].as_str().unwrap().to_owned()
}

fn full_event(data: Data, content_type: &str) -> Event {
    EventBuilderV10::new()
        .id("A234-1234-1234")
        .ty("com.example.someevent")
        .source("https://git.example.com/org/app")
        .subject("refs/heads/feature/ü and 100%")
        .time("2018-04-05T17:31:00.123456789Z")
        .data_with_schema(content_type, "https://example.com/schema.json", data)
        .extension("comexampleext", "value with spaces, \"quotes\" and é")
        .extension("comexampleint", 5i64)
        .extension("comexamplebool", true)
        .build()
        .unwrap()
}

/// Extension values survive binary mode as strings only (headers carry no type), so compare
/// with that in mind.
fn stringify_extensions(event: &Event) -> Event {
    let mut event = event.clone();
    let extensions: Vec<(String, String)> = event
        .iter_extensions()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect();
    for (name, value) in extensions {
        event.set_extension(&name, value);
    }
    event
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[tokio::test]
async fn binary_round_trip_keeps_every_attribute_and_the_data() {
    let cases = [
        (
            full_event(
                Data::Json(json!({"appinfoA": "abc", "n": [1, 2.5]})),
                "application/json",
            ),
            "json",
        ),
        (
            full_event(
                Data::String("plain text ✓".into()),
                "text/plain; charset=utf-8",
            ),
            "text",
        ),
        (
            full_event(
                Data::Binary(vec![0, 159, 146, 150, 255]),
                "application/octet-stream",
            ),
            "binary",
        ),
    ];
    for (event, label) in cases {
        let (status, headers, body) = call(app(no_sink()), binary_request("/echo", &event)).await;
        let back = reply_event(status, &headers, &body);
        assert_eq!(back, stringify_extensions(&event), "{label}");
    }
}

#[tokio::test]
async fn binary_headers_are_percent_encoded_on_the_wire() {
    let event = full_event(Data::String("x".into()), "text/plain");
    let (status, headers, _) = call(app(no_sink()), binary_request("/echo", &event)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["ce-subject"],
        "refs/heads/feature/%C3%BC%20and%20100%25"
    );
    assert_eq!(headers["ce-time"], "2018-04-05T17:31:00.123456789Z");
    assert_eq!(headers["content-type"], "text/plain");
}

#[tokio::test]
async fn structured_round_trip_keeps_every_attribute_and_the_data() {
    let cases = [
        full_event(
            Data::Json(json!({"appinfoB": 123, "c": true})),
            "application/json",
        ),
        full_event(
            Data::String("<much wow=\"xml\"/>".into()),
            "application/xml",
        ),
        full_event(
            Data::Binary(b"\x00\x01binary".to_vec()),
            "application/octet-stream",
        ),
    ];
    for event in cases {
        let body = serde_json::to_vec(&event).unwrap();
        // The binary payload must travel as data_base64 in structured mode.
        if let Some(Data::Binary(_)) = event.data() {
            let raw: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(raw["data_base64"], "AAFiaW5hcnk=");
        }
        let request = structured_request("/echo", "application/cloudevents+json", body);
        let (status, headers, body) = call(app(no_sink()), request).await;
        let back = reply_event(status, &headers, &body);
        assert_eq!(back, stringify_extensions(&event));
    }
}

#[tokio::test]
async fn structured_media_type_is_matched_without_case_or_parameters() {
    let event = full_event(Data::Json(json!({"k": 1})), "application/json");
    let body = serde_json::to_vec(&event).unwrap();
    let request = structured_request("/echo", "Application/CloudEvents+JSON; charset=UTF-8", body);
    let (status, headers, body) = call(app(no_sink()), request).await;
    assert_eq!(reply_event(status, &headers, &body).id(), "A234-1234-1234");
}

#[tokio::test]
async fn spec_version_0_3_is_accepted_in_both_modes() {
    let body = std::fs::read(data_file("cloudevent-v03-structured.json")).unwrap();
    let incoming =
        IncomingEvent::from_parts(&content_type_headers("application/cloudevents+json"), &body)
            .unwrap();
    assert_eq!(incoming.mode, Mode::Structured);
    let event = incoming.event;
    assert_eq!(event.specversion().as_str(), "0.3");
    assert_eq!(event.subject(), Some("build-42"));
    assert_eq!(
        event.dataschema().map(|u| u.as_str()),
        Some("https://example.com/schemas/pipelinerun.json")
    );
    assert_eq!(
        event.data(),
        Some(&Data::Json(
            json!({ "pipelineRun": { "metadata": { "name": "build-42", "namespace": "cicd" } } })
        ))
    );
    // Through the Router in binary mode and back.
    let (status, headers, body) = call(app(no_sink()), binary_request("/echo", &event)).await;
    assert_eq!(headers["ce-specversion"], "0.3");
    assert_eq!(
        headers["ce-schemaurl"],
        "https://example.com/schemas/pipelinerun.json"
    );
    assert_eq!(reply_event(status, &headers, &body), event);
}

#[tokio::test]
async fn hand_written_binary_request_is_parsed_and_decoded() {
    let request = raw_request(
        "/echo",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "1234-1234-1234"),
            ("ce-type", "com.example.someevent"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("ce-subject", "caf%C3%A9%20au%20lait"),
            ("ce-comexampleext", "50%"),
            ("content-type", "application/json; charset=utf-8"),
        ],
        r#"{ "message": "Hello World!" }"#,
    );
    let (status, headers, body) = call(app(no_sink()), request).await;
    let event = reply_event(status, &headers, &body);
    assert_eq!(event.id(), "1234-1234-1234");
    assert_eq!(event.subject(), Some("café au lait"));
    assert_eq!(
        event.datacontenttype(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(event.extension("comexampleext").unwrap().to_string(), "50%");
    assert_eq!(
        event.data(),
        Some(&Data::Json(json!({"message": "Hello World!"})))
    );
}

#[tokio::test]
async fn round_trip_over_a_real_socket() {
    let base = serve(app(no_sink())).await;
    let event = full_event(Data::Json(json!({"over": "tcp"})), "application/json");
    let (headers, body) = to_binary(&event).unwrap();
    let response = test_client()
        .post(format!("{base}/echo"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    assert_eq!(
        reply_event(status, &headers, &body),
        stringify_extensions(&event)
    );

    let response = test_client()
        .post(format!("{base}/echo"))
        .header("content-type", "application/cloudevents-batch+json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_media_type");
}

#[tokio::test]
async fn acknowledgement_without_reply_has_no_ce_headers() {
    let event = full_event(Data::Json(json!({})), "application/json");
    let (status, headers, body) = call(app(no_sink()), binary_request("/ack", &event)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.keys().any(|name| name.as_str().starts_with("ce-")));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, json!({ "ignored": "com.example.someevent" }));
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn bad_input_is_answered_with_a_json_error_naming_the_problem() {
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            structured_request("/echo", "application/cloudevents-batch+json", "[]"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "batch mode",
        ),
        (
            structured_request("/echo", "application/cloudevents+avro", "x"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/cloudevents+avro",
        ),
        (
            structured_request("/echo", "application/json", r#"{"id": "x"}"#),
            StatusCode::BAD_REQUEST,
            "not a CloudEvent",
        ),
        (
            raw_request(
                "/echo",
                &[("ce-id", "1"), ("ce-type", "t"), ("ce-source", "/s")],
                "",
            ),
            StatusCode::BAD_REQUEST,
            "ce-specversion",
        ),
        (
            raw_request(
                "/echo",
                &[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")],
                "",
            ),
            StatusCode::BAD_REQUEST,
            "`source`",
        ),
        (
            raw_request(
                "/echo",
                &[
                    ("ce-specversion", "0.9"),
                    ("ce-id", "1"),
                    ("ce-type", "t"),
                    ("ce-source", "/s"),
                ],
                "",
            ),
            StatusCode::BAD_REQUEST,
            "specversion \"0.9\"",
        ),
        (
            raw_request(
                "/echo",
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-id", "1"),
                    ("ce-type", "t"),
                    ("ce-source", "/s"),
                    ("ce-time", "lunchtime"),
                ],
                "",
            ),
            StatusCode::BAD_REQUEST,
            "ce-time",
        ),
        (
            raw_request(
                "/echo",
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-id", "1"),
                    ("ce-type", "t"),
                    ("ce-source", "/s"),
                    ("content-type", "application/json"),
                ],
                "{not json",
            ),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            raw_request(
                "/echo",
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-id", "1"),
                    ("ce-type", "t"),
                    ("ce-source", "/s"),
                    ("ce-my-ext", "x"),
                ],
                "",
            ),
            StatusCode::BAD_REQUEST,
            "\"my-ext\"",
        ),
        (
            structured_request(
                "/echo",
                "application/cloudevents+json",
                "{\"specversion\": ",
            ),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            structured_request("/echo", "application/cloudevents+json", "[]"),
            StatusCode::BAD_REQUEST,
            "batch",
        ),
        (
            structured_request(
                "/echo",
                "application/cloudevents+json",
                r#"{"specversion": "1.0", "id": "1", "source": "/s"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "`type`",
        ),
    ];
    for (request, expected_status, needle) in cases {
        let (status, headers, body) = call(app(no_sink()), request).await;
        assert_eq!(
            status,
            expected_status,
            "{needle}: {}",
            String::from_utf8_lossy(&body)
        );
        let kind = if expected_status == StatusCode::BAD_REQUEST {
            "bad_request"
        } else {
            "unsupported_media_type"
        };
        let message = error_message(status, &headers, &body, kind);
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Correlation

#[tokio::test]
async fn correlation_extensions_and_trace_context_are_copied_to_the_reply() {
    let body = std::fs::read(data_file("cloudevent-v10-correlated.json")).unwrap();
    for mode in [Mode::Structured, Mode::Binary] {
        let request = match mode {
            Mode::Structured => {
                structured_request("/reply", "application/cloudevents+json", body.clone())
            }
            Mode::Binary => {
                let input: Event = serde_json::from_slice(&body).unwrap();
                binary_request("/reply", &input)
            }
        };
        let (status, headers, reply_body) = call(app(no_sink()), request).await;
        let reply = reply_event(status, &headers, &reply_body);
        let input: Event = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply.ty(), REPLY_TYPE);
        assert_eq!(reply.source(), REPLY_SOURCE);
        assert_eq!(reply.id(), CORRELATED_REPLY_ID, "{mode:?}");
        assert_eq!(reply_id(&input, REPLY_TYPE), CORRELATED_REPLY_ID);
        assert_eq!(reply.data(), input.data());
        assert_eq!(
            Correlation::from_event(&reply),
            Correlation {
                delivery_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
                sha: Some("0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e".into()),
                repo: Some("https://git.example.com/org/app.git".into()),
                namespace: Some("cicd".into()),
                traceparent: Some(TRACEPARENT.into()),
                tracestate: Some("vendor=opaque".into()),
            },
            "{mode:?}"
        );
        for name in [
            EXT_DELIVERY,
            EXT_SHA,
            EXT_REPO,
            EXT_NAMESPACE,
            EXT_TRACEPARENT,
            EXT_TRACESTATE,
        ] {
            assert!(
                headers.contains_key(format!("ce-{name}").as_str()),
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn trace_context_comes_from_the_http_headers_when_the_event_has_none() {
    let header_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let request = raw_request(
        "/reply",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-type", "t"),
            ("ce-source", "/s"),
            ("traceparent", header_parent),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ],
        "",
    );
    let (status, headers, body) = call(app(no_sink()), request).await;
    let reply = reply_event(status, &headers, &body);
    let correlation = Correlation::from_event(&reply);
    assert_eq!(correlation.traceparent.as_deref(), Some(header_parent));
    assert_eq!(
        correlation.tracestate.as_deref(),
        Some("rojo=00f067aa0ba902b7")
    );

    // The event's own trace context wins over the transport's.
    let request = raw_request(
        "/reply",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-type", "t"),
            ("ce-source", "/s"),
            ("ce-traceparent", TRACEPARENT),
            ("traceparent", header_parent),
        ],
        "",
    );
    let (status, headers, body) = call(app(no_sink()), request).await;
    let correlation = Correlation::from_event(&reply_event(status, &headers, &body));
    assert_eq!(correlation.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(correlation.tracestate, None);
}

#[test]
fn stamp_writes_only_known_facts() {
    let mut event = EventBuilderV10::new()
        .id("1")
        .ty("t")
        .source("/s")
        .extension(EXT_SHA, "old")
        .build()
        .unwrap();
    Correlation::default()
        .with_delivery_id("d-1")
        .with_namespace("ns")
        .stamp(&mut event);
    let correlation = Correlation::from_event(&event);
    assert_eq!(correlation.delivery_id.as_deref(), Some("d-1"));
    assert_eq!(correlation.namespace.as_deref(), Some("ns"));
    assert_eq!(correlation.sha.as_deref(), Some("old"));
    assert_eq!(correlation.repo, None);
}

// ---------------------------------------------------------------------------------------------
// K_SINK

type Recorded = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A sink on loopback that records what it receives and answers `status`.
async fn recording_sink(status: StatusCode) -> (String, Recorded) {
    let recorded: Recorded = Arc::default();
    let router = Router::new().route(
        "/sink",
        post({
            let recorded = recorded.clone();
            move |headers: HeaderMap, body: Bytes| async move {
                recorded.lock().unwrap().push((headers, body));
                status
            }
        }),
    );
    let base = serve(router).await;
    (format!("{base}/sink"), recorded)
}

fn sink_to(url: String) -> ReplySink {
    ReplySink::with_client(Some(url), test_client()).unwrap()
}

#[tokio::test]
async fn with_k_sink_the_reply_is_posted_there_and_answered_202() {
    let (url, recorded) = recording_sink(StatusCode::ACCEPTED).await;
    let body = std::fs::read(data_file("cloudevent-v10-correlated.json")).unwrap();
    let input: Event = serde_json::from_slice(&body).unwrap();
    let request = structured_request("/reply", "application/cloudevents+json", body);
    let (status, headers, body) = call(app(sink_to(url.clone())), request).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!headers.keys().any(|name| name.as_str().starts_with("ce-")));
    let summary: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(summary["sink"], url);
    assert_eq!(summary["reply"]["id"], CORRELATED_REPLY_ID);
    assert_eq!(summary["reply"]["type"], REPLY_TYPE);

    let recorded = recorded.lock().unwrap();
    assert_eq!(recorded.len(), 1);
    let (headers, body) = &recorded[0];
    let delivered = event_from_request(headers, body).unwrap();
    assert_eq!(delivered.ty(), REPLY_TYPE);
    assert_eq!(delivered.data(), input.data());
    assert_eq!(
        Correlation::from_event(&delivered),
        Correlation::from_event(&input)
    );
}

#[tokio::test]
async fn a_failing_sink_makes_the_request_fail_with_503() {
    let (url, recorded) = recording_sink(StatusCode::INTERNAL_SERVER_ERROR).await;
    let request = raw_request(
        "/reply",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-type", "t"),
            ("ce-source", "/s"),
        ],
        "",
    );
    let (status, headers, body) = call(app(sink_to(url)), request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = error_message(status, &headers, &body, "unavailable");
    assert!(message.contains("500"), "{message}");
    assert_eq!(recorded.lock().unwrap().len(), 1);

    // Nobody listening at all is the same for the sender: retry later.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sink", closed.local_addr().unwrap());
    drop(closed);
    let request = raw_request(
        "/reply",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "2"),
            ("ce-type", "t"),
            ("ce-source", "/s"),
        ],
        "",
    );
    let (status, headers, body) = call(app(sink_to(url)), request).await;
    error_message(status, &headers, &body, "unavailable");
}

#[test]
fn k_sink_values_are_checked() {
    assert!(ReplySink::new(None).unwrap().target().is_none());
    assert!(
        ReplySink::new(Some(String::new()))
            .unwrap()
            .target()
            .is_none()
    );
    for bad in ["not a url", "ftp://sink.example"] {
        let refused = ReplySink::new(Some(bad.into()));
        assert!(
            matches!(refused, Err(SinkError::InvalidUrl(_))),
            "{bad}: {refused:?}"
        );
    }
    let sink = ReplySink::new(Some(
        "http://broker-ingress.knative-eventing.svc/ns/default".into(),
    ));
    assert_eq!(
        sink.unwrap().target().unwrap().host_str(),
        Some("broker-ingress.knative-eventing.svc")
    );
}

// ---------------------------------------------------------------------------------------------
// Corpus: the CloudEvents conformance material

#[tokio::test]
async fn conformance_valid_events_parse_in_structured_mode() {
    let Some(dir) = conformance_dir() else { return };
    let file = read_json(&dir.join("format-json-valid-events.json"));
    let tests = file["tests"].as_array().unwrap();
    assert!(!tests.is_empty());
    for test in tests {
        let id = test["id"].as_str().unwrap();
        let body = serde_json::to_vec(&test["event"]).unwrap();
        let request = structured_request("/echo", "application/cloudevents+json", body);
        let (status, headers, body) = call(app(no_sink()), request).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{id}: {}",
            String::from_utf8_lossy(&body)
        );
        let event = reply_event(status, &headers, &body);
        assert_eq!(event.id(), test["event"]["id"].as_str().unwrap(), "{id}");
    }
}

#[tokio::test]
async fn a_datacontenttype_that_could_not_be_a_header_is_refused() {
    // In binary mode `datacontenttype` is the `Content-Type` header: what could not be sent
    // that way (found by fuzzing) is refused in structured mode too.
    for (content_type, accepted) in [
        ("application/json; charset=utf-8", true),
        ("application/json; x=\"\u{405}\"", false),
        ("application/json;\u{7f}", false),
    ] {
        let event = json!({
            "specversion": "1.0", "id": "e1", "source": "/s", "type": "t",
            "datacontenttype": content_type, "data": {"a": 1},
        });
        let body = serde_json::to_vec(&event).unwrap();
        let request = structured_request("/echo", "application/cloudevents+json", body);
        let (status, _, body) = call(app(no_sink()), request).await;
        let expected = if accepted {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(
            status,
            expected,
            "{content_type}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test]
async fn conformance_invalid_events_are_answered_400() {
    let Some(dir) = conformance_dir() else { return };
    let file = read_json(&dir.join("format-json-invalid-events.json"));
    let tests = file["tests"].as_array().unwrap();
    assert!(!tests.is_empty());
    for test in tests {
        let id = test["id"].as_str().unwrap();
        let body = serde_json::to_vec(&test["event"]).unwrap();
        let request = structured_request("/echo", "application/cloudevents+json", body);
        let (status, headers, body) = call(app(no_sink()), request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id} was accepted");
        error_message(status, &headers, &body, "bad_request");
    }
}

#[tokio::test]
async fn conformance_batches_are_answered_415() {
    let Some(dir) = conformance_dir() else { return };
    let mut batches = Vec::new();
    for name in [
        "format-json-valid-batches.json",
        "format-json-invalid-batches.json",
    ] {
        let file = read_json(&dir.join(name));
        for test in file["tests"].as_array().unwrap() {
            batches.push(serde_json::to_vec(&test["batch"]).unwrap());
        }
    }
    for name in [
        "spec-json-format-example-batch-empty.json",
        "spec-json-format-example-batch-two-events.json",
    ] {
        batches.push(std::fs::read(dir.join(name)).unwrap());
    }
    assert!(batches.len() > 4);
    for batch in batches {
        let request = structured_request("/echo", "application/cloudevents-batch+json", batch);
        let (status, headers, body) = call(app(no_sink()), request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let message = error_message(status, &headers, &body, "unsupported_media_type");
        assert!(message.contains("batch"), "{message}");
    }
}

#[tokio::test]
async fn spec_json_format_examples() {
    let Some(dir) = conformance_dir() else { return };
    // The spec writes `"... base64 encoded string ..."` as a placeholder: not base64, so 400.
    let placeholder = "spec-json-format-example-binary-data_base64.json";
    let valid = [
        (
            "spec-json-format-example-xml-string-data.json",
            Data::String("<much wow=\"xml\"/>".into()),
        ),
        (
            "spec-json-format-example-json-object-data.json",
            Data::Json(json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true})),
        ),
        (
            "spec-json-format-example-json-number-data.json",
            Data::Json(json!(1.5)),
        ),
        (
            "spec-json-format-example-json-string-data-no-datacontenttype.json",
            Data::Json(json!("I'm just a string")),
        ),
        (
            "spec-json-format-example-data_base64-no-datacontenttype.json",
            Data::Json(json!({"xyz": 123})),
        ),
    ];
    for (name, data) in valid {
        let body = std::fs::read(dir.join(name)).unwrap();
        let request = structured_request("/echo", "application/cloudevents+json", body);
        let (status, headers, body) = call(app(no_sink()), request).await;
        let event = reply_event(status, &headers, &body);
        assert_eq!(event.data(), Some(&data), "{name}");
    }
    let body = std::fs::read(dir.join(placeholder)).unwrap();
    let request = structured_request("/echo", "application/cloudevents+json", body);
    let (status, headers, body) = call(app(no_sink()), request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error_message(status, &headers, &body, "bad_request");
    assert!(message.contains("base64"), "{message}");
}

/// The raw HTTP requests of the conformance feature file, both modes, every example row.
#[tokio::test]
async fn conformance_http_protocol_binding_feature() {
    let Some(dir) = conformance_dir() else { return };
    let text = std::fs::read_to_string(dir.join("features-http-protocol-binding.feature")).unwrap();
    let scenarios = parse_feature(&text);
    assert_eq!(scenarios.len(), 2, "binary and structured scenarios");
    let mut requests = 0;
    for scenario in scenarios {
        for row in &scenario.examples {
            let substitute = |s: &str| {
                row.iter().fold(s.to_owned(), |acc, (k, v)| {
                    acc.replace(&format!("<{k}>"), v)
                })
            };
            let http = substitute(&scenario.request);
            let (head, body) = http.split_once("\n\n").unwrap();
            let mut builder = Request::post("/echo");
            for line in head.lines().skip(1) {
                let (name, value) = line.split_once(':').unwrap();
                // The body was re-indented out of the feature file, so its length changed.
                if !name.eq_ignore_ascii_case("content-length") {
                    builder = builder.header(name.trim(), value.trim());
                }
            }
            let request = builder.body(Body::from(body.to_owned())).unwrap();
            let (status, headers, response_body) = call(app(no_sink()), request).await;
            let event = reply_event(status, &headers, &response_body);
            for (key, value) in &scenario.attributes {
                let expected = substitute(value);
                let actual = match key.as_str() {
                    "id" => event.id().to_owned(),
                    "specversion" => event.specversion().to_string(),
                    "type" => event.ty().to_owned(),
                    "source" => event.source().to_owned(),
                    "time" => event
                        .time()
                        .unwrap()
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    "datacontenttype" => event.datacontenttype().unwrap().to_owned(),
                    other => panic!("attribute {other} not handled by this test"),
                };
                assert_eq!(actual, expected, "{}: {key}", scenario.name);
            }
            let expected: Value = serde_json::from_str(&scenario.data).unwrap();
            assert_eq!(
                event.data(),
                Some(&Data::Json(expected)),
                "{}",
                scenario.name
            );
            requests += 1;
        }
    }
    assert_eq!(requests, 4);
}

#[derive(Debug, Default)]
struct Scenario {
    name: String,
    request: String,
    attributes: Vec<(String, String)>,
    data: String,
    examples: Vec<Vec<(String, String)>>,
}

/// Just enough Gherkin for this file: doc strings, tables and scenario outlines.
fn parse_feature(text: &str) -> Vec<Scenario> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut lines = text.lines().peekable();
    let mut doc_strings = 0;
    let mut in_examples = false;
    let mut example_header: Vec<String> = Vec::new();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("Scenario Outline:") {
            scenarios.push(Scenario {
                name: name.trim().to_owned(),
                ..Default::default()
            });
            doc_strings = 0;
            in_examples = false;
            example_header.clear();
            continue;
        }
        let Some(scenario) = scenarios.last_mut() else {
            continue;
        };
        if trimmed == "\"\"\"" {
            let indent = line.len() - line.trim_start().len();
            let mut block = Vec::new();
            for inner in lines.by_ref() {
                if inner.trim() == "\"\"\"" {
                    break;
                }
                block.push(inner.get(indent..).unwrap_or("").to_owned());
            }
            let block = block.join("\n");
            if doc_strings == 0 {
                scenario.request = block;
            } else {
                scenario.data = block;
            }
            doc_strings += 1;
        } else if trimmed.starts_with("Examples:") {
            in_examples = true;
        } else if trimmed.starts_with('|') {
            let cells: Vec<String> = trimmed
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            if in_examples {
                if example_header.is_empty() {
                    example_header = cells;
                } else {
                    scenario
                        .examples
                        .push(example_header.iter().cloned().zip(cells).collect());
                }
            } else if cells[0] != "key" {
                scenario
                    .attributes
                    .push((cells[0].clone(), cells[1].clone()));
            }
        }
    }
    scenarios
}

// ---------------------------------------------------------------------------------------------
// Support

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn content_type_headers(content_type: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    headers
}

/// The conformance folder of the shared corpus (see `tekflux_testkit::corpus`): panics when the
/// corpus is missing or unreadable; `None`, and the test returns having said so on stderr, only
/// under an explicit `TEKFLUX_CORPUS=skip`.
fn conformance_dir() -> Option<PathBuf> {
    let dir = tekflux_testkit::corpus::corpus_dir("the CloudEvents conformance cases")?
        .join("cloudevents-conformance");
    assert!(dir.is_dir(), "{} is missing from the corpus", dir.display());
    Some(dir)
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Some upstream files start with a byte order mark, which JSON parsers refuse.
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
    serde_json::from_slice(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Serves `router` on a loopback port and returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// A client that never goes through a proxy from the environment, so loopback stays loopback.
fn test_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Which invalid conformance cases the SDK alone accepts, so that the checks of our layer are
/// known to matter (and an SDK upgrade that fixes them shows up here).
#[test]
fn conformance_invalid_events_the_sdk_alone_accepts() {
    let Some(dir) = conformance_dir() else { return };
    let file = read_json(&dir.join("format-json-invalid-events.json"));
    let accepted: Vec<&str> = file["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|test| serde_json::from_value::<Event>(test["event"].clone()).is_ok())
        .map(|test| test["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        accepted,
        [
            "invalidEmptyId",
            "invalidEmptyType",
            "invalidEmptySource",
            "invalidNonRfc2046DataContentType",
            "invalidEmptyDataContentType",
            "invalidEmptySubject",
            "invalidCapitalizedExtension",
            "invalidPunctuatedExtension",
        ]
    );
}
