//! Building the Tekton `tekton.dev/v1` PipelineRun or TaskRun that a matched rule starts.
//!
//! Pure functions: rule + push in, JSON object out; the handler creates it.
//!
//! # Names
//! A run is named `<rule>-<hash>`: the rule name (as a DNS-1123 label, cut to 50 characters) and
//! the first 12 hex digits of SHA-256 over the provider, the delivery id, the rule name, the rule's
//! repository URL and the ref, each length-prefixed. The same delivery of the same ref therefore
//! always yields the same name, so a redelivery hits `AlreadyExists` instead of starting a second
//! run, and different deliveries (or the several refs of one Bitbucket push) get different names.
//! Names never contain ref, path or delivery text, so hostile strings cannot reach them.
//!
//! A run of a fan-out rule (its `paths` capture, see [`crate::path_capture`]) also hashes its
//! captured values, and its name is `<rule>-<values>-<hash>` with the values reduced to
//! lowercase letters, digits and `-` (cut to fit 63 characters): one distinct, deterministic
//! name per value and delivery. The exact values are in the `tekflux.dev/paths` annotation, and
//! `tekflux.dev/fan-out` labels the run with a hash of them, so superseding cancels only older
//! runs of the same value.
//!
//! # Labels and annotations
//! Labels (values sanitised to the label syntax, cut to 63 characters with a hash suffix when
//! longer, dropped when nothing is left): `app.kubernetes.io/managed-by: tekflux`,
//! `tekflux.dev/rule`, `tekflux.dev/provider`, `tekflux.dev/repo` (`owner-name`),
//! `tekflux.dev/ref-kind` (`branch`, `tag`, `other`), `tekflux.dev/branch` or `tekflux.dev/tag`,
//! `tekflux.dev/sha`, and the rule's own `labels`. Annotations carry the exact values:
//! `tekflux.dev/delivery-id`, `tekflux.dev/repo-url`, `tekflux.dev/ref`, `tekflux.dev/sha`,
//! `tekflux.dev/pusher`, `tekflux.dev/version` (when known) and, when the rule archives
//! workspaces, `tekflux.dev/archive-workspaces`.
//!
//! # Archived workspaces
//! `tekflux.dev/archive-workspaces` is a JSON list of `{"workspace", "claim", "subPath"}`, one per
//! `archive: true` claim binding; run-complete reads it to find the directory (`subPath` inside
//! PVC `claim`) to archive. Each run on a claim writes under its own `subPath`, the run name, so
//! parallel runs on one claim do not collide.
//!
//! # Superseding
//! For `concurrency: supersede`, the handler lists the rule's runs with [`supersede_selector`],
//! keeps those for which [`is_superseded`] holds, and merge-patches each with [`cancel_patch`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::labels::sanitize_label_value;
use crate::path_capture::Captures;
use crate::push::{Push, RefKind};
use crate::rule::{CompiledRule, Target, Volume};
use crate::template::{Values, split_repo_url};

pub use tekflux_common::run_contract::{
    ARCHIVE_ANNOTATION, ArchivedWorkspace, BRANCH_LABEL, DELIVERY_ANNOTATION, FAN_OUT_LABEL,
    MANAGED_BY, MANAGED_BY_LABEL, PATHS_ANNOTATION, PROVIDER_LABEL, PUSHER_ANNOTATION,
    REF_ANNOTATION, REF_KIND_LABEL, REPO_LABEL, REPO_URL_ANNOTATION, RULE_LABEL, RunKind, SHA_KEY,
    TAG_LABEL, VERSION_ANNOTATION,
};

const HASH_HEX: usize = 12;
const NAME_PREFIX_MAX: usize = 63 - 1 - HASH_HEX;

/// What the builder needs beyond the rule and the push.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// Namespace for rules that name none (the config's top-level `namespace`).
    pub namespace: String,
    /// tekflux version, recorded in an annotation when set.
    pub version: Option<String>,
}

