//! Which directories of a finished run to archive, and where in the bucket everything goes.
//!
//! A run created by git-push lists its `archive: true` workspaces in the
//! `tekflux.dev/archive-workspaces` annotation, and only those are archived. Any other run has
//! each claim workspace archived whose claim is mounted in run-complete's pod
//! (`storage.mounts`). The run's directory is `<mount>/<subPath>`: the mount comes from the
//! config and may be a symlink, but no component of the `subPath` is ever followed through one
//! ([`Tree::open_below`]), not even to another directory on the same claim.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use tekflux_common::Error;

use crate::archive::{ArchiveError, Tree};
use crate::tekton::FinishedRun;

/// Annotation git-push writes: JSON `[{"workspace", "claim", "subPath"}]`.
pub const ARCHIVE_ANNOTATION: &str = tekflux_common::run_contract::ARCHIVE_ANNOTATION;
use tekflux_common::run_contract::ArchivedWorkspace;

/// A directory to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDir {
    /// The workspace name, which names the archive.
    pub workspace: String,
    /// The claim it lives on.
    pub claim: String,
    /// Its `subPath` in the claim; empty for the claim's root.
    pub sub_path: String,
    /// Where the claim is mounted (`storage.mounts`).
    pub mount: PathBuf,
    /// `<mount>/<subPath>`, for messages: the directory is only ever opened through
    /// [`WorkspaceDir::open`].
    pub dir: PathBuf,
}

impl WorkspaceDir {
    /// Whether `storage.cleanup` may delete the directory: only a run's own `subPath`, never a
    /// claim's root, which other runs share.
    pub fn removable(&self) -> bool {
        !self.sub_path.is_empty()
    }

    /// Opens the directory: the mount as configured, then each `subPath` component without
    /// following symlinks.
    ///
    /// # Errors
    /// As [`Tree::open`] and [`Tree::open_below`].
    pub fn open(&self) -> Result<Tree, ArchiveError> {
        Tree::open(&self.mount)?.open_below(Path::new(&self.sub_path))
    }

    /// Deletes the directory (see [`Tree::remove_below`]); never the claim's root.
    ///
    /// # Errors
    /// As [`Tree::remove_below`].
    pub fn remove(&self) -> Result<(), ArchiveError> {
        Tree::open(&self.mount)?.remove_below(Path::new(&self.sub_path))
    }
}

/// A workspace that will not be archived, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedWorkspace {
    /// The workspace name.
    pub workspace: String,
    /// Its claim, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Why it is skipped.
    pub reason: String,
}

/// The archiving plan of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspacePlan {
    /// Directories to archive.
    pub archive: Vec<WorkspaceDir>,
    /// Workspaces left out, recorded in the manifest.
    pub skipped: Vec<SkippedWorkspace>,
}

