//! What tekflux writes on the Tekton runs git-push creates, and run-complete and release-changed
//! read back from the API server: the run kinds, the labels and annotations, and the result names
//! of a build that published an image. One definition, so writer and readers cannot drift.

/// The two kinds of Tekton run (`tekton.dev/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A `PipelineRun`.
    PipelineRun,
    /// A `TaskRun`.
    TaskRun,
}

impl RunKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::PipelineRun => "PipelineRun",
            RunKind::TaskRun => "TaskRun",
        }
    }

    /// The resource's plural (`pipelineruns`, `taskruns`), for API paths.
    pub fn plural(self) -> &'static str {
        match self {
            RunKind::PipelineRun => "pipelineruns",
            RunKind::TaskRun => "taskruns",
        }
    }

    /// The kind named `kind` (`PipelineRun`, `TaskRun`), if it is one.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "PipelineRun" => Some(RunKind::PipelineRun),
            "TaskRun" => Some(RunKind::TaskRun),
            _ => None,
        }
    }
}

/// Tekton's API group.
pub const TEKTON_GROUP: &str = "tekton.dev";
/// The Tekton API version tekflux creates and reads runs in.
pub const TEKTON_VERSION: &str = "v1";

/// Label on every object tekflux creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on tekflux's objects.
pub const MANAGED_BY: &str = "tekflux";
/// Label naming the repository rule that created a run.
pub const RULE_LABEL: &str = "tekflux.dev/rule";
/// Label naming the provider.
pub const PROVIDER_LABEL: &str = "tekflux.dev/provider";
/// Label with the sanitised `owner-name` of the repository.
pub const REPO_LABEL: &str = "tekflux.dev/repo";
/// Label with `branch`, `tag` or `other`.
pub const REF_KIND_LABEL: &str = "tekflux.dev/ref-kind";
/// Label with the sanitised branch name.
pub const BRANCH_LABEL: &str = "tekflux.dev/branch";
/// Label with the sanitised tag name.
pub const TAG_LABEL: &str = "tekflux.dev/tag";
/// Label and annotation with the commit sha.
pub const SHA_KEY: &str = "tekflux.dev/sha";
/// Annotation with the delivery id.
pub const DELIVERY_ANNOTATION: &str = "tekflux.dev/delivery-id";
/// Annotation with the canonical repository URL.
pub const REPO_URL_ANNOTATION: &str = "tekflux.dev/repo-url";
/// Annotation with the full ref (labels hold it sanitised).
pub const REF_ANNOTATION: &str = "tekflux.dev/ref";
/// Annotation with the pusher.
pub const PUSHER_ANNOTATION: &str = "tekflux.dev/pusher";
/// Annotation with the tekflux version that built the run.
pub const VERSION_ANNOTATION: &str = "tekflux.dev/version";
/// Annotation with the JSON list of `{"workspace", "claim", "subPath"}` run-complete archives.
pub const ARCHIVE_ANNOTATION: &str = "tekflux.dev/archive-workspaces";

/// One entry of [`ARCHIVE_ANNOTATION`]'s JSON list: git-push writes it, run-complete reads it to
/// find the directory to archive (`subPath` inside PVC `claim`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedWorkspace {
    /// The workspace's name in the run.
    pub workspace: String,
    /// The PVC it is bound to.
    pub claim: String,
    /// Its `subPath` in the claim (the run's name); empty for the claim's root.
    #[serde(default)]
    pub sub_path: String,
}

/// On a run whose rule reports commit statuses: the status context (Bitbucket: key) git-push
/// reported `pending` under, which run-complete reports the outcome under.
pub const STATUS_CONTEXT_ANNOTATION: &str = "tekflux.dev/status-context";
/// On a run of a fan-out rule: the values its `paths` captured, as a JSON object.
pub const PATHS_ANNOTATION: &str = "tekflux.dev/paths";
/// On a run of a fan-out rule: a hash of [`PATHS_ANNOTATION`], so the runs of one value (and
/// only those) can be selected by label.
pub const FAN_OUT_LABEL: &str = "tekflux.dev/fan-out";

/// The result holding a built image's reference (the Kaniko/Buildah catalog Tasks' convention).
pub const IMAGE_URL_RESULT: &str = "IMAGE_URL";
/// The result holding that image's digest.
pub const IMAGE_DIGEST_RESULT: &str = "IMAGE_DIGEST";
