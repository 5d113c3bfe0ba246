//! The Lambda front door for real: the router served by `lambda_http` in a child process, driven
//! through the Lambda Runtime API emulator with API Gateway HTTP API v2 / Function URL events.
//!
//! `lambda_runtime` reads its settings only from the process environment, so the function runs
//! as a child process (this test binary, re-run with [`CHILD`] set) with the variables set on
//! the child's command: the parent's own environment is never modified.

#![cfg(feature = "lambda")]
#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use std::process::Stdio;
use tekflux_common::config::ServerSettings;
use tekflux_common::server::{self, ServerState};
use tekflux_testkit::lambda_runtime::LambdaRuntimeEmulator;

/// Set on the child process only; tells [`function_url_cloudevent_is_answered_by_the_router`]
/// to act as the function instead of driving it.
const CHILD: &str = "TEKFLUX_TEST_LAMBDA_CHILD";

/// The one test of this binary's name, so that the child process it re-runs is this same test.
const TEST: &str = "function_url_cloudevent_is_answered_by_the_router";

const LIMIT: usize = 256;

/// Echoes what it saw of the binary-mode CloudEvent, as a function's `POST /` would.
fn routes() -> Router {
    Router::new().route(
        "/",
        post(|headers: HeaderMap, body: Bytes| async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (
                StatusCode::ACCEPTED,
                [("ce-id", format!("reply-to-{}", header("ce-id")))],
                axum::Json(json!({
                    "sawCeId": header("ce-id"),
                    "sawCeType": header("ce-type"),
                    "data": data,
                })),
            )
        }),
    )
}

/// The function side, run in the child process: serves the router through the Lambda Runtime
/// API named by the child's environment until the parent kills it.
fn serve_as_the_function() {
    let settings = ServerSettings {
        body_limit: LIMIT,
        ..ServerSettings::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let state = ServerState::new(settings.clone());
        state.readiness.set_ready();
        let app = server::router(routes(), state);
        // Exactly what a function's main does; the Runtime API variable selects Lambda.
        server::run(app, &settings, |name| std::env::var(name).ok())
            .await
            .unwrap();
    });
}

fn function_url_event(body: &str) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": "abc123.lambda-url.eu-west-1.on.aws",
            "ce-specversion": "1.0",
            "ce-id": "delivery-42",
            "ce-type": "dev.tekflux.push.v1",
            "ce-source": "https://git.example.com/org/repo"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.eu-west-1.on.aws",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "tekflux-test"
            },
            "requestId": "request-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2025:00:00:00 +0000",
            "timeEpoch": 1735689600000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

fn body_json(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

/// One test in two processes: the parent drives the emulator and asserts; the child (this
/// binary re-run with only this test selected and [`CHILD`] set) is the function. So no
/// helper counts as a test of its own.
#[test]
fn function_url_cloudevent_is_answered_by_the_router() {
    if std::env::var_os(CHILD).is_some() {
        serve_as_the_function();
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(drive_the_function());
}

async fn drive_the_function() {
    let emulator = LambdaRuntimeEmulator::start().await.unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env(server::LAMBDA_RUNTIME_API, emulator.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "tekflux-test")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let response = emulator
        .invoke(function_url_event(r#"{"ref":"refs/heads/main"}"#))
        .await
        .unwrap();
    assert_eq!(response["statusCode"], 202, "{response}");
    assert_eq!(
        response["headers"]["ce-id"], "reply-to-delivery-42",
        "{response}"
    );
    assert_eq!(
        response["headers"]["content-type"], "application/json",
        "{response}"
    );
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    assert_eq!(
        body_json(&response),
        json!({
            "sawCeId": "delivery-42",
            "sawCeType": "dev.tekflux.push.v1",
            "data": { "ref": "refs/heads/main" },
        })
    );

    // The shared middleware runs on Lambda too: the body limit answers with our JSON error.
    let oversized = format!(r#"{{"padding":"{}"}}"#, "x".repeat(LIMIT * 2));
    let response = emulator
        .invoke(function_url_event(&oversized))
        .await
        .unwrap();
    assert_eq!(response["statusCode"], 413, "{response}");
    assert_eq!(body_json(&response)["error"], "payload_too_large");

    assert!(emulator.init_errors().is_empty());
    child.kill().await.unwrap();
}
