//! `manifest.json`: the record of one archived run, written last so that its presence means
//! everything it lists is in the store and verified.

use serde::{Deserialize, Serialize};

use crate::archive::S3Failure;
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

/// A manifest is a few KiB; a bigger object at a manifest's key is not read (this bounds
/// memory, whoever put it there).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// What is stored at a manifest's key.
#[derive(Debug)]
pub enum StoredManifest {
    /// A run manifest (boxed: it is hundreds of bytes, the other answers a few words).
    Found(Box<Manifest>),
    /// Nothing: the run was not archived (yet).
    Missing,
    /// Something that is not a run manifest of this version, and why: too big, not JSON, or
    /// another `kind`.
    Unreadable(String),
}

/// Reads the manifest at `key`. Only the store failing is an error: what was found, or that
/// nothing was, is the answer, for run-complete (archive again over an unreadable one) and for
/// `tekflux trace` (skip it) alike.
///
/// # Errors
/// [`S3Failure`] when the store cannot be read.
pub async fn read_stored(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<StoredManifest, S3Failure> {
    let object = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key) =>
        {
            return Ok(StoredManifest::Missing);
        }
        Err(error) => return Err(S3Failure::from_sdk("GetObject", bucket, key, &error)),
    };
    let too_big = object
        .content_length()
        .is_some_and(|length| usize::try_from(length).map_or(true, |n| n > MAX_MANIFEST_BYTES));
    if too_big {
        return Ok(StoredManifest::Unreadable(format!(
            "over {} MiB: not a run manifest",
            MAX_MANIFEST_BYTES / (1024 * 1024)
        )));
    }
    let bytes = object.body.collect().await.map_err(|error| {
        S3Failure::unavailable(
            "GetObject",
            bucket,
            key,
            format!("reading the body failed: {error}"),
        )
    })?;
    Ok(
        match serde_json::from_slice::<Manifest>(&bytes.into_bytes()) {
            Ok(manifest) if manifest.kind == MANIFEST_KIND => {
                StoredManifest::Found(Box::new(manifest))
            }
            Ok(manifest) => StoredManifest::Unreadable(format!("its kind is {:?}", manifest.kind)),
            Err(error) => StoredManifest::Unreadable(error.to_string()),
        },
    )
}
