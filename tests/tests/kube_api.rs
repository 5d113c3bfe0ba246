//! The test Kubernetes API server, driven by the real `kube::Client`.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use tekflux_testkit::kube_api::{Fault, TestApiServer};

fn pipeline_runs(server: &TestApiServer, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun");
    Api::namespaced_with(server.client(), ns, &ApiResource::from_gvk(&gvk))
}

fn config_maps(server: &TestApiServer) -> Api<ConfigMap> {
    Api::default_namespaced(server.client())
}

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": data}))
    .unwrap()
}

fn pipeline_run(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": name, "labels": {"tekflux.dev/repo": "backend"}},
        "spec": {"pipelineRef": {"name": "api-pipeline"},
            "params": [{"name": "revision", "value": "3f2a1c"}]}
    }))
    .unwrap()
}

/// The Status of a failed call, or a panic.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_duplicate_and_missing() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let created = runs
        .create(&PostParams::default(), &pipeline_run("build-1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.resource_version.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(
        (meta.generation, meta.namespace.as_deref()),
        (Some(1), Some("cicd"))
    );

    let fetched = runs.get("build-1").await.unwrap();
    assert_eq!(fetched.data["spec"]["pipelineRef"]["name"], "api-pipeline");
    let stored = server
        .get_object("tekton.dev", "pipelineruns", Some("cicd"), "build-1")
        .unwrap();
    assert_eq!(stored["metadata"]["uid"], json!(meta.uid));

    let dup = api_error(
        runs.create(&PostParams::default(), &pipeline_run("build-1"))
            .await,
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert!(
        dup.message
            .contains("pipelineruns.tekton.dev \"build-1\" already exists"),
        "{}",
        dup.message
    );
    let details = dup.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.group.as_str()),
        ("build-1", "tekton.dev")
    );

    let missing = api_error(runs.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    // Other namespaces do not see the object.
    let elsewhere = api_error(pipeline_runs(&server, "other").get("build-1").await);
    assert_eq!(
        (elsewhere.code, elsewhere.reason.as_str()),
        (404, "NotFound")
    );

    // kube sends "name": "" beside generateName.
    let mut generated = pipeline_run("");
    generated.metadata.generate_name = Some("build-".into());
    let generated = runs
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = generated.metadata.name.unwrap();
    assert!(
        name.starts_with("build-") && name.len() == "build-".len() + 5,
        "{name}"
    );
    assert_eq!(
        server
            .objects("tekton.dev", "pipelineruns", Some("cicd"))
            .len(),
        2
    );
}

