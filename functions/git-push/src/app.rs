//! The HTTP face of git-push: webhooks and CloudEvents in, Tekton runs created, an answer out
//! only once the runs exist.
//!
//! | route                      | input                                                      |
//! |----------------------------|------------------------------------------------------------|
//! | `POST /webhooks/{provider}`| a raw webhook of `github`, `gitlab`, `gitea`, `forgejo`, `bitbucket` |
//! | `POST /webhooks`           | a raw webhook, provider told by its headers                |
//! | `POST /`                   | a CloudEvent: Knative GitHub/GitLab sources, `dev.tekflux.git.pushed.v1` |
//!
//! Add `?dryRun=true` (or the header `X-Tekflux-Dry-Run: true`) to any of them to get the runs
//! that would be created and why each rule matched or not, with nothing created.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use cdevents_sdk::latest::pipelinerun_queued;
use cdevents_sdk::{CDEvent, Subject};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde::Serialize;
use serde_json::{Value, json};
use tekflux_common::cloudevent::{
    AttributesReader, IncomingEvent, ReplySink, build_reply, cdevent_builder, no_reply,
};
use tekflux_common::commit_status::{
    BuildState, RetryPolicy, StatusReport, StatusReporter, render_target_url,
};
use tekflux_common::config::Config;
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::run_contract::{STATUS_CONTEXT_ANNOTATION, TEKTON_GROUP, TEKTON_VERSION};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server::{self, DryRunQuery, fields};
use tekflux_common::{Error, Result};

use crate::path_capture::Captures;
use crate::providers::{self, Webhook};
use crate::push::{Provider, Push};
use crate::routing::{Miss, RoutingTable, RuleError};
use crate::run::{self, RunContext, RunKind};
use crate::signature;

/// The field manager tekflux's writes are recorded under.
pub const FIELD_MANAGER: &str = "tekflux-git-push";
pub use tekflux_common::server::DRY_RUN_HEADER;

/// Counters git-push keeps, on the process-wide registry.
#[derive(Debug, Clone)]
struct GitPushMetrics {
    received: CounterFamily,
    verified: CounterFamily,
    rejected: CounterFamily,
    runs_created: CounterFamily,
    duplicates: CounterFamily,
    ignored: CounterFamily,
    superseded: CounterFamily,
}

impl GitPushMetrics {
    fn register(metrics: &Metrics) -> Self {
        GitPushMetrics {
            received: metrics.counter_family(
                "tekflux_git_push_received",
                "Webhooks and push CloudEvents received",
                &["provider"],
            ),
            verified: metrics.counter_family(
                "tekflux_git_push_verified",
                "Webhooks whose signature or token checked out",
                &["provider"],
            ),
            rejected: metrics.counter_family(
                "tekflux_git_push_rejected",
                "Webhooks and events refused, by reason",
                &["provider", "reason"],
            ),
            runs_created: metrics.counter_family(
                "tekflux_git_push_runs_created",
                "Tekton runs created",
                &["provider", "kind"],
            ),
            duplicates: metrics.counter_family(
                "tekflux_git_push_duplicates",
                "Redeliveries whose run already existed",
                &["provider"],
            ),
            ignored: metrics.counter_family(
                "tekflux_git_push_ignored",
                "Events, pushes and rules that started nothing, by reason (no_rule, \
                 rule_not_matched, provider_mismatch, clone_host_mismatch, event)",
                &["reason"],
            ),
            superseded: metrics.counter_family(
                "tekflux_git_push_superseded",
                "Older runs cancelled by concurrency: supersede",
                &["kind"],
            ),
        }
    }
}

