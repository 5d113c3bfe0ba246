//! `tekflux trace` against the test API server and the in-process S3 server: a push that fanned
//! out into two PipelineRuns, their archives and logs, and the release one of them caused; the
//! same after Tekton pruned a run (found from its manifest alone); and what it says when the
//! cluster or the bucket is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use tekflux_run_complete::logs::LogEntry;
use tekflux_run_complete::manifest::{ArchivedWorkspace, MANIFEST_KIND, Manifest, RunRecord};
use tekflux_run_complete::plan::SkippedWorkspace;
use tekflux_testkit::kube_api::TestApiServer;
use tekflux_testkit::s3::TestS3;

use support::run;

const NS: &str = "cicd";
const SHA: &str = "3f2a9c1d0e4b5a6978812233445566778899aabb";
const OTHER_SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const DELIVERY: &str = "72d3c0a8-5f1e-11f0-8a2b-acme";
const REPO: &str = "https://github.com/acme/apis";
/// The two runs the push started (one per API), and an unrelated one.
const LAUNCHER: &str = "apis-launcher-5d41402abc4b";
const GATEWAY: &str = "apis-gateway-7d793037a076";
const UNRELATED: &str = "apis-launcher-e4da3b7fbbce";

/// A PipelineRun git-push created for the push (`sha`, `delivery`), finished with `status`.
fn pipeline_run(name: &str, sha: &str, delivery: &str, status: &str, reason: &str) -> Value {
    // The fan-out rule's capture: the API's folder, from the run name's middle part.
    let api = name.split('-').nth(1).unwrap();
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": "2026-12-06T10:00:00Z",
            "labels": {
                "app.kubernetes.io/managed-by": "tekflux",
                "tekflux.dev/rule": "apis",
                "tekflux.dev/sha": sha,
            },
            "annotations": {
                "tekflux.dev/sha": sha,
                "tekflux.dev/delivery-id": delivery,
                "tekflux.dev/repo-url": REPO,
                "tekflux.dev/ref": "refs/heads/main",
                "tekflux.dev/paths": json!({"api": format!("api-{api}")}).to_string(),
            },
        },
        "spec": {"pipelineRef": {"name": "api-pipeline"}},
        "status": {
            "conditions": [{"type": "Succeeded", "status": status, "reason": reason,
                            "message": format!("Tasks Completed: 2 ({reason})")}],
            "startTime": "2026-12-06T10:00:01Z",
            "completionTime": "2026-12-06T10:04:13Z",
            "results": [{"name": "IMAGE_DIGEST", "value": "sha256:abc"}],
        },
    })
}

/// A TaskRun of `pipeline_run`, carrying its labels and annotations as Tekton propagates them.
fn task_run(pipeline_run: &Value, task: &str, status: &str) -> Value {
    let parent = pipeline_run["metadata"]["name"].as_str().unwrap();
    let mut metadata = pipeline_run["metadata"].clone();
    metadata["name"] = json!(format!("{parent}-{task}"));
    metadata["labels"]["tekton.dev/pipelineRun"] = json!(parent);
    metadata["labels"]["tekton.dev/pipelineTask"] = json!(task);
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": metadata,
        "spec": {"taskRef": {"name": task}},
        "status": {
            "conditions": [{"type": "Succeeded", "status": status, "reason": "Done"}],
            "startTime": "2026-12-06T10:00:02Z",
        },
    })
}

