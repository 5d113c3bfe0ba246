//! Archiving one verified run: its workspaces (streamed, then read back and checked), its step
//! logs, the manifest last, then the clean-up of the volume when `storage.cleanup` is on.

use std::collections::BTreeMap;

use axum::response::Response;
use tekflux_common::cloudevent::IncomingEvent;
use tekflux_common::metrics::CounterFamily;
use tekflux_common::run_contract;
use tekflux_common::{Error, Result};

use crate::app::{AppState, DELIVERY_ANNOTATION, REPO_URL_ANNOTATION, SHA_ANNOTATION};
use crate::archive::{ArchiveError, S3Failure, upload_archive, verify_archive};
use crate::logs::{LogTarget, copy_logs_and_failures};
use crate::manifest::{
    self, ArchivedWorkspace, CleanupFailure, MANIFEST_KIND, Manifest, RunRecord, StoredManifest,
};
use crate::outcome::report_outcome;
use crate::plan::{RunLayout, SkippedWorkspace, WorkspaceDir, plan_workspaces};
use crate::reply::build_reply_event;
use crate::tekton::FinishedRun;

/// Where a verified run goes, and the client its logs come through.
pub(crate) struct Target<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) s3: &'a aws_sdk_s3::Client,
    pub(crate) kube: &'a kube::Client,
}

/// What archiving a run answered.
pub(crate) enum Archived {
    /// The run was archived now.
    New(Response),
    /// An earlier event archived it already.
    Duplicate(Response),
}

impl Archived {
    pub(crate) fn into_response(self) -> Response {
        match self {
            Archived::New(response) | Archived::Duplicate(response) => response,
        }
    }
}