/// What git-push needs to answer requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    routing: RoutingTable,
    kube: Option<kube::Client>,
    replies: ReplySink,
    metrics: GitPushMetrics,
    context: RunContext,
    senders: SenderAuth,
    status: StatusReporter,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kube::Client has no Debug; the config is enough to tell states apart.
        f.debug_struct("AppState")
            .field("namespace", &self.config.namespace)
            .field("rules", &self.routing.rules().len())
            .field("kube", &self.kube.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Compiles the routing table from `config` (every problem is returned, each naming its
    /// field) and registers git-push's counters on `metrics`.
    ///
    /// Without a Kubernetes client only dry runs work; real deliveries are answered 503 so the
    /// provider retries once the cluster is reachable.
    pub fn new(
        config: Config,
        kube: Option<kube::Client>,
        replies: ReplySink,
        metrics: &Metrics,
    ) -> Result<Self, Vec<RuleError>> {
        Self::with_status_policy(config, kube, replies, metrics, RetryPolicy::default())
    }

    /// As [`AppState::new`], retrying commit statuses as `policy` says.
    pub fn with_status_policy(
        config: Config,
        kube: Option<kube::Client>,
        replies: ReplySink,
        metrics: &Metrics,
        policy: RetryPolicy,
    ) -> Result<Self, Vec<RuleError>> {
        let routing = RoutingTable::compile(&config)?;
        let status = StatusReporter::with_policy(&config, metrics, policy);
        let senders = SenderAuth::new(Receiver::GitPush, &config.events, kube.clone(), metrics);
        let context = RunContext {
            namespace: config.namespace.clone(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                routing,
                kube,
                replies,
                metrics: GitPushMetrics::register(metrics),
                context,
                senders,
                status,
            }),
        })
    }

    /// The compiled routing table.
    pub fn routing(&self) -> &RoutingTable {
        &self.inner.routing
    }

    /// Who may send CloudEvents to `POST /`.
    pub fn senders(&self) -> &SenderAuth {
        &self.inner.senders
    }
}

/// git-push's routes (see the module docs). `POST /` takes only authenticated senders
/// ([`tekflux_common::sender`]); the webhook routes check the provider's signature instead.
pub fn app(state: AppState) -> Router {
    let senders = middleware::from_fn_with_state(state.inner.senders.clone(), require_sender);
    let events = Router::new()
        .route("/", post(receive_event).layer(senders))
        .with_state(state.clone());
    webhook_app(state).merge(events)
}

/// Only the provider webhook routes, for the public Service (`serve --webhooks-only`): the
/// process that faces the internet has no CloudEvent route at all.
pub fn webhook_app(state: AppState) -> Router {
    Router::new()
        .route("/webhooks", post(receive_detected_webhook))
        .route("/webhooks/{provider}", post(receive_named_webhook))
        .layer(middleware::from_fn(limit_webhook_body))
        .with_state(state)
}

/// Reads no more of a webhook than its provider sends at most
/// ([`Provider::max_webhook_bytes`]); the provider is the path's, else the one its headers name.
/// A request that names none keeps `server.bodyLimit` and is refused by the handler.
async fn limit_webhook_body(request: Request, next: Next) -> axum::response::Response {
    let named = request
        .uri()
        .path()
        .strip_prefix("/webhooks/")
        .and_then(|name| parse_provider(name).ok());
    match named.or_else(|| providers::detect(request.headers())) {
        Some(provider) => {
            server::limit_body(State(provider.max_webhook_bytes()), request, next).await
        }
        None => next.run(request).await,
    }
}

async fn receive_named_webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let dry_run = query.wanted(&headers)?;
    let provider = parse_provider(&provider)?;
    handle_webhook(&state, provider, dry_run, &headers, &body).await
}

async fn receive_detected_webhook(
    State(state): State<AppState>,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let dry_run = query.wanted(&headers)?;
    let Some(provider) = providers::detect(&headers) else {
        state
            .inner
            .metrics
            .rejected
            .inc(&["unknown", "unknown_provider"]);
        return Err(crate::error::WebhookError::UnknownProvider.into());
    };
    handle_webhook(&state, provider, dry_run, &headers, &body).await
}

