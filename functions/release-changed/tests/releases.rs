//! release-changed end to end: change events in, HelmReleases server-side-applied on the test
//! API server (Flux's HelmRelease validated against its upstream CRD schema) through the real
//! `kube::Client`, and the reply checked. The runs that built the images are Tekton objects on
//! the same server, read back through the same client; forged and disallowed releases are
//! refused, apply nothing and show in `/metrics`.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::{TimeDelta, Utc};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tekflux_common::clients::{
    WATCH_READ_TIMEOUT, kube_client_from_config, kube_watch_client_from_config,
};
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env, HelmReleaseApi, KubernetesSettings, ServerSettings};
use tekflux_common::metrics::Metrics;
use tekflux_common::server::{self, Readiness, ServerState};
use tekflux_release_changed::helm_release::{
    EVENT_ANNOTATION, RUN_ANNOTATION, SHA_ANNOTATION, TIME_ANNOTATION, VERSION_ANNOTATION,
    api_resource,
};
use tekflux_release_changed::{AppState, FIELD_MANAGER, app};
use tekflux_run_complete::reply::ImageReference;
use tekflux_testkit::cdevents::{CdeventsSpec, Checked};
use tekflux_testkit::kube_api::{Fault, TestApiServer};
use tower::ServiceExt;

const NS: &str = "cicd";
const FLUX_GROUP: &str = "helm.toolkit.fluxcd.io";
const OPERATOR_GROUP: &str = "helm.fluxcd.io";
const IMAGE: &str = "registry.example.com/acme/api-launcher";
const DIGEST: &str = "sha256:4d2c1e0b9a8f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d";
const ARTIFACT_PUBLISHED: &str = "dev.cdevents.artifact.published.0.3.0";
const RELEASE_CHANGED: &str = "dev.tekflux.release.changed.v1";

const TEKTON_GROUP: &str = "tekton.dev";
const OTHER_DIGEST: &str =
    "sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";

/// `api-launcher` takes builds of the `api-pipeline` rule from `main` and `release/*`; the
/// legacy release only from `main`, or a registry push.
const CONFIG: &str = r#"namespace: cicd
events:
  token: env:EVENTS_TOKEN
repositories:
  - url: https://github.com/acme/api-launcher
    pipeline: api-pipeline
  - url: https://github.com/acme/tools
    name: tools
    pipeline: build
releases:
  - image: registry.example.com/acme/api-launcher
    helmRelease: api-launcher
    set: image.tag
    from: { rules: [api-pipeline], branches: [main, "release/*"] }
    values: [replicaCount, resources]
  - image: registry.example.com/acme/api-launcher
    helmRelease: legacy/api-launcher
    set: image.tag
    api: helmOperator
    from: { rules: [api-pipeline], branches: [main], registry: true }
  - chart: platform
    helmRelease: platform
    from: any
  - chart: gateway
    helmRelease: gateway
    from: any
"#;

/// The bearer token the tests' sender presents (`events.token`).
const EVENTS_TOKEN: &str = "release-changed-events-token";

fn env() -> Env {
    Env::new().with("EVENTS_TOKEN", EVENTS_TOKEN)
}

struct Harness {
    api: TestApiServer,
    metrics: Metrics,
}

impl Harness {
    async fn start() -> Self {
        let harness = Self {
            api: TestApiServer::start().await,
            metrics: Metrics::new(),
        };
        harness.seed().await;
        harness
    }

    fn kube(&self) -> kube::Client {
        kube_client_from_config(self.api.config(), &KubernetesSettings::default()).unwrap()
    }

    fn state(&self) -> AppState {
        self.state_with(AppState::new)
    }

    /// The state `build` (`AppState::new` or `AppState::watching_releases`) makes for `CONFIG`.
    fn state_with(
        &self,
        build: fn(&Config, Option<kube::Client>, ReplySink, &Metrics) -> AppState,
    ) -> AppState {
        let config = Config::from_yaml(CONFIG, "test.yaml", &env()).unwrap();
        build(
            &config,
            Some(self.kube()),
            ReplySink::new(None).unwrap(),
            &self.metrics,
        )
    }

    /// The state a server runs with: the releases the rules name listed and watched. Returns
    /// once every watched namespace is listed.
    async fn watching_state(&self) -> AppState {
        let state = self.state_with(AppState::watching_releases);
        listed(&state).await;
        state
    }

    /// The HelmRelease requests (`GET` or `PATCH`, with the answer's code) since the log was last
    /// cleared; watches and lists left out.
    fn release_calls(&self) -> Vec<(String, u16)> {
        self.api
            .requests()
            .iter()
            .filter(|request| {
                request.path.contains("/helmreleases/") && !request.query.contains_key("watch")
            })
            .map(|request| (request.method.clone(), request.status.unwrap_or_default()))
            .collect()
    }