impl RunContext {
    /// The context of git-push's runs under `config`: its namespace and this build's version.
    pub fn for_config(config: &tekflux_common::config::Config) -> Self {
        RunContext {
            namespace: config.namespace.clone(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }
}

/// Why a run could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Neither the rule nor the context names a namespace.
    #[error("rule {rule:?} has no namespace and no default namespace is configured")]
    NoNamespace {
        /// Rule name.
        rule: String,
    },
    /// The push deleted its ref, so there is no commit to run on.
    #[error("ref {git_ref:?} was deleted; there is nothing to run")]
    RefDeleted {
        /// The deleted ref.
        git_ref: String,
    },
}

impl BuildError {
    /// Short stable name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BuildError::NoNamespace { .. } => "no_namespace",
            BuildError::RefDeleted { .. } => "ref_deleted",
        }
    }
}

/// The deterministic run name for this rule and push (see the module docs).
pub fn run_name(rule: &CompiledRule, push: &Push) -> String {
    fan_out_run_name(rule, push, &Captures::new())
}

/// The run name for one fan-out value of this rule and push; [`run_name`] without captures.
pub fn fan_out_run_name(rule: &CompiledRule, push: &Push, captures: &Captures) -> String {
    let mut hasher = Sha256::new();
    for part in [
        push.provider.as_str(),
        push.delivery_id.as_str(),
        rule.name.as_str(),
        rule.url.as_str(),
        push.git_ref.as_str(),
    ] {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    // Only fan-out runs hash captures, so the names of every other rule's runs are unchanged.
    for (name, value) in captures {
        for part in [name, value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    let hash = hex::encode(hasher.finalize());
    let readable = if captures.is_empty() {
        rule.name.clone()
    } else {
        // In the order the pattern has them (`apis/{group}/{api}`: `<rule>-<group>-<api>`).
        let values: Vec<&str> = rule
            .captures
            .iter()
            .filter_map(|name| captures.get(name).map(String::as_str))
            .collect();
        format!("{}-{}", rule.name, values.join("-"))
    };
    let prefix = dns_label_prefix(&readable, NAME_PREFIX_MAX);
    if prefix.is_empty() {
        format!("run-{}", &hash[..HASH_HEX])
    } else {
        format!("{prefix}-{}", &hash[..HASH_HEX])
    }
}

/// A Tekton run as git-push creates it, in the shape of `tekton.dev/v1`.
///
/// Typed rather than a `serde_json::Value` tree: it is serialized straight into the create
/// request's body, without a map node and a key allocation per field (BENCHMARKS.md, git-push).
/// [`RunObject::to_json`] gives the JSON tree where one is wanted (dry runs, tests).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunObject {
    /// Always `tekton.dev/v1`.
    pub api_version: &'static str,
    /// `PipelineRun` or `TaskRun`.
    pub kind: &'static str,
    /// Name, namespace, labels and annotations.
    pub metadata: RunMetadata,
    /// What to run, and with what.
    pub spec: RunSpec,
}

impl RunObject {
    /// The run as a JSON tree.
    pub fn to_json(&self) -> Value {
        // Strings, maps and lists only: serializing them into a `Value` cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A run's `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMetadata {
    /// Run name (see the module docs).
    pub name: String,
    /// Namespace of the run.
    pub namespace: String,
    /// Labels (see the module docs).
    pub labels: BTreeMap<String, String>,
    /// Annotations; every key is one of tekflux's.
    pub annotations: BTreeMap<&'static str, String>,
}

/// A run's `spec`: the fields git-push sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// The Pipeline of a PipelineRun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<NameRef>,
    /// The Task of a TaskRun.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ref: Option<NameRef>,
    /// Rendered params, in the rule's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// Workspace bindings, in the rule's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceBinding>,
    /// A PipelineRun's service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_run_template: Option<TaskRunTemplate>,
    /// A TaskRun's service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// A PipelineRun's timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<PipelineTimeouts>,
    /// A TaskRun's timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `{"name": ...}`: a `pipelineRef`, `taskRef` or `configMap`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameRef {
    /// The object's name.
    pub name: String,
}

/// A rendered param.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Param {
    /// Param name.
    pub name: String,
    /// Its value, rendered from the rule's template.
    pub value: String,
}

/// A PipelineRun's `taskRunTemplate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunTemplate {
    /// Service account of every TaskRun of the PipelineRun.
    pub service_account_name: String,
}