fn parse_provider(name: &str) -> Result<Provider> {
    match name {
        "github" => Ok(Provider::Github),
        "gitlab" => Ok(Provider::Gitlab),
        "gitea" => Ok(Provider::Gitea),
        "forgejo" => Ok(Provider::Forgejo),
        "bitbucket" => Ok(Provider::Bitbucket),
        // 400 rather than 404: a typo in the webhook URL will never succeed, and 404 is retried.
        other => Err(Error::BadRequest(format!(
            "unknown provider {other:?} in the path; use one of github, gitlab, gitea, forgejo, bitbucket"
        ))),
    }
}

async fn handle_webhook(
    state: &AppState,
    provider: Provider,
    dry_run: bool,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let metrics = &state.inner.metrics;
    metrics.received.inc(&[provider.as_str()]);
    // The signature is checked on the raw bytes before anything parses them.
    if let Err(error) =
        signature::verify_with(provider, &state.inner.config.providers, headers, body)
    {
        metrics.rejected.inc(&[provider.as_str(), error.kind()]);
        return Err(error.into());
    }
    metrics.verified.inc(&[provider.as_str()]);
    let webhook = providers::parse(provider, headers, body).inspect_err(|error| {
        metrics.rejected.inc(&[provider.as_str(), error.kind()]);
    })?;
    match webhook {
        Webhook::Ping(ping) => Ok((
            StatusCode::OK,
            Json(json!({
                "ping": "pong",
                "provider": provider.as_str(),
                "hookId": ping.hook_id,
                "repository": ping.repo_url,
            })),
        )
            .into_response()),
        Webhook::Ignored { event, reason } => {
            metrics.ignored.inc(&["event"]);
            Ok((
                StatusCode::OK,
                Json(json!({ "ignored": event, "reason": reason })),
            )
                .into_response())
        }
        Webhook::Pushes(pushes) => {
            record_delivery(&pushes);
            let summary = process(state, &pushes, dry_run).await?;
            Ok((StatusCode::OK, Json(summary)).into_response())
        }
    }
}

/// Puts the delivery id on the request span, so every log line of the request carries it.
fn record_delivery(pushes: &[Push]) {
    if let Some(push) = pushes.first() {
        tracing::Span::current().record(fields::DELIVERY_ID, push.delivery_id.as_str());
    }
}

async fn receive_event(
    State(state): State<AppState>,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    incoming: IncomingEvent,
) -> Result<Response> {
    let dry_run = query.wanted(&headers)?;
    let span = tracing::Span::current();
    span.record(fields::CE_ID, incoming.event.id());
    span.record(fields::CE_TYPE, incoming.event.ty());
    span.record(fields::CE_SOURCE, incoming.event.source().as_str());
    {
        let metrics = &state.inner.metrics;
        let provider_label = push_provider_label(incoming.event.ty());
        metrics.received.inc(&[provider_label]);
        let webhook = providers::parse_event(&incoming.event).inspect_err(|error| {
            metrics.rejected.inc(&[provider_label, error.kind()]);
        })?;
        let pushes = match webhook {
            Webhook::Pushes(pushes) => pushes,
            Webhook::Ping(_) => {
                return Ok(no_reply(StatusCode::OK, json!({ "ping": "pong" })));
            }
            Webhook::Ignored { event, reason } => {
                metrics.ignored.inc(&["event"]);
                return Ok(no_reply(
                    StatusCode::OK,
                    json!({ "ignored": event, "reason": reason }),
                ));
            }
        };
        record_delivery(&pushes);
        let summary = process(&state, &pushes, dry_run).await?;
        match (summary.runs.first(), pushes.first()) {
            (Some(first), Some(push)) if !summary.dry_run => {
                let reply = queued_reply(&incoming, push, first, &summary)?;
                state.inner.replies.deliver(reply).await
            }
            _ => Ok(no_reply(
                StatusCode::OK,
                serde_json::to_value(&summary).unwrap_or_default(),
            )),
        }
    }
}