/// Archives `run`, the API server's copy: everything below comes from it, not from the event.
#[tracing::instrument(
    skip_all,
    fields(run = %run.name, namespace = %run.namespace, uid = %run.uid)
)]
pub(crate) async fn archive_run(
    state: &AppState,
    incoming: &IncomingEvent,
    run: &FinishedRun,
    target: &Target<'_>,
) -> Result<Archived> {
    let inner = &state.inner;
    let &Target { bucket, s3, kube } = target;
    let layout = RunLayout::new(&inner.storage.prefix, &run.namespace, &run.name);
    let manifest_key = layout.manifest();
    let mut metadata = BTreeMap::from([("tekflux-run-uid".to_owned(), run.uid.clone())]);
    if let Some(sha) = run.annotations.get(SHA_ANNOTATION) {
        metadata.insert("tekflux-sha".to_owned(), sha.clone());
    }
    if let Some(delivery) = run.annotations.get(DELIVERY_ANNOTATION) {
        metadata.insert("tekflux-delivery-id".to_owned(), delivery.clone());
    }
    let manifest_at = ManifestAt {
        s3,
        bucket,
        key: &manifest_key,
        metadata: &metadata,
    };

    if let Some(mut existing) = read_manifest(s3, bucket, &manifest_key).await?
        && existing.run.uid == run.uid
    {
        tracing::info!(run = %run.name, "duplicate completion event: the run is archived");
        if inner.storage.cleanup {
            let plan = plan_workspaces(run, &inner.storage.mounts)?;
            clean_up(&plan.archive, &mut existing, &inner.cleanups, &manifest_at).await;
        }
        let reply = build_reply_event(incoming, &existing, bucket, &manifest_key, true)?;
        return inner.replies.deliver(reply).await.map(Archived::Duplicate);
    }

    let plan = plan_workspaces(run, &inner.storage.mounts)?;

    let options = state.archive_options();
    let mut workspaces = Vec::new();
    let mut skipped = plan.skipped.clone();
    for dir in &plan.archive {
        let key = layout.workspace(&dir.workspace);
        let uploaded = match dir.open() {
            Ok(tree) => upload_archive(s3, bucket, &key, &tree, &options, metadata.clone()).await,
            Err(error) => Err(error),
        };
        let report = match uploaded {
            Ok(report) => report,
            // Over the bound it will never fit: recorded like any workspace that is not
            // archived (and so never deleted), and the run's logs and manifest still follow.
            Err(error @ (ArchiveError::TooLarge { .. } | ArchiveError::TooManyEntries { .. })) => {
                tracing::warn!(workspace = %dir.workspace, %error, "workspace not archived");
                skipped.push(SkippedWorkspace {
                    workspace: dir.workspace.clone(),
                    claim: Some(dir.claim.clone()),
                    reason: error.to_string(),
                });
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        // Read back what the store holds: nothing is reported or deleted on the strength of
        // what was sent alone.
        verify_archive(s3, bucket, &key, &report.sha256)
            .await
            .map_err(Error::from)?;
        inner
            .archived_bytes
            .inc_by(&[run.outcome.as_str()], report.bytes);
        workspaces.push(ArchivedWorkspace {
            workspace: dir.workspace.clone(),
            claim: dir.claim.clone(),
            sub_path: dir.sub_path.clone(),
            key,
            bytes: report.bytes,
            entries: report.entries,
            skipped_special: report.skipped_special,
            sha256: report.sha256,
        });
    }

    let copied = copy_logs_and_failures(
        kube,
        run,
        &LogTarget {
            s3,
            bucket,
            layout: &layout,
            metadata: &metadata,
            max_bytes: inner
                .storage
                .max_log_bytes
                .unwrap_or(crate::logs::DEFAULT_MAX_LOG_BYTES),
        },
    )
    .await?;
    let logs = copied.entries;

    let mut manifest = Manifest {
        kind: MANIFEST_KIND.to_owned(),
        run: RunRecord {
            kind: run.kind.as_str().to_owned(),
            name: run.name.clone(),
            namespace: run.namespace.clone(),
            uid: run.uid.clone(),
            outcome: run.outcome.as_str().to_owned(),
            reason: run.reason.clone(),
            start_time: run.start_time.clone(),
            completion_time: run.completion_time.clone(),
        },
        repo: run.annotations.get(REPO_URL_ANNOTATION).cloned(),
        sha: run.annotations.get(SHA_ANNOTATION).cloned(),
        delivery_id: run.annotations.get(DELIVERY_ANNOTATION).cloned(),
        rule: run.labels.get(run_contract::RULE_LABEL).cloned(),
        git_ref: run.annotations.get(run_contract::REF_ANNOTATION).cloned(),
        paths: run
            .annotations
            .get(run_contract::PATHS_ANNOTATION)
            .and_then(|paths| serde_json::from_str(paths).ok())
            .unwrap_or_default(),
        workspaces,
        skipped_workspaces: skipped,
        logs,
        cleanup_failures: Vec::new(),
        results: run.results.clone(),
        tekflux_version: env!("CARGO_PKG_VERSION").to_owned(),
        archived_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    write_manifest(s3, bucket, &manifest_key, &manifest, &metadata).await?;
    tracing::info!(
        run = %run.name,
        namespace = %run.namespace,
        workspaces = manifest.workspaces.len(),
        logs = manifest.logs.len(),
        "run archived"
    );
    // Only a run archived now is reported: a redelivered event (the manifest exists) posts
    // nothing, and a failure here is logged and counted, never the archive's.
    report_outcome(&inner.status, run, &copied.failed_tasks).await;
    if inner.storage.cleanup {
        clean_up(&plan.archive, &mut manifest, &inner.cleanups, &manifest_at).await;
    }
    let reply = build_reply_event(incoming, &manifest, bucket, &manifest_key, false)?;
    inner.replies.deliver(reply).await.map(Archived::New)
}

async fn read_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Manifest>> {
    match manifest::read_stored(s3, bucket, key).await? {
        StoredManifest::Found(manifest) => Ok(Some(*manifest)),
        StoredManifest::Missing => Ok(None),
        StoredManifest::Unreadable(reason) => {
            // Not ours, or from an incompatible version: archive again and overwrite it.
            tracing::warn!(
                key,
                reason,
                "existing manifest is unreadable; archiving again"
            );
            Ok(None)
        }
    }
}

async fn write_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    manifest: &Manifest,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let body = serde_json::to_vec_pretty(manifest)
        .map_err(|error| Error::internal("cannot serialise the manifest", error))?;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .set_metadata(Some(metadata.clone().into_iter().collect()))
        .body(body.into())
        .send()
        .await
        .map_err(|error| Error::from(S3Failure::from_sdk("PutObject", bucket, key, &error)))?;
    Ok(())
}

/// Where a run's manifest is stored, and the object metadata it is stored with.
struct ManifestAt<'a> {
    s3: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    key: &'a str,
    metadata: &'a BTreeMap<String, String>,
}

/// Frees the run's archived directories and records in the manifest those it could not free
/// (or, on a later delivery, that they are free now). The manifest is rewritten only when that
/// record changes. A failed rewrite is logged: the archive stays valid and the failure is
/// already counted and logged by [`remove_archived`].
async fn clean_up(
    dirs: &[WorkspaceDir],
    manifest: &mut Manifest,
    cleanups: &CounterFamily,
    at: &ManifestAt<'_>,
) {
    let failures = remove_archived(dirs, manifest, cleanups).await;
    if failures == manifest.cleanup_failures {
        return;
    }
    manifest.cleanup_failures = failures;
    if let Err(error) = write_manifest(at.s3, at.bucket, at.key, manifest, at.metadata).await {
        tracing::error!(
            key = at.key,
            %error,
            "recording the clean-up in the manifest failed"
        );
    }
}

/// Removes the archived workspaces. A failure leaves the archive valid, so it is not a failed
/// delivery, but it must not be silent: the claim would fill up. Each failure is logged at
/// `error`, counted in `tekflux_run_complete_cleanups_total{outcome="failed"}` and returned for
/// the manifest. A directory that is gone now but failed on an earlier delivery keeps that
/// record: the removal renames it aside first, so what was left lies under the aside name the
/// recorded error names.
async fn remove_archived(
    dirs: &[WorkspaceDir],
    manifest: &Manifest,
    cleanups: &CounterFamily,
) -> Vec<CleanupFailure> {
    let mut failures = Vec::new();
    for dir in dirs {
        let archived = manifest
            .workspaces
            .iter()
            .any(|archived| archived.workspace == dir.workspace);
        if !archived || !dir.removable() {
            continue;
        }
        let target = dir.clone();
        // The removal logs (and its errors are logged) under the request's span.
        let span = tracing::Span::current();
        let removed = tokio::task::spawn_blocking(move || span.in_scope(|| target.remove())).await;
        let error = match removed {
            Ok(Ok(())) => {
                cleanups.inc(&["removed"]);
                tracing::info!(dir = %dir.dir.display(), "workspace removed");
                continue;
            }
            Ok(Err(ArchiveError::SourceMissing { .. })) => {
                failures.extend(
                    manifest
                        .cleanup_failures
                        .iter()
                        .filter(|earlier| earlier.workspace == dir.workspace)
                        .cloned(),
                );
                continue;
            }
            Ok(Err(error)) => tekflux_common::error::plain_chain(&error),
            Err(error) => format!("the removal stopped: {error}"),
        };
        cleanups.inc(&["failed"]);
        tracing::error!(
            dir = %dir.dir.display(),
            %error,
            "removing the archived workspace failed: the claim keeps its files (run-complete \
             needs the security context knative/base gives it to remove what runs wrote: \
             README, \"Deployment\")"
        );
        failures.push(CleanupFailure {
            workspace: dir.workspace.clone(),
            dir: dir.dir.display().to_string(),
            error,
        });
    }
    failures
}
