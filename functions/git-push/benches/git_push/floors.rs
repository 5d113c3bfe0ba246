//! The two floors git-push is measured against: servers that do per request only what any
//! webhook-to-PipelineRun server must, each through a different client.
//!
//! - The **kube-rs floor** reads the body and creates one fixed PipelineRun through the same
//!   `kube::Client` git-push uses, so git-push's own cost is the difference.
//! - The **raw floor** sends a pre-serialized PipelineRun through a bare hyper client and reads
//!   the answer without parsing it: the least any server that creates a run can cost, so the
//!   difference between the floors is what kube-rs's typed layers cost.
//!
//! Neither checks a signature, parses the push, routes, logs or counts.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use tekflux_common::config::KubernetesSettings;

use crate::{NAMESPACE, REPO};

/// The run's name in [`floor_pipeline_run`]: each request writes its own number over the
/// zeros, so that every run is a new object.
const NAME_TEMPLATE: &str = "floor-000000000000";

/// The kube-rs floor's routes.
pub async fn kube_floor_router(kubeconfig: &Path) -> anyhow::Result<axum::Router> {
    let settings = KubernetesSettings::default();
    let kube = tekflux_common::clients::kube_client_from_kubeconfig(kubeconfig, &settings).await?;
    let gvk = GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "pipelineruns");
    let floor = Arc::new(KubeFloor {
        api: Api::namespaced_with(kube, NAMESPACE, &resource),
        run: serde_json::from_value(floor_pipeline_run())?,
        params: PostParams {
            dry_run: false,
            field_manager: Some(tekflux_git_push::app::FIELD_MANAGER.to_owned()),
        },
        next: AtomicU64::new(0),
    });
    let handler = move |body: Bytes| {
        let floor = floor.clone();
        async move { floor.create(body).await }
    };
    Ok(axum::Router::new().route("/webhooks/github", axum::routing::post(handler)))
}

struct KubeFloor {
    api: Api<DynamicObject>,
    run: DynamicObject,
    params: PostParams,
    next: AtomicU64,
}

impl KubeFloor {
    async fn create(&self, body: Bytes) -> (StatusCode, axum::Json<Value>) {
        black_box(body);
        let mut run = self.run.clone();
        run.metadata.name = Some(run_name(&self.next));
        match self.api.create(&self.params, &run).await {
            Ok(created) => (
                StatusCode::OK,
                axum::Json(json!({ "created": created.metadata.name })),
            ),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({ "error": error.to_string() })),
            ),
        }
    }
}

/// The raw floor's routes: the same POST kube-rs sends, from bytes serialized once.
pub async fn raw_floor_router(kubeconfig: &Path) -> anyhow::Result<axum::Router> {
    let server = api_server_url(kubeconfig)?;
    let uri: Uri = format!(
        "{}/apis/tekton.dev/v1/namespaces/{NAMESPACE}/pipelineruns?fieldManager={}",
        server.trim_end_matches('/'),
        tekflux_git_push::app::FIELD_MANAGER
    )
    .parse()?;
    let body = serde_json::to_vec(&floor_pipeline_run())?;
    let name_at = find(&body, NAME_TEMPLATE.as_bytes())
        .context("the floor run's name is not in its serialized body")?;
    let floor = Arc::new(RawFloor {
        client: Client::builder(TokioExecutor::new()).build_http(),
        uri,
        body,
        number_at: name_at + "floor-".len(),
        next: AtomicU64::new(0),
    });
    let handler = move |body: Bytes| {
        let floor = floor.clone();
        async move { floor.create(body).await }
    };
    Ok(axum::Router::new().route("/webhooks/github", axum::routing::post(handler)))
}

struct RawFloor {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    /// The serialized run, its name's number at `number_at`.
    body: Vec<u8>,
    number_at: usize,
    next: AtomicU64,
}

impl RawFloor {
    async fn create(&self, body: Bytes) -> StatusCode {
        black_box(body);
        let mut run = self.body.clone();
        let number = format!("{:012x}", self.next.fetch_add(1, Ordering::Relaxed));
        run[self.number_at..self.number_at + number.len()].copy_from_slice(number.as_bytes());
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(run)));
        let Ok(request) = request else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        match self.client.request(request).await {
            Ok(response) => {
                let created = response.status() == StatusCode::CREATED;
                match response.into_body().collect().await {
                    Ok(answer) if created => {
                        black_box(answer.to_bytes());
                        StatusCode::OK
                    }
                    _ => StatusCode::BAD_GATEWAY,
                }
            }
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// `floor-` and a 12-digit hex number from `next`.
fn run_name(next: &AtomicU64) -> String {
    format!("floor-{:012x}", next.fetch_add(1, Ordering::Relaxed))
}

/// The API server's URL in the kubeconfig the bench wrote.
fn api_server_url(kubeconfig: &Path) -> anyhow::Result<String> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    config
        .clusters
        .into_iter()
        .find_map(|named| named.cluster.and_then(|cluster| cluster.server))
        .context("the kubeconfig names no API server")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A PipelineRun shaped like the one git-push builds for the bench push (same labels,
/// annotations, params and workspace), so every server sends and receives about as much JSON.
fn floor_pipeline_run() -> Value {
    let sha = "a81be0c47d5e2f3b6c9d0e1f2a3b4c5d6e7f8091";
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {
            "name": NAME_TEMPLATE,
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/managed-by": "tekflux",
                "tekflux.dev/rule": "payments-api",
                "tekflux.dev/provider": "github",
                "tekflux.dev/repo": "acme-payments-api",
                "tekflux.dev/ref-kind": "branch",
                "tekflux.dev/branch": "main",
                "tekflux.dev/sha": sha,
            },
            "annotations": {
                "tekflux.dev/delivery-id": "00000040-0000-4000-8000-000000000000",
                "tekflux.dev/repo-url": REPO,
                "tekflux.dev/ref": "refs/heads/main",
                "tekflux.dev/sha": sha,
                "tekflux.dev/pusher": "dokafor",
                "tekflux.dev/archive-workspaces":
                    r#"[{"claim":"tekton-workspace","subPath":"payments-api-0123456789ab","workspace":"shared-data"}]"#,
            },
        },
        "spec": {
            "pipelineRef": { "name": "build-and-push" },
            "params": [
                { "name": "context", "value": "services/payments/" },
                { "name": "image", "value": "registry.example.com/payments:a81be0c" },
                { "name": "revision", "value": sha },
                { "name": "url", "value": REPO },
            ],
            "workspaces": [{
                "name": "shared-data",
                "persistentVolumeClaim": { "claimName": "tekton-workspace" },
                "subPath": "payments-api-0123456789ab",
            }],
            "taskRunTemplate": { "serviceAccountName": "pipeline" },
            "timeouts": { "pipeline": "30m" },
        },
    })
}