/// The provider label for a push CloudEvent, from its type (bounded set, for metrics).
fn push_provider_label(event_type: &str) -> &'static str {
    if event_type.starts_with(providers::knative::GITHUB_PREFIX) {
        "github"
    } else if event_type.starts_with(providers::knative::GITLAB_PREFIX)
        || event_type.starts_with(providers::knative::GITLAB_LEGACY_PREFIX)
    {
        "gitlab"
    } else if event_type == providers::normalized::EVENT_TYPE {
        "tekflux"
    } else {
        "other"
    }
}

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

/// Routes every push and creates (or, in a dry run, renders) one run per matched rule.
///
/// Runs are created before anything is answered; a failure after some runs were created is
/// answered with an error, and the retried delivery finds those runs by name (AlreadyExists).
async fn process(state: &AppState, pushes: &[Push], dry_run: bool) -> Result<Summary> {
    let inner = &state.inner;
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    for push in pushes {
        summary.pushes.push(PushSummary {
            repository: push.repo_url.clone(),
            git_ref: push.git_ref.clone(),
            sha: push.after.clone(),
            delivery: push.delivery_id.clone(),
            paths_complete: push.paths_complete,
        });
        let routing = inner.routing.route(push);
        summary.other_repository_rules += routing.other_repository_rules;
        if routing.decisions.is_empty() {
            inner.metrics.ignored.inc(&["no_rule"]);
        }
        for decision in &routing.decisions {
            if !decision.matched {
                let reason = decision.miss.unwrap_or(Miss::NotSelected).kind();
                inner.metrics.ignored.inc(&[reason]);
                summary.ignored.push(IgnoredRule {
                    rule: decision.name.to_owned(),
                    git_ref: push.git_ref.clone(),
                    reason: decision.reason.clone(),
                });
                continue;
            }
            let rule = decision.rule;
            // One run, or one per value a fan-out rule captured.
            let single = [Captures::new()];
            let instances: &[Captures] = if decision.fan_out.is_empty() {
                &single
            } else {
                &decision.fan_out
            };
            let status_context = status_context(state, push, rule.index);
            for captures in instances {
                let mut object = run::build_fan_out_run(rule, push, captures, &inner.context)
                    .map_err(|error| {
                        Error::Unprocessable(format!("rule {:?}: {error}", rule.name))
                    })?;
                // A fan-out rule's runs of one commit each get their own context
                // (`tekflux/build/api-a`), or they would overwrite each other's status.
                let status_context = status_context.as_ref().map(|context| {
                    std::iter::once(context.as_str())
                        .chain(captures.values().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join("/")
                });
                if let Some(context) = &status_context {
                    // run-complete reports the outcome under the same context, read from here.
                    object["metadata"]["annotations"][STATUS_CONTEXT_ANNOTATION] = json!(context);
                }
                let kind = rule.run_kind();
                let namespace = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let mut run_summary = RunSummary {
                    rule: rule.name.clone(),
                    kind: kind.as_str(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    target: match &rule.target {
                        crate::routing::Target::Pipeline(name)
                        | crate::routing::Target::Task(name) => name.clone(),
                    },
                    reason: decision.reason.clone(),
                    superseded: Vec::new(),
                    paths: captures.clone(),
                    object: None,
                };
                if dry_run {
                    run_summary.object = Some(match &inner.kube {
                        Some(client) => {
                            create_run(client, kind, &namespace, &object, true)
                                .await?
                                .object
                        }
                        None => object,
                    });
                } else {
                    let client = inner.kube.as_ref().ok_or_else(|| {
                        Error::Unavailable(
                            "no Kubernetes cluster is configured (KUBECONFIG or in-cluster); only dry runs work"
                                .to_owned(),
                        )
                    })?;
                    let created = create_run(client, kind, &namespace, &object, false).await?;
                    if created.existed {
                        // Its pending status was reported by the delivery that created it.
                        inner.metrics.duplicates.inc(&[push.provider.as_str()]);
                    } else {
                        inner
                            .metrics
                            .runs_created
                            .inc(&[push.provider.as_str(), kind.as_str()]);
                        if let Some(context) = &status_context {
                            report_pending(state, push, &rule.name, context, &created.object);
                        }
                    }
                    if rule.concurrency == tekflux_common::config::Concurrency::Supersede {
                        let superseded = supersede(
                            client,
                            rule,
                            push,
                            captures,
                            kind,
                            &namespace,
                            &created.object,
                            created.existed,
                        )
                        .await?;
                        inner
                            .metrics
                            .superseded
                            .inc_by(&[kind.as_str()], superseded.patched);
                        run_summary.superseded = superseded.names;
                    }
                }
                summary.runs.push(run_summary);
            }
        }
    }
    Ok(summary)
}

/// The status context of `push`'s runs of the rule at `index`, when that rule reports.
fn status_context(state: &AppState, push: &Push, index: usize) -> Option<String> {
    let rule = state.inner.config.repositories.get(index)?;
    let settings = state.inner.status.settings(push.provider);
    (rule.reports_status(settings) && push.after != crate::push::ZERO_SHA)
        .then(|| rule.status_context(settings))
}

/// Posts `pending` for a run just created, in the background: the webhook is answered as soon
/// as the run exists (GitHub gives up on a webhook after 10 s), and reporting never fails it.
fn report_pending(state: &AppState, push: &Push, rule: &str, context: &str, run: &Value) {
    let metadata = &run["metadata"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let (namespace, name) = (text(&metadata["namespace"]), text(&metadata["name"]));
    let kind = text(&run["kind"]);
    let uid = text(&metadata["uid"]);
    let variables = BTreeMap::from([
        ("namespace", namespace.as_str()),
        ("name", name.as_str()),
        ("kind", kind.as_str()),
        ("uid", uid.as_str()),
        ("rule", rule),
        ("sha", push.after.as_str()),
    ]);
    let settings = state.inner.status.settings(push.provider);
    let report = StatusReport {
        provider: push.provider,
        repo_url: push.repo_url.clone(),
        sha: push.after.clone(),
        git_ref: Some(push.git_ref.clone()),
        context: context.to_owned(),
        state: BuildState::Pending,
        description: format!("{name}: started"),
        target_url: settings
            .and_then(|s| s.target_url.as_deref())
            .map(|template| render_target_url(template, &variables)),
    };
    let status = state.inner.status.clone();
    tokio::spawn(async move {
        status.report(&report).await;
    });
}

fn run_api(client: &kube::Client, kind: RunKind, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(TEKTON_GROUP, TEKTON_VERSION, kind.as_str());
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The run as the API server holds it, and whether it was there before this request.
struct CreatedRun {
    object: Value,
    existed: bool,
}

/// Creates the run; an existing run of the same name is this delivery's earlier attempt, so it
/// is fetched and answered as if just created. A dry run of a delivery whose run exists shows
/// that run (server-side dry run answers AlreadyExists, which is no failure of the request).
async fn create_run(
    client: &kube::Client,
    kind: RunKind,
    namespace: &str,
    object: &Value,
    dry_run: bool,
) -> Result<CreatedRun> {
    let api = run_api(client, kind, namespace);
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).map_err(|error| {
        Error::Internal(format!("built run is not a Kubernetes object: {error}"))
    })?;
    let params = PostParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    match api.create(&params, &dynamic).await {
        Ok(created) => Ok(CreatedRun {
            object: to_json(&created)?,
            existed: false,
        }),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let name = dynamic.metadata.name.clone().unwrap_or_default();
            let existing = api.get(&name).await?;
            Ok(CreatedRun {
                object: to_json(&existing)?,
                existed: true,
            })
        }
        Err(error) => Err(error.into()),
    }
}

fn to_json(object: &DynamicObject) -> Result<Value> {
    serde_json::to_value(object)
        .map_err(|error| Error::Internal(format!("cannot serialise a Kubernetes object: {error}")))
}

/// The runs a push supersedes, and how many of them this request cancelled.
struct Superseded {
    names: Vec<String>,
    patched: u64,
}

/// Cancels the rule's older unfinished runs for the same repository and ref.
///
/// On a redelivery (`redelivery`: the new run existed already) the older runs that carry
/// tekflux's cancel status are listed as well, although they are not patched again: the first
/// attempt (or an earlier, partly failed one) cancelled them, and the redelivery must be answered
/// like the first delivery.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn supersede(
    client: &kube::Client,
    rule: &crate::routing::CompiledRule,
    push: &Push,
    captures: &Captures,
    kind: RunKind,
    namespace: &str,
    new_run: &Value,
    redelivery: bool,
) -> Result<Superseded> {
    let api = run_api(client, kind, namespace);
    let listed = api
        .list(&ListParams::default().labels(&run::supersede_selector(rule, push, captures)))
        .await?;
    let cancel = run::cancel_patch(kind);
    let mut superseded = Superseded {
        names: Vec::new(),
        patched: 0,
    };
    for candidate in listed.items {
        let candidate = to_json(&candidate)?;
        let name = candidate["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if run::is_superseded(&candidate, new_run, push) {
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&cancel))
                .await
            {
                Ok(_) => {
                    superseded.names.push(name);
                    superseded.patched += 1;
                }
                // Deleted in the meantime: nothing left to cancel.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => return Err(error.into()),
            }
        } else if redelivery && was_cancelled_by_us(&candidate, new_run, push, &cancel) {
            superseded.names.push(name);
        }
    }
    Ok(superseded)
}

