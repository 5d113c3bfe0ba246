//! Terminal events are notifications: Tekton cannot sign them and any pod that reaches the
//! Broker can send one. One test per attack, each through the real `kube::Client` against the
//! test API server and the real S3 client against s3s: what is answered, that nothing reaches
//! the bucket, no directory is deleted (cleanup is on), which API calls were made (no pod logs
//! read), and that `/metrics` counts the refusal.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tekflux_testkit::tree::snapshot;

use support::*;

const CLEANUP: &str = "  cleanup: true\n";

fn refused_series(reason: &str) -> String {
    format!(r#"tekflux_run_complete_refused_total{{reason="{reason}"}}"#)
}

fn get_task_run(name: &str) -> String {
    format!("GET /apis/tekton.dev/v1/namespaces/{NS}/taskruns/{name}")
}

/// An event for `name` in `cicd` carrying `uid`, as a forger would write it.
fn forged(name: &str, uid: &str) -> Value {
    let mut run = task_run(name, git_push_annotations(name), json!([]));
    run["metadata"]["uid"] = json!(uid);
    event_of(&run)
}

#[tokio::test]
async fn a_forged_event_for_a_run_that_does_not_exist_is_refused() {
    let h = Harness::start().await;
    let run = "shop-build-000000000001";
    write_tree(&h.workspace_dir(run));
    let before = snapshot(h.mount.path());
    let state = h.state(CLEANUP, h.s3.client());

    let (status, headers, body) = h
        .send(
            &state,
            TASKRUN_SUCCEEDED,
            &forged(run, "4ccb4f01-3ecc-4eb4-87e1-76f04efeee5c"),
        )
        .await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "unprocessable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("no TaskRun cicd/"), "{message}");
    assert!(headers.get("ce-type").is_none(), "no reply event");
    assert!(h.keys().await.is_empty());
    assert_eq!(snapshot(h.mount.path()), before);
    assert_eq!(h.api_calls(), [get_task_run(run)]);
    assert_eq!(h.api.requests()[0].status, Some(404));
    assert_eq!(
        h.metric(&state, &refused_series("not_found")).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn an_event_with_another_uid_cannot_archive_delete_or_overwrite_the_run() {
    let h = Harness::start().await;
    let run = "shop-build-000000000002";
    write_tree(&h.workspace_dir(run));
    let before = snapshot(h.mount.path());
    let stored = h.store(task_run(run, git_push_annotations(run), json!([])));
    h.api.set_pod_log(
        NS,
        &format!("{run}-pod"),
        "step-build",
        "secret build log\n",
    );
    let state = h.state(CLEANUP, h.s3.client());
    let other_uid = "00000000-0000-4000-8000-000000000000";
    assert_ne!(uid_of(&stored), other_uid);

    // Before the real run is archived: nothing is archived, copied or deleted for the forger.
    let (status, _, body) = h
        .send(&state, TASKRUN_SUCCEEDED, &forged(run, other_uid))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("another uid"), "{message}");
    assert!(
        !message.contains(&uid_of(&stored)),
        "the real uid is not told: {message}"
    );
    assert!(h.keys().await.is_empty());
    assert_eq!(snapshot(h.mount.path()), before);
    assert_eq!(h.api_calls(), [get_task_run(run)]);

    // After: the archive and manifest of the real run are not overwritten.
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys = h.keys().await;
    let manifest_key = format!("runs/{NS}/{run}/manifest.json");
    let manifest = h.object(&manifest_key).await.unwrap();
    let after_archive = snapshot(h.mount.path());
    h.api.clear_requests();
    let (status, _, body) = h
        .send(&state, TASKRUN_FAILED, &forged(run, other_uid))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(h.keys().await, keys);
    assert_eq!(h.object(&manifest_key).await.unwrap(), manifest);
    assert_eq!(snapshot(h.mount.path()), after_archive);
    assert_eq!(h.api_calls(), [get_task_run(run)]);
    assert_eq!(
        h.metric(&state, &refused_series("uid_mismatch")).await,
        Some(2.0)
    );
}

#[tokio::test]
async fn an_event_for_a_run_still_running_is_refused() {
    let h = Harness::start().await;
    let state = h.state(CLEANUP, h.s3.client());
    let running = [
        (
            "shop-build-running000001",
            json!([{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]),
        ),
        ("shop-build-pending000001", json!([])),
    ];
    for (run, conditions) in &running {
        write_tree(&h.workspace_dir(run));
        let mut object = task_run(run, git_push_annotations(run), json!([]));
        object["status"]["conditions"] = conditions.clone();
        object["status"]
            .as_object_mut()
            .unwrap()
            .remove("completionTime");
        h.store(object);
    }
    let before = snapshot(h.mount.path());

    for (run, _) in &running {
        h.api.clear_requests();
        // The event claims the run is done; the stored run says otherwise.
        let stored = h
            .api
            .get_object("tekton.dev", "taskruns", Some(NS), run)
            .unwrap();
        let mut data = event_of(&stored);
        data["taskRun"]["status"]["conditions"] =
            json!([{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]);
        let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
        // Retried, not refused for good: Tekton may send before the status is stored.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{run}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("has not finished"), "{message}");
        assert_eq!(h.api_calls(), [get_task_run(run)], "no pod log is read");
    }
    assert!(h.keys().await.is_empty());
    assert_eq!(snapshot(h.mount.path()), before);
    assert_eq!(
        h.metric(&state, &refused_series("not_finished")).await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_run_in_a_namespace_the_config_does_not_serve_is_ignored_without_api_calls() {
    let h = Harness::start().await;
    // Served: `cicd` (top level) and `builds` (a rule's namespace).
    let state = h.state(
        &format!(
            "{CLEANUP}repositories:\n  - url: {REPO}\n    pipeline: ci\n    namespace: builds\n"
        ),
        h.s3.client(),
    );
    // A real, finished run of another team, with its real uid.
    let mut object = task_run("their-build", json!({}), json!([]));
    object["metadata"]["namespace"] = json!("other-team");
    let theirs = h.store(object);
    let before = snapshot(h.mount.path());

    let (status, headers, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&theirs)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ignored"], "their-build");
    assert!(
        body["reason"].as_str().unwrap().contains("other-team"),
        "{body}"
    );
    assert!(headers.get("ce-type").is_none(), "no reply event");
    assert!(h.api_calls().is_empty(), "{:?}", h.api_calls());
    assert!(h.keys().await.is_empty());
    assert_eq!(snapshot(h.mount.path()), before);
    assert_eq!(
        h.metric(
            &state,
            r#"tekflux_run_complete_runs_total{result="not_served"}"#
        )
        .await,
        Some(1.0)
    );

    // A rule's namespace is served: its event is checked against the API server.
    let mut data = forged("their-build", &uid_of(&theirs));
    data["taskRun"]["metadata"]["namespace"] = json!("builds");
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        h.api_calls(),
        ["GET /apis/tekton.dev/v1/namespaces/builds/taskruns/their-build"]
    );
}

#[tokio::test]
async fn hostile_namespaces_and_names_are_refused_before_any_io() {
    let h = Harness::start().await;
    let state = h.state(CLEANUP, h.s3.client());
    write_tree(&h.workspace_dir("x"));
    let before = snapshot(h.mount.path());
    let long_name = "a".repeat(254);
    let long_namespace = "n".repeat(64);
    let hostile = [
        (NS, "../x"),
        (NS, "x/../../manifest"),
        (NS, "Shop-Build"),
        (NS, long_name.as_str()),
        ("../cicd", "x"),
        ("CICD", "x"),
        (long_namespace.as_str(), "x"),
    ];
    for (namespace, name) in hostile {
        let mut data = forged(name, "4ccb4f01-3ecc-4eb4-87e1-76f04efeee5c");
        data["taskRun"]["metadata"]["namespace"] = json!(namespace);
        let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{namespace}/{name}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("DNS-1123"),
            "{body}"
        );
    }
    assert!(h.api_calls().is_empty(), "{:?}", h.api_calls());
    assert!(h.keys().await.is_empty());
    assert_eq!(snapshot(h.mount.path()), before);
    assert_eq!(
        h.metric(&state, &refused_series("invalid_event")).await,
        Some(hostile.len() as f64)
    );
}

#[tokio::test]
async fn a_lying_body_is_ignored_in_favour_of_the_api_servers_copy() {
    let h = Harness::start().await;
    let run = "shop-build-000000000003";
    let victim = "other-team-build-000001";
    write_tree(&h.workspace_dir(run));
    write_tree(&h.workspace_dir(victim));
    let victim_before = snapshot(&h.workspace_dir(victim));
    h.api
        .set_pod_log(NS, &format!("{run}-pod"), "step-build", "built\n");
    h.api
        .set_pod_log(NS, "victim-pod", "step-secret", "the victim's secrets\n");
    let stored = h.store(task_run(
        run,
        git_push_annotations(run),
        json!([
            {"name": "IMAGE_URL", "value": "registry.example.com/acme/shop:9fceb02"},
            {"name": "IMAGE_DIGEST", "value": "sha256:4a9f1c5e2b"},
        ]),
    ));
    let state = h.state(CLEANUP, h.s3.client());

    // Same name and uid, everything else a lie: another run's directory, an attacker's image,
    // another pod's logs, and "failed" where the stored run succeeded.
    let mut data = event_of(&stored);
    let lie = &mut data["taskRun"];
    lie["metadata"]["annotations"] = git_push_annotations(victim);
    lie["metadata"]["annotations"]["tekflux.dev/repo-url"] = json!("https://evil.example/x");
    lie["spec"]["workspaces"][0]["subPath"] = json!(victim);
    lie["status"]["taskResults"] = json!([
        {"name": "IMAGE_URL", "value": "evil.example/backdoor:latest"},
        {"name": "IMAGE_DIGEST", "value": "sha256:666"},
    ]);
    lie["status"]["podName"] = json!("victim-pod");
    lie["status"]["steps"] = json!([{"name": "secret", "container": "step-secret"}]);
    lie["status"]["conditions"] = json!([{"type": "Succeeded", "status": "False"}]);
    let (status, headers, body) = h.send(&state, TASKRUN_FAILED, &data).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    // The reply announces the stored run's image, as the stored run's repository.
    assert_eq!(headers["ce-type"], "dev.cdevents.artifact.published.0.3.0");
    assert_eq!(headers["ce-source"], REPO);
    assert_eq!(
        body["customData"]["image"],
        "registry.example.com/acme/shop@sha256:4a9f1c5e2b"
    );
    assert_eq!(body["customData"]["outcome"], "succeeded");
    // The archive is of the stored run's own subPath, which cleanup then removed; the victim's
    // directory is untouched.
    let manifest = h.manifest(run).await.unwrap();
    assert_eq!(manifest.run.outcome, "succeeded");
    assert_eq!(manifest.repo.as_deref(), Some(REPO));
    assert_eq!(manifest.workspaces.len(), 1);
    assert_eq!(manifest.workspaces[0].sub_path, run);
    assert_eq!(
        manifest.results["IMAGE_URL"],
        "registry.example.com/acme/shop:9fceb02"
    );
    assert!(!h.workspace_dir(run).exists());
    assert_eq!(snapshot(&h.workspace_dir(victim)), victim_before);
    // Logs come from the stored run's pod and steps only.
    assert_eq!(
        h.api_calls(),
        [
            get_task_run(run),
            format!("GET /api/v1/namespaces/{NS}/pods/{run}-pod/log"),
            format!("GET /api/v1/namespaces/{NS}/pods/{run}-pod/log"),
        ]
    );
    let stored_logs: Vec<_> = manifest
        .logs
        .iter()
        .map(|log| (log.pod.clone().unwrap(), log.step.clone().unwrap()))
        .collect();
    assert_eq!(
        stored_logs,
        [
            (format!("{run}-pod"), "clone".to_owned()),
            (format!("{run}-pod"), "build".to_owned()),
        ]
    );
    assert_eq!(
        h.object(&format!("runs/{NS}/{run}/logs/{run}/build.log"))
            .await
            .unwrap(),
        b"built\n"
    );
    assert!(
        h.keys()
            .await
            .iter()
            .all(|key| key.starts_with(&format!("runs/{NS}/{run}/"))),
        "{:?}",
        h.keys().await
    );
    assert_eq!(
        h.metric(
            &state,
            r#"tekflux_run_complete_runs_total{result="archived"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn an_unauthenticated_event_is_refused_before_anything() {
    let h = Harness::start().await;
    let run = "shop-build-000000000009";
    write_tree(&h.workspace_dir(run));
    let before = snapshot(h.mount.path());
    let stored = h.store(task_run(run, git_push_annotations(run), json!([])));
    h.api.clear_requests();
    let state = h.state(CLEANUP, h.s3.client());
    for authorization in [None, Some("Bearer not-the-token")] {
        let (status, _, body) = h
            .send_with(&state, TASKRUN_SUCCEEDED, &event_of(&stored), authorization)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert!(h.api_calls().is_empty(), "{:?}", h.api_calls());
    assert!(h.keys().await.is_empty());
    assert_eq!(snapshot(h.mount.path()), before);
    assert_eq!(
        h.metric(
            &state,
            r#"tekflux_events_refused_total{function="run-complete",reason="missing_credentials"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_body_larger_than_any_run_object_is_refused_unread() {
    // A run is one Kubernetes object (etcd keeps at most 1.5 MiB), so an event over 4 MiB is
    // refused before its body is read, whoever sends it.
    let h = Harness::start().await;
    let state = h.state(CLEANUP, h.s3.client());
    let padding = "x".repeat(5 << 20);
    let (status, _, body) = h
        .send(
            &state,
            "dev.tekton.event.taskrun.successful.v1",
            &json!({ "padding": padding }),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("4194304"),
        "{body}"
    );
    assert!(h.api.requests().is_empty());
}
