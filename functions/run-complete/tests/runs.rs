//! run-complete end to end: Tekton's terminal events in, against a real S3 server (s3s-fs over
//! SigV4, or SeaweedFS in the integration tier) and the test Kubernetes API server through the
//! real `kube::Client`; archives, logs and manifests checked in the store, and restored. Each
//! run is stored in the API server first, as Tekton would have it: the event only names it.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env};
use tekflux_common::metrics::Metrics;
use tekflux_run_complete::AppState;
use tekflux_run_complete::archive::{RestoreOptions, restore_from_s3};
use tekflux_testkit::cdevents::{CdeventsSpec, Checked};
use tekflux_testkit::fault_proxy::{FaultProxy, ProxyFault};
use tekflux_testkit::kube_api::Fault;
use tekflux_testkit::s3::TestS3;
use tekflux_testkit::tree::{pseudo_random, snapshot};

use support::*;

#[tokio::test]
async fn a_successful_task_run_is_archived_with_its_logs_and_restores_byte_for_byte() {
    archive_and_restore_a_task_run(Harness::start().await).await;
}

#[tokio::test]
#[ignore = "integration tier: needs SeaweedFS started by .ci/seaweedfs"]
async fn seaweedfs_a_successful_task_run_is_archived_and_restores_byte_for_byte() {
    let s3 = TestS3::seaweedfs_from_env().expect("TEKFLUX_TEST_S3_ENDPOINT is set by .ci/run");
    archive_and_restore_a_task_run(Harness::start_with(s3).await).await;
}

async fn archive_and_restore_a_task_run(h: Harness) {
    let run = "shop-build-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let before = snapshot(&h.workspace_dir(run));
    h.api.set_pod_log(
        NS,
        &format!("{run}-pod"),
        "step-clone",
        "Cloning into '.'...\n",
    );
    h.api
        .set_pod_log(NS, &format!("{run}-pod"), "step-build", "built\n");
    let state = h.state("", h.s3.client());

    let stored = h.store(task_run(
        run,
        git_push_annotations(run),
        json!([
            {"name": "IMAGE_URL", "value": "registry.example.com/acme/shop:9fceb02"},
            {"name": "IMAGE_DIGEST", "value": "sha256:4a9f1c5e2b"},
        ]),
    ));
    let (status, headers, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The reply: the image is the artifact (and so the CloudEvent subject, as the CDEvents
    // binding requires), routing facts are attributes, the run is in the custom data.
    assert_eq!(headers["ce-type"], "dev.cdevents.artifact.published.0.3.0");
    assert_eq!(headers["ce-source"], REPO);
    assert_eq!(
        headers["ce-subject"],
        "pkg:oci/shop@sha256%253A4a9f1c5e2b?repository_url=registry.example.com/acme/shop&tag=9fceb02"
    );
    assert_eq!(body["customData"]["run"]["name"], run);
    assert_eq!(headers["ce-tekfluxsha"], SHA);
    assert_eq!(headers["ce-tekfluxdelivery"], DELIVERY);
    assert_eq!(headers["ce-tekfluxnamespace"], NS);
    assert_eq!(
        body["subject"]["id"],
        "pkg:oci/shop@sha256%3A4a9f1c5e2b?repository_url=registry.example.com/acme/shop&tag=9fceb02"
    );
    assert_eq!(
        body["customData"]["image"],
        "registry.example.com/acme/shop@sha256:4a9f1c5e2b"
    );

    // The manifest matches what the store holds.
    let manifest = h.manifest(run).await.unwrap();
    assert_eq!(manifest.run.uid, uid_of(&stored));
    assert_eq!(manifest.run.outcome, "succeeded");
    assert_eq!(manifest.sha.as_deref(), Some(SHA));
    assert_eq!(manifest.delivery_id.as_deref(), Some(DELIVERY));
    assert_eq!(manifest.repo.as_deref(), Some(REPO));
    assert_eq!(manifest.workspaces.len(), 1);
    let archived = &manifest.workspaces[0];
    assert_eq!(
        archived.key,
        format!("runs/{NS}/{run}/workspaces/source.tar.zst")
    );
    let stored = h.object(&archived.key).await.unwrap();
    assert_eq!(archived.bytes, stored.len() as u64);
    assert_eq!(archived.sha256, sha256_hex(&stored));
    assert_eq!(archived.entries, before.len() as u64);
    let head =
        h.s3.client()
            .head_object()
            .bucket(&h.bucket)
            .key(&archived.key)
            .send()
            .await
            .unwrap();
    let metadata = head.metadata.unwrap();
    assert_eq!(metadata["tekflux-sha"], SHA);
    assert_eq!(metadata["tekflux-delivery-id"], DELIVERY);

    let logs: Vec<_> = manifest
        .logs
        .iter()
        .map(|log| (log.step.clone().unwrap(), log.key.clone().unwrap()))
        .collect();
    assert_eq!(
        logs,
        [
            (
                "clone".to_owned(),
                format!("runs/{NS}/{run}/logs/{run}/clone.log")
            ),
            (
                "build".to_owned(),
                format!("runs/{NS}/{run}/logs/{run}/build.log")
            ),
        ]
    );
    assert_eq!(h.object(&logs[1].1).await.unwrap(), b"built\n");
    assert_eq!(
        manifest.logs[1].sha256.as_deref(),
        Some(sha256_hex(b"built\n").as_str())
    );

    // Cleanup is off: the workspace stays. Restore gives back the same tree.
    assert_eq!(snapshot(&h.workspace_dir(run)), before);
    let target = tempfile::tempdir().unwrap();
    let restored = target.path().join("restored");
    let options = RestoreOptions {
        expected_sha256: Some(archived.sha256.clone()),
        ..RestoreOptions::default()
    };
    restore_from_s3(
        &h.s3.client(),
        &h.bucket,
        &archived.key,
        &restored,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(snapshot(&restored), before);
}

/// A failed PipelineRun as the API server serves it.
fn pipeline_run(name: &str, children: &[&str]) -> Value {
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": NS, "annotations": git_push_annotations(name)},
        "spec": {"pipelineRef": {"name": "ci"}, "workspaces": [
            {"name": "source", "persistentVolumeClaim": {"claimName": CLAIM}, "subPath": name}]},
        "status": {
            "conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed"}],
            "childReferences": children.iter().map(|child| json!({
                "apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": child,
                "pipelineTaskName": child.rsplit('-').next().unwrap(),
            })).collect::<Vec<_>>(),
        }
    })
}