/// Whether `candidate` carries tekflux's cancel status and, that status (and the outcome of the
/// cancellation) aside, is a run `new_run` supersedes.
fn was_cancelled_by_us(candidate: &Value, new_run: &Value, push: &Push, cancel: &Value) -> bool {
    if candidate["spec"]["status"] != cancel["spec"]["status"] {
        return false;
    }
    let mut before = candidate.clone();
    if let Some(spec) = before.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("status");
    }
    if let Some(object) = before.as_object_mut() {
        object.remove("status");
    }
    run::is_superseded(&before, new_run, push)
}

/// The CDEvents `pipelineRun queued` reply for the first run of a push CloudEvent; the other
/// runs are listed in the event's custom data.
fn queued_reply(
    incoming: &IncomingEvent,
    push: &Push,
    first: &RunSummary,
    summary: &Summary,
) -> Result<cloudevents::Event> {
    let subject_source = format!(
        "/apis/{TEKTON_GROUP}/{TEKTON_VERSION}/namespaces/{}/{}",
        first.namespace,
        first.kind.to_ascii_lowercase()
    );
    let content = pipelinerun_queued::Content {
        pipeline_name: Some(first.target.clone()),
        uri: None,
    };
    fn internal(what: &'static str) -> impl Fn(cdevents_sdk::Error) -> Error {
        move |error| Error::Internal(format!("{what}: {error}"))
    }
    let subject = Subject::from(content)
        .with_id(
            first
                .name
                .as_str()
                .try_into()
                .map_err(internal("run name is not a CDEvents id"))?,
        )
        .with_source(
            subject_source
                .as_str()
                .try_into()
                .map_err(internal("bad subject source"))?,
        );
    let cdevent = CDEvent::from(subject)
        .with_source(
            push.repo_url
                .as_str()
                .try_into()
                .map_err(internal("repository URL is not a URI"))?,
        )
        .with_custom_data(json!({ "runs": summary.runs }));
    // The id a redelivery of the push gets again, so that consumers can deduplicate.
    let id = tekflux_common::cloudevent::reply_id(&incoming.event, cdevent.ty());
    let cdevent = cdevent.with_id(id.as_str().try_into().map_err(internal("bad CDEvent id"))?);
    // The CloudEvent's id, source, type, subject and time are the CDEvent's (the binding).
    let builder = incoming
        .correlation
        .stamp_builder(cdevent_builder(&cdevent)?);
    let mut reply = build_reply(builder)?;
    incoming
        .correlation
        .clone()
        .with_delivery_id(push.delivery_id.clone())
        .with_sha(push.after.clone())
        .with_repo(push.repo_url.clone())
        .with_namespace(first.namespace.clone())
        .stamp(&mut reply);
    Ok(reply)
}