/// A PipelineRun's `timeouts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineTimeouts {
    /// The whole PipelineRun's timeout.
    pub pipeline: String,
}

/// A workspace binding: its name and exactly one volume source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceBinding {
    /// Workspace name.
    pub name: String,
    /// An existing PVC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimRef>,
    /// The run's directory inside the PVC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// A fresh PVC per run (rare: kept as JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<Value>,
    /// An emptyDir (rare: kept as JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<Value>,
    /// A ConfigMap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<NameRef>,
    /// A Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
}

impl WorkspaceBinding {
    fn named(name: &str) -> Self {
        WorkspaceBinding {
            name: name.to_owned(),
            persistent_volume_claim: None,
            sub_path: None,
            volume_claim_template: None,
            empty_dir: None,
            config_map: None,
            secret: None,
        }
    }
}

/// `{"claimName": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    /// PVC name.
    pub claim_name: String,
}

/// `{"secretName": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    pub secret_name: String,
}

/// Builds the PipelineRun or TaskRun for `rule` and `push`.
pub fn build_run(
    rule: &CompiledRule,
    push: &Push,
    ctx: &RunContext,
) -> Result<RunObject, BuildError> {
    build_fan_out_run(rule, push, &Captures::new(), ctx)
}

/// Builds the run of one fan-out value (`captures`) of `rule` and `push`; [`build_run`] is this
/// without captures.
pub fn build_fan_out_run(
    rule: &CompiledRule,
    push: &Push,
    captures: &Captures,
    ctx: &RunContext,
) -> Result<RunObject, BuildError> {
    if push.deleted {
        return Err(BuildError::RefDeleted {
            git_ref: push.git_ref.clone(),
        });
    }
    let namespace = rule
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&ctx.namespace);
    if namespace.is_empty() {
        return Err(BuildError::NoNamespace {
            rule: rule.name.clone(),
        });
    }
    let name = fan_out_run_name(rule, push, captures);
    let values = Values::new(push, &name, namespace).with_captures(captures);
    let kind = rule.run_kind();

    let mut spec = RunSpec {
        params: rule
            .params
            .iter()
            .map(|(param, template)| Param {
                name: param.clone(),
                value: template.render(&values),
            })
            .collect(),
        workspaces: rule
            .workspaces
            .iter()
            .map(|(workspace, volume)| workspace_binding(workspace, volume, &name))
            .collect(),
        ..RunSpec::default()
    };
    match &rule.target {
        Target::Pipeline(pipeline) => {
            spec.pipeline_ref = Some(NameRef {
                name: pipeline.clone(),
            });
        }
        Target::Task(task) => {
            spec.task_ref = Some(NameRef { name: task.clone() });
        }
    }
    if let Some(sa) = &rule.service_account {
        match kind {
            RunKind::PipelineRun => {
                spec.task_run_template = Some(TaskRunTemplate {
                    service_account_name: sa.clone(),
                });
            }
            RunKind::TaskRun => spec.service_account_name = Some(sa.clone()),
        }
    }
    if let Some(timeout) = &rule.timeout {
        match kind {
            RunKind::PipelineRun => {
                spec.timeouts = Some(PipelineTimeouts {
                    pipeline: timeout.clone(),
                });
            }
            RunKind::TaskRun => spec.timeout = Some(timeout.clone()),
        }
    }

    Ok(RunObject {
        api_version: "tekton.dev/v1",
        kind: kind.as_str(),
        metadata: RunMetadata {
            labels: fan_out_labels(rule, push, captures),
            annotations: annotations(rule, push, captures, ctx, &name),
            namespace: namespace.to_owned(),
            name,
        },
        spec,
    })
}