/// Works out which directories of `run` to archive, given where claims are mounted.
///
/// A `subPath` with a symlink in any component is skipped: it is never followed.
///
/// # Errors
/// [`Error::Unavailable`] when a claim's configured mount point does not exist: the volume is
/// not mounted (yet), which a retry may fix, while skipping would lose the workspace.
/// [`Error::Internal`] when a `subPath` cannot be opened for another reason (permissions),
/// which skipping would also lose.
pub fn plan_workspaces(
    run: &FinishedRun,
    mounts: &BTreeMap<String, String>,
) -> Result<WorkspacePlan, Error> {
    let candidates: Vec<(String, Option<String>, String)> = match run
        .annotations
        .get(ARCHIVE_ANNOTATION)
    {
        Some(text) => match serde_json::from_str::<Vec<ArchivedWorkspace>>(text) {
            Ok(listed) => listed
                .into_iter()
                .map(|w| (w.workspace, Some(w.claim), w.sub_path))
                .collect(),
            Err(error) => {
                return Ok(WorkspacePlan {
                    archive: Vec::new(),
                    skipped: vec![SkippedWorkspace {
                        workspace: "*".to_owned(),
                        claim: None,
                        reason: format!("annotation {ARCHIVE_ANNOTATION} is not valid: {error}"),
                    }],
                });
            }
        },
        None => run
            .workspaces
            .iter()
            .filter(|binding| {
                binding
                    .claim
                    .as_ref()
                    .is_some_and(|claim| mounts.contains_key(claim))
            })
            .map(|b| (b.name.clone(), b.claim.clone(), b.sub_path.clone()))
            .collect(),
    };

    let mut plan = WorkspacePlan::default();
    for (workspace, claim, sub_path) in candidates {
        let skip = |reason: String| SkippedWorkspace {
            workspace: workspace.clone(),
            claim: claim.clone(),
            reason,
        };
        let Some(claim_name) = claim.clone() else {
            plan.skipped
                .push(skip("the workspace is not a claim".to_owned()));
            continue;
        };
        if !is_safe_name(&workspace) {
            plan.skipped.push(skip(
                "the workspace name cannot name an object key".to_owned(),
            ));
            continue;
        }
        let Some(mount) = mounts.get(&claim_name) else {
            plan.skipped.push(skip(format!(
                "claim {claim_name} is not mounted in run-complete (storage.mounts)"
            )));
            continue;
        };
        let mount = Path::new(mount);
        if !mount.is_dir() {
            return Err(Error::Unavailable(format!(
                "claim {claim_name} should be mounted at {} (storage.mounts), but that is not a \
                 directory",
                mount.display()
            )));
        }
        if !is_relative_below(&sub_path) {
            plan.skipped.push(skip(format!(
                "subPath {sub_path:?} is not a plain relative path"
            )));
            continue;
        }
        let candidate = WorkspaceDir {
            workspace: workspace.clone(),
            claim: claim_name,
            dir: mount.join(&sub_path),
            mount: mount.to_owned(),
            sub_path,
        };
        // Opened here to tell the cases apart; the archive opens it again the same way, and a
        // swap in between fails that open instead.
        let reason = match candidate.open() {
            Ok(_) => {
                plan.archive.push(candidate);
                continue;
            }
            Err(ArchiveError::SourceMissing { path }) => format!(
                "{} does not exist: the run wrote nothing there",
                path.display()
            ),
            Err(ArchiveError::Symlink { path }) => format!(
                "{} is a symlink: a subPath is never followed through one",
                path.display()
            ),
            Err(ArchiveError::NotADirectory { path }) => {
                format!("{} is not a directory", path.display())
            }
            Err(error) => return Err(Error::Internal(error.to_string())),
        };
        plan.skipped.push(skip(reason));
    }
    Ok(plan)
}

/// Names become key segments and file names: no separators, no dot-only names.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn is_relative_below(sub_path: &str) -> bool {
    Path::new(sub_path)
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
}

/// Where a run's objects go: `<prefix>/<namespace>/<run>/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    base: String,
}

impl RunLayout {
    /// The layout of the run `namespace/name` under `prefix` (slashes around it are ignored).
    pub fn new(prefix: &str, namespace: &str, name: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let base = if prefix.is_empty() {
            format!("{namespace}/{name}")
        } else {
            format!("{prefix}/{namespace}/{name}")
        };
        Self { base }
    }

    /// `…/manifest.json`, written last.
    pub fn manifest(&self) -> String {
        format!("{}/manifest.json", self.base)
    }

    /// `…/workspaces/<workspace>.tar.zst`.
    pub fn workspace(&self, workspace: &str) -> String {
        format!("{}/workspaces/{workspace}.tar.zst", self.base)
    }

