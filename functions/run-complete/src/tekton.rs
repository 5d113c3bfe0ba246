//! Tekton's event types, and the facts archiving needs from a run object as the API server
//! serves it (v1; the v1beta1 shape Tekton's events carry is read as well). The run in an
//! event's body is never read here: [`crate::verify`] takes only its name from the event.

use std::collections::BTreeMap;

use serde_json::Value;
use tekflux_common::Error;

/// Tekton event types that mark a finished run, and so an archive to write.
pub const TERMINAL_TYPES: [&str; 4] = [
    "dev.tekton.event.taskrun.successful.v1",
    "dev.tekton.event.taskrun.failed.v1",
    "dev.tekton.event.pipelinerun.successful.v1",
    "dev.tekton.event.pipelinerun.failed.v1",
];

/// Prefix of every Tekton event type.
pub const TEKTON_TYPE_PREFIX: &str = "dev.tekton.event.";

/// Label Tekton puts on the TaskRuns a PipelineRun creates.
pub const PIPELINE_RUN_LABEL: &str = "tekton.dev/pipelineRun";

pub use tekflux_common::run_contract::RunKind;

/// The key of a Tekton event's body that holds the run of `kind`.
pub(crate) fn body_key(kind: RunKind) -> &'static str {
    match kind {
        RunKind::TaskRun => "taskRun",
        RunKind::PipelineRun => "pipelineRun",
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `Succeeded=True`.
    Succeeded,
    /// `Succeeded=False` (failed, timed out or cancelled).
    Failed,
}

impl Outcome {
    /// `succeeded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }
}

/// A terminal event's type, split. Its outcome is what the event claims; an archived run's
/// outcome comes from the API server's `Succeeded` condition instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    /// TaskRun or PipelineRun.
    pub kind: RunKind,
    /// How it ended.
    pub outcome: Outcome,
}

impl Terminal {
    /// Recognises the four terminal Tekton types.
    pub fn from_event_type(event_type: &str) -> Option<Self> {
        let rest = event_type.strip_prefix(TEKTON_TYPE_PREFIX)?;
        let (kind, outcome) = rest.strip_suffix(".v1")?.split_once('.')?;
        let kind = match kind {
            "taskrun" => RunKind::TaskRun,
            "pipelinerun" => RunKind::PipelineRun,
            _ => return None,
        };
        let outcome = match outcome {
            "successful" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            _ => return None,
        };
        Some(Self { kind, outcome })
    }
}

/// One workspace binding of a run's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceBinding {
    /// The workspace name.
    pub name: String,
    /// `persistentVolumeClaim.claimName`, when the workspace is a claim.
    pub claim: Option<String>,
    /// `subPath` inside the volume, empty for the volume's root.
    pub sub_path: String,
}

/// One step of a TaskRun, as its status lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The step name.
    pub name: String,
    /// Its container in the pod (`step-<name>`).
    pub container: String,
}