    /// A run as git-push creates it (rule label, ref annotation) and Tekton finishes it
    /// (`Succeeded=True`, `IMAGE_URL` and `IMAGE_DIGEST` in its v1 results), stored on the API
    /// server; `edit` changes it before it is stored. Returns the stored run, uid included.
    fn build(
        &self,
        name: &str,
        rule: &str,
        branch: &str,
        tag: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Value {
        let mut run = json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {
                    "app.kubernetes.io/managed-by": "tekflux",
                    "tekflux.dev/rule": rule,
                    "tekflux.dev/ref-kind": "branch",
                    "tekflux.dev/branch": branch.replace('/', "-"),
                },
                "annotations": {"tekflux.dev/ref": format!("refs/heads/{branch}")},
            },
            "spec": {"pipelineRef": {"name": rule}},
            "status": {
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
                "results": [
                    {"name": "IMAGE_URL", "value": format!("{IMAGE}:{tag}")},
                    {"name": "IMAGE_DIGEST", "value": DIGEST},
                ],
            },
        });
        edit(&mut run);
        self.api.insert(run)
    }

    /// What `/metrics` says for `tekflux_release_changed_refused_total{reason}`.
    async fn refused(&self, reason: &str) -> u64 {
        let state = ServerState {
            metrics: self.metrics.clone(),
            readiness: Readiness::new(),
            settings: ServerSettings::default(),
        };
        let router = server::router(app(self.state()), state);
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let wanted = format!("tekflux_release_changed_refused_total{{reason=\"{reason}\"}} ");
        String::from_utf8(body.to_vec())
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .map_or(0, |value| value.trim().parse().unwrap())
    }

    /// PATCH requests (applies) the API server saw since the log was last cleared.
    fn patches(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|request| request.method == "PATCH")
            .count()
    }

    /// The releases as Flux's kustomize-controller would have applied them from Git, each
    /// field owned by it; the Helm Operator release as a person created it.
    async fn seed(&self) {
        let flux = |name: &str, chart: Value| {
            json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "interval": "10m",
                    "chart": chart,
                    "values": {
                        "image": {"repository": IMAGE, "tag": "1.0.0"},
                        "replicaCount": 2,
                    },
                },
            })
        };
        let chart = |name: &str| {
            json!({"spec": {"chart": name, "version": "0.1.0",
                   "sourceRef": {"kind": "HelmRepository", "name": "acme"}}})
        };
        self.kustomize_apply(flux("api-launcher", chart("api-launcher")))
            .await;
        self.kustomize_apply(flux("platform", chart("platform")))
            .await;
        let mut gateway = flux("gateway", Value::Null);
        gateway["spec"].as_object_mut().unwrap().remove("chart");
        gateway["spec"]["chartRef"] = json!({"kind": "OCIRepository", "name": "gateway"});
        self.kustomize_apply(gateway).await;
        self.api.insert_as(
            "helmreleases",
            json!({
                "apiVersion": "helm.fluxcd.io/v1",
                "kind": "HelmRelease",
                "metadata": {"name": "api-launcher", "namespace": "legacy"},
                "spec": {
                    "releaseName": "api-launcher",
                    "chart": {"repository": "https://charts.example.com", "name": "api-launcher",
                              "version": "0.1.0"},
                    "values": {"image": {"repository": IMAGE, "tag": "1.0.0"}},
                },
            }),
        );
    }

    async fn kustomize_apply(&self, object: Value) {
        let resource = api_resource(HelmReleaseApi::Flux);
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        // Flux's request, not release-changed's: its Role need not allow it.
        let api: Api<DynamicObject> = Api::namespaced_with(self.api.setup_client(), NS, &resource);
        api.patch(
            &name,
            &PatchParams::apply("kustomize-controller"),
            &Patch::Apply(&object),
        )
        .await
        .unwrap();
    }

    fn flux_release(&self, name: &str) -> Value {
        self.api
            .get_object(FLUX_GROUP, "helmreleases", Some(NS), name)
            .unwrap()
    }

    fn operator_release(&self) -> Value {
        self.api
            .get_object(
                OPERATOR_GROUP,
                "helmreleases",
                Some("legacy"),
                "api-launcher",
            )
            .unwrap()
    }
}