#[tokio::test]
async fn list_with_label_selectors() {
    let server = TestApiServer::start().await;
    let cms = config_maps(&server);
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
    ] {
        cms.create(&PostParams::default(), &config_map(name, labels, json!({})))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    for (selector, expected) in [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier!=back", vec!["a"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
        ("tier in (back, side)", vec!["b"]),
        ("app notin (web)", vec!["c"]),
        ("", vec!["a", "b", "c"]),
    ] {
        let list = cms
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(list), expected, "selector {selector:?}");
    }
    let all: Api<ConfigMap> = Api::all(server.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    let raw: Value = reqwest::get(format!(
        "{}/api/v1/namespaces/default/configmaps",
        server.url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        (raw["kind"].as_str(), raw["apiVersion"].as_str()),
        (Some("ConfigMapList"), Some("v1"))
    );
    let bad = api_error(cms.list(&ListParams::default().labels("a in (b")).await);
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn an_apply_naming_a_resource_version_or_uid_is_conditional_on_them() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let ours = PatchParams::apply("tekflux").force();
    let patch = |version: &str, revision: &str| {
        json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": "build-3", "resourceVersion": version},
            "spec": {"pipelineRef": {"name": "api-pipeline"},
                "params": [{"name": "revision", "value": revision}]}})
    };
    // A uid that matches no object: refused, nothing created.
    let mut with_uid = patch("1", "a");
    with_uid["metadata"]["uid"] = json!("0b4fa8d2-6a5e-11ef-8c1a-0242ac120002");
    let missing = api_error(runs.patch("build-3", &ours, &Patch::Apply(&with_uid)).await);
    assert_eq!((missing.code, missing.reason.as_str()), (409, "Conflict"));
    assert!(runs.get_opt("build-3").await.unwrap().is_none());
    // A resourceVersion alone does not stop an apply from creating a missing object.
    runs.patch("build-3", &ours, &Patch::Apply(&patch("1", "a")))
        .await
        .unwrap();
    runs.delete("build-3", &DeleteParams::default())
        .await
        .unwrap();

    let created = runs
        .create(&PostParams::default(), &pipeline_run("build-3"))
        .await
        .unwrap();
    let version = created.metadata.resource_version.unwrap();
    let applied = runs
        .patch("build-3", &ours, &Patch::Apply(&patch(&version, "b")))
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["params"][0]["value"], "b");
    assert_ne!(
        applied.metadata.resource_version.as_deref(),
        Some(version.as_str())
    );
    // The version is a condition, not a field the manager owns.
    let owners = server.field_owners("tekton.dev", "pipelineruns", Some("cicd"), "build-3");
    assert!(
        owners["tekflux/Apply"]
            .iter()
            .all(|field| !field.contains("resourceVersion")),
        "{owners:?}"
    );

    // The same version again: the object moved on since, so the apply is refused.
    let outdated = api_error(
        runs.patch("build-3", &ours, &Patch::Apply(&patch(&version, "c")))
            .await,
    );
    assert_eq!((outdated.code, outdated.reason.as_str()), (409, "Conflict"));
    assert!(
        outdated.message.contains("the object has been modified"),
        "{}",
        outdated.message
    );
    assert_eq!(
        runs.get("build-3").await.unwrap().data["spec"]["params"][0]["value"],
        "b"
    );
}

#[tokio::test]
async fn server_side_apply_ownership_and_conflicts() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let patch = json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": "build-2", "labels": {"a": "1", "b": "2"}},
        "spec": {"pipelineRef": {"name": "api-pipeline"}, "params": [{"name": "x", "value": "1"}]}});
    let ours = PatchParams::apply("tekflux");
    let created = runs
        .patch("build-2", &ours, &Patch::Apply(&patch))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let managed = created.metadata.managed_fields.unwrap();
    assert_eq!(
        (
            managed[0].manager.as_deref(),
            managed[0].operation.as_deref()
        ),
        (Some("tekflux"), Some("Apply"))
    );

    // The same manager drops label b and changes a param: b goes, the rest stays.
    let mut second = patch.clone();
    second["metadata"]["labels"] = json!({"a": "1"});
    second["spec"]["params"][0]["value"] = json!("2");
    let updated = runs
        .patch("build-2", &ours, &Patch::Apply(&second))
        .await
        .unwrap();
    assert_eq!(
        updated.metadata.labels.unwrap(),
        BTreeMap::from([("a".to_owned(), "1".to_owned())])
    );
    assert_eq!(updated.data["spec"]["params"][0]["value"], "2");
    assert_eq!(updated.metadata.generation, Some(2));

    // Another manager setting an owned field to another value conflicts, naming the field.
    let theirs = json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "build-2"},
        "spec": {"pipelineRef": {"name": "other-pipeline"}}});
    let conflict = api_error(
        runs.patch(
            "build-2",
            &PatchParams::apply("intruder"),
            &Patch::Apply(&theirs),
        )
        .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains(".spec.pipelineRef.name"),
        "{}",
        conflict.message
    );
    assert!(
        conflict.message.contains("\"tekflux\""),
        "{}",
        conflict.message
    );
    assert_eq!(
        runs.get("build-2").await.unwrap().data["spec"]["pipelineRef"]["name"],
        "api-pipeline"
    );

    // Setting the same value is shared ownership, not a conflict.
    let same = json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "build-2"},
        "spec": {"pipelineRef": {"name": "api-pipeline"}}});
    runs.patch(
        "build-2",
        &PatchParams::apply("sharer"),
        &Patch::Apply(&same),
    )
    .await
    .unwrap();

    let forced = runs
        .patch(
            "build-2",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["pipelineRef"]["name"], "other-pipeline");
    let owners = server.field_owners("tekton.dev", "pipelineruns", Some("cicd"), "build-2");
    assert_eq!(owners["intruder/Apply"], [".spec.pipelineRef.name"]);
    assert!(
        !owners["tekflux/Apply"].contains(&".spec.pipelineRef.name".to_owned()),
        "{owners:?}"
    );
    assert!(!owners.contains_key("sharer/Apply"), "{owners:?}");

    // Now the first manager conflicts in turn.
    let back = api_error(runs.patch("build-2", &ours, &Patch::Apply(&patch)).await);
    assert!(back.message.contains("\"intruder\""), "{}", back.message);

    // fieldManager is required for apply.
    let raw = reqwest::Client::new()
        .patch(format!(
            "{}/apis/tekton.dev/v1/namespaces/cicd/pipelineruns/build-2",
            server.url()
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("BadRequest"))
    );
}

