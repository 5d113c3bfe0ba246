//! What the run-complete test files share: one S3 server, one test API server, one claim mount
//! and one bucket, the function behind the same scaffolding `main` serves it with (so `/metrics`
//! is the real one), and runs stored the way the API server holds them.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tekflux_common::clients::kube_client_from_config;
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env, KubernetesSettings, ServerSettings};
use tekflux_common::server::{ServerState, router};
use tekflux_run_complete::manifest::Manifest;
use tekflux_run_complete::tekton::RunKind;
use tekflux_run_complete::verify::run_resource;
use tekflux_run_complete::{AppState, app};
use tekflux_testkit::kube_api::{RecordedRequest, TestApiServer};
use tekflux_testkit::s3::TestS3;
use tekflux_testkit::tree::pseudo_random;
use tower::ServiceExt;

pub const NS: &str = "cicd";
pub const CLAIM: &str = "tekton-workspace";
pub const REPO: &str = "https://github.com/acme/shop";
pub const SHA: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";
pub const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
pub const TASKRUN_SUCCEEDED: &str = "dev.tekton.event.taskrun.successful.v1";
pub const TASKRUN_FAILED: &str = "dev.tekton.event.taskrun.failed.v1";
/// The bearer token the tests' sender presents (`events.token`).
pub const EVENTS_TOKEN: &str = "run-complete-events-token";

/// One S3 server, one API server, one claim mount, one bucket, one metrics registry.
pub struct Harness {
    pub api: TestApiServer,
    pub s3: TestS3,
    pub bucket: String,
    pub mount: tempfile::TempDir,
    pub server: ServerState,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(TestS3::in_process().await).await
    }

    pub async fn start_with(s3: TestS3) -> Self {
        let bucket = s3.fresh_bucket().await;
        Self {
            api: TestApiServer::start().await,
            s3,
            bucket,
            mount: tempfile::tempdir().unwrap(),
            // Long enough for the multi-part uploads on a loaded machine.
            server: ServerState::new(ServerSettings {
                request_timeout_seconds: 300,
                ..ServerSettings::default()
            }),
        }
    }

    pub fn config(&self, extra: &str) -> Config {
        let yaml = format!(
            "namespace: {NS}\nevents:\n  token: env:EVENTS_TOKEN\nstorage:\n  bucket: {}\n  prefix: runs\n  mounts:\n    {CLAIM}: {}\n{extra}",
            self.bucket,
            self.mount.path().display()
        );
        let env = Env::new().with("EVENTS_TOKEN", EVENTS_TOKEN);
        Config::from_yaml(&yaml, "test.yaml", &env).unwrap()
    }

    /// run-complete with `extra` appended to the storage section (or after it, for top-level
    /// keys such as `repositories:`).
    pub fn state(&self, extra: &str, s3: aws_sdk_s3::Client) -> AppState {
        let kube =
            kube_client_from_config(self.api.config(), &KubernetesSettings::default()).unwrap();
        AppState::new(
            &self.config(extra),
            Some(kube),
            Some(s3),
            ReplySink::new(None).unwrap(),
            &self.server.metrics,
        )
    }

    fn routes(&self, state: &AppState) -> Router {
        router(app(state.clone()), self.server.clone())
    }

    /// Sends a Tekton event the way the Broker delivers Tekton's (binary mode), from an
    /// authenticated sender.
    pub async fn send(
        &self,
        state: &AppState,
        ty: &str,
        data: &Value,
    ) -> (StatusCode, HeaderMap, Value) {
        self.send_with(state, ty, data, Some(&format!("Bearer {EVENTS_TOKEN}")))
            .await
    }

    /// Sends a Tekton event with `authorization` (or none).
    pub async fn send_with(
        &self,
        state: &AppState,
        ty: &str,
        data: &Value,
        authorization: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::post("/")
            .header("ce-specversion", "1.0")
            .header("ce-id", uuid::Uuid::new_v4().to_string())
            .header("ce-type", ty)
            .header(
                "ce-source",
                "/apis/tekton.dev/v1beta1/namespaces/cicd/runs/x",
            )
            .header("content-type", "application/json")
            .body(Body::from(data.to_string()))
            .unwrap();
        if let Some(authorization) = authorization {
            request
                .headers_mut()
                .insert("authorization", authorization.parse().unwrap());
        }
        let response = self.routes(state).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// The value of one series in the `/metrics` text, e.g.
    /// `tekflux_run_complete_refused_total{reason="not_found"}`; `None` when absent.
    pub async fn metric(&self, state: &AppState, series: &str) -> Option<f64> {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = self.routes(state).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self
            .s3
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => Some(object.body.collect().await.unwrap().to_vec()),
            // Only the store's "no such key" means no object; any other failure fails the test.
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(err) => panic!(
                "GET {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&err)
            ),
        }
    }

    /// Every key in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        self.s3.keys(&self.bucket, "").await
    }

    pub async fn manifest(&self, run: &str) -> Option<Manifest> {
        let bytes = self
            .object(&format!("runs/{NS}/{run}/manifest.json"))
            .await?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    /// The run's directory on the claim, as git-push lays it out (`subPath` = run name).
    pub fn workspace_dir(&self, run: &str) -> PathBuf {
        self.mount.path().join(run)
    }

    /// Stores a run as the API server holds it and returns the stored copy, whose uid the
    /// server chose.
    pub fn store(&self, run: Value) -> Value {
        self.api.insert(run)
    }

    /// Deletes a stored TaskRun, as `kubectl delete` would.
    pub async fn delete_task_run(&self, name: &str) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.api.setup_client(), NS, &run_resource(RunKind::TaskRun));
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// API requests since the last [`TestApiServer::clear_requests`], as `METHOD path`.
    pub fn api_calls(&self) -> Vec<String> {
        self.api
            .requests()
            .iter()
            .map(|request: &RecordedRequest| format!("{} {}", request.method, request.path))
            .collect()
    }
}