/// Builds git-push's routes the way a `main` does: the Kubernetes client from `KUBECONFIG` or
/// the pod's service account (without one, only dry runs work and deliveries are answered 503),
/// and the routing table, whose problems end the process with exit code 64 like any config error.
pub async fn routes_from_startup(startup: &tekflux_common::startup::Startup) -> Router {
    let state = state_from_startup(startup).await;
    state.senders().log_startup();
    app(state)
}

/// Like [`routes_from_startup`], with only the webhook routes ([`webhook_app`]).
pub async fn webhook_routes_from_startup(startup: &tekflux_common::startup::Startup) -> Router {
    webhook_app(state_from_startup(startup).await)
}

async fn state_from_startup(startup: &tekflux_common::startup::Startup) -> AppState {
    let kube = startup.kube().await;
    if kube.is_none() {
        startup.server.readiness.limit(
            "git-push",
            "no Kubernetes cluster: dry runs are answered, real deliveries get 503",
        );
    }
    match AppState::new(
        startup.config.clone(),
        kube,
        startup.reply_sink(),
        &startup.server.metrics,
    ) {
        Ok(state) => state,
        Err(errors) => {
            let origin = startup.config_origin();
            eprintln!("tekflux: invalid configuration");
            for error in errors {
                eprintln!("{origin}: {error}");
            }
            std::process::exit(tekflux_common::config::EX_USAGE)
        }
    }
}