#[tokio::test]
async fn merge_and_json_patch_then_delete() {
    let server = TestApiServer::start().await;
    let cms = config_maps(&server);
    cms.create(
        &PostParams::default(),
        &config_map("cfg", json!({"a": "1"}), json!({"k": "v", "gone": "x"})),
    )
    .await
    .unwrap();
    let merged = cms
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w", "gone": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        BTreeMap::from([("k".to_owned(), "w".to_owned())])
    );

    let raw = reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/namespaces/default/configmaps/cfg",
            server.url()
        ))
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "add", "path": "/data/new", "value": "n"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(cms.get("cfg").await.unwrap().data.unwrap()["new"], "n");

    let missing = api_error(
        cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
    );
    assert_eq!(missing.code, 404);

    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_error(cms.delete("cfg", &wrong_uid).await).code, 409);
    let deleted = cms.delete("cfg", &DeleteParams::default()).await.unwrap();
    let object = deleted.left().expect("the deleted object");
    assert_eq!(object.metadata.name.as_deref(), Some("cfg"));
    assert!(
        server
            .get_object("", "configmaps", Some("default"), "cfg")
            .is_none()
    );
    let again = api_error(cms.delete("cfg", &DeleteParams::default()).await);
    assert_eq!((again.code, again.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let answered = runs
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pipeline_run("dry"),
        )
        .await
        .unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("dry"));
    assert!(
        server
            .objects("tekton.dev", "pipelineruns", None)
            .is_empty()
    );

    let patch = serde_json::to_value(pipeline_run("dry")).unwrap();
    runs.patch(
        "dry",
        &PatchParams::apply("tekflux").dry_run(),
        &Patch::Apply(&patch),
    )
    .await
    .unwrap();
    assert!(
        server
            .objects("tekton.dev", "pipelineruns", None)
            .is_empty()
    );

    runs.create(&PostParams::default(), &pipeline_run("real"))
        .await
        .unwrap();
    let merge = json!({"spec": {"pipelineRef": {"name": "changed"}}});
    runs.patch(
        "real",
        &PatchParams::default().dry_run(),
        &Patch::Merge(&merge),
    )
    .await
    .unwrap();
    runs.delete(
        "real",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let kept = server
        .get_object("tekton.dev", "pipelineruns", Some("cicd"), "real")
        .unwrap();
    assert_eq!(kept["spec"]["pipelineRef"]["name"], "api-pipeline");
}

