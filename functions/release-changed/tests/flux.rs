//! Flux notification-controller events on `POST /webhooks/flux`: signed as a `generic-hmac`
//! Provider signs them, answered with the CloudEvent for what became of the release.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env};
use tekflux_common::metrics::Metrics;
use tekflux_common::webhook_auth::hmac_sha256_hex;
use tekflux_release_changed::{AppState, app};
use tekflux_testkit::cdevents::{CdeventsSpec, Checked};
use tekflux_testkit::corpus::read_corpus;
use tower::ServiceExt;

const TOKEN: &str = "flux-provider-token";

fn state(flux: &str) -> AppState {
    let config = Config::from_yaml(
        &format!("namespace: cicd\nproviders:\n  flux: {flux}\n"),
        "test.yaml",
        &Env::new().with("FLUX_TOKEN", TOKEN),
    )
    .unwrap();
    AppState::new(
        &config,
        None,
        ReplySink::new(None).unwrap(),
        &Metrics::new(),
    )
}

fn sign(body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(TOKEN.as_bytes(), body))
}

async fn post(
    state: &AppState,
    body: &[u8],
    signature: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::post("/webhooks/flux")
        .header("content-type", "application/json")
        .header("gotk-component", "helm-controller");
    if let Some(signature) = signature {
        request = request.header("x-signature", signature);
    }
    let response = app(state.clone())
        .oneshot(request.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    tekflux_testkit::answer::answer(response).await
}

fn helm_event(reason: &str, severity: &str, message: &str) -> Vec<u8> {
    json!({
        "involvedObject": {
            "kind": "HelmRelease", "namespace": "cicd", "name": "api-launcher",
            "uid": "0b7c4f9e-3d1a-4c55-9a0e-2f6b8d1e7c33", "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "resourceVersion": "4242",
        },
        "severity": severity,
        "timestamp": "2026-11-24T06:20:00Z",
        "message": message,
        "reason": reason,
        "metadata": {"revision": "0.3.0"},
        "reportingController": "helm-controller",
        "reportingInstance": "helm-controller-7cdc7874f8-9qpft",
    })
    .to_string()
    .into_bytes()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn the_recorded_helm_controller_event_becomes_service_upgraded() {
    let state = state("{ secret: env:FLUX_TOKEN }");
    // An old helm-controller's event, as captured: reason `info`, the outcome in the message.
    let body = read_corpus(
        "flux-notification/generic-webhook-body.helmrelease.weave-gitops-rfc-0003.json",
    );
    let (status, headers, reply) = post(&state, &body, Some(&sign(&body))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        header(&headers, "ce-type"),
        "dev.cdevents.service.upgraded.0.3.0"
    );
    assert_eq!(
        header(&headers, "ce-source"),
        "/apis/helm.toolkit.fluxcd.io/v2beta1/namespaces/flux-system/helmreleases/metallb"
    );
    assert_eq!(header(&headers, "ce-subject"), "flux-system/metallb");
    assert_eq!(header(&headers, "ce-tekfluxnamespace"), "flux-system");
    assert_eq!(header(&headers, "ce-time"), "2022-09-13T16:01:01Z");
    assert_eq!(reply["subject"]["id"], "flux-system/metallb");
    assert_eq!(
        reply["subject"]["content"]["artifactId"],
        "pkg:helm/metallb@0.13.4"
    );
    assert_eq!(
        reply["subject"]["content"]["environment"]["id"],
        "flux-system"
    );
    assert_eq!(reply["customData"]["message"], "Helm upgrade succeeded");

    // Flux retries a failed delivery: the same event gets the same reply id.
    let (_, again, _) = post(&state, &body, Some(&sign(&body))).await;
    assert_eq!(header(&again, "ce-id"), header(&headers, "ce-id"));
}

/// Each Flux outcome with a reply: reason, severity, message and the reply's type.
const OUTCOMES: [(&str, &str, &str, &str); 5] = [
    (
        "InstallSucceeded",
        "info",
        "Helm install succeeded for release cicd/api-launcher",
        "dev.cdevents.service.deployed.0.3.0",
    ),
    (
        "UpgradeSucceeded",
        "info",
        "Helm upgrade succeeded for release cicd/api-launcher",
        "dev.cdevents.service.upgraded.0.3.0",
    ),
    (
        "RollbackSucceeded",
        "info",
        "Helm rollback to previous release succeeded",
        "dev.cdevents.service.rolledback.0.3.0",
    ),
    (
        "UninstallSucceeded",
        "info",
        "Helm uninstall succeeded",
        "dev.cdevents.service.removed.0.3.0",
    ),
    (
        "UpgradeFailed",
        "error",
        "Helm upgrade failed: timed out waiting for the condition",
        "dev.tekflux.release.failed.v1",
    ),
];

/// Every reply to Flux, the recorded event's and each outcome's, with and without Flux's
/// timestamp: the service events are CDEvents (the binding of the spec release they claim and
/// that release's schemas), release failed is tekflux's own type (a valid CloudEvent).
#[tokio::test]
async fn flux_replies_follow_the_cdevents_binding_and_schemas() {
    let spec = CdeventsSpec::from_corpus();
    let state = state("{ secret: env:FLUX_TOKEN }");
    let mut bodies = vec![read_corpus(
        "flux-notification/generic-webhook-body.helmrelease.weave-gitops-rfc-0003.json",
    )];
    for (reason, severity, message, _) in OUTCOMES {
        bodies.push(helm_event(reason, severity, message));
        let mut untimed: Value =
            serde_json::from_slice(&helm_event(reason, severity, message)).unwrap();
        untimed.as_object_mut().unwrap().remove("timestamp");
        bodies.push(serde_json::to_vec(&untimed).unwrap());
    }
    for body in bodies {
        let (status, headers, reply) = post(&state, &body, Some(&sign(&body))).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let checked = spec.assert_binary(&headers, &reply);
        let ty = header(&headers, "ce-type").to_owned();
        let expected = if ty.starts_with("dev.tekflux.") {
            Checked::Tekflux(ty)
        } else {
            Checked::CdEvent(ty)
        };
        assert_eq!(checked, expected);
    }
}

#[tokio::test]
async fn each_outcome_has_its_event_and_the_rest_is_acknowledged() {
    let state = state("{ secret: env:FLUX_TOKEN }");
    for (reason, severity, message, expected) in OUTCOMES {
        let body = helm_event(reason, severity, message);
        let (status, headers, reply) = post(&state, &body, Some(&sign(&body))).await;
        assert_eq!(status, StatusCode::OK, "{reason}: {reply}");
        assert_eq!(header(&headers, "ce-type"), expected, "{reason}");
        assert_eq!(header(&headers, "ce-subject"), "cicd/api-launcher");
    }
    let body = helm_event("UpgradeFailed", "error", "Helm upgrade failed: timed out");
    let (_, _, failed) = post(&state, &body, Some(&sign(&body))).await;
    assert_eq!(failed["release"], "cicd/api-launcher");
    assert_eq!(failed["reason"], "UpgradeFailed");
    assert_eq!(failed["revision"], "0.3.0");

    // Progress, and other kinds, say nothing final: acknowledged without a reply.
    let body = helm_event(
        "Progressing",
        "info",
        "Running 'upgrade' action with timeout of 5m0s",
    );
    let (status, headers, summary) = post(&state, &body, Some(&sign(&body))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("ce-type").is_none());
    assert!(summary["reason"].is_string());
    let body = read_corpus(
        "flux-notification/generic-webhook-body.kustomization.notification-controller-docs-v1beta3.json",
    );
    let (status, headers, _) = post(&state, &body, Some(&sign(&body))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("ce-type").is_none());
}

#[tokio::test]
async fn unsigned_or_tampered_events_are_refused() {
    let state = state("{ secret: env:FLUX_TOKEN }");
    let body = helm_event("UpgradeSucceeded", "info", "Helm upgrade succeeded");
    let signature = sign(&body);
    let (status, _, error) = post(&state, &body, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert!(error.to_string().contains("X-Signature"));
    let tampered = helm_event("UpgradeSucceeded", "info", "Helm upgrade succeeded!");
    let (status, _, error) = post(&state, &tampered, Some(&signature)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!error.to_string().contains(TOKEN));
    let (status, _, _) = post(&state, &body, Some("sha256=zz")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // No providers.flux entry: nothing is accepted.
    let config = Config::from_yaml("namespace: cicd\n", "test.yaml", &Env::new()).unwrap();
    let closed = AppState::new(
        &config,
        None,
        ReplySink::new(None).unwrap(),
        &Metrics::new(),
    );
    let (status, _, _) = post(&closed, &body, Some(&signature)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Signed but not a Flux event.
    let garbage = br#"{"hello": "world"}"#;
    let (status, _, _) = post(&state, garbage, Some(&sign(garbage))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // insecure: true takes unsigned events (labs only).
    let open = self::state("{ insecure: true }");
    let (status, _, _) = post(&open, &body, None).await;
    assert_eq!(status, StatusCode::OK);
}