fn child_task_run(pipeline_run: &str, name: &str, steps: &[&str]) -> Value {
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": NS, "labels": {"tekton.dev/pipelineRun": pipeline_run}},
        "spec": {"taskRef": {"name": "x"}},
        "status": {
            "podName": format!("{name}-pod"),
            "steps": steps.iter().map(|step| json!({"name": step, "container": format!("step-{step}")}))
                .collect::<Vec<_>>(),
        }
    })
}

#[tokio::test]
async fn a_failed_pipeline_run_is_archived_with_the_logs_of_each_task_run() {
    let h = Harness::start().await;
    let run = "shop-ci-7b1e2d3c4a5f";
    write_tree(&h.workspace_dir(run));
    let (fetch, test, pruned) = (
        format!("{run}-fetch"),
        format!("{run}-test"),
        format!("{run}-lint"),
    );
    h.api.insert(child_task_run(run, &fetch, &["clone"]));
    h.api
        .insert(child_task_run(run, &test, &["unit", "report"]));
    h.api
        .set_pod_log(NS, &format!("{fetch}-pod"), "step-clone", "cloned\n");
    h.api.set_pod_log(
        NS,
        &format!("{test}-pod"),
        "step-unit",
        "test failed: 1 of 20\n",
    );
    // `report` never ran, and the `lint` TaskRun was pruned: both are recorded, not errors.
    let state = h.state("", h.s3.client());

    let stored = h.store(pipeline_run(run, &[&fetch, &test, &pruned]));
    let (status, headers, body) = h
        .send(
            &state,
            "dev.tekton.event.pipelinerun.failed.v1",
            &event_of(&stored),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["ce-type"], "dev.tekflux.run.finished.v1");
    assert_eq!(body["outcome"], "failed");
    assert_eq!(body["reason"], "Failed");
    assert_eq!(
        body["archive"]["manifest"],
        format!("s3://{}/runs/{NS}/{run}/manifest.json", h.bucket)
    );
    assert_eq!(body["archive"]["logs"], 2);

    let manifest = h.manifest(run).await.unwrap();
    assert_eq!(manifest.run.kind, "PipelineRun");
    assert_eq!(manifest.run.outcome, "failed");
    assert_eq!(manifest.workspaces.len(), 1, "failed runs are archived too");
    let stored = h.object(&manifest.workspaces[0].key).await.unwrap();
    assert_eq!(manifest.workspaces[0].sha256, sha256_hex(&stored));
    let summary: Vec<_> = manifest
        .logs
        .iter()
        .map(|log| {
            (
                log.task_run.clone(),
                log.step.clone(),
                log.key.is_some(),
                log.missing.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (pruned.clone(), None, false, true),
            (fetch.clone(), Some("clone".to_owned()), true, false),
            (test.clone(), Some("unit".to_owned()), true, false),
            (test.clone(), Some("report".to_owned()), false, true),
        ]
    );
    let unit = h
        .object(&format!("runs/{NS}/{run}/logs/{test}/unit.log"))
        .await
        .unwrap();
    assert_eq!(unit, b"test failed: 1 of 20\n");
}

#[tokio::test]
async fn duplicate_completion_events_archive_once_and_cleanup_frees_the_directory() {
    let h = Harness::start().await;
    let run = "shop-build-0a1b2c3d4e5f";
    write_tree(&h.workspace_dir(run));
    let state = h.state("  cleanup: true\n", h.s3.client());
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));

    let (status, _, first) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["duplicate"], false);
    assert!(
        !h.workspace_dir(run).exists(),
        "cleanup removes the run's directory once the manifest is written"
    );
    let manifest = h.manifest(run).await.unwrap();

    // Tekton sends the same completion again, with another event id.
    let (status, _, second) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["archive"], first["archive"]);
    // Had it archived again, the (now missing) directory would have left a manifest without
    // workspaces.
    assert_eq!(h.manifest(run).await.unwrap(), manifest);

    // A new run that reuses the name (deleted and created again: another uid) is archived
    // afresh.
    h.delete_task_run(run).await;
    write_tree(&h.workspace_dir(run));
    let recreated = h.store(task_run(run, git_push_annotations(run), json!([])));
    assert_ne!(uid_of(&recreated), manifest.run.uid);
    let (status, _, third) = h
        .send(&state, TASKRUN_SUCCEEDED, &event_of(&recreated))
        .await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["duplicate"], false);
    assert_eq!(h.manifest(run).await.unwrap().run.uid, uid_of(&recreated));
}