/// Waits until every namespace `state` watches is listed.
async fn listed(state: &AppState) {
    for _ in 0..500 {
        if state.watched_releases_listed() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the watched namespaces were not listed within 5 s");
}

/// An explicit chart version for `platform` (`from: any`), at `time`.
async fn platform_version(
    state: &AppState,
    id: &str,
    time: &str,
    version: &str,
) -> (StatusCode, HeaderMap, Value) {
    let data = json!({"chart": "platform", "version": version});
    send(state, id, RELEASE_CHANGED, Some(time), &data).await
}

/// A stale event was skipped: no reply, and `platform` keeps `version`.
#[track_caller]
fn assert_platform_kept(harness: &Harness, headers: &HeaderMap, version: &str) {
    assert!(
        headers.get("ce-type").is_none(),
        "no reply for a stale event"
    );
    assert_eq!(
        harness.flux_release("platform")["spec"]["chart"]["spec"]["version"],
        version
    );
}

/// Sends one CloudEvent in binary mode, with `time` when given.
async fn send(
    state: &AppState,
    id: &str,
    ty: &str,
    time: Option<&str>,
    data: &Value,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::post("/")
        .header("authorization", format!("Bearer {EVENTS_TOKEN}"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", ty)
        .header("ce-source", "https://github.com/acme/api-launcher")
        .header("content-type", "application/json");
    if let Some(time) = time {
        request = request.header("ce-time", time);
    }
    let request = request.body(Body::from(data.to_string())).unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    tekflux_testkit::answer::answer(response).await
}

/// What run-complete sends for `run`, whose results name `IMAGE:tag` (its own purl code):
/// the run's identity, and the image with `DIGEST`.
fn artifact_published(run: &Value, tag: &str) -> Value {
    let mut data = anonymous_artifact(tag);
    data["customData"]["run"] = json!({
        "kind": run["kind"],
        "name": run["metadata"]["name"],
        "namespace": run["metadata"]["namespace"],
        "uid": run["metadata"]["uid"],
    });
    data["customData"]["imageUrl"] = json!(format!("{IMAGE}:{tag}"));
    data["customData"]["imageDigest"] = json!(DIGEST);
    data
}

/// An artifact published event for `IMAGE:tag` that names no run (a third-party producer).
fn anonymous_artifact(tag: &str) -> Value {
    let image = ImageReference::parse(&format!("{IMAGE}:{tag}"), DIGEST).unwrap();
    json!({
        "context": {"type": ARTIFACT_PUBLISHED, "version": "0.5.0"},
        "subject": {"id": image.purl(), "source": "https://github.com/acme/api-launcher",
                    "content": {}},
        "customData": {"image": image.pinned()},
    })
}

/// Sends an explicit `dev.tekflux.release.changed.v1` event, without `time`.
async fn release_changed(
    state: &AppState,
    id: &str,
    data: &Value,
) -> (StatusCode, HeaderMap, Value) {
    send(state, id, RELEASE_CHANGED, None, data).await
}

/// Sends run-complete's artifact published event for `run`, which built `IMAGE:tag`.
async fn publish(
    state: &AppState,
    id: &str,
    time: Option<&str>,
    run: &Value,
    tag: &str,
) -> (StatusCode, HeaderMap, Value) {
    send(
        state,
        id,
        ARTIFACT_PUBLISHED,
        time,
        &artifact_published(run, tag),
    )
    .await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn a_built_image_updates_both_releases_and_leaves_every_other_field_to_its_owner() {
    let harness = Harness::start().await;
    let state = harness.state();
    let run = harness.build("api-pipeline-1", "api-pipeline", "main", "1.2.3", |_| {});
    let (status, headers, reply) =
        publish(&state, "run-1", Some("2026-11-24T06:00:00Z"), &run, "1.2.3").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        header(&headers, "ce-type"),
        "dev.tekflux.release.applied.v1"
    );
    // tekflux's own type, not a CDEvent: a valid CloudEvent with JSON data.
    assert_eq!(
        CdeventsSpec::from_corpus().assert_binary(&headers, &reply),
        Checked::Tekflux("dev.tekflux.release.applied.v1".to_owned())
    );
    assert_eq!(header(&headers, "ce-subject"), "cicd/api-launcher");
    assert_eq!(header(&headers, "ce-tekfluxnamespace"), NS);
    assert!(
        reply["artifact"]
            .as_str()
            .unwrap()
            .starts_with("pkg:oci/api-launcher@sha256%3A")
    );
    let releases = reply["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[0]["previous"], "1.0.0");
    assert_eq!(releases[1]["apiVersion"], "helm.fluxcd.io/v1");
    // Each release whole: the Flux v2 one here, the Helm Operator one in `legacy`, both moved
    // from the tag Git had to the built one.
    assert_eq!(
        reply["releases"],
        serde_json::json!([
            {"apiVersion": "helm.toolkit.fluxcd.io/v2", "applied": true, "name": "api-launcher",
             "namespace": NS, "previous": "1.0.0", "version": "1.2.3"},
            {"apiVersion": "helm.fluxcd.io/v1", "applied": true, "name": "api-launcher",
             "namespace": "legacy", "previous": "1.0.0", "version": "1.2.3"},
        ])
    );

    let flux = harness.flux_release("api-launcher");
    assert_eq!(flux["spec"]["values"]["image"]["tag"], "1.2.3");
    // Everything else is as Git had it.
    assert_eq!(flux["spec"]["values"]["image"]["repository"], IMAGE);
    assert_eq!(flux["spec"]["values"]["replicaCount"], 2);
    assert_eq!(flux["spec"]["interval"], "10m");
    assert_eq!(flux["spec"]["chart"]["spec"]["version"], "0.1.0");
    let annotations = &flux["metadata"]["annotations"];
    assert_eq!(annotations[VERSION_ANNOTATION], "1.2.3");
    assert_eq!(
        annotations[EVENT_ANNOTATION],
        "https://github.com/acme/api-launcher#run-1"
    );
    assert_eq!(annotations[TIME_ANNOTATION], "2026-11-24T06:00:00+00:00");
    // The run it came from, for `tekflux trace`; this event carries no sha extension.
    assert_eq!(
        annotations[RUN_ANNOTATION],
        format!("{NS}/{}", run["metadata"]["name"].as_str().unwrap())
    );
    assert!(annotations.get(SHA_ANNOTATION).is_none());
    let owners = harness
        .api
        .field_owners(FLUX_GROUP, "helmreleases", Some(NS), "api-launcher");
    let ours = &owners[&format!("{FIELD_MANAGER}/Apply")];
    assert!(
        ours.contains(&".spec.values.image.tag".to_owned()),
        "{owners:?}"
    );
    assert!(
        !ours.iter().any(|path| path.contains("replicaCount")),
        "{owners:?}"
    );
    let theirs = &owners["kustomize-controller/Apply"];
    assert!(theirs.contains(&".spec.interval".to_owned()), "{owners:?}");
    assert!(
        !theirs.contains(&".spec.values.image.tag".to_owned()),
        "{owners:?}"
    );

    let operator = harness.operator_release();
    assert_eq!(operator["spec"]["values"]["image"]["tag"], "1.2.3");
    assert_eq!(operator["spec"]["chart"]["version"], "0.1.0");

    // A redelivery gets the same answer and changes nothing.
    let before = harness.flux_release("api-launcher");
    let (status, again, _) =
        publish(&state, "run-1", Some("2026-11-24T06:00:00Z"), &run, "1.2.3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&again, "ce-id"), header(&headers, "ce-id"));
    assert_eq!(harness.flux_release("api-launcher")["spec"], before["spec"]);
}

#[tokio::test]
async fn an_older_event_arriving_late_does_not_roll_back() {
    let harness = Harness::start().await;
    let state = harness.state();
    let newer = harness.build("api-pipeline-2", "api-pipeline", "main", "1.3.0", |_| {});
    let (status, _, _) = publish(
        &state,
        "run-2",
        Some("2026-11-24T06:10:00Z"),
        &newer,
        "1.3.0",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The older build was a TaskRun, as Tekton sends it (v1beta1 result names).
    let older = harness.build("api-pipeline-1", "api-pipeline", "main", "1.2.0", |run| {
        run["kind"] = json!("TaskRun");
        run["spec"] = json!({"taskRef": {"name": "api-pipeline"}});
        let results = run["status"].as_object_mut().unwrap().remove("results");
        run["status"]["taskResults"] = results.unwrap();
    });
    let (status, headers, body) = publish(
        &state,
        "run-1",
        Some("2026-11-24T06:00:00Z"),
        &older,
        "1.2.0",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers.get("ce-type").is_none(),
        "no reply for a stale event"
    );
    assert!(body["reason"].as_str().unwrap().contains("newer"), "{body}");
    assert_eq!(
        harness.flux_release("api-launcher")["spec"]["values"]["image"]["tag"],
        "1.3.0"
    );
    assert_eq!(
        harness.operator_release()["spec"]["values"]["image"]["tag"],
        "1.3.0"
    );
}

/// A chart version announced by a pipeline (`tekflux send --extension tekfluxsha=…`) names the
/// commit on the release, for `tekflux trace`, and no run: the event names none.
#[tokio::test]
async fn an_announced_chart_version_records_the_commit_it_came_from() {
    let harness = Harness::start().await;
    let state = harness.state();
    let sha = "3f2a9c1d0e4b5a6978812233445566778899aabb";
    let request = Request::post("/")
        .header("authorization", format!("Bearer {EVENTS_TOKEN}"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "announce-1")
        .header("ce-type", RELEASE_CHANGED)
        .header("ce-source", "https://github.com/acme/api-launcher")
        .header("ce-tekfluxsha", sha)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"chart": "platform", "version": "0.2.0"}).to_string(),
        ))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let (status, _, body) = tekflux_testkit::answer::answer(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let platform = harness.flux_release("platform");
    let annotations = &platform["metadata"]["annotations"];
    assert_eq!(annotations[SHA_ANNOTATION], sha);
    assert!(annotations.get(RUN_ANNOTATION).is_none(), "{annotations}");
}

#[tokio::test]
async fn charts_and_explicit_releases_set_the_chart_version_and_values() {
    let harness = Harness::start().await;
    let state = harness.state();
    let (status, _, body) = release_changed(
        &state,
        "chart-1",
        &json!({"chart": "platform", "version": "0.2.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let platform = harness.flux_release("platform");
    assert_eq!(platform["spec"]["chart"]["spec"]["version"], "0.2.0");
    assert_eq!(platform["spec"]["chart"]["spec"]["chart"], "platform");

    let (status, _, body) = release_changed(
        &state,
        "edit-1",
        &json!({"release": "cicd/api-launcher",
                "values": {"replicaCount": 5, "resources": {"limits": {"memory": "256Mi"}}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let release = harness.flux_release("api-launcher");
    assert_eq!(release["spec"]["chart"]["spec"]["version"], "0.1.0");
    assert_eq!(release["spec"]["values"]["replicaCount"], 5);
    assert_eq!(
        release["spec"]["values"]["resources"]["limits"]["memory"],
        "256Mi"
    );
    assert_eq!(release["spec"]["values"]["image"]["tag"], "1.0.0");
    // A release whose rule says `from: any` and sets no value takes a chart version by name.
    let (status, _, body) = release_changed(
        &state,
        "edit-2",
        &json!({"release": "platform", "chartVersion": "0.3.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        harness.flux_release("platform")["spec"]["chart"]["spec"]["version"],
        "0.3.0"
    );

    // A chart version cannot be set on a release whose chart comes from chartRef.
    let before = harness.flux_release("gateway");
    let (status, _, body) = release_changed(
        &state,
        "chart-2",
        &json!({"chart": "gateway", "version": "2.0.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("chartRef"), "{body}");
    assert_eq!(harness.flux_release("gateway"), before);
}

#[tokio::test]
async fn input_that_can_never_apply_is_refused_and_changes_nothing() {
    let harness = Harness::start().await;
    let state = harness.state();
    let before = harness.flux_release("api-launcher");
    harness.api.clear_requests();
    let cases = [
        (
            "dev.tekton.event.taskrun.successful.v1",
            json!({}),
            StatusCode::BAD_REQUEST,
        ),
        (
            RELEASE_CHANGED,
            json!({"image": "a/b:1", "chart": "c"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            RELEASE_CHANGED,
            json!("not an object"),
            StatusCode::BAD_REQUEST,
        ),
        (
            RELEASE_CHANGED,
            json!({"image": format!("{IMAGE}:$(curl evil)")}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            RELEASE_CHANGED,
            json!({"release": "kube-system/coredns", "chartVersion": "9.9.9"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            ARTIFACT_PUBLISHED,
            json!({"subject": {"id": "pkg:maven/org.acme/app@1.0"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (ty, data, expected) in cases {
        let (status, _, body) = send(&state, "bad", ty, None, &data).await;
        assert_eq!(status, expected, "{ty} {data}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // Nothing matches: acknowledged, nothing sent to the cluster.
    let (status, headers, body) = release_changed(
        &state,
        "other",
        &json!({"image": "registry.example.com/acme/other:1.0.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("ce-type").is_none());
    assert!(body["reason"].as_str().unwrap().contains("no release rule"));
    assert!(harness.api.requests().is_empty());
    assert_eq!(harness.flux_release("api-launcher"), before);
}

#[tokio::test]
async fn cluster_trouble_is_retried_and_the_retry_applies() {
    let harness = Harness::start().await;
    let state = harness.state();
    let run = harness.build("api-pipeline-4", "api-pipeline", "main", "1.4.0", |_| {});
    let event = artifact_published(&run, "1.4.0");

    // The first call is the read of the run.
    harness.api.fail_next(1, Fault::Status(500));
    let (status, _, _) = send(&state, "run-4", ARTIFACT_PUBLISHED, None, &event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    harness.api.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let (status, headers, _) = send(&state, "run-4", ARTIFACT_PUBLISHED, None, &event).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&headers, "retry-after"), "7");

    let (status, _, _) = send(&state, "run-4", ARTIFACT_PUBLISHED, None, &event).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        harness.flux_release("api-launcher")["spec"]["values"]["image"]["tag"],
        "1.4.0"
    );

    // A release that does not exist (yet) is retried, not created half-empty.
    let config = Config::from_yaml(
        "namespace: cicd\nevents:\n  token: env:EVENTS_TOKEN\nreleases:\n  - chart: newcomer\n    helmRelease: newcomer\n    from: any\n",
        "test.yaml",
        &env(),
    )
    .unwrap();
    let state = AppState::new(
        &config,
        Some(harness.kube()),
        ReplySink::new(None).unwrap(),
        &Metrics::new(),
    );
    let (status, _, body) = release_changed(
        &state,
        "new-1",
        &json!({"chart": "newcomer", "version": "1.0.0"}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"].to_string().contains("does not exist")
            || body.to_string().contains("does not exist")
    );
    assert!(
        harness
            .api
            .get_object(FLUX_GROUP, "helmreleases", Some(NS), "newcomer")
            .is_none()
    );

    // And without a cluster at all.
    let config = Config::from_yaml(CONFIG, "test.yaml", &env()).unwrap();
    let state = AppState::new(
        &config,
        None,
        ReplySink::new(None).unwrap(),
        &Metrics::new(),
    );
    let (status, _, _) = send(&state, "run-5", ARTIFACT_PUBLISHED, None, &event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A registry's notification, as its `Authorization` header carries the token.
async fn notify(
    state: &AppState,
    body: &Value,
    authorization: &str,
) -> (StatusCode, HeaderMap, Value) {
    let request = Request::post("/webhooks/registry")
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .header("authorization", authorization)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    tekflux_testkit::answer::answer(response).await
}

/// A registry push has no run to check: it releases only rules whose `from` says
/// `registry: true` (here the legacy release), and the others are listed as refused in a 200,
/// since registries retry anything else.
#[tokio::test]
async fn a_registry_push_releases_only_rules_that_take_registry_pushes() {
    let harness = Harness::start().await;
    let config = Config::from_yaml(
        &format!("{CONFIG}providers:\n  registry: {{ token: env:REGISTRY_TOKEN }}\n"),
        "test.yaml",
        &env().with("REGISTRY_TOKEN", "reg-token"),
    )
    .unwrap();
    let state = AppState::new(
        &config,
        Some(harness.kube()),
        ReplySink::new(None).unwrap(),
        &harness.metrics,
    );
    // Docker distribution: a layer push (no tag) and the tagged manifest.
    let envelope = json!({"events": [
        {"id": "layer-1", "timestamp": "2026-11-24T06:30:00.1Z", "action": "push",
         "target": {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:aa", "repository": "acme/api-launcher",
                    "url": "https://registry.example.com/v2/acme/api-launcher/blobs/sha256:aa"}},
        {"id": "manifest-1", "timestamp": "2026-11-24T06:30:01.5Z", "action": "push",
         "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": DIGEST, "repository": "acme/api-launcher", "tag": "2.0.0",
                    "url": format!("https://registry.example.com/v2/acme/api-launcher/manifests/{DIGEST}")},
         "request": {"host": "registry.example.com", "method": "PUT"}},
    ]});
    let (status, _, body) = notify(&state, &envelope, "Bearer wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        harness.flux_release("api-launcher")["spec"]["values"]["image"]["tag"],
        "1.0.0"
    );

    let (status, headers, reply) = notify(&state, &envelope, "Bearer reg-token").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        CdeventsSpec::from_corpus().assert_binary(&headers, &reply),
        Checked::Tekflux("dev.tekflux.release.applied.v1".to_owned())
    );
    assert_eq!(
        header(&headers, "ce-type"),
        "dev.tekflux.release.applied.v1"
    );
    assert_eq!(
        header(&headers, "ce-source"),
        "https://registry.example.com"
    );
    assert_eq!(reply["releases"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["refused"][0]["release"], "cicd/api-launcher");
    assert_eq!(reply["refused"][0]["reason"], "registry_not_allowed");
    let operator = harness.operator_release();
    assert_eq!(operator["spec"]["values"]["image"]["tag"], "2.0.0");
    assert_eq!(
        operator["metadata"]["annotations"][EVENT_ANNOTATION],
        "https://registry.example.com#manifest-1"
    );
    assert_eq!(
        harness.flux_release("api-launcher")["spec"]["values"]["image"]["tag"],
        "1.0.0"
    );
    // The registry retries: same reply id, nothing changes.
    let (_, again, _) = notify(&state, &envelope, "Bearer reg-token").await;
    assert_eq!(header(&again, "ce-id"), header(&headers, "ce-id"));

    // Harbor's own payload, pushed later (07:00; the time is what orders releases).
    let harbor = json!({"type": "PUSH_ARTIFACT", "occur_at": 1_795_503_600_i64,
        "operator": "robot$ci",
        "event_data": {"resources": [{"digest": DIGEST, "tag": "2.1.0",
            "resource_url": format!("{IMAGE}:2.1.0")}],
            "repository": {"name": "api-launcher", "namespace": "acme"}}});
    let (status, _, reply) = notify(&state, &harbor, "reg-token").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        harness.operator_release()["spec"]["values"]["image"]["tag"],
        "2.1.0"
    );
    assert_eq!(harness.refused("registry_not_allowed").await, 3);

    // Pushes no rule names are acknowledged.
    let other = json!({"events": [{"id": "x", "action": "push",
        "target": {"repository": "acme/other", "tag": "1", "digest": DIGEST,
                   "url": "https://registry.example.com/v2/acme/other/manifests/1"}}]});
    let (status, headers, body) = notify(&state, &other, "Bearer reg-token").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("ce-type").is_none(), "{body}");
}

#[tokio::test]
async fn a_dry_run_shows_what_would_change_and_changes_nothing() {
    let harness = Harness::start().await;
    let state = harness.state();
    let before = harness.flux_release("api-launcher");
    let run = harness.build("api-pipeline-9", "api-pipeline", "main", "9.9.9", |_| {});
    harness.api.clear_requests();
    let request = Request::post("/?dryRun=true")
        .header("authorization", format!("Bearer {EVENTS_TOKEN}"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "dry-1")
        .header("ce-type", ARTIFACT_PUBLISHED)
        .header("ce-source", "https://example.com/me")
        .header("content-type", "application/json")
        .body(Body::from(artifact_published(&run, "9.9.9").to_string()))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let (status, headers, body) = tekflux_testkit::answer::answer(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("ce-type").is_none(), "no reply for a dry run");
    assert_eq!(body["dryRun"], true);
    assert_eq!(body["releases"][0]["previous"], "1.0.0");
    assert_eq!(body["releases"][0]["version"], "9.9.9");
    assert_eq!(harness.flux_release("api-launcher"), before);
    // The API server saw the applies, as dry runs.
    let patches: Vec<_> = harness
        .api
        .requests()
        .into_iter()
        .filter(|request| request.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2);
    assert!(
        patches
            .iter()
            .all(|request| request.query.get("dryRun").map(String::as_str) == Some("All")),
        "{patches:?}"
    );
}

/// Sends `data` and checks the refusal: `status`, the JSON error naming `reason`, no reply.
#[track_caller]
fn assert_refused(answer: &(StatusCode, HeaderMap, Value), status: StatusCode, reason: &str) {
    let (got, headers, body) = answer;
    assert_eq!(*got, status, "{reason}: {body}");
    assert!(headers.get("ce-type").is_none(), "no reply for a refusal");
    let error = if status == StatusCode::FORBIDDEN {
        "forbidden"
    } else {
        "unprocessable"
    };
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn an_image_no_admitted_run_built_is_refused_and_nothing_is_applied() {
    let harness = Harness::start().await;
    let state = harness.state();
    let flux_before = harness.flux_release("api-launcher");
    let operator_before = harness.operator_release();
    let real = harness.build("api-pipeline-7", "api-pipeline", "main", "6.6.6", |_| {});
    let failed = harness.build("api-pipeline-8", "api-pipeline", "main", "6.6.6", |run| {
        run["status"]["conditions"][0]["status"] = json!("False");
        run["status"]["conditions"][0]["reason"] = json!("Failed");
    });
    let other_digest = harness.build("api-pipeline-9", "api-pipeline", "main", "6.6.6", |run| {
        run["status"]["results"][1]["value"] = json!(OTHER_DIGEST);
    });
    let mut missing = real.clone();
    missing["metadata"]["name"] = json!("api-pipeline-gone");
    let mut other_uid = real.clone();
    other_uid["metadata"]["uid"] = json!("6d3e2c1b-0a9f-4e8d-b7c6-a5b4c3d2e1f0");
    let mut elsewhere = real.clone();
    elsewhere["metadata"]["namespace"] = json!("kube-system");
    harness.api.clear_requests();

    let cases = [
        (artifact_published(&missing, "6.6.6"), "run_not_found"),
        (artifact_published(&other_uid, "6.6.6"), "run_uid_mismatch"),
        (artifact_published(&failed, "6.6.6"), "run_not_succeeded"),
        (artifact_published(&other_digest, "6.6.6"), "image_mismatch"),
        // The real run, but it built 6.6.6, not 7.7.7.
        (artifact_published(&real, "7.7.7"), "image_mismatch"),
        (anonymous_artifact("6.6.6"), "no_run"),
        (
            artifact_published(&elsewhere, "6.6.6"),
            "namespace_not_allowed",
        ),
    ];
    for (n, (data, reason)) in cases.iter().enumerate() {
        let answer = send(
            &state,
            &format!("forged-{n}"),
            ARTIFACT_PUBLISHED,
            None,
            data,
        )
        .await;
        assert_refused(&answer, StatusCode::FORBIDDEN, reason);
        // Both releases name the image; both are refused for the same reason.
        let refused = answer.2["refused"].as_array().unwrap();
        assert_eq!(refused.len(), 2, "{}", answer.2);
        assert!(
            refused.iter().all(|r| r["reason"] == *reason),
            "{}",
            answer.2
        );
    }
    assert_eq!(harness.patches(), 0);
    assert_eq!(harness.flux_release("api-launcher"), flux_before);
    assert_eq!(harness.operator_release(), operator_before);
    // Each run was read from the API server, through tekton.dev/v1; one in a namespace no
    // allowed rule uses is not even read.
    let reads = harness
        .api
        .requests()
        .iter()
        .filter(|request| {
            request.method == "GET"
                && request.path.starts_with(&format!(
                    "/apis/{TEKTON_GROUP}/v1/namespaces/{NS}/pipelineruns/"
                ))
        })
        .count();
    assert_eq!(reads, 5);
    assert!(
        harness
            .api
            .requests()
            .iter()
            .all(|request| !request.path.contains("kube-system")),
        "{:?}",
        harness.api.requests()
    );
    for (reason, count) in [
        ("run_not_found", 2),
        ("run_uid_mismatch", 2),
        ("run_not_succeeded", 2),
        ("image_mismatch", 4),
        ("no_run", 2),
        ("namespace_not_allowed", 2),
    ] {
        assert_eq!(harness.refused(reason).await, count, "{reason}");
    }
}

#[tokio::test]
async fn builds_from_refs_or_rules_that_from_does_not_list_are_refused() {
    let harness = Harness::start().await;
    let state = harness.state();
    let flux_before = harness.flux_release("api-launcher");
    let operator_before = harness.operator_release();
    let feature = harness.build(
        "api-pipeline-f",
        "api-pipeline",
        "feature/x",
        "5.0.0",
        |_| {},
    );
    let tools = harness.build("build-t", "tools", "main", "5.0.0", |_| {});
    harness.api.clear_requests();

    let answer = publish(&state, "feature-1", None, &feature, "5.0.0").await;
    assert_refused(&answer, StatusCode::FORBIDDEN, "ref_not_allowed");
    assert!(
        answer.2["message"]
            .as_str()
            .unwrap()
            .contains("refs/heads/feature/x"),
        "{}",
        answer.2
    );
    let answer = publish(&state, "tools-1", None, &tools, "5.0.0").await;
    assert_refused(&answer, StatusCode::FORBIDDEN, "rule_not_allowed");
    assert_eq!(harness.patches(), 0);
    assert_eq!(harness.flux_release("api-launcher"), flux_before);
    assert_eq!(harness.operator_release(), operator_before);

    // `release/1.0` may release api-launcher (`release/*`) but not the legacy release (`main`
    // only): the one is applied, the other listed as refused.
    let release = harness.build(
        "api-pipeline-r",
        "api-pipeline",
        "release/1.0",
        "5.1.0",
        |_| {},
    );
    let (status, headers, reply) = publish(&state, "release-1", None, &release, "5.1.0").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        header(&headers, "ce-type"),
        "dev.tekflux.release.applied.v1"
    );
    assert_eq!(reply["releases"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["refused"][0]["release"], "legacy/api-launcher");
    assert_eq!(reply["refused"][0]["reason"], "ref_not_allowed");
    assert_eq!(
        harness.flux_release("api-launcher")["spec"]["values"]["image"]["tag"],
        "5.1.0"
    );
    assert_eq!(harness.operator_release(), operator_before);

    assert_eq!(harness.refused("ref_not_allowed").await, 3);
    assert_eq!(harness.refused("rule_not_allowed").await, 2);
}

#[tokio::test]
async fn explicit_edits_outside_the_declared_values_are_refused() {
    let harness = Harness::start().await;
    let state = harness.state();
    let flux_before = harness.flux_release("api-launcher");
    let operator_before = harness.operator_release();
    harness.api.clear_requests();
    let cases = [
        // The guarded `set:` path: this would release any image, whatever built it.
        (
            json!({"release": "cicd/api-launcher", "values": {"image": {"tag": "6.6.6"}}}),
            "value_not_allowed",
        ),
        (
            json!({"release": "cicd/api-launcher",
                   "values": {"image": {"repository": "evil.example.com/miner"}}}),
            "value_not_allowed",
        ),
        // One declared path does not carry an undeclared one along.
        (
            json!({"release": "cicd/api-launcher",
                   "values": {"replicaCount": 3, "podAnnotations": {"x": "y"}}}),
            "value_not_allowed",
        ),
        // The legacy release declares no values at all.
        (
            json!({"release": "legacy/api-launcher", "values": {"replicaCount": 3}}),
            "value_not_allowed",
        ),
        (
            json!({"release": "cicd/api-launcher", "chartVersion": "9.9.9"}),
            "chart_version_not_allowed",
        ),
    ];
    for (n, (data, reason)) in cases.iter().enumerate() {
        let answer = release_changed(&state, &format!("edit-{n}"), data).await;
        assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, reason);
    }
    assert_eq!(harness.patches(), 0);
    assert_eq!(harness.flux_release("api-launcher"), flux_before);
    assert_eq!(harness.operator_release(), operator_before);
    assert_eq!(harness.refused("value_not_allowed").await, 4);
    assert_eq!(harness.refused("chart_version_not_allowed").await, 1);
}

#[tokio::test]
async fn an_event_from_the_future_is_refused_and_does_not_hold_back_later_ones() {
    let harness = Harness::start().await;
    let state = harness.state();
    let run = harness.build("api-pipeline-3", "api-pipeline", "main", "3.0.0", |_| {});
    let flux_before = harness.flux_release("api-launcher");
    harness.api.clear_requests();
    let future = (Utc::now() + TimeDelta::days(365)).to_rfc3339();

    let answer = publish(&state, "future-1", Some(&future), &run, "3.0.0").await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "future_time");
    let answer = send(
        &state,
        "future-2",
        RELEASE_CHANGED,
        Some(&future),
        &json!({"release": "cicd/api-launcher", "values": {"replicaCount": 3}}),
    )
    .await;
    assert_refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "future_time");
    assert_eq!(harness.patches(), 0);
    assert_eq!(harness.flux_release("api-launcher"), flux_before);
    assert!(
        flux_before["metadata"]["annotations"]
            .get(TIME_ANNOTATION)
            .is_none()
    );
    assert_eq!(harness.refused("future_time").await, 2);

    // The next legitimate event applies: the future time was never recorded.
    let now = Utc::now();
    let (status, _, body) = publish(&state, "now-1", Some(&now.to_rfc3339()), &run, "3.0.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let release = harness.flux_release("api-launcher");
    assert_eq!(release["spec"]["values"]["image"]["tag"], "3.0.0");
    let recorded = release["metadata"]["annotations"][TIME_ANNOTATION]
        .as_str()
        .unwrap();
    let recorded = chrono::DateTime::parse_from_rfc3339(recorded).unwrap();
    assert_eq!(recorded.timestamp(), now.timestamp());
}

#[tokio::test]
async fn an_unauthenticated_release_with_arbitrary_values_is_refused() {
    let harness = Harness::start().await;
    let state = harness.state();
    let before = harness.flux_release("api-launcher");
    harness.api.clear_requests();
    // Any pod in the cluster could send this before sender authentication.
    let forged = json!({"release": "cicd/api-launcher",
        "values": {"image": {"repository": "evil.example.com/miner", "tag": "latest"}}});
    for authorization in [None, Some("Bearer guessed")] {
        let mut request = Request::post("/")
            .header("ce-specversion", "1.0")
            .header("ce-id", "forged-1")
            .header("ce-type", "dev.tekflux.release.changed.v1")
            .header("ce-source", "https://evil.example.com")
            .header("ce-time", "2999-01-01T00:00:00Z")
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let request = request.body(Body::from(forged.to_string())).unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let (status, _, body) = tekflux_testkit::answer::answer(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert!(harness.api.requests().is_empty(), "nothing read or applied");
    assert_eq!(harness.flux_release("api-launcher"), before);
    let metrics = harness.metrics.encode();
    assert!(
        metrics.contains(
            r#"tekflux_events_refused_total{function="release-changed",reason="wrong_token"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn bodies_larger_than_any_notification_are_refused_unread() {
    let harness = Harness::start().await;
    let state = harness.state();
    let patches = harness.patches();
    for uri in ["/", "/webhooks/flux", "/webhooks/registry"] {
        let request = Request::post(uri)
            .header("authorization", format!("Bearer {EVENTS_TOKEN}"))
            .header("ce-specversion", "1.0")
            .header("ce-id", "big")
            .header("ce-type", RELEASE_CHANGED)
            .header("ce-source", "https://github.com/acme/api-launcher")
            .header("content-type", "application/json")
            .header("content-length", 2 << 20)
            .body(Body::from(vec![b' '; 2 << 20]))
            .unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let (status, _, body) = tekflux_testkit::answer::answer(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("1048576"),
            "{body}"
        );
    }
    assert_eq!(harness.patches(), patches, "nothing applied");
}

/// With the releases watched, an event is decided on the watched copy and applied on condition
/// that the release is still the copy's object at the copy's version: no read first. A decision to apply nothing is
/// only taken on a fresh read.
#[tokio::test]
async fn watches_go_through_the_watch_client_and_last_as_long_as_its_reads_may_wait() {
    let harness = Harness::start().await;
    let config = Config::from_yaml(CONFIG, "test.yaml", &env()).unwrap();
    let watcher =
        kube_watch_client_from_config(harness.api.config(), &KubernetesSettings::default())
            .unwrap();
    let state = AppState::watching_releases_through(
        &config,
        Some(harness.kube()),
        Some((watcher, WATCH_READ_TIMEOUT)),
        ReplySink::new(None).unwrap(),
        &harness.metrics,
    );
    listed(&state).await;
    let watch_timeouts = || -> Vec<Option<String>> {
        harness
            .api
            .requests()
            .into_iter()
            .filter(|request| request.query.contains_key("watch"))
            .map(|request| request.query.get("timeoutSeconds").cloned())
            .collect()
    };
    for _ in 0..500 {
        if watch_timeouts().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Two watched namespaces (cicd and legacy), each watch a second under the watch client's
    // read timeout of 295 s, not under `kubernetes.timeoutSeconds` (10 s).
    assert_eq!(
        watch_timeouts(),
        [Some("290".to_owned()), Some("290".to_owned())]
    );
    harness.api.clear_requests();
    let (status, _, body) = platform_version(&state, "p-1", "2026-11-24T06:10:00Z", "0.3.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.release_calls(), [("PATCH".to_owned(), 200)]);
}

#[tokio::test]
async fn a_watched_release_is_applied_without_a_read() {
    let harness = Harness::start().await;
    let state = harness.watching_state().await;
    let before = harness.flux_release("platform");
    harness.api.clear_requests();
    let (status, _, body) = platform_version(&state, "p-2", "2026-11-24T06:10:00Z", "0.3.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.release_calls(), [("PATCH".to_owned(), 200)]);
    let apply = harness
        .api
        .requests()
        .into_iter()
        .find(|request| request.method == "PATCH")
        .unwrap();
    let sent = apply.body.unwrap();
    for field in ["resourceVersion", "uid"] {
        assert_eq!(
            sent["metadata"][field], before["metadata"][field],
            "{field}"
        );
    }
    let platform = harness.flux_release("platform");
    assert_eq!(platform["spec"]["chart"]["spec"]["version"], "0.3.0");

    // The next event for the same release, before the watch has brought the change: decided
    // on the applied release the API server answered with, not on the copy from before.
    harness.api.clear_requests();
    let (status, _, body) = platform_version(&state, "p-3", "2026-11-24T06:30:00Z", "0.5.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.release_calls(), [("PATCH".to_owned(), 200)]);

    // An older event: the copy says it is stale, and a read confirms it before it is skipped.
    harness.api.clear_requests();
    let (status, headers, body) =
        platform_version(&state, "p-1", "2026-11-24T06:00:00Z", "0.2.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.release_calls(), [("GET".to_owned(), 200)]);
    assert_platform_kept(&harness, &headers, "0.5.0");
}

/// Another replica applied a newer event after the copy was taken: the API server refuses the
/// apply decided on the copy, and the release, read again, shows the event is stale.
#[tokio::test]
async fn an_apply_decided_on_an_outdated_copy_is_refused_and_decided_again() {
    let harness = Harness::start().await;
    let state = harness.watching_state().await;
    let mut newer = harness.flux_release("platform");
    newer["spec"]["chart"]["spec"]["version"] = json!("0.4.0");
    newer["metadata"]["annotations"] = json!({TIME_ANNOTATION: "2026-11-24T06:20:00Z"});
    harness.api.clear_requests();
    // Stored without yielding to the watch task (the test runs on one thread): the copy still
    // holds the release as it was when the event is decided.
    harness.api.insert(newer);
    let (status, headers, body) =
        platform_version(&state, "p-3", "2026-11-24T06:10:00Z", "0.3.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        harness.release_calls(),
        [("PATCH".to_owned(), 409), ("GET".to_owned(), 200)]
    );
    assert!(body["reason"].as_str().unwrap().contains("newer"), "{body}");
    assert_platform_kept(&harness, &headers, "0.4.0");
}

/// A release deleted after the copy was taken: the apply names the copy's uid, which matches
/// nothing, so it is refused instead of creating a HelmRelease with only tekflux's fields; the
/// read finds no release and the event is answered 503 (retried until Flux creates it).
#[tokio::test]
async fn an_apply_decided_on_the_copy_of_a_deleted_release_creates_nothing() {
    let harness = Harness::start().await;
    let state = harness.watching_state().await;
    harness.api.clear_requests();
    // Removed without yielding to the watch task: the copy still holds the release.
    let removed = harness
        .api
        .remove(FLUX_GROUP, "helmreleases", Some(NS), "platform");
    assert!(removed.is_some());
    let (status, _, body) = platform_version(&state, "p-6", "2026-11-24T06:10:00Z", "0.3.0").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
    assert_eq!(
        harness.release_calls(),
        [("PATCH".to_owned(), 409), ("GET".to_owned(), 404)]
    );
    assert!(
        harness
            .api
            .get_object(FLUX_GROUP, "helmreleases", Some(NS), "platform")
            .is_none(),
        "nothing created"
    );
}

/// A release that keeps changing under the apply is retried by the sender, not applied blind.
#[tokio::test]
async fn a_release_that_keeps_changing_is_answered_503() {
    let harness = Harness::start().await;
    let state = harness.state();
    harness.api.clear_requests();
    // Read, apply (409), read, apply (409), read, apply (409).
    for _ in 0..3 {
        harness
            .api
            .fail_next(1, Fault::Stall(std::time::Duration::ZERO));
        harness.api.fail_next(1, Fault::Status(409));
    }
    let (status, _, body) = platform_version(&state, "p-4", "2026-11-24T06:10:00Z", "0.3.0").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("kept changing"),
        "{body}"
    );
    assert_eq!(
        harness.release_calls().len(),
        6,
        "{:?}",
        harness.release_calls()
    );
    assert_eq!(
        harness.flux_release("platform")["spec"]["chart"]["spec"]["version"],
        "0.1.0"
    );
}

/// Without permission to list (a Role from before the watch), every release is read before its
/// apply, as without a watch; the namespaces are listed again later, with a backoff.
#[tokio::test]
async fn a_namespace_that_cannot_be_listed_is_read_per_event_and_listed_later() {
    let harness = Harness::start().await;
    // The first calls are the lists of the two watched namespaces.
    harness.api.fail_next(2, Fault::Status(403));
    let state = harness.state_with(AppState::watching_releases);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!state.watched_releases_listed());
    harness.api.clear_requests();
    let (status, _, body) = platform_version(&state, "p-5", "2026-11-24T06:10:00Z", "0.3.0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        harness.release_calls(),
        [("GET".to_owned(), 200), ("PATCH".to_owned(), 200)]
    );
    listed(&state).await;
}
