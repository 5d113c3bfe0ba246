//! The API server's part of a trace: the runs git-push created and a PipelineRun's TaskRuns.

use super::*;

pub(super) fn tekton_resource(kind: RunKind) -> ApiResource {
    let gvk = GroupVersionKind::gvk(TEKTON_GROUP, TEKTON_VERSION, kind.as_str());
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

/// Whether a Kubernetes error is about one namespace or kind (forbidden there, no such API)
/// rather than the cluster as a whole.
pub(super) fn is_local(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) if matches!(status.code, 403 | 404) => Some(status.code),
        _ => None,
    }
}

/// The runs of `query` the API server has. `Err` when the cluster cannot be read at all.
pub(super) async fn cluster_runs(
    client: &kube::Client,
    namespaces: &[String],
    query: &Query,
    missing: &mut Vec<String>,
) -> Result<Vec<RunTrace>, String> {
    let mut selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    if let Some(sha) = query.full_sha() {
        let _ = write!(selector, ",{SHA_KEY}={sha}");
    }
    let mut found: BTreeMap<(String, String), Value> = BTreeMap::new();
    for namespace in namespaces {
        for kind in [RunKind::PipelineRun, RunKind::TaskRun] {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &tekton_resource(kind));
            let mut objects = Vec::new();
            if query.may_be_name() {
                match api.get_opt(&query.text).await {
                    Ok(Some(object)) => objects.push(object),
                    Ok(None) => {}
                    Err(error) => {
                        local_or_fail(&error, kind, namespace, missing)?;
                        continue;
                    }
                }
            }
            match api.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => objects.extend(list.items),
                Err(error) => {
                    local_or_fail(&error, kind, namespace, missing)?;
                    continue;
                }
            }
            for object in objects {
                let Ok(mut value) = serde_json::to_value(&object) else {
                    continue;
                };
                // Lists leave kind and apiVersion off their items.
                value["kind"] = Value::from(kind.as_str());
                let metadata = &value["metadata"];
                let name = metadata["name"].as_str().unwrap_or_default();
                let annotations = &metadata["annotations"];
                let child = metadata["labels"][PIPELINE_RUN_LABEL].is_string();
                let matches = query.matches(
                    name,
                    annotations[SHA_KEY].as_str(),
                    annotations[DELIVERY_ANNOTATION].as_str(),
                );
                // A PipelineRun's TaskRuns carry its labels and annotations; they are shown
                // under it, not as runs of their own (unless named).
                if matches && (!child || name == query.text) {
                    found.insert((namespace.clone(), name.to_owned()), value);
                }
            }
        }
    }
    let mut runs = Vec::new();
    for ((namespace, name), object) in found {
        let mut run = from_object(&object);
        run.in_cluster = Some(true);
        if run.kind == RunKind::PipelineRun.as_str() {
            run.tasks = task_runs(client, &namespace, &name, missing).await?;
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Records a forbidden namespace or a missing API in `missing`; any other error fails the
/// whole cluster part (unreachable, unauthenticated).
pub(super) fn local_or_fail(
    error: &kube::Error,
    kind: RunKind,
    namespace: &str,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    match is_local(error) {
        Some(403) => {
            missing.push(format!(
                "{}s in {namespace}: forbidden ({})",
                kind.as_str(),
                plain_chain(error)
            ));
            Ok(())
        }
        Some(_) => {
            missing.push(format!(
                "{}s in {namespace}: the API server has no {TEKTON_GROUP}/{TEKTON_VERSION} {} \
                 (is Tekton installed?)",
                kind.as_str(),
                kind.as_str()
            ));
            Ok(())
        }
        None => Err(plain_chain(error)),
    }
}

/// The TaskRuns of the PipelineRun `namespace/name`, by Tekton's label.
pub(super) async fn task_runs(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    missing: &mut Vec<String>,
) -> Result<Vec<TaskTrace>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &tekton_resource(RunKind::TaskRun),
    );
    let list = match api
        .list(&ListParams::default().labels(&format!("{PIPELINE_RUN_LABEL}={name}")))
        .await
    {
        Ok(list) => list,
        Err(error) => {
            local_or_fail(&error, RunKind::TaskRun, namespace, missing)?;
            return Ok(Vec::new());
        }
    };
    let mut tasks: Vec<(Option<String>, TaskTrace)> = list
        .items
        .iter()
        .filter_map(|object| serde_json::to_value(object).ok())
        .map(|value| {
            let (outcome, reason, _) = succeeded(&value);
            let metadata = &value["metadata"];
            let started = value["status"]["startTime"].as_str().map(str::to_owned);
            (
                started,
                TaskTrace {
                    name: metadata["name"].as_str().unwrap_or_default().to_owned(),
                    pipeline_task: metadata["labels"][PIPELINE_TASK_LABEL]
                        .as_str()
                        .map(str::to_owned),
                    outcome,
                    reason,
                },
            )
        })
        .collect();
    tasks.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
    Ok(tasks.into_iter().map(|(_, task)| task).collect())
}

/// The `Succeeded` condition as an outcome word, its reason and message.
pub(super) fn succeeded(object: &Value) -> (String, Option<String>, Option<String>) {
    let condition = object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Succeeded");
    let text = |value: &Value| value.as_str().map(str::to_owned);
    match condition {
        None => ("pending".to_owned(), None, None),
        Some(condition) => {
            let outcome = match condition["status"].as_str() {
                Some("True") => "succeeded",
                Some("False") => "failed",
                _ => "running",
            };
            (
                outcome.to_owned(),
                text(&condition["reason"]),
                text(&condition["message"]),
            )
        }
    }
}

/// A run as the API server has it.
pub(super) fn from_object(object: &Value) -> RunTrace {
    let metadata = &object["metadata"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let annotations = &metadata["annotations"];
    let (outcome, reason, message) = succeeded(object);
    // v1 runs hold `results` (TaskRun) or `results` (PipelineRun) as name/value pairs.
    let results = object["status"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|result| {
            let name = result["name"].as_str()?;
            let value = match &result["value"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            Some((name.to_owned(), value))
        })
        .collect();
    RunTrace {
        kind: text(&object["kind"]).unwrap_or_default(),
        namespace: text(&metadata["namespace"]).unwrap_or_default(),
        name: text(&metadata["name"]).unwrap_or_default(),
        uid: text(&metadata["uid"]),
        in_cluster: Some(true),
        rule: text(&metadata["labels"][RULE_LABEL]),
        repo: text(&annotations[REPO_URL_ANNOTATION]),
        git_ref: text(&annotations[REF_ANNOTATION]),
        paths: annotations[PATHS_ANNOTATION]
            .as_str()
            .and_then(|paths| serde_json::from_str(paths).ok())
            .unwrap_or_default(),
        sha: text(&annotations[SHA_KEY]),
        delivery_id: text(&annotations[DELIVERY_ANNOTATION]),
        outcome,
        reason,
        message,
        created: text(&metadata["creationTimestamp"]),
        start_time: text(&object["status"]["startTime"]),
        completion_time: text(&object["status"]["completionTime"]),
        tasks: Vec::new(),
        results,
        archive: None,
    }
}
