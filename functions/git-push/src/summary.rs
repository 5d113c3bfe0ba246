//! What a request did, as answered to providers (their delivery logs show it), dry runs and
//! `tekflux render`.

use serde::Serialize;
use serde_json::Value;

use crate::path_capture::Captures;

/// What a request did, as answered to providers (their delivery logs show it) and dry runs.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// True when nothing was created.
    pub dry_run: bool,
    /// The pushes the request carried.
    pub pushes: Vec<PushSummary>,
    /// The runs created (or, for a redelivery, found) for this delivery.
    pub runs: Vec<RunSummary>,
    /// Rules for the pushed repository that did not match, and why.
    pub ignored: Vec<IgnoredRule>,
    /// How many rules are for other repositories (not listed one by one).
    pub other_repository_rules: usize,
}

/// One pushed ref.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSummary {
    /// Canonical repository URL.
    pub repository: String,
    /// The full ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit after the push.
    pub sha: String,
    /// The delivery id.
    pub delivery: String,
    /// False when the provider's commit list was incomplete, so path filters were not applied.
    pub paths_complete: bool,
}

/// One run created for a matched rule.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The rule that matched.
    pub rule: String,
    /// `PipelineRun` or `TaskRun`.
    pub kind: &'static str,
    /// Namespace of the run.
    pub namespace: String,
    /// Name of the run.
    pub name: String,
    /// The pipeline or task it runs.
    pub target: String,
    /// Why the rule matched (notes such as "path filter not applied").
    pub reason: String,
    /// Older runs cancelled by `concurrency: supersede`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
    /// For a fan-out rule: the values its `paths` captured for this run.
    #[serde(skip_serializing_if = "Captures::is_empty")]
    pub paths: Captures,
    /// For dry runs: the object that would be created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// A rule that did not match.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredRule {
    /// The rule.
    pub rule: String,
    /// The ref it was decided for.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Why it did not match.
    pub reason: String,
}