#[tokio::test]
async fn schema_invalid_pipeline_run_is_422_naming_the_field() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let mut bad = pipeline_run("bad");
    bad.data["spec"]["pipelineRef"]["nmae"] = json!("typo");
    let status = api_error(runs.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("spec.pipelineRef.nmae"),
        "{}",
        status.message
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.pipelineRef.nmae");

    let patch = serde_json::to_value(&bad).unwrap();
    let applied = api_error(
        runs.patch("bad", &PatchParams::apply("tekflux"), &Patch::Apply(&patch))
            .await,
    );
    assert_eq!(applied.code, 422);

    runs.create(&PostParams::default(), &pipeline_run("good"))
        .await
        .unwrap();
    let merge = json!({"spec": {"timeouts": {"pipeline": 3600}}});
    let merged = api_error(
        runs.patch("good", &PatchParams::default(), &Patch::Merge(&merge))
            .await,
    );
    assert!(
        merged.message.contains("spec.timeouts.pipeline"),
        "{}",
        merged.message
    );
    assert!(
        server
            .get_object("tekton.dev", "pipelineruns", Some("cicd"), "bad")
            .is_none()
    );

    // Metadata is checked for every kind.
    let upper = api_error(
        config_maps(&server)
            .create(
                &PostParams::default(),
                &config_map("Upper", json!({}), json!({})),
            )
            .await,
    );
    assert_eq!(upper.code, 422);
    assert!(upper.message.contains("metadata.name"), "{}", upper.message);
}

#[tokio::test]
async fn status_subresource_is_separate() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let mut with_status = pipeline_run("st");
    with_status.data["status"] = json!({"conditions": [{"type": "Succeeded", "status": "True"}]});
    let created = runs
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    let status = json!({"status": {"conditions": [{"type": "Succeeded", "status": "Unknown"}]}});
    let patched = runs
        .patch_status("st", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["conditions"][0]["status"], "Unknown");
    let main = json!({"status": null, "spec": {"pipelineRef": {"name": "other"}}});
    let after = runs
        .patch("st", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(after.data["status"]["conditions"][0]["status"], "Unknown");
    assert_eq!(
        runs.get_status("st").await.unwrap().data["spec"]["pipelineRef"]["name"],
        "other"
    );
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = TestApiServer::start().await;
    let mut config = server.config();
    config.default_retry = false;
    let cms: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    server.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let status = api_error(cms.get("x").await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(status.details.unwrap().retry_after_seconds, 7);

    server.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
    );
    let raw = reqwest::get(format!(
        "{}/api/v1/namespaces/default/configmaps/x",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["retry-after"], "3");

    // The fault is used up: the next request is answered normally.
    assert_eq!(api_error(cms.get("x").await).code, 404);

    // kube's default client retries a 429 itself, after Retry-After.
    server.clear_requests();
    server.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    config_maps(&server)
        .create(
            &PostParams::default(),
            &config_map("r", json!({}), json!({})),
        )
        .await
        .unwrap();
    let statuses: Vec<Option<u16>> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(201)]);
}

