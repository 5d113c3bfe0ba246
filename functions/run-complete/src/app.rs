//! The HTTP function: Tekton's terminal events in, an archived run and one reply event out.
//!
//! A terminal event is only a notification (Tekton cannot sign it). Before any I/O its run's
//! namespace and name must be DNS-1123 names (else 400), and a namespace the config does not
//! serve is acknowledged and ignored without asking anything. Then the run is read from the API
//! server ([`crate::verify`]): no such run, another uid or not finished is 422, and everything
//! below uses the API server's copy, never the event's.
//!
//! For each verified run: read `manifest.json` (a manifest with the same run uid means this is
//! a duplicate: answer as before), archive each workspace (streamed, then read back and
//! checked), copy the step logs, write the manifest last, and only then free the volume when
//! `storage.cleanup` is on. Any failure before the manifest is written answers 503 so the Broker
//! retries, and nothing is deleted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use cloudevents::AttributesReader;
use serde_json::json;
use crate::s3_client::S3Setup;
use tekflux_common::cloudevent::{IncomingEvent, ReplySink, no_reply};
use tekflux_common::commit_status::{
    BuildState, RetryPolicy, StatusReport, StatusReporter, render_target_url, short_duration,
};
use tekflux_common::config::{Config, Storage};
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::run_contract;
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server;
use tekflux_common::{Error, Result};

use crate::archive::{ArchiveError, ArchiveOptions, S3Failure, upload_archive, verify_archive};
use crate::logs::{LogTarget, copy_logs_and_failures};
use crate::manifest::{ArchivedWorkspace, CleanupFailure, MANIFEST_KIND, Manifest, RunRecord};
use crate::plan::{RunLayout, SkippedWorkspace, WorkspaceDir, plan_workspaces};
use crate::reply::build_reply_event;
use crate::tekton::{FinishedRun, TEKTON_TYPE_PREFIX, Terminal};
use crate::verify::{Refusal, RunReference, VerifyError, verify_run};

/// Annotation git-push writes with the commit sha.
pub const SHA_ANNOTATION: &str = run_contract::SHA_KEY;
/// Annotation git-push writes with the delivery id.
pub const DELIVERY_ANNOTATION: &str = run_contract::DELIVERY_ANNOTATION;
/// Annotation git-push writes with the canonical repository URL.
pub const REPO_URL_ANNOTATION: &str = run_contract::REPO_URL_ANNOTATION;

/// What run-complete needs to answer requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    /// Namespaces whose runs are archived (see [`served_namespaces`]).
    served: BTreeSet<String>,
    kube: Option<kube::Client>,
    s3: Option<aws_sdk_s3::Client>,
    replies: ReplySink,
    runs: CounterFamily,
    refused: CounterFamily,
    archived_bytes: CounterFamily,
    cleanups: CounterFamily,
    /// Uids of runs being archived by this process: Tekton sends duplicates close together.
    in_flight: Mutex<HashSet<String>>,
    senders: SenderAuth,
    status: StatusReporter,
}

/// Marks a run as being archived until dropped.
struct InFlight<'a> {
    runs: &'a Mutex<HashSet<String>>,
    uid: String,
}