#[tokio::test]
async fn a_sub_path_through_a_symlink_is_neither_archived_nor_deleted() {
    let h = Harness::start().await;
    let run = "shop-build-link00000001";
    // Another run's directory on the same claim, and this run's subPath a symlink to it: the
    // mount is never left, but the link is still not followed.
    let victim = h.workspace_dir("shop-build-victim000001");
    write_tree(&victim);
    let before = snapshot(&victim);
    std::os::unix::fs::symlink(&victim, h.workspace_dir(run)).unwrap();
    let state = h.state("  cleanup: true\n", h.s3.client());
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));

    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let manifest = h.manifest(run).await.unwrap();
    assert!(manifest.workspaces.is_empty());
    assert_eq!(manifest.skipped_workspaces.len(), 1);
    assert!(
        manifest.skipped_workspaces[0]
            .reason
            .contains("is a symlink"),
        "{:?}",
        manifest.skipped_workspaces
    );
    assert_eq!(
        snapshot(&victim),
        before,
        "the other run's directory is untouched"
    );
    assert!(std::fs::symlink_metadata(h.workspace_dir(run)).is_ok());
}

#[tokio::test]
async fn a_workspace_over_max_archive_bytes_is_recorded_as_skipped_and_kept() {
    let h = Harness::start().await;
    let run = "shop-build-huge00000001";
    let dir = h.workspace_dir(run);
    write_tree(&dir);
    let before = snapshot(&dir);
    h.api
        .set_pod_log(NS, &format!("{run}-pod"), "step-build", "built\n");
    let state = h.state("  maxArchiveBytes: 1000\n  cleanup: true\n", h.s3.client());
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));

    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let manifest = h.manifest(run).await.unwrap();
    assert!(manifest.workspaces.is_empty());
    let reason = &manifest.skipped_workspaces[0].reason;
    assert!(reason.contains("maxArchiveBytes"), "{reason}");
    assert!(
        h.object(&format!("runs/{NS}/{run}/workspaces/source.tar.zst"))
            .await
            .is_none(),
        "no partial archive is left"
    );
    assert!(!manifest.logs.is_empty(), "the logs are still copied");
    assert_eq!(
        snapshot(&dir),
        before,
        "a workspace not archived is not deleted"
    );
}

