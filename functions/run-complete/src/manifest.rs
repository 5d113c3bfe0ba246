//! `manifest.json`: the record of one archived run, written last so that its presence means
//! everything it lists is in the store and verified.

use serde::{Deserialize, Serialize};

use crate::logs::LogEntry;
use crate::plan::SkippedWorkspace;

/// `kind` of the manifest, so a reader can tell it from other JSON.
pub const MANIFEST_KIND: &str = "tekflux.dev/RunArchive/v1";

/// One archived run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_KIND`].
    pub kind: String,
    /// The run.
    pub run: RunRecord,
    /// Canonical repository URL, for runs git-push created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Commit sha, for runs git-push created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// Delivery id of the push that started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The repository rule that created the run (its `tekflux.dev/rule` label). Absent in
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The full git ref the run was created for (its `tekflux.dev/ref` annotation). Absent in
    /// manifests written before it was recorded.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// What a fan-out rule's `paths` captured for the run (its `tekflux.dev/paths`
    /// annotation), e.g. `{"api": "api-launcher"}`; empty for other runs and older manifests.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub paths: std::collections::BTreeMap<String, String>,
    /// The archives, in plan order.
    pub workspaces: Vec<ArchivedWorkspace>,
    /// Workspaces left out, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_workspaces: Vec<SkippedWorkspace>,
    /// Step logs.
    pub logs: Vec<LogEntry>,
    /// Archived workspaces that `storage.cleanup` could not remove from the claim, and why.
    /// The archives are complete; the directories stay until someone frees them (or a later
    /// delivery of the run's event manages to). Rewritten after the clean-up, so it is the one
    /// field that may change once the manifest exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup_failures: Vec<CleanupFailure>,
    /// The run's results (string form).
    #[serde(default)]
    pub results: std::collections::BTreeMap<String, String>,
    /// tekflux version that wrote the manifest.
    pub tekflux_version: String,
    /// When the manifest was written (RFC 3339).
    pub archived_at: String,
}

/// The run a manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// `TaskRun` or `PipelineRun`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid: a duplicate event carries the same one, a new run of the same name another.
    pub uid: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// The `Succeeded` condition's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `status.startTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// `status.completionTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// An archived workspace whose directory was not removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupFailure {
    /// The workspace name.
    pub workspace: String,
    /// The directory in run-complete's pod (`<mount>/<subPath>`).
    pub dir: String,
    /// What failed, in words (the path it failed at, and the system's reason).
    pub error: String,
}

/// One workspace archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedWorkspace {
    /// The workspace name.
    pub workspace: String,
    /// The claim it was on.
    pub claim: String,
    /// Its `subPath` in the claim.
    pub sub_path: String,
    /// The object key of the archive.
    pub key: String,
    /// Size of the compressed archive.
    pub bytes: u64,
    /// Tar entries.
    pub entries: u64,
    /// Sockets, FIFOs and devices left out.
    pub skipped_special: u64,
    /// sha256 of the compressed archive, lowercase hex, as streamed and as read back.
    pub sha256: String,
}
