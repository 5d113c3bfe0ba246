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

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use cloudevents::AttributesReader;
use serde_json::json;
use tekflux_common::cloudevent::{IncomingEvent, ReplySink, no_reply};
use tekflux_common::commit_status::{RetryPolicy, StatusReporter};
use tekflux_common::config::{Config, Storage};
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::run_contract;
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server;
use tekflux_common::{Error, Result};

use crate::archive::ArchiveOptions;
use crate::archiving::{Archived, Target, archive_run};
use crate::s3_client::S3Setup;
use crate::tekton::{TEKTON_TYPE_PREFIX, Terminal};
use crate::verify::{Refusal, RunReference, VerifyError, verify_run};

pub use crate::outcome::outcome_report;

/// Annotation git-push writes with the commit sha.
pub const SHA_ANNOTATION: &str = run_contract::SHA_KEY;
/// Annotation git-push writes with the delivery id.
pub const DELIVERY_ANNOTATION: &str = run_contract::DELIVERY_ANNOTATION;
/// Annotation git-push writes with the canonical repository URL.
pub const REPO_URL_ANNOTATION: &str = run_contract::REPO_URL_ANNOTATION;

/// What run-complete needs to answer requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) storage: Storage,
    /// Namespaces whose runs are archived (see [`served_namespaces`]).
    pub(crate) served: BTreeSet<String>,
    pub(crate) kube: Option<kube::Client>,
    pub(crate) s3: Option<aws_sdk_s3::Client>,
    pub(crate) replies: ReplySink,
    pub(crate) runs: CounterFamily,
    pub(crate) refused: CounterFamily,
    pub(crate) archived_bytes: CounterFamily,
    pub(crate) cleanups: CounterFamily,
    /// Uids of runs being archived by this process: Tekton sends duplicates close together.
    pub(crate) in_flight: Mutex<HashSet<String>>,
    pub(crate) senders: SenderAuth,
    pub(crate) status: StatusReporter,
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

    pub(crate) fn archive_options(&self) -> ArchiveOptions {
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

#[tracing::instrument(name = "run_complete", skip_all)]
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
        .map_err(|error| Refusal::InvalidEvent(error.message()))
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