#[tokio::test]
async fn s3_failing_mid_upload_answers_503_leaves_no_trace_and_the_retry_completes() {
    let h = Harness::start().await;
    let run = "shop-build-big000000001";
    let dir = h.workspace_dir(run);
    std::fs::create_dir_all(&dir).unwrap();
    // Incompressible, so the archive needs three 5 MiB parts.
    std::fs::write(dir.join("blob"), pseudo_random(12 * 1024 * 1024, 3)).unwrap();
    let before = snapshot(&dir);
    let proxy = FaultProxy::start(&h.s3.endpoint()).await;
    proxy.fail_when(
        |line| line.contains("partNumber=2&"),
        ProxyFault::ServiceUnavailable,
    );
    let state = h.state(
        "  partSizeMib: 5\n  cleanup: true\n",
        h.s3.client_via(&proxy.url()),
    );
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));

    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("UploadPart"),
        "{body}"
    );
    assert!(!proxy.failed().is_empty());
    assert!(
        h.manifest(run).await.is_none(),
        "no manifest after a failure"
    );
    assert!(
        h.object(&format!("runs/{NS}/{run}/workspaces/source.tar.zst"))
            .await
            .is_none()
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|line| line.starts_with("DELETE ") && line.contains("uploadId=")),
        "the multipart upload is aborted: {:?}",
        proxy.requests()
    );
    assert_eq!(snapshot(&dir), before, "the workspace is untouched");

    // The Broker retries once the store is healthy again.
    proxy.heal();
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let manifest = h.manifest(run).await.unwrap();
    let stored = h.object(&manifest.workspaces[0].key).await.unwrap();
    assert_eq!(manifest.workspaces[0].sha256, sha256_hex(&stored));
    assert!(!dir.exists());
}

#[tokio::test]
async fn s3_gone_answers_503_and_nothing_is_deleted() {
    let h = Harness::start().await;
    let run = "shop-build-gone00000001";
    write_tree(&h.workspace_dir(run));
    let before = snapshot(&h.workspace_dir(run));
    let proxy = FaultProxy::start(&h.s3.endpoint()).await;
    proxy.fail_when(|_| true, ProxyFault::Drop);
    let state = h.state("  cleanup: true\n", h.s3.client_via(&proxy.url()));
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));
    let (status, _, body) = h.send(&state, TASKRUN_FAILED, &data).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(snapshot(&h.workspace_dir(run)), before);
}

/// Credentials the store refuses will not work on a retry: 500 (the Broker still retries 5xx
/// before dead-lettering, so nothing is lost), never the 503 kept for transient trouble, with
/// a message that says what is wrong.
#[tokio::test]
async fn s3_refusing_the_credentials_answers_500_and_nothing_is_deleted() {
    let h = Harness::start().await;
    let run = "shop-build-cred00000001";
    write_tree(&h.workspace_dir(run));
    let before = snapshot(&h.workspace_dir(run));
    let state = h.state(
        "  cleanup: true\n",
        h.s3.client_with_secret("not-the-secret"),
    );
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(message.contains(&h.bucket), "{message}");
    for internal in ["{ ", "Some(", "Error("] {
        assert!(!message.contains(internal), "{internal:?} in {message}");
    }
    assert_eq!(snapshot(&h.workspace_dir(run)), before);
}