#[tokio::test]
async fn injected_server_errors() {
    let server = TestApiServer::start().await;
    let mut config = server.config();
    config.default_retry = false;
    let cms: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    server.fail_next(2, Fault::Status(500));
    server.fail_next(1, Fault::Status(503));
    for (code, reason) in [
        (500, "InternalError"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
    ] {
        let status = api_error(
            cms.create(
                &PostParams::default(),
                &config_map("x", json!({}), json!({})),
            )
            .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (code, reason));
    }
    assert!(server.objects("", "configmaps", None).is_empty());
    cms.create(
        &PostParams::default(),
        &config_map("x", json!({}), json!({})),
    )
    .await
    .unwrap();
}

/// Whether an I/O timeout is somewhere in the error's chain (how a client's read timeout surfaces
/// through hyper).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[tokio::test]
async fn stall_trips_a_client_read_timeout() {
    let server = TestApiServer::start().await;
    let mut config = server.config();
    config.read_timeout = Some(Duration::from_millis(200));
    let cms: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    server.fail_next(1, Fault::Stall(Duration::from_secs(30)));
    match cms.get("x").await {
        Err(kube::Error::Api(status)) => panic!("expected a timeout, got a Status {status:?}"),
        Err(e) => assert!(
            timed_out(&e),
            "expected the client's read timeout, got {e:?}"
        ),
        Ok(cm) => panic!("expected a timeout, got {cm:?}"),
    }
    // A stall shorter than the timeout is answered normally.
    server.fail_next(1, Fault::Stall(Duration::from_millis(10)));
    assert_eq!(api_error(cms.get("x").await).code, 404);
}

#[tokio::test]
async fn request_log_records_what_kube_sent() {
    let server = TestApiServer::start().await;
    let runs = pipeline_runs(&server, "cicd");
    let patch = serde_json::to_value(pipeline_run("logged")).unwrap();
    runs.patch(
        "logged",
        &PatchParams::apply("tekflux").force(),
        &Patch::Apply(&patch),
    )
    .await
    .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        (
            "PATCH",
            "/apis/tekton.dev/v1/namespaces/cicd/pipelineruns/logged"
        )
    );
    assert_eq!(
        r.query,
        BTreeMap::from([
            ("fieldManager".to_owned(), "tekflux".to_owned()),
            ("force".to_owned(), "true".to_owned())
        ])
    );
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        r.body.as_ref().unwrap()["spec"]["pipelineRef"]["name"],
        "api-pipeline"
    );
    assert_eq!(r.status, Some(201));
}