/// The manifest run-complete writes for `run` (its own types), with one workspace, one log and
/// one log that could not be collected.
fn manifest_of(run: &Value, prefix: &str) -> Manifest {
    let metadata = &run["metadata"];
    let name = metadata["name"].as_str().unwrap();
    let base = format!("{prefix}/{NS}/{name}");
    let annotation = |key: &str| metadata["annotations"][key].as_str().map(str::to_owned);
    let succeeded = run["status"]["conditions"][0]["status"] == "True";
    Manifest {
        kind: MANIFEST_KIND.to_owned(),
        run: RunRecord {
            kind: "PipelineRun".to_owned(),
            name: name.to_owned(),
            namespace: NS.to_owned(),
            uid: metadata["uid"].as_str().unwrap().to_owned(),
            outcome: if succeeded { "succeeded" } else { "failed" }.to_owned(),
            reason: run["status"]["conditions"][0]["reason"]
                .as_str()
                .map(str::to_owned),
            start_time: Some("2026-12-06T10:00:01Z".to_owned()),
            completion_time: Some("2026-12-06T10:04:13Z".to_owned()),
        },
        repo: annotation("tekflux.dev/repo-url"),
        sha: annotation("tekflux.dev/sha"),
        delivery_id: annotation("tekflux.dev/delivery-id"),
        rule: Some("apis".to_owned()),
        git_ref: annotation("tekflux.dev/ref"),
        paths: serde_json::from_str(&annotation("tekflux.dev/paths").unwrap()).unwrap(),
        workspaces: vec![ArchivedWorkspace {
            workspace: "shared-data".to_owned(),
            claim: "tekton-workspace".to_owned(),
            sub_path: name.to_owned(),
            key: format!("{base}/workspaces/shared-data.tar.zst"),
            bytes: 123_456,
            entries: 42,
            skipped_special: 0,
            sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
        }],
        skipped_workspaces: vec![SkippedWorkspace {
            workspace: "maven-cache".to_owned(),
            claim: None,
            reason: "an emptyDir, not a claim".to_owned(),
        }],
        logs: vec![
            serde_json::from_value::<LogEntry>(json!({
                "taskRun": format!("{name}-build"),
                "step": "maven",
                "pod": format!("{name}-build-pod"),
                "key": format!("{base}/logs/{name}-build/maven.log"),
                "bytes": 2048,
                "sha256": "00",
            }))
            .unwrap(),
            serde_json::from_value::<LogEntry>(json!({
                "taskRun": format!("{name}-push"),
                "missing": "the pod is gone",
            }))
            .unwrap(),
        ],
        cleanup_failures: Vec::new(),
        results: [("IMAGE_DIGEST".to_owned(), "sha256:abc".to_owned())].into(),
        tekflux_version: "0.1.0".to_owned(),
        archived_at: "2026-12-06T10:04:20Z".to_owned(),
    }
}

async fn put(s3: &TestS3, bucket: &str, key: &str, body: Vec<u8>) {
    s3.client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// Stores `run`'s manifest, archive and log as run-complete lays them out.
async fn archive(s3: &TestS3, bucket: &str, run: &Value) {
    let manifest = manifest_of(run, "runs");
    put(s3, bucket, &manifest.workspaces[0].key, b"tar".to_vec()).await;
    let log = manifest.logs[0].key.clone().unwrap();
    put(s3, bucket, &log, b"[INFO] BUILD SUCCESS".to_vec()).await;
    let key = format!("runs/{NS}/{}/manifest.json", manifest.run.name);
    put(s3, bucket, &key, serde_json::to_vec(&manifest).unwrap()).await;
}

/// The HelmRelease release-changed applied the launcher's image to.
fn helm_release(name: &str, run: Option<&str>, sha: Option<&str>) -> Value {
    let mut annotations = json!({
        "tekflux.dev/release-version": "5d41402",
        "tekflux.dev/release-event": format!("{REPO}#artifact-1"),
        "tekflux.dev/release-time": "2026-12-06T10:05:00Z",
    });
    if let Some(run) = run {
        annotations["tekflux.dev/release-run"] = json!(run);
    }
    if let Some(sha) = sha {
        annotations["tekflux.dev/release-sha"] = json!(sha);
    }
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": name, "version": "0.1.0"}}},
        "status": {"conditions": [{"type": "Ready", "status": "True",
                                    "reason": "UpgradeSucceeded", "message": "Helm upgrade succeeded"}]},
    })
}

/// The binary with the cluster of `kubeconfig`, the bucket, and `namespace: cicd`.
fn trace(
    s3: &TestS3,
    cwd: &Path,
    kubeconfig: Option<&Path>,
    bucket: Option<&str>,
    args: &[&str],
) -> Command {
    let mut command = support::tekflux(s3, cwd);
    command
        .env("TEKFLUX_NAMESPACE", NS)
        .env("TEKFLUX_S3_PREFIX", "runs")
        .env("TEKFLUX_KUBE_TIMEOUT_SECONDS", "5")
        // No ~/.kube/config of the developer's.
        .env("HOME", cwd)
        .arg("trace")
        .args(args);
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    if let Some(bucket) = bucket {
        command.env("TEKFLUX_S3_BUCKET", bucket);
    }
    command
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn run_named<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["name"] == name)
        .unwrap_or_else(|| panic!("no run {name} in {trace:#}"))
}