#[tokio::test]
async fn kubernetes_failing_answers_503_without_a_manifest() {
    let h = Harness::start().await;
    let run = "shop-build-kube00000001";
    write_tree(&h.workspace_dir(run));
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));
    let state = h.state("  cleanup: true\n", h.s3.client());
    for fault in [Fault::Status(500), Fault::Status(403)] {
        // The first request re-reads the run: an API server that fails it, or RBAC that does
        // not allow it, is retried (503), not mistaken for a run that does not exist.
        h.api.fail_next(1, fault);
        let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(h.keys().await.is_empty());
        assert!(h.workspace_dir(run).exists());
    }
    h.api.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let (status, headers, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(headers["retry-after"], "7");
    assert!(h.keys().await.is_empty());
    assert_eq!(
        h.metric(
            &state,
            r#"tekflux_run_complete_runs_total{result="failed"}"#
        )
        .await,
        Some(3.0)
    );
    // A failure later, reading the logs, is retried too.
    h.api.clear_requests();
    h.api.fail_next(1, Fault::Stall(std::time::Duration::ZERO));
    h.api.fail_next(1, Fault::Status(500));
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        h.api_calls()[1].ends_with(&format!("/pods/{run}-pod/log")),
        "{:?}",
        h.api_calls()
    );
    assert!(h.manifest(run).await.is_none());
    assert!(h.workspace_dir(run).exists());
    // The retry succeeds.
    let (status, _, _) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.manifest(run).await.is_some());
}

/// Each reply run-complete can answer, to the first event and to a duplicate: artifact published
/// (a CDEvent: the binding of the spec release it claims and that release's schema) and run
/// finished (tekflux's own type: a valid CloudEvent).
#[tokio::test]
async fn replies_follow_the_cdevents_binding_and_schema() {
    let spec = CdeventsSpec::from_corpus();
    let h = Harness::start().await;
    let state = h.state("", h.s3.client());
    let built = "shop-build-9fceb02a1b2c";
    write_tree(&h.workspace_dir(built));
    let image = json!([
        {"name": "IMAGE_URL", "value": "registry.example.com/acme/shop:9fceb02"},
        {"name": "IMAGE_DIGEST", "value": "sha256:4a9f1c5e2b"},
    ]);
    let built = h.store(task_run(built, git_push_annotations(built), image));
    let tested = "shop-test-3c4d5e6f7a8b";
    write_tree(&h.workspace_dir(tested));
    let tested = h.store(task_run(tested, git_push_annotations(tested), json!([])));
    for (run, expected) in [
        (
            built,
            Checked::CdEvent("dev.cdevents.artifact.published.0.3.0".to_owned()),
        ),
        (
            tested,
            Checked::Tekflux("dev.tekflux.run.finished.v1".to_owned()),
        ),
    ] {
        for duplicate in [false, true] {
            let (status, headers, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&run)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(spec.assert_binary(&headers, &body), expected);
            let custom = body.get("customData").unwrap_or(&body);
            assert_eq!(custom["duplicate"], duplicate, "{body}");
        }
    }
}

#[tokio::test]
async fn a_run_without_an_archivable_workspace_keeps_its_logs_and_says_why() {
    let h = Harness::start().await;
    let run = "lint-5e6f7a8b9c0d";
    h.api
        .set_pod_log(NS, &format!("{run}-pod"), "step-clone", "ok\n");
    let mut object = task_run(run, json!({}), json!([]));
    object["spec"]["workspaces"] = json!([{"name": "scratch", "emptyDir": {}}]);
    let stored = h.store(object);
    let state = h.state("", h.s3.client());
    let (status, headers, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["ce-type"], "dev.tekflux.run.finished.v1");
    assert!(
        body["note"]
            .as_str()
            .unwrap()
            .contains("no archivable workspace"),
        "{body}"
    );
    let manifest = h.manifest(run).await.unwrap();
    assert!(manifest.workspaces.is_empty());
    let kept: Vec<&str> = manifest
        .logs
        .iter()
        .filter_map(|l| l.key.as_deref())
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", manifest.logs);
    assert_eq!(h.object(kept[0]).await.unwrap(), b"ok\n");
}

