//! Which directories of a finished run to archive, and where in the bucket everything goes.
//!
//! A run created by git-push lists its `archive: true` workspaces in the
//! `tekflux.dev/archive-workspaces` annotation, and only those are archived. Any other run has
//! each claim workspace archived whose claim is mounted in run-complete's pod
//! (`storage.mounts`). The run's directory is `<mount>/<subPath>`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use tekflux_common::Error;

use crate::tekton::FinishedRun;

/// Annotation git-push writes: JSON `[{"workspace", "claim", "subPath"}]`.
pub const ARCHIVE_ANNOTATION: &str = "tekflux.dev/archive-workspaces";

/// A directory to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDir {
    /// The workspace name, which names the archive.
    pub workspace: String,
    /// The claim it lives on.
    pub claim: String,
    /// Its `subPath` in the claim; empty for the claim's root.
    pub sub_path: String,
    /// `<mount>/<subPath>`.
    pub dir: PathBuf,
}

impl WorkspaceDir {
    /// Whether `storage.cleanup` may delete the directory: only a run's own `subPath`, never a
    /// claim's root, which other runs share.
    pub fn removable(&self) -> bool {
        !self.sub_path.is_empty()
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnnotatedWorkspace {
    workspace: String,
    claim: String,
    #[serde(default)]
    sub_path: String,
}

/// Works out which directories of `run` to archive, given where claims are mounted.
///
/// # Errors
/// [`Error::Unavailable`] when a claim's configured mount point does not exist: the volume is
/// not mounted (yet), which a retry may fix, while skipping would lose the workspace.
pub fn plan_workspaces(
    run: &FinishedRun,
    mounts: &BTreeMap<String, String>,
) -> Result<WorkspacePlan, Error> {
    let candidates: Vec<(String, Option<String>, String)> = match run
        .annotations
        .get(ARCHIVE_ANNOTATION)
    {
        Some(text) => match serde_json::from_str::<Vec<AnnotatedWorkspace>>(text) {
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
        let dir = mount.join(&sub_path);
        match inside_mount(mount, &dir) {
            Ok(true) => {}
            Ok(false) => {
                plan.skipped.push(skip(format!(
                    "{} leads outside the claim's mount through a symlink",
                    dir.display()
                )));
                continue;
            }
            Err(_) => {
                plan.skipped.push(skip(format!(
                    "{} does not exist: the run wrote nothing there",
                    dir.display()
                )));
                continue;
            }
        }
        plan.archive.push(WorkspaceDir {
            workspace,
            claim: claim_name,
            sub_path,
            dir,
        });
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

/// Whether `dir`, with symlinks resolved, is a directory inside `mount`: another run could have
/// left a symlink where this run's subPath lies.
fn inside_mount(mount: &Path, dir: &Path) -> std::io::Result<bool> {
    let mount = mount.canonicalize()?;
    let dir = dir.canonicalize()?;
    Ok(dir.starts_with(&mount) && dir.is_dir())
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
    fn a_symlinked_sub_path_leading_out_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("r")).unwrap();
        let mounts = BTreeMap::from([("ws".to_owned(), root.path().to_str().unwrap().to_owned())]);
        let plan = plan_workspaces(
            &run(
                json!({}),
                json!([{"name": "a", "persistentVolumeClaim": {"claimName": "ws"}, "subPath": "r"}]),
            ),
            &mounts,
        )
        .unwrap();
        assert!(plan.archive.is_empty());
        assert!(
            plan.skipped[0].reason.contains("outside"),
            "{:?}",
            plan.skipped
        );
    }
}