fn run_names(trace: &Value) -> Vec<String> {
    let mut names: Vec<String> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// A cluster with the push's two runs (and one TaskRun each), an unrelated run, the release;
/// a bucket with the three archives.
struct World {
    api: TestApiServer,
    s3: TestS3,
    bucket: String,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let api = TestApiServer::start().await;
        let s3 = TestS3::in_process().await;
        let bucket = s3.fresh_bucket().await;
        let dir = tempfile::tempdir().unwrap();
        let launcher = pipeline_run(LAUNCHER, SHA, DELIVERY, "True", "Succeeded");
        let gateway = pipeline_run(GATEWAY, SHA, DELIVERY, "False", "PipelineRunTimeout");
        let unrelated = pipeline_run(
            UNRELATED,
            OTHER_SHA,
            "another-delivery",
            "True",
            "Succeeded",
        );
        for run in [&launcher, &gateway, &unrelated] {
            let stored = api.insert(run.clone());
            archive(&s3, &bucket, &stored).await;
        }
        api.insert(task_run(&launcher, "build", "True"));
        api.insert(task_run(&gateway, "build", "False"));
        api.insert(helm_release(
            "api-launcher",
            Some(&format!("{NS}/{LAUNCHER}")),
            Some(SHA),
        ));
        api.insert(helm_release(
            "api-other",
            Some(&format!("{NS}/{UNRELATED}")),
            Some(OTHER_SHA),
        ));
        Self {
            api,
            s3,
            bucket,
            dir,
        }
    }

    /// A kubeconfig for the test API server as an operator would have it: their own user
    /// (impersonated here), so these reads are not counted against any function's Role
    /// (`tests/tests/rbac.rs`).
    fn kubeconfig(&self) -> std::path::PathBuf {
        let path = self.api.write_kubeconfig(self.dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let operator = text.replace("  user: {}\n", "  user: {as: tekflux-operator}\n");
        assert_ne!(operator, text, "the kubeconfig names its user as expected");
        std::fs::write(&path, operator).unwrap();
        path
    }

    async fn trace(&self, args: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig();
        run(trace(
            &self.s3,
            self.dir.path(),
            Some(&kubeconfig),
            Some(&self.bucket),
            args,
        ))
        .await
    }

    /// Deletes a run and its TaskRuns, as Tekton's pruner does.
    async fn prune(&self, name: &str) {
        let client = self.api.setup_client();
        for (kind, plural, object) in [
            ("PipelineRun", "pipelineruns", name.to_owned()),
            ("TaskRun", "taskruns", format!("{name}-build")),
        ] {
            let gvk = GroupVersionKind::gvk("tekton.dev", "v1", kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
            api.delete(&object, &DeleteParams::default()).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_traced_to_its_runs_archives_logs_and_release() {
    let world = World::start().await;
    let output = world.trace(&[SHA, "-o", "json"]).await;
    assert!(output.status.success(), "{output:?}");
    let trace = json_of(&output);
    assert_eq!(run_names(&trace), [GATEWAY, LAUNCHER]);

    let launcher = run_named(&trace, LAUNCHER);
    assert_eq!(launcher["inCluster"], true);
    assert_eq!(launcher["outcome"], "succeeded");
    assert_eq!(launcher["rule"], "apis");
    assert_eq!(launcher["deliveryId"], DELIVERY);
    assert_eq!(launcher["ref"], "refs/heads/main");
    assert_eq!(launcher["paths"], json!({"api": "api-launcher"}));
    assert_eq!(launcher["startTime"], "2026-12-06T10:00:01Z");
    assert_eq!(launcher["completionTime"], "2026-12-06T10:04:13Z");
    assert_eq!(launcher["results"]["IMAGE_DIGEST"], "sha256:abc");
    // Its TaskRun is shown under it, not as a run of its own.
    assert_eq!(
        launcher["tasks"],
        json!([{"name": format!("{LAUNCHER}-build"), "pipelineTask": "build",
                "outcome": "succeeded", "reason": "Done"}])
    );
    let archive = &launcher["archive"];
    assert_eq!(
        archive["manifest"],
        format!("s3://{}/runs/{NS}/{LAUNCHER}/manifest.json", world.bucket)
    );
    assert_eq!(
        archive["workspaces"][0]["url"],
        format!(
            "s3://{}/runs/{NS}/{LAUNCHER}/workspaces/shared-data.tar.zst",
            world.bucket
        )
    );
    assert_eq!(
        archive["logs"][0]["url"],
        format!(
            "s3://{}/runs/{NS}/{LAUNCHER}/logs/{LAUNCHER}-build/maven.log",
            world.bucket
        )
    );
    assert_eq!(archive["logs"][1]["missing"], "the pod is gone");
    assert_eq!(archive["skippedWorkspaces"][0]["workspace"], "maven-cache");

    let gateway = run_named(&trace, GATEWAY);
    assert_eq!(gateway["outcome"], "failed");
    assert_eq!(gateway["reason"], "PipelineRunTimeout");
    assert_eq!(gateway["tasks"][0]["outcome"], "failed");

    let releases = trace["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{trace:#}");
    assert_eq!(releases[0]["name"], "api-launcher");
    assert_eq!(releases[0]["run"], format!("{NS}/{LAUNCHER}"));
    assert_eq!(releases[0]["version"], "5d41402");
    assert_eq!(releases[0]["ready"], "True (UpgradeSucceeded)");
    assert_eq!(trace["missing"], json!([]), "{trace:#}");
    // Read as the operator, never written.
    let requests = world.api.requests();
    assert!(
        requests.iter().all(|request| request.method == "GET"),
        "{requests:?}"
    );

    // The delivery id finds the same runs; the text report names what matters.
    let output = world.trace(&[DELIVERY]).await;
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        &format!("PipelineRun {NS}/{LAUNCHER}  succeeded"),
        &format!("PipelineRun {NS}/{GATEWAY}  failed (PipelineRunTimeout)"),
        "tasks: build succeeded",
        "paths.api api-gateway",
        "finished 2026-12-06T10:04:13Z (4m 12s)",
        &format!("logs/{LAUNCHER}-build/maven.log  2.0 KiB"),
        "missing: the pod is gone",
        &format!("HelmRelease {NS}/api-launcher"),
        &format!("from run {NS}/{LAUNCHER}"),
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    assert!(!text.contains(UNRELATED), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_run_is_still_found_with_its_archive_and_logs() {
    let world = World::start().await;
    world.prune(LAUNCHER).await;

    // By a short sha: the cluster has the gateway run, the bucket both.
    let output = world.trace(&[&SHA[..7], "--output", "json"]).await;
    assert!(output.status.success(), "{output:?}");
    let trace = json_of(&output);
    assert_eq!(run_names(&trace), [GATEWAY, LAUNCHER]);
    let launcher = run_named(&trace, LAUNCHER);
    assert_eq!(launcher["inCluster"], false);
    assert_eq!(launcher["outcome"], "succeeded");
    assert_eq!(launcher["sha"], SHA);
    assert_eq!(launcher["rule"], "apis");
    assert_eq!(launcher["ref"], "refs/heads/main");
    assert_eq!(launcher["paths"], json!({"api": "api-launcher"}));
    assert_eq!(
        launcher["archive"]["logs"][0]["url"],
        format!(
            "s3://{}/runs/{NS}/{LAUNCHER}/logs/{LAUNCHER}-build/maven.log",
            world.bucket
        )
    );
    assert_eq!(
        launcher["archive"]["workspaces"][0]["sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(run_named(&trace, GATEWAY)["inCluster"], true);
    // Its release is still linked.
    assert_eq!(trace["releases"][0]["name"], "api-launcher");

    // By name, from the bucket's keys alone.
    let output = world.trace(&[LAUNCHER, "-o", "json"]).await;
    assert!(output.status.success(), "{output:?}");
    let trace = json_of(&output);
    assert_eq!(run_names(&trace), [LAUNCHER]);
    let text = String::from_utf8_lossy(&world.trace(&[LAUNCHER]).await.stdout).into_owned();
    assert!(text.contains("pruned from the cluster"), "{text}");
    assert!(text.contains("maven.log"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_or_a_bucket_it_shows_what_it_can_and_says_what_is_missing() {
    let world = World::start().await;

    // A cluster that does not answer: the runs come from the bucket.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let kubeconfig = world.dir.path().join("dead-kubeconfig");
    std::fs::write(
        &kubeconfig,
        std::fs::read_to_string(world.kubeconfig())
            .unwrap()
            .replace(&world.api.url(), &format!("http://{dead}")),
    )
    .unwrap();
    let output = run(trace(
        &world.s3,
        world.dir.path(),
        Some(&kubeconfig),
        Some(&world.bucket),
        &[SHA, "-o", "json"],
    ))
    .await;
    assert!(output.status.success(), "{output:?}");
    let trace_json = json_of(&output);
    assert_eq!(run_names(&trace_json), [GATEWAY, LAUNCHER]);
    assert_eq!(run_named(&trace_json, LAUNCHER)["inCluster"], Value::Null);
    let missing = trace_json["missing"].to_string();
    assert!(missing.contains("cluster"), "{missing}");

    // No bucket configured: the cluster's runs, and what is not shown.
    let kubeconfig = world.kubeconfig();
    let output = run(trace(
        &world.s3,
        world.dir.path(),
        Some(&kubeconfig),
        None,
        &[SHA, "-o", "json"],
    ))
    .await;
    assert!(output.status.success(), "{output:?}");
    let trace_json = json_of(&output);
    assert_eq!(run_names(&trace_json), [GATEWAY, LAUNCHER]);
    assert_eq!(run_named(&trace_json, LAUNCHER)["archive"], Value::Null);
    let missing = trace_json["missing"].to_string();
    assert!(missing.contains("storage.bucket is not set"), "{missing}");

    // Nothing matches: 66.
    let output = world.trace(&["no-such-delivery"]).await;
    assert_eq!(output.status.code(), Some(66), "{output:?}");

    // Neither a cluster nor a bucket: 64.
    let output = run(trace(&world.s3, world.dir.path(), None, None, &[SHA])).await;
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("missing: cluster"), "{text}");
    assert!(text.contains("missing: bucket"), "{text}");
}