#[tokio::test]
async fn task_runs_of_a_pipeline_run_wait_for_the_pipeline_run() {
    let h = Harness::start().await;
    let state = h.state("", h.s3.client());
    let mut child = child_task_run("p", "p-build", &["build"]);
    child["status"]["conditions"] = json!([{"type": "Succeeded", "status": "True"}]);
    let stored = h.store(child);
    // The event leaves the label out; the stored run's label decides.
    let mut data = event_of(&stored);
    data["taskRun"]["metadata"]["labels"] = json!({});
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ignored"], "p-build");
    assert!(h.keys().await.is_empty());
    assert_eq!(
        h.api_calls(),
        [format!(
            "GET /apis/tekton.dev/v1/namespaces/{NS}/taskruns/p-build"
        )]
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_missing_storage_is_retried() {
    let h = Harness::start().await;
    let state = h.state("", h.s3.client());
    let (status, _, body) = h
        .send(
            &state,
            "dev.tekton.event.pipelinerun.successful.v1",
            &json!({"taskRun": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("pipelineRun"));

    let no_bucket = AppState::new(
        &Config::from_yaml(
            &format!("namespace: {NS}\nevents:\n  token: env:EVENTS_TOKEN\n"),
            "test.yaml",
            &Env::new().with("EVENTS_TOKEN", EVENTS_TOKEN),
        )
        .unwrap(),
        None,
        None,
        ReplySink::new(None).unwrap(),
        &Metrics::new(),
    );
    let stored = h.store(task_run("r", json!({}), json!([])));
    let (status, _, body) = h
        .send(&no_bucket, TASKRUN_SUCCEEDED, &event_of(&stored))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["message"].as_str().unwrap().contains("storage.bucket"));
}

#[tokio::test]
async fn concurrent_duplicates_archive_once_and_the_other_is_retried() {
    let h = Harness::start().await;
    let run = "shop-build-dup000000001";
    write_tree(&h.workspace_dir(run));
    let state = h.state("  cleanup: true\n", h.s3.client());
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));
    let ty = TASKRUN_SUCCEEDED;

    let (first, second) = tokio::join!(h.send(&state, ty, &data), h.send(&state, ty, &data));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
        "{} / {}",
        first.2,
        second.2
    );
    // The Broker's retry of the one told to wait gets the finished archive.
    let (status, _, body) = h.send(&state, ty, &data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(h.manifest(run).await.unwrap().workspaces.len(), 1);
}

#[tokio::test]
async fn a_step_log_over_max_log_bytes_is_stored_cut_and_marked_truncated() {
    let h = Harness::start().await;
    let run = "shop-build-0000000000aa";
    write_tree(&h.workspace_dir(run));
    let long = "0123456789".repeat(10);
    h.api
        .set_pod_log(NS, &format!("{run}-pod"), "step-clone", "exactly 16 bytes");
    h.api
        .set_pod_log(NS, &format!("{run}-pod"), "step-build", &long);
    let state = h.state("  maxLogBytes: 16\n", h.s3.client());
    let stored = h.store(task_run(run, git_push_annotations(run), json!([])));
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let manifest = h.manifest(run).await.unwrap();
    let log = |step: &str| {
        manifest
            .logs
            .iter()
            .find(|log| log.step.as_deref() == Some(step))
            .unwrap()
            .clone()
    };
    // A log of exactly the bound is whole, not truncated.
    let clone = log("clone");
    assert_eq!(clone.bytes, Some(16));
    assert!(!clone.truncated);
    assert_eq!(
        h.object(clone.key.as_deref().unwrap()).await.unwrap(),
        b"exactly 16 bytes"
    );
    // A longer one is cut at the bound, hashed as stored, and says so.
    let build = log("build");
    assert_eq!(build.bytes, Some(16));
    assert!(build.truncated);
    let stored_log = h.object(build.key.as_deref().unwrap()).await.unwrap();
    assert_eq!(stored_log, &long.as_bytes()[..16]);
    assert_eq!(
        build.sha256.as_deref(),
        Some(sha256_hex(&stored_log).as_str())
    );
}