    /// `…/logs/<taskrun>/<step>.log`.
    pub fn log(&self, task_run: &str, step: &str) -> String {
        format!("{}/logs/{task_run}/{step}.log", self.base)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tekton::{Outcome, RunKind};
    use serde_json::json;

    fn run(annotations: serde_json::Value, workspaces: serde_json::Value) -> FinishedRun {
        FinishedRun::from_object(
            RunKind::PipelineRun,
            Outcome::Succeeded,
            &json!({"metadata": {"name": "r", "namespace": "n", "uid": "u",
                "annotations": annotations}, "spec": {"workspaces": workspaces}}),
        )
        .unwrap()
    }

    #[test]
    fn layout_joins_prefix_namespace_and_run() {
        let layout = RunLayout::new("/runs/", "cicd", "build-1");
        assert_eq!(layout.manifest(), "runs/cicd/build-1/manifest.json");
        assert_eq!(
            layout.workspace("src"),
            "runs/cicd/build-1/workspaces/src.tar.zst"
        );
        assert_eq!(
            layout.log("build-1-clone", "step"),
            "runs/cicd/build-1/logs/build-1-clone/step.log"
        );
        assert_eq!(RunLayout::new("", "n", "r").manifest(), "n/r/manifest.json");
    }

    #[test]
    fn annotated_workspaces_are_the_only_ones_archived() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("r")).unwrap();
        let mounts = BTreeMap::from([("ws".to_owned(), root.path().to_str().unwrap().to_owned())]);
        let annotation = r#"[{"workspace":"src","claim":"ws","subPath":"r"},
                             {"workspace":"other","claim":"unmounted","subPath":"r"},
                             {"workspace":"esc","claim":"ws","subPath":"../x"},
                             {"workspace":"gone","claim":"ws","subPath":"missing"}]"#;
        let plan = plan_workspaces(
            &run(
                json!({ARCHIVE_ANNOTATION: annotation}),
                json!([{"name": "cache", "persistentVolumeClaim": {"claimName": "ws"}}]),
            ),
            &mounts,
        )
        .unwrap();
        assert_eq!(plan.archive.len(), 1);
        assert_eq!(plan.archive[0].dir, root.path().join("r"));
        assert!(plan.archive[0].removable());
        let reasons: Vec<_> = plan.skipped.iter().map(|s| s.workspace.as_str()).collect();
        assert_eq!(reasons, ["other", "esc", "gone"]);
    }

    #[test]
    fn other_runs_archive_their_mounted_claims() {
        let root = tempfile::tempdir().unwrap();
        let mounts = BTreeMap::from([("ws".to_owned(), root.path().to_str().unwrap().to_owned())]);
        let plan = plan_workspaces(
            &run(
                json!({}),
                json!([{"name": "all", "persistentVolumeClaim": {"claimName": "ws"}},
                       {"name": "tmp", "emptyDir": {}},
                       {"name": "x", "persistentVolumeClaim": {"claimName": "elsewhere"}}]),
            ),
            &mounts,
        )
        .unwrap();
        assert_eq!(plan.archive.len(), 1);
        assert!(
            !plan.archive[0].removable(),
            "a claim's root is never removed"
        );
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn a_missing_mount_point_is_transient() {
        let mounts = BTreeMap::from([("ws".to_owned(), "/nonexistent/tekflux".to_owned())]);
        let err = plan_workspaces(
            &run(
                json!({}),
                json!([{"name": "a", "persistentVolumeClaim": {"claimName": "ws"}}]),
            ),
            &mounts,
        )
        .unwrap_err();
        assert!(err.is_transient(), "{err}");
    }

    #[test]
    fn sub_paths_through_symlinks_are_skipped_wherever_they_lead() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("b")).unwrap();
        std::fs::create_dir_all(root.path().join("real/b")).unwrap();
        std::fs::write(root.path().join("file"), "x").unwrap();
        // Out of the mount, within it (another run's directory), and as an intermediate
        // component: none is followed.
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink("real", root.path().join("in")).unwrap();
        let mounts = BTreeMap::from([("ws".to_owned(), root.path().to_str().unwrap().to_owned())]);
        let plan = plan_workspaces(
            &run(
                json!({}),
                json!([
                    {"name": "a", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "out"},
                    {"name": "b", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "in"},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "out/b"},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "in/b"},
                    {"name": "e", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "file"},
                    {"name": "f", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "real/b"},
                ]),
            ),
            &mounts,
        )
        .unwrap();
        let archived: Vec<_> = plan.archive.iter().map(|w| w.sub_path.as_str()).collect();
        assert_eq!(archived, ["real/b"]);
        let reasons: Vec<_> = plan
            .skipped
            .iter()
            .map(|s| (s.workspace.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        for (workspace, reason) in &reasons[..4] {
            assert!(reason.contains("is a symlink"), "{workspace}: {reason}");
        }
        assert!(reasons[4].1.contains("not a directory"), "{reasons:?}");
    }
}