/// What `tekflux render` shows for a payload file: the runs the webhook would create and why
/// each rule matched or not, computed offline. Signatures are not checked (the file is the
/// user's own) and nothing touches a cluster.
///
/// `event` and `delivery` stand in for the provider's event and delivery headers; by default the
/// provider's push event and a delivery id of `render`.
pub async fn render(
    config: Config,
    provider: Provider,
    event: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
) -> Result<Value> {
    let replies = ReplySink::new(None).map_err(|error| Error::Internal(error.to_string()))?;
    let state = AppState::new(config, None, replies, &Metrics::new()).map_err(|errors| {
        let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Error::Unprocessable(format!("invalid repositories: {}", problems.join("; ")))
    })?;
    let headers = render_headers(provider, event, delivery.unwrap_or("render"))?;
    match providers::parse(provider, &headers, body)? {
        Webhook::Pushes(pushes) => {
            let summary = process(&state, &pushes, true).await?;
            serde_json::to_value(&summary)
                .map_err(|error| Error::Internal(format!("cannot serialise the summary: {error}")))
        }
        Webhook::Ping(_) => Ok(json!({ "ping": "pong" })),
        Webhook::Ignored { event, reason } => Ok(json!({ "ignored": event, "reason": reason })),
    }
}

/// The event and delivery headers a provider would send with a push.
fn render_headers(provider: Provider, event: Option<&str>, delivery: &str) -> Result<HeaderMap> {
    let (event_header, default_event, delivery_header) = match provider {
        Provider::Github => ("x-github-event", "push", "x-github-delivery"),
        Provider::Gitlab => ("x-gitlab-event", "Push Hook", "x-gitlab-event-uuid"),
        Provider::Gitea => ("x-gitea-event", "push", "x-gitea-delivery"),
        Provider::Forgejo => ("x-forgejo-event", "push", "x-forgejo-delivery"),
        Provider::Bitbucket => ("x-event-key", "repo:push", "x-request-uuid"),
    };
    let value = |text: &str| {
        axum::http::HeaderValue::from_str(text)
            .map_err(|_| Error::BadRequest(format!("{text:?} is not a valid header value")))
    };
    let mut headers = HeaderMap::new();
    headers.insert(event_header, value(event.unwrap_or(default_event))?);
    headers.insert(delivery_header, value(delivery)?);
    Ok(headers)
}