impl<'a> InFlight<'a> {
    fn claim(runs: &'a Mutex<HashSet<String>>, uid: &str) -> Option<Self> {
        let mut set = runs.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(uid.to_owned()).then(|| Self {
            runs,
            uid: uid.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.uid);
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("bucket", &self.inner.storage.bucket)
            .field("served", &self.inner.served)
            .field("kube", &self.inner.kube.is_some())
            .field("s3", &self.inner.s3.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// run-complete's state. Without a Kubernetes client, S3 client or `storage.bucket`,
    /// terminal events are answered 503 (retried, then dead-lettered: not lost).
    pub fn new(
        config: &Config,
        kube: Option<kube::Client>,
        s3: Option<aws_sdk_s3::Client>,
        replies: ReplySink,
        metrics: &Metrics,
    ) -> Self {
        Self::with_status_policy(config, kube, s3, replies, metrics, RetryPolicy::default())
    }

    /// As [`AppState::new`], retrying commit statuses as `policy` says.
    pub fn with_status_policy(
        config: &Config,
        kube: Option<kube::Client>,
        s3: Option<aws_sdk_s3::Client>,
        replies: ReplySink,
        metrics: &Metrics,
        policy: RetryPolicy,
    ) -> Self {
        let senders = SenderAuth::new(Receiver::RunComplete, &config.events, kube.clone(), metrics);
        let status = StatusReporter::with_policy(config, metrics, policy);
        Self {
            inner: Arc::new(Inner {
                storage: config.storage.clone(),
                senders,
                served: served_namespaces(config),
                kube,
                s3,
                replies,
                runs: metrics.counter_family(
                    "tekflux_run_complete_runs",
                    "Finished runs handled, by result",
                    &["result"],
                ),
                refused: metrics.counter_family(
                    "tekflux_run_complete_refused",
                    "Terminal events refused because they name no run the API server backs, by \
                     reason",
                    &["reason"],
                ),
                archived_bytes: metrics.counter_family(
                    "tekflux_run_complete_archived_bytes",
                    "Compressed workspace bytes uploaded and verified",
                    &["outcome"],
                ),
                cleanups: metrics.counter_family(
                    "tekflux_run_complete_cleanups",
                    "Archived workspaces removed from the claim (storage.cleanup), by outcome; \
                     `failed` means the claim keeps filling up",
                    &["outcome"],
                ),
                in_flight: Mutex::new(HashSet::new()),
                status,
            }),
        }
    }

    fn archive_options(&self) -> ArchiveOptions {
        ArchiveOptions::from_storage(&self.inner.storage)
    }
}

/// The namespaces whose runs run-complete archives: the config's top-level `namespace` and
/// every repository rule's `namespace`, which is where git-push creates runs. Tekton's
/// `config-events` sink sends the runs of the whole cluster; the rest are not tekflux's.
pub fn served_namespaces(config: &Config) -> BTreeSet<String> {
    std::iter::once(&config.namespace)
        .chain(
            config
                .repositories
                .iter()
                .filter_map(|rule| rule.namespace.as_ref()),
        )
        .cloned()
        .collect()
}

/// The function's routes: `POST /` takes Tekton CloudEvents from authenticated senders (the
/// Broker's Trigger, see [`tekflux_common::sender`]), of at most
/// [`server::KUBERNETES_OBJECT_EVENT_BYTES`]: they carry one run object.
pub fn app(state: AppState) -> Router {
    let senders = middleware::from_fn_with_state(state.inner.senders.clone(), require_sender);
    let limit =
        middleware::from_fn_with_state(server::KUBERNETES_OBJECT_EVENT_BYTES, server::limit_body);
    Router::new()
        .route("/", post(receive).layer(senders).layer(limit))
        .with_state(state)
}

/// Builds the function's routes the way a `main` does: Kubernetes from `KUBECONFIG` or the
/// pod's service account, S3 from the config and the AWS SDK's environment.
pub async fn routes_from_startup(startup: &tekflux_common::startup::Startup) -> Router {
    let kube = startup.kube().await;
    if kube.is_none() {
        startup.server.readiness.limit(
            "run-complete",
            "no Kubernetes cluster: finished runs are answered 503",
        );
    }
    let storage = &startup.config.storage;
    // Without a bucket nothing is stored, so no client is built and no region or credentials
    // are looked up (a lookup off AWS only fails, noisily).
    let setup = if storage.bucket.is_none() {
        startup.server.readiness.limit(
            "run-complete",
            "storage.bucket is not set: finished runs are answered 503",
        );
        None
    } else {
        Some(S3Setup::load(storage, &startup.env).await)
    };
    tracing::info!(
        bucket = storage.bucket.as_deref().unwrap_or("(none)"),
        prefix = %storage.prefix,
        endpoint = %setup
            .as_ref()
            .map_or_else(|| "(none: no bucket)".to_owned(), S3Setup::describe_endpoint),
        region = setup.as_ref().and_then(S3Setup::region).unwrap_or("(none)"),
        "S3 storage"
    );
    if let Some(Err(error)) = setup.as_ref().map(S3Setup::check) {
        tracing::warn!("{error}; until it is fixed, finished runs are answered 500");
    }
    let s3 = setup.as_ref().map(S3Setup::client);
    let dead_letters = crate::dead_letters::DeadLetterStore::new(
        &startup.config,
        kube.clone(),
        s3.clone(),
        &startup.server.metrics,
    );
    let state = AppState::new(
        &startup.config,
        kube,
        s3,
        startup.reply_sink(),
        &startup.server.metrics,
    );
    state.inner.senders.log_startup();
    dead_letters.senders().log_startup();
    app(state).merge(crate::dead_letters::app(dead_letters))
}

async fn receive(State(state): State<AppState>, incoming: IncomingEvent) -> Result<Response> {
    let event_type = incoming.event.ty().to_owned();
    let Some(terminal) = Terminal::from_event_type(&event_type) else {
        if event_type.starts_with(TEKTON_TYPE_PREFIX) {
            state.inner.runs.inc(&["ignored"]);
            return Ok(ignored(
                &event_type,
                "only successful and failed runs are archived".to_owned(),
            ));
        }
        return Err(Error::BadRequest(format!(
            "unsupported event type {event_type:?}; run-complete takes Tekton's \
             dev.tekton.event.* events"
        )));
    };
    let reference = incoming
        .data_json("Tekton sends the run in it")
        .map_err(|error| Refusal::InvalidEvent(error.to_string()))
        .and_then(|data| RunReference::from_event(terminal.kind, &data))
        .map_err(|refusal| refuse(&state, refusal))?;
    if !state.inner.served.contains(&reference.namespace) {
        // Nothing is asked of the API server: the RBAC of other namespaces is not ours.
        state.inner.runs.inc(&["not_served"]);
        return Ok(ignored(
            &reference.name,
            format!(
                "namespace {} is not served by this config (its `namespace` and the \
                 repositories' namespaces)",
                reference.namespace
            ),
        ));
    }
    let inner = &state.inner;
    let bucket = inner.storage.bucket.as_deref().ok_or_else(|| {
        Error::Unavailable(
            "storage.bucket is not configured, so the run cannot be archived; the event will \
             be retried"
                .to_owned(),
        )
    })?;
    let (Some(s3), Some(kube)) = (&inner.s3, &inner.kube) else {
        return Err(Error::Unavailable(
            "run-complete has no Kubernetes or S3 client; the event will be retried".to_owned(),
        ));
    };
    let run = match verify_run(kube, &reference).await {
        Ok(run) => run,
        Err(VerifyError::Refused(refusal)) => return Err(refuse(&state, refusal)),
        Err(VerifyError::Api(error)) => {
            inner.runs.inc(&["failed"]);
            return Err(error);
        }
    };
    if let Some(parent) = run.parent_pipeline_run() {
        inner.runs.inc(&["ignored"]);
        return Ok(ignored(
            &run.name,
            format!(
                "TaskRun of PipelineRun {parent}: its logs are archived when the PipelineRun \
                 finishes"
            ),
        ));
    }
    let Some(_in_flight) = InFlight::claim(&inner.in_flight, &run.uid) else {
        inner.runs.inc(&["busy"]);
        return Err(Error::Unavailable(format!(
            "{} {} is being archived by an earlier event; retry to get its result",
            run.kind.as_str(),
            run.name
        )));
    };
    let target = Target { bucket, s3, kube };
    let result = archive_run(&state, &incoming, &run, &target).await;
    inner.runs.inc(&[match &result {
        Ok(Archived::New(_)) => "archived",
        Ok(Archived::Duplicate(_)) => "duplicate",
        Err(_) => "failed",
    }]);
    result.map(Archived::into_response)
}

/// Counts and logs a refused terminal event (a forger may be at work) and answers it.
fn refuse(state: &AppState, refusal: Refusal) -> Error {
    state.inner.refused.inc(&[refusal.reason()]);
    tracing::warn!(reason = refusal.reason(), %refusal, "terminal event refused");
    refusal.into()
}

/// 200 with `{"ignored", "reason"}`: acknowledged, so the Broker does not retry, and no reply.
fn ignored(what: &str, reason: String) -> Response {
    no_reply(StatusCode::OK, json!({"ignored": what, "reason": reason}))
}

/// Where a verified run goes, and the client its logs come through.
struct Target<'a> {
    bucket: &'a str,
    s3: &'a aws_sdk_s3::Client,
    kube: &'a kube::Client,
}

/// What archiving a run answered.
enum Archived {
    /// The run was archived now.
    New(Response),
    /// An earlier event archived it already.
    Duplicate(Response),
}

impl Archived {
    fn into_response(self) -> Response {
        match self {
            Archived::New(response) | Archived::Duplicate(response) => response,
        }
    }
}

/// Archives `run`, the API server's copy: everything below comes from it, not from the event.
async fn archive_run(
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
            Err(error) => return Err(archive_failure(error)),
        };
        // Read back what the store holds: nothing is reported or deleted on the strength of
        // what was sent alone.
        verify_archive(s3, bucket, &key, &report.sha256)
            .await
            .map_err(archive_failure)?;
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

/// Archive failures: the store failing or holding something else, or the tree changing while
/// it was read, is retried (503); a tree that cannot be read or a store refusing the
/// configuration (credentials, permissions, a missing bucket) is a 500, which the Broker also
/// retries before dead-lettering, since answering 2xx would lose the workspace.
fn archive_failure(error: ArchiveError) -> Error {
    if error.is_transient() {
        Error::Unavailable(error.to_string())
    } else {
        Error::Internal(error.to_string())
    }
}

/// Failures of run-complete's own S3 requests (manifest, logs), answered as archive failures
/// are: 503 only when a retry may succeed.
pub(crate) fn store_failure(failure: S3Failure) -> Error {
    if failure.is_transient() {
        Error::Unavailable(failure.to_string())
    } else {
        Error::Internal(failure.to_string())
    }
}

async fn read_manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<Manifest>> {
    let object = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key) =>
        {
            return Ok(None);
        }
        Err(error) => {
            return Err(store_failure(S3Failure::from_sdk(
                "GetObject",
                bucket,
                key,
                &error,
            )));
        }
    };
    let bytes = object.body.collect().await.map_err(|error| {
        store_failure(S3Failure::unavailable(
            "GetObject",
            bucket,
            key,
            format!("reading the body failed: {error}"),
        ))
    })?;
    match serde_json::from_slice(&bytes.into_bytes()) {
        Ok(manifest) => Ok(Some(manifest)),
        Err(error) => {
            // Not ours, or from an incompatible version: archive again and overwrite it.
            tracing::warn!(key, %error, "existing manifest is unreadable; archiving again");
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
        .map_err(|error| Error::Internal(format!("cannot serialise the manifest: {error}")))?;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .set_metadata(Some(metadata.clone().into_iter().collect()))
        .body(body.into())
        .send()
        .await
        .map_err(|error| store_failure(S3Failure::from_sdk("PutObject", bucket, key, &error)))?;
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
        let removed = tokio::task::spawn_blocking(move || target.remove()).await;
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

/// The commit status of a finished run: under the context git-push reported `pending` with
/// (its annotation), when the run's provider reports statuses in this config.
/// `failed_tasks` (a PipelineRun's failed or timed-out tasks) are named in the description.
pub fn outcome_report(
    status: &StatusReporter,
    run: &FinishedRun,
    failed_tasks: &[String],
) -> Option<StatusReport> {
    let context = run
        .annotations
        .get(run_contract::STATUS_CONTEXT_ANNOTATION)?;
    let provider = run.labels.get(run_contract::PROVIDER_LABEL)?;
    let provider = tekflux_common::config::GitProvider::ALL
        .into_iter()
        .find(|p| p.as_str() == provider)?;
    let settings = status.settings(provider)?;
    let repo_url = run.annotations.get(REPO_URL_ANNOTATION)?;
    let sha = run.annotations.get(SHA_ANNOTATION)?;
    let state = build_state(run);
    let rule = run
        .labels
        .get(run_contract::RULE_LABEL)
        .map_or("", String::as_str);
    let variables = BTreeMap::from([
        ("namespace", run.namespace.as_str()),
        ("name", run.name.as_str()),
        ("kind", run.kind.as_str()),
        ("uid", run.uid.as_str()),
        ("rule", rule),
        ("sha", sha.as_str()),
    ]);
    let mut description = format!("{}: {}", run.name, run.outcome.as_str());
    if let Some(duration) = run_duration(run) {
        description.push_str(&format!(" in {}", short_duration(duration)));
    }
    if state != BuildState::Success
        && let Some(reason) = &run.reason
    {
        if failed_tasks.is_empty() {
            description.push_str(&format!(" ({reason})"));
        } else {
            description.push_str(&format!(" ({reason}: {})", failed_tasks.join(", ")));
        }
    }
    Some(StatusReport {
        provider,
        repo_url: repo_url.clone(),
        sha: sha.clone(),
        git_ref: run.annotations.get(run_contract::REF_ANNOTATION).cloned(),
        context: context.clone(),
        state,
        description,
        target_url: settings
            .target_url
            .as_deref()
            .map(|template| render_target_url(template, &variables)),
    })
}

/// Tekton's `Succeeded` reasons for cancelled and timed-out runs (`Cancelled`,
/// `PipelineRunCancelled`, `StoppedRunFinally`, `PipelineRunTimeout`, `TaskRunTimeout`) as the
/// closest build state.
fn build_state(run: &FinishedRun) -> BuildState {
    let reason = run.reason.as_deref().unwrap_or_default();
    match run.outcome {
        crate::tekton::Outcome::Succeeded => BuildState::Success,
        _ if reason.contains("Timeout") || reason.contains("TimedOut") => BuildState::TimedOut,
        _ if reason.contains("Cancel") || reason.contains("Stopped") => BuildState::Cancelled,
        _ => BuildState::Failure,
    }
}

fn run_duration(run: &FinishedRun) -> Option<std::time::Duration> {
    let parse = |time: &Option<String>| chrono::DateTime::parse_from_rfc3339(time.as_deref()?).ok();
    let (start, end) = (parse(&run.start_time)?, parse(&run.completion_time)?);
    (end - start).to_std().ok()
}

async fn report_outcome(status: &StatusReporter, run: &FinishedRun, failed_tasks: &[String]) {
    if let Some(report) = outcome_report(status, run, failed_tasks) {
        status.report(&report).await;
    }
}