/// A small tree with what restore must keep: nested and empty directories, modes, links.
pub fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("src/nested")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("README.md"), "# shop\n").unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n".repeat(1000)).unwrap();
    std::fs::write(dir.join("src/nested/data.bin"), pseudo_random(300_000, 7)).unwrap();
    std::fs::write(dir.join("build.sh"), "#!/bin/sh\necho build\n").unwrap();
    std::fs::set_permissions(dir.join("build.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("readonly.txt"), "keep").unwrap();
    std::fs::set_permissions(
        dir.join("readonly.txt"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/main.rs", dir.join("link-to-main")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", dir.join("dangling")).unwrap();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Annotations git-push puts on a run with one `archive: true` workspace at `sub_path`.
pub fn git_push_annotations(sub_path: &str) -> Value {
    json!({
        "tekflux.dev/sha": SHA,
        "tekflux.dev/delivery-id": DELIVERY,
        "tekflux.dev/repo-url": REPO,
        "tekflux.dev/archive-workspaces":
            json!([{"workspace": "source", "claim": CLAIM, "subPath": sub_path}]).to_string(),
    })
}

/// A finished TaskRun as the API server serves it (`tekton.dev/v1`): its own `subPath`, pod
/// `<name>-pod` with steps `clone` and `build`, `Succeeded=True`.
pub fn task_run(name: &str, annotations: Value, results: Value) -> Value {
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations,
            "labels": {"app.kubernetes.io/managed-by": "tekflux"}},
        "spec": {"taskRef": {"name": "build"}, "workspaces": [
            {"name": "source", "persistentVolumeClaim": {"claimName": CLAIM}, "subPath": name}]},
        "status": {
            "podName": format!("{name}-pod"),
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
            "startTime": "2026-11-24T10:00:00Z",
            "completionTime": "2026-11-24T10:03:00Z",
            "steps": [{"name": "clone", "container": "step-clone"},
                      {"name": "build", "container": "step-build"}],
            "results": results,
        }
    })
}

/// The event body Tekton sends for a stored run: the run converted to v1beta1 (results under
/// `taskResults` / `pipelineResults`), under `taskRun` / `pipelineRun`.
pub fn event_of(stored: &Value) -> Value {
    let mut run = stored.clone();
    run["apiVersion"] = json!("tekton.dev/v1beta1");
    let (key, results) = match stored["kind"].as_str() {
        Some("PipelineRun") => ("pipelineRun", "pipelineResults"),
        _ => ("taskRun", "taskResults"),
    };
    if let Some(status) = run["status"].as_object_mut()
        && let Some(value) = status.remove("results")
    {
        status.insert(results.to_owned(), value);
    }
    json!({ key: run })
}

/// The uid the API server gave a stored run.
pub fn uid_of(stored: &Value) -> String {
    stored["metadata"]["uid"].as_str().unwrap().to_owned()
}