#[tokio::test]
async fn watch_yields_added_then_modified_and_deleted() {
    let server = TestApiServer::start().await;
    let cms = config_maps(&server);
    cms.create(
        &PostParams::default(),
        &config_map("w1", json!({"watch": "me"}), json!({"v": "1"})),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &config_map("other", json!({}), json!({})),
    )
    .await
    .unwrap();
    let mut events = cms
        .watch(&WatchParams::default().labels("watch=me").timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    let summary = |e: WatchEvent<ConfigMap>| match e {
        WatchEvent::Added(c) => ("ADDED", c.data.unwrap_or_default().get("v").cloned()),
        WatchEvent::Modified(c) => ("MODIFIED", c.data.unwrap_or_default().get("v").cloned()),
        WatchEvent::Deleted(c) => ("DELETED", c.data.unwrap_or_default().get("v").cloned()),
        other => panic!("unexpected {other:?}"),
    };
    let first = events.try_next().await.unwrap().unwrap();
    assert_eq!(summary(first), ("ADDED", Some("1".to_owned())));
    cms.patch(
        "other",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "x"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("w1", &DeleteParams::default()).await.unwrap();
    let next = events.try_next().await.unwrap().unwrap();
    assert_eq!(summary(next), ("MODIFIED", Some("2".to_owned())));
    let last = events.try_next().await.unwrap().unwrap();
    assert_eq!(summary(last), ("DELETED", Some("2".to_owned())));

    // timeoutSeconds ends the stream.
    let mut short = cms
        .watch(&WatchParams::default().labels("watch=none").timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    assert!(short.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn watches_end_with_an_error_line_and_carry_bookmarks_when_asked() {
    let server = TestApiServer::start().await;
    let cms = config_maps(&server);
    let created = cms
        .create(
            &PostParams::default(),
            &config_map("w1", json!({}), json!({"v": "1"})),
        )
        .await
        .unwrap();
    let version = created.metadata.resource_version.unwrap();
    let params = WatchParams::default().timeout(60);
    let mut with_bookmarks = cms.watch(&params, &version).await.unwrap().boxed();
    let mut without = cms
        .watch(&params.clone().disable_bookmarks(), &version)
        .await
        .unwrap()
        .boxed();

    // A bookmark names the current version, and only reaches the watch that asked for it.
    cms.create(
        &PostParams::default(),
        &config_map("w2", json!({}), json!({})),
    )
    .await
    .unwrap();
    server.bookmark();
    server.end_watches(500);
    let added = |e| matches!(e, WatchEvent::Added(ConfigMap { ref metadata, .. }) if metadata.name.as_deref() == Some("w2"));
    assert!(added(with_bookmarks.try_next().await.unwrap().unwrap()));
    let bookmark = match with_bookmarks.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(bookmark) => bookmark,
        other => panic!("expected a bookmark, got {other:?}"),
    };
    assert_eq!(bookmark.types.kind, "ConfigMap");
    let current: u64 = bookmark.metadata.resource_version.parse().unwrap();
    assert!(current > version.parse().unwrap());
    assert!(added(without.try_next().await.unwrap().unwrap()));

    // The ERROR line ends both watches.
    for watch in [&mut with_bookmarks, &mut without] {
        match watch.try_next().await.unwrap().unwrap() {
            WatchEvent::Error(error) => assert_eq!(error.code, 500),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(watch.try_next().await.unwrap().is_none());
    }

    // After a compaction, a watch from an older version gets 410 at once and ends; one from
    // the current version goes on.
    server.compact();
    let mut old = cms.watch(&params, &version).await.unwrap().boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(error) => {
            assert_eq!((error.code, error.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(old.try_next().await.unwrap().is_none());
    let mut fresh = cms
        .watch(&params, &current.to_string())
        .await
        .unwrap()
        .boxed();
    cms.create(
        &PostParams::default(),
        &config_map("w3", json!({}), json!({})),
    )
    .await
    .unwrap();
    match fresh.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("w3")),
        other => panic!("expected w3 added, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_logs_are_served_when_seeded() {
    let server = TestApiServer::start().await;
    server.set_pod_log("default", "build-pod", "step-build", "line 1\nline 2\n");
    server.set_pod_log("default", "build-pod", "step-push", "pushed\n");
    let pods: Api<Pod> = Api::default_namespaced(server.client());
    let params = LogParams {
        container: Some("step-build".into()),
        ..Default::default()
    };
    assert_eq!(
        pods.logs("build-pod", &params).await.unwrap(),
        "line 1\nline 2\n"
    );
    let other = LogParams {
        container: Some("step-push".into()),
        ..Default::default()
    };
    assert_eq!(pods.logs("build-pod", &other).await.unwrap(), "pushed\n");
    assert_eq!(api_error(pods.logs("missing-pod", &params).await).code, 404);
    let unseeded = LogParams {
        container: Some("nope".into()),
        ..Default::default()
    };
    assert_eq!(api_error(pods.logs("build-pod", &unseeded).await).code, 404);
    assert_eq!(
        api_error(pods.logs("build-pod", &LogParams::default()).await).code,
        400
    );
}

#[tokio::test]
async fn kubeconfig_file_works_with_kube() {
    let server = TestApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        server.url()
    );
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(
        &PostParams::default(),
        &config_map("via-kubeconfig", json!({}), json!({})),
    )
    .await
    .unwrap();
    assert!(
        server
            .get_object("", "configmaps", Some("default"), "via-kubeconfig")
            .is_some()
    );
}

#[tokio::test]
async fn seeding_and_replace_with_resource_version_check() {
    let server = TestApiServer::start().await;
    let seeded = server.insert(json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": "seeded", "namespace": "cicd"},
        "spec": {"pipelineRef": {"name": "p"}},
        "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}));
    assert!(seeded["metadata"]["resourceVersion"].is_string());
    let runs = pipeline_runs(&server, "cicd");
    let got = runs.get("seeded").await.unwrap();
    assert_eq!(got.data["status"]["conditions"][0]["status"], "True");

    let cms = config_maps(&server);
    let cm = cms
        .create(
            &PostParams::default(),
            &config_map("rv", json!({}), json!({"a": "1"})),
        )
        .await
        .unwrap();
    let mut stale = cm.clone();
    stale.data = Some(BTreeMap::from([("a".to_owned(), "2".to_owned())]));
    cms.replace("rv", &PostParams::default(), &stale)
        .await
        .unwrap();
    let conflict = api_error(cms.replace("rv", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
}
