//! run-complete's answers by event type: non-terminal Tekton events are acknowledged, terminal
//! ones are kept for retry (503) while storage is not configured, others refused.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

async fn send(event_type: &str) -> (StatusCode, serde_json::Value) {
    send_as_tekton_does(
        "cicd",
        &[
            ("ce-id", "0b1c7a0e-6f1f-4b3a-9d52-3a1b2c3d4e5f"),
            ("ce-type", event_type),
            (
                "ce-source",
                "/apis/tekton.dev/v1beta1/namespaces/cicd/TaskRun/build-1",
            ),
            ("ce-subject", "build-1"),
        ],
        r#"{"taskRun":{"metadata":{"name":"build-1","namespace":"cicd","uid":"u-1"}},"pipelineRun":{"metadata":{"name":"build-1","namespace":"cicd","uid":"u-1"}}}"#.into(),
    )
    .await
}

/// A binary-mode CloudEvent with `attributes` and a JSON `body`, to run-complete serving
/// `namespace` without storage.
async fn send_as_tekton_does(
    namespace: &str,
    attributes: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::post("/")
        .header("ce-specversion", "1.0")
        .header("content-type", "application/json");
    for (name, value) in attributes {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body)).unwrap();
    // The event's namespace is served, so what answers is the missing storage.
    let config = tekflux_common::config::Config::from_yaml(
        // These tests are about event types; who may send is tested in trust.rs.
        &format!("namespace: {namespace}\nevents:\n  insecure: true\n"),
        "test.yaml",
        &tekflux_common::config::Env::new(),
    )
    .unwrap();
    let state = tekflux_run_complete::AppState::new(
        &config,
        None,
        None,
        tekflux_common::cloudevent::ReplySink::new(None).unwrap(),
        &tekflux_common::metrics::Metrics::new(),
    );
    let response = tekflux_run_complete::app(state)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Tekton's documented example, with the attributes docs/events.md shows for it (in the shared
/// corpus), sent through the app: a condition change while running, acknowledged and ignored.
#[tokio::test]
async fn tektons_documented_event_is_acknowledged_through_the_app() {
    let body = tekflux_testkit::corpus::read_corpus(
        "tekton-cloudevents/taskrun-unknown.tekton-docs-current.json",
    );
    let ty = "dev.tekton.event.taskrun.unknown.v1";
    let (status, answer) = send_as_tekton_does(
        "default",
        &[
            ("ce-id", "77f78ae7-ff6d-4e39-9d05-b9a0b7850527"),
            (
                "ce-source",
                "/apis/tekton.dev/v1beta1/namespaces/default/taskruns/curl-run-6gplk",
            ),
            ("ce-subject", "curl-run-6gplk"),
            ("ce-time", "2021-01-29T14:47:58.157819Z"),
            ("ce-type", ty),
        ],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ignored"], ty);
}

#[tokio::test]
async fn non_terminal_tekton_events_are_acknowledged_and_ignored() {
    for ty in [
        "dev.tekton.event.taskrun.started.v1",
        "dev.tekton.event.taskrun.running.v1",
        "dev.tekton.event.pipelinerun.queued.v1",
        "dev.tekton.event.pipelinerun.unknown.v1",
    ] {
        let (status, body) = send(ty).await;
        assert_eq!(status, StatusCode::OK, "{ty}");
        assert_eq!(body["ignored"], ty);
    }
}

#[tokio::test]
async fn terminal_events_are_kept_for_retry_while_storage_is_not_configured() {
    for ty in tekflux_run_complete::TERMINAL_TYPES {
        let (status, body) = send(ty).await;
        // 503 is retried by the Broker and then dead-lettered: the event is not lost.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ty}");
        assert_eq!(body["error"], "unavailable");
    }
}

#[tokio::test]
async fn other_event_types_are_refused_without_retry() {
    let (status, body) = send("dev.knative.source.github.push").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("dev.tekton.event")
    );
}

/// Tekton's own example event (docs/events.md, in the shared corpus): the run it names is
/// found, and its run object reads as run-complete needs it (the API server's copy has the same
/// fields, in v1 shape).
#[tokio::test]
async fn tektons_documented_event_is_read() {
    use tekflux_run_complete::tekton::{FinishedRun, Outcome, RunKind};
    use tekflux_run_complete::verify::RunReference;

    let body = tekflux_testkit::corpus::read_corpus(
        "tekton-cloudevents/taskrun-unknown.tekton-docs-current.json",
    );
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let reference = RunReference::from_event(RunKind::TaskRun, &data).unwrap();
    assert_eq!(
        (reference.namespace.as_str(), reference.name.as_str()),
        ("default", "curl-run-6gplk")
    );
    assert_eq!(reference.uid, "4ccb4f01-3ecc-4eb4-87e1-76f04efeee5c");
    let run =
        FinishedRun::from_object(RunKind::TaskRun, Outcome::Succeeded, &data["taskRun"]).unwrap();
    assert_eq!(run.name, "curl-run-6gplk");
    assert_eq!(run.namespace, "default");
    assert_eq!(run.uid, "4ccb4f01-3ecc-4eb4-87e1-76f04efeee5c");
    assert_eq!(run.pod_name.as_deref(), Some("curl-run-6gplk-pod"));
    assert_eq!(run.steps.len(), 1);
    assert_eq!(run.steps[0].container, "step-curl");
    assert_eq!(run.parent_pipeline_run(), None);
}