fn workspace_binding(workspace: &str, volume: &Volume, run_name: &str) -> WorkspaceBinding {
    let mut binding = WorkspaceBinding::named(workspace);
    match volume {
        Volume::Claim { claim, .. } => {
            binding.persistent_volume_claim = Some(ClaimRef {
                claim_name: claim.clone(),
            });
            binding.sub_path = Some(run_name.to_owned());
        }
        Volume::VolumeClaimTemplate {
            storage,
            access_modes,
            storage_class_name,
        } => {
            let mut spec = json!({
                "accessModes": access_modes,
                "resources": { "requests": { "storage": storage } },
            });
            if let Some(class) = storage_class_name {
                spec["storageClassName"] = json!(class);
            }
            binding.volume_claim_template = Some(json!({ "spec": spec }));
        }
        Volume::EmptyDir { medium, size_limit } => {
            let mut empty_dir = Map::new();
            if let Some(medium) = medium {
                empty_dir.insert("medium".into(), json!(medium));
            }
            if let Some(limit) = size_limit {
                empty_dir.insert("sizeLimit".into(), json!(limit));
            }
            binding.empty_dir = Some(Value::Object(empty_dir));
        }
        Volume::ConfigMap(config_map) => {
            binding.config_map = Some(NameRef {
                name: config_map.clone(),
            });
        }
        Volume::Secret(secret) => {
            binding.secret = Some(SecretRef {
                secret_name: secret.clone(),
            });
        }
    }
    binding
}

/// The labels of the run for `rule` and `push`: the rule's own, then tekflux's (which win).
pub fn run_labels(rule: &CompiledRule, push: &Push) -> BTreeMap<String, String> {
    let mut labels = rule.labels.clone();
    let (owner, name) = split_repo_url(&push.repo_url);
    let repo = if owner.is_empty() {
        name.to_owned()
    } else {
        format!("{}-{name}", owner.replace('/', "-"))
    };
    let (ref_kind, ref_label) = match &push.ref_kind {
        RefKind::Branch(b) => ("branch", Some((BRANCH_LABEL, b))),
        RefKind::Tag(t) => ("tag", Some((TAG_LABEL, t))),
        RefKind::Other(_) => ("other", None),
    };
    let mut put = |key: &str, value: &str| {
        let value = sanitize_label_value(value);
        if !value.is_empty() {
            labels.insert(key.to_owned(), value);
        }
    };
    put(MANAGED_BY_LABEL, MANAGED_BY);
    put(RULE_LABEL, &rule.name);
    put(PROVIDER_LABEL, push.provider.as_str());
    put(REPO_LABEL, &repo);
    put(REF_KIND_LABEL, ref_kind);
    if let Some((key, value)) = ref_label {
        put(key, value);
    }
    put(SHA_KEY, &push.after);
    labels
}

/// [`run_labels`], plus the `tekflux.dev/fan-out` hash of the captured values when there are.
fn fan_out_labels(
    rule: &CompiledRule,
    push: &Push,
    captures: &Captures,
) -> BTreeMap<String, String> {
    let mut labels = run_labels(rule, push);
    if !captures.is_empty() {
        labels.insert(FAN_OUT_LABEL.to_owned(), fan_out_hash(captures));
    }
    labels
}

/// The first 12 hex digits of SHA-256 over the captured values, length-prefixed.
fn fan_out_hash(captures: &Captures) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in captures {
        for part in [name, value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(hasher.finalize())[..HASH_HEX].to_owned()
}

fn annotations(
    rule: &CompiledRule,
    push: &Push,
    captures: &Captures,
    ctx: &RunContext,
    run_name: &str,
) -> BTreeMap<&'static str, String> {
    let mut annotations = BTreeMap::new();
    if !captures.is_empty() {
        annotations.insert(PATHS_ANNOTATION, json!(captures).to_string());
    }
    annotations.insert(DELIVERY_ANNOTATION, push.delivery_id.clone());
    annotations.insert(REPO_URL_ANNOTATION, push.repo_url.clone());
    annotations.insert(REF_ANNOTATION, push.git_ref.clone());
    annotations.insert(SHA_KEY, push.after.clone());
    annotations.insert(PUSHER_ANNOTATION, push.pusher.clone());
    if let Some(version) = &ctx.version {
        annotations.insert(VERSION_ANNOTATION, version.clone());
    }
    let archived: Vec<ArchivedWorkspace> = rule
        .workspaces
        .iter()
        .filter_map(|(workspace, volume)| match volume {
            Volume::Claim {
                claim,
                archive: true,
            } => Some(ArchivedWorkspace {
                workspace: workspace.clone(),
                claim: claim.clone(),
                sub_path: run_name.to_owned(),
            }),
            _ => None,
        })
        .collect();
    if !archived.is_empty() {
        annotations.insert(ARCHIVE_ANNOTATION, json!(archived).to_string());
    }
    annotations
}