/// The facts of a finished run that archiving uses.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    /// TaskRun or PipelineRun.
    pub kind: RunKind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`, which tells a run from a later one of the same name.
    pub uid: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The `Succeeded` condition's reason (e.g. `Failed`, `TaskRunTimeout`), when present.
    pub reason: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// Results by name; array and object results as their JSON text.
    pub results: BTreeMap<String, String>,
    /// `spec.workspaces`.
    pub workspaces: Vec<WorkspaceBinding>,
    /// A TaskRun's pod.
    pub pod_name: Option<String>,
    /// A TaskRun's steps.
    pub steps: Vec<Step>,
    /// A PipelineRun's TaskRuns, by name, in the order the status lists them.
    pub child_task_runs: Vec<String>,
    /// `status.startTime`.
    pub start_time: Option<String>,
    /// `status.completionTime`.
    pub completion_time: Option<String>,
}

impl FinishedRun {
    /// Reads a run object (v1 or v1beta1) whose outcome is already known.
    ///
    /// # Errors
    /// [`Error::BadRequest`] when name, namespace or uid are missing.
    pub fn from_object(kind: RunKind, outcome: Outcome, run: &Value) -> Result<Self, Error> {
        let metadata = &run["metadata"];
        let required = |field: &str| {
            metadata[field]
                .as_str()
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::BadRequest(format!("the {} has no metadata.{field}", kind.as_str()))
                })
        };
        let status = &run["status"];
        Ok(Self {
            kind,
            name: required("name")?,
            namespace: required("namespace")?,
            uid: required("uid")?,
            outcome,
            reason: succeeded_reason(status),
            labels: string_map(&metadata["labels"]),
            annotations: string_map(&metadata["annotations"]),
            results: results(status),
            workspaces: workspaces(&run["spec"]),
            pod_name: text(&status["podName"]),
            steps: steps(status),
            child_task_runs: child_task_runs(status),
            start_time: text(&status["startTime"]),
            completion_time: text(&status["completionTime"]),
        })
    }

    /// The PipelineRun this TaskRun belongs to, if any.
    pub fn parent_pipeline_run(&self) -> Option<&str> {
        match self.kind {
            RunKind::TaskRun => self.labels.get(PIPELINE_RUN_LABEL).map(String::as_str),
            RunKind::PipelineRun => None,
        }
    }
}

fn text(value: &Value) -> Option<String> {
    value
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn succeeded_reason(status: &Value) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == "Succeeded")
        .and_then(|condition| text(&condition["reason"]))
}

/// v1beta1 `taskResults` / `pipelineResults` and v1 `results`, all `[{name, value}]`.
fn results(status: &Value) -> BTreeMap<String, String> {
    ["results", "taskResults", "pipelineResults"]
        .iter()
        .filter_map(|field| status[field].as_array())
        .flatten()
        .filter_map(|result| {
            let name = result["name"].as_str()?.to_owned();
            let value = match &result["value"] {
                Value::String(text) => text.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((name, value))
        })
        .collect()
}

fn workspaces(spec: &Value) -> Vec<WorkspaceBinding> {
    spec["workspaces"]
        .as_array()
        .map(|bindings| {
            bindings
                .iter()
                .filter_map(|binding| {
                    Some(WorkspaceBinding {
                        name: binding["name"].as_str()?.to_owned(),
                        claim: text(&binding["persistentVolumeClaim"]["claimName"]),
                        sub_path: binding["subPath"].as_str().unwrap_or_default().to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn steps(status: &Value) -> Vec<Step> {
    status["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|step| {
                    let name = step["name"].as_str()?.to_owned();
                    let container =
                        text(&step["container"]).unwrap_or_else(|| format!("step-{name}"));
                    Some(Step { name, container })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `status.childReferences` (Tekton ≥ 0.45) and the older `status.taskRuns` map.
fn child_task_runs(status: &Value) -> Vec<String> {
    let mut names: Vec<String> = status["childReferences"]
        .as_array()
        .map(|children| {
            children
                .iter()
                .filter(|child| child["kind"].as_str().is_none_or(|kind| kind == "TaskRun"))
                .filter_map(|child| text(&child["name"]))
                .collect()
        })
        .unwrap_or_default();
    if let Some(legacy) = status["taskRuns"].as_object() {
        for name in legacy.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_types_are_recognised_and_others_not() {
        for ty in TERMINAL_TYPES {
            assert!(Terminal::from_event_type(ty).is_some(), "{ty}");
        }
        for ty in [
            "dev.tekton.event.taskrun.started.v1",
            "dev.tekton.event.customrun.successful.v1",
            "dev.tekton.event.pipelinerun.successful.v2",
        ] {
            assert_eq!(Terminal::from_event_type(ty), None, "{ty}");
        }
    }

    #[test]
    fn v1beta1_task_run_is_read() {
        let run = json!({
            "metadata": {"name": "build-x", "namespace": "cicd", "uid": "u-1",
                "labels": {"tekton.dev/pipelineRun": "p-1"}, "annotations": {"a": "b"}},
            "spec": {"workspaces": [
                {"name": "src", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "p-1"},
                {"name": "cache", "emptyDir": {}}]},
            "status": {"podName": "build-x-pod",
                "conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed"}],
                "steps": [{"name": "clone", "container": "step-clone"}, {"name": "build"}],
                "taskResults": [{"name": "IMAGE_DIGEST", "value": "sha256:ab"},
                                {"name": "list", "value": ["a", "b"]}]}
        });
        let run = FinishedRun::from_object(RunKind::TaskRun, Outcome::Failed, &run).unwrap();
        assert_eq!(run.outcome, Outcome::Failed);
        assert_eq!(run.reason.as_deref(), Some("Failed"));
        assert_eq!(run.parent_pipeline_run(), Some("p-1"));
        assert_eq!(run.results["IMAGE_DIGEST"], "sha256:ab");
        assert_eq!(run.results["list"], r#"["a","b"]"#);
        assert_eq!(run.steps[1].container, "step-build");
        assert_eq!(run.workspaces[0].claim.as_deref(), Some("ws"));
        assert_eq!(run.workspaces[1].claim, None);
        assert_eq!(run.pod_name.as_deref(), Some("build-x-pod"));
    }

    #[test]
    fn v1_results_and_both_child_listings_are_read() {
        let run = json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "status": {"results": [{"name": "IMAGE_URL", "value": "r/x"}],
                "childReferences": [{"kind": "TaskRun", "name": "p-a"},
                                    {"kind": "CustomRun", "name": "p-c"}],
                "taskRuns": {"p-a": {}, "p-b": {}}}
        });
        let run = FinishedRun::from_object(RunKind::PipelineRun, Outcome::Succeeded, &run).unwrap();
        assert_eq!(run.results["IMAGE_URL"], "r/x");
        assert_eq!(run.child_task_runs, ["p-a", "p-b"]);
    }
}