/// Label selector for the runs a new push of `push` supersedes under `rule`: same rule,
/// repository, and branch (or tag), and for a fan-out run the same captured values. Labels are
/// sanitised, so check candidates with [`is_superseded`] before cancelling.
pub fn supersede_selector(rule: &CompiledRule, push: &Push, captures: &Captures) -> String {
    let labels = fan_out_labels(rule, push, captures);
    [
        MANAGED_BY_LABEL,
        RULE_LABEL,
        PROVIDER_LABEL,
        REPO_LABEL,
        REF_KIND_LABEL,
        BRANCH_LABEL,
        TAG_LABEL,
        FAN_OUT_LABEL,
    ]
    .into_iter()
    .filter_map(|key| labels.get(key).map(|value| format!("{key}={value}")))
    .collect::<Vec<_>>()
    .join(",")
}

/// Whether `candidate`, a run listed with [`supersede_selector`], should be cancelled in favour of
/// the run `new_run` just created for `push`: it is for exactly the same repository and ref
/// (annotations, not the sanitised labels), is not `new_run` itself, was created strictly before
/// it (so a late delivery of an older push cannot cancel a newer run), has not finished and is not
/// already cancelled.
pub fn is_superseded(candidate: &Value, new_run: &Value, push: &Push) -> bool {
    let meta = &candidate["metadata"];
    let annotation = |key: &str| meta["annotations"][key].as_str();
    if annotation(REPO_URL_ANNOTATION) != Some(push.repo_url.as_str())
        || annotation(REF_ANNOTATION) != Some(push.git_ref.as_str())
        // One fan-out value never cancels another's run (both absent for other rules).
        || meta["annotations"][PATHS_ANNOTATION]
            != new_run["metadata"]["annotations"][PATHS_ANNOTATION]
        || meta["name"] == new_run["metadata"]["name"]
    {
        return false;
    }
    match (
        meta["creationTimestamp"].as_str(),
        new_run["metadata"]["creationTimestamp"].as_str(),
    ) {
        // RFC 3339 UTC timestamps as Kubernetes writes them order lexicographically.
        (Some(old), Some(new)) if old < new => {}
        _ => return false,
    }
    if candidate["spec"]["status"].is_string() {
        return false;
    }
    let finished = candidate["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Succeeded" && c["status"] != "Unknown");
    !finished
}

/// JSON merge patch that cancels a run of `kind`.
pub fn cancel_patch(kind: RunKind) -> Value {
    let status = match kind {
        RunKind::PipelineRun => "Cancelled",
        RunKind::TaskRun => "TaskRunCancelled",
    };
    json!({ "spec": { "status": status } })
}

/// Lowercase DNS-1123 label text from `value`, at most `max` characters, possibly empty.
fn dns_label_prefix(value: &str, max: usize) -> String {
    let replaced: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches('-');
    let cut = &trimmed[..trimmed.len().min(max)];
    cut.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_patches() {
        assert_eq!(
            cancel_patch(RunKind::PipelineRun),
            json!({"spec": {"status": "Cancelled"}})
        );
        assert_eq!(
            cancel_patch(RunKind::TaskRun),
            json!({"spec": {"status": "TaskRunCancelled"}})
        );
    }
}
