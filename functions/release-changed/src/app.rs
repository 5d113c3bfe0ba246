//! The HTTP face of release-changed.
//!
//! | route                 | input                                                        |
//! |-----------------------|--------------------------------------------------------------|
//! | `POST /`              | a CloudEvent saying a new version exists: the HelmReleases it concerns, whose rules admit it (see [`crate::admission`]), are server-side-applied, and `dev.tekflux.release.applied.v1` answers once they are |
//! | `POST /webhooks/registry` | a container registry's push notification (Distribution or Harbor): handled like an image change on `POST /` (see [`crate::registry`]) |
//! | `POST /webhooks/flux` | Flux notification-controller's event about a HelmRelease: answered with a CDEvents service event (deployed, upgraded, rolled back, removed) or `dev.tekflux.release.failed.v1` (see [`crate::flux`]) |

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tekflux_common::cloudevent::{
    AttributesReader, Correlation, EventBuilderV10, IncomingEvent, ReplySink, build_reply,
    no_reply, oci_purl, reply_builder, reply_to,
};
use tekflux_common::config::Config;
use tekflux_common::error::{ErrorKind, ResponseError};
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::run_contract::{TEKTON_GROUP, TEKTON_VERSION};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server::{self, DryRunQuery};
use tekflux_common::{Error, Result};

use crate::admission::{self, Checked, Origin, Refusal, RunIdentity};
use crate::change::{self, ARTIFACT_PUBLISHED_TYPE, Change, RELEASE_CHANGED_TYPE};
use crate::derived_id;
use crate::flux::{self, FluxEvent};
use crate::helm_release::{self, Stamp};
use crate::registry;
use crate::target::{self, Target};

/// The field manager release-changed's applies are recorded under.
pub const FIELD_MANAGER: &str = "tekflux-release-changed";

/// Type of the reply once the releases are applied.
pub const RELEASE_APPLIED_TYPE: &str = "dev.tekflux.release.applied.v1";

/// Event types release-changed acts on.
pub const ACCEPTED_TYPES: [&str; 2] = [ARTIFACT_PUBLISHED_TYPE, RELEASE_CHANGED_TYPE];

/// What release-changed needs to answer requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    kube: Option<kube::Client>,
    replies: ReplySink,
    releases: CounterFamily,
    refused: CounterFamily,
    flux_events: CounterFamily,
    senders: SenderAuth,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("releases", &self.inner.config.releases.len())
            .field("kube", &self.inner.kube.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// release-changed's state. Without a Kubernetes client, events that match a release are
    /// answered 503 (retried, then dead-lettered: not lost).
    pub fn new(
        config: &Config,
        kube: Option<kube::Client>,
        replies: ReplySink,
        metrics: &Metrics,
    ) -> Self {
        let senders = SenderAuth::new(
            Receiver::ReleaseChanged,
            &config.events,
            kube.clone(),
            metrics,
        );
        Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                kube,
                replies,
                senders,
                releases: metrics.counter_family(
                    "tekflux_release_changed_releases",
                    "HelmReleases handled, by result",
                    &["result"],
                ),
                refused: metrics.counter_family(
                    "tekflux_release_changed_refused",
                    "Releases (or whole inputs) refused because the event may not release \
                     them, by reason",
                    &["reason"],
                ),
                flux_events: metrics.counter_family(
                    "tekflux_release_changed_flux_events",
                    "Flux notification events received, by outcome",
                    &["outcome"],
                ),
            }),
        }
    }
}

/// The function's routes: `POST /` takes artifact and release CloudEvents from authenticated
/// senders ([`tekflux_common::sender`]), `POST /webhooks/registry` registries' push
/// notifications (their token), `POST /webhooks/flux` Flux's notification events (its HMAC).
/// Each takes at most [`server::NOTIFICATION_BYTES`].
pub fn app(state: AppState) -> Router {
    let senders = middleware::from_fn_with_state(state.inner.senders.clone(), require_sender);
    let limit = middleware::from_fn_with_state(server::NOTIFICATION_BYTES, server::limit_body);
    Router::new()
        .route("/", post(receive).layer(senders).layer(limit.clone()))
        .route("/webhooks/flux", post(receive_flux).layer(limit.clone()))
        .route("/webhooks/registry", post(receive_registry).layer(limit))
        .with_state(state)
}

/// Builds the function's routes the way a `main` does.
pub async fn routes_from_startup(startup: &tekflux_common::startup::Startup) -> Router {
    let kube = startup.kube().await;
    if kube.is_none() {
        startup.server.readiness.limit(
            "release-changed",
            "no Kubernetes cluster: matching releases are answered 503",
        );
    }
    let state = AppState::new(
        &startup.config,
        kube,
        startup.reply_sink(),
        &startup.server.metrics,
    );
    state.inner.senders.log_startup();
    app(state)
}

/// What happened to one release.
#[derive(Debug)]
struct Outcome {
    target: Target,
    /// The value the release held before, where tekflux writes.
    previous: Option<String>,
    /// Not applied: an event newer than this one already was.
    stale: bool,
}

async fn receive(
    State(state): State<AppState>,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    incoming: IncomingEvent,
) -> Result<Response> {
    let dry_run = query.wanted(&headers)?;
    let event_type = incoming.event.ty().to_owned();
    if !ACCEPTED_TYPES.contains(&event_type.as_str()) {
        return Err(Error::BadRequest(format!(
            "unsupported event type {event_type:?}; release-changed takes {}",
            ACCEPTED_TYPES.join(", ")
        )));
    }
    let data = incoming.data_json("it should name the new artifact or release")?;
    let change = change::from_event(&event_type, &data)?;
    let origin = match event_type.as_str() {
        ARTIFACT_PUBLISHED_TYPE => {
            RunIdentity::from_event_data(&data).map_or(Origin::Unverified, Origin::Run)
        }
        _ => Origin::Unverified,
    };
    let stamp = Stamp {
        event: format!("{}#{}", incoming.event.source(), incoming.event.id()),
        time: incoming.event.time().map(chrono::DateTime::to_rfc3339),
        run: match &origin {
            Origin::Run(identity) => Some(format!("{}/{}", identity.namespace, identity.name)),
            Origin::Unverified | Origin::Registry => None,
        },
        sha: incoming.correlation.sha.clone(),
    };
    let changes = [ChangeEvent {
        change,
        stamp,
        origin,
    }];
    let (outcomes, refused) = match release(&state, &changes, dry_run).await? {
        // Refused on POST /: a status Knative does not retry, naming why.
        Released::Refused(refused) => return Ok(refusal_response(&refused)),
        Released::Applied { outcomes, refused } => (outcomes, refused),
        released => return Ok(released.into_summary(&changes)),
    };
    if dry_run {
        return Ok(dry_run_summary(&changes, &outcomes, &refused));
    }
    let source = incoming.event.source().to_string();
    let builder = reply_to(&incoming, RELEASE_APPLIED_TYPE, &source);
    let reply = applied_reply(
        builder,
        incoming.correlation.clone(),
        &changes,
        &outcomes,
        &refused,
    )?;
    state.inner.replies.deliver(reply).await
}

/// One change to release, with what the input said about it.
#[derive(Debug)]
struct ChangeEvent {
    change: Change,
    stamp: Stamp,
    origin: Origin,
}

/// A release, or a whole input (`release: None`), that may not be released.
#[derive(Debug)]
struct Refused {
    release: Option<String>,
    refusal: Refusal,
}

impl Refused {
    fn json(&self) -> Value {
        json!({
            "release": self.release,
            "reason": self.refusal.kind(),
            "message": self.refusal.to_string(),
        })
    }
}

fn refused_json(refused: &[Refused]) -> Vec<Value> {
    refused.iter().map(Refused::json).collect()
}

/// The answer to a `POST /` input of which nothing may be released: the first refusal's status
/// (403 or 422) and the JSON error body, with every refusal listed.
fn refusal_response(refused: &[Refused]) -> Response {
    let Some(first) = refused.first() else {
        return Error::Internal("a refusal without a reason".to_owned()).into_response();
    };
    let status = first.refusal.status();
    let message = first.refusal.to_string();
    let error = if status == StatusCode::FORBIDDEN {
        Error::Forbidden(message)
    } else {
        Error::Unprocessable(message)
    };
    let body = json!({
        "error": error.kind(),
        "reason": first.refusal.kind(),
        "message": error.to_string(),
        "refused": refused_json(refused),
    });
    let mut response = (status, axum::Json(body)).into_response();
    // The middleware logs the refusal from these, as it does for any `Error`.
    response.extensions_mut().insert(ErrorKind(error.kind()));
    response
        .extensions_mut()
        .insert(ResponseError(std::sync::Arc::new(error)));
    response
}

/// What became of a request's changes.
#[derive(Debug)]
enum Released {
    /// No rule names anything that changed.
    NoRule,
    /// Rules name what changed, but none may be released by this input.
    Refused(Vec<Refused>),
    /// Every admitted release already records a newer event.
    AllStale {
        outcomes: Vec<Outcome>,
        refused: Vec<Refused>,
    },
    /// At least one release was applied; others may have been refused.
    Applied {
        outcomes: Vec<Outcome>,
        refused: Vec<Refused>,
    },
}

impl Released {
    /// The 200 answer without a reply event, for the cases that applied nothing (on
    /// `/webhooks/registry`, refusals too: registries retry anything but a 2xx).
    fn into_summary(self, changes: &[ChangeEvent]) -> Response {
        let ignored = describe_all(changes);
        match self {
            Released::NoRule => no_reply(
                StatusCode::OK,
                json!({"ignored": ignored, "reason": "no release rule matches it"}),
            ),
            Released::Refused(refused) => no_reply(
                StatusCode::OK,
                json!({
                    "ignored": ignored,
                    "reason": "no matching release may be released by it",
                    "refused": refused_json(&refused),
                }),
            ),
            Released::AllStale { outcomes, refused } | Released::Applied { outcomes, refused } => {
                no_reply(
                    StatusCode::OK,
                    json!({
                        "ignored": ignored,
                        "reason": "every matching release already has a newer version",
                        "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
                        "refused": refused_json(&refused),
                    }),
                )
            }
        }
    }
}

/// What a dry run would have applied; no reply event, since nothing changed.
fn dry_run_summary(changes: &[ChangeEvent], outcomes: &[Outcome], refused: &[Refused]) -> Response {
    no_reply(
        StatusCode::OK,
        json!({
            "dryRun": true,
            "change": describe_all(changes),
            "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
            "refused": refused_json(refused),
        }),
    )
}

/// Applies every release the rules name for `changes` and admit (see [`crate::admission`]),
/// in order; with `dry_run`, the API server validates each apply (`dryRun=All`) and stores
/// nothing. Refusals are counted and logged here.
async fn release(state: &AppState, changes: &[ChangeEvent], dry_run: bool) -> Result<Released> {
    let config = &state.inner.config;
    let now = Utc::now();
    let mut work = Vec::new();
    let mut refused = Vec::new();
    for event in changes {
        if let Err(refusal) = admission::check_time(event.stamp.time.as_deref(), now) {
            refused.push(Refused {
                release: None,
                refusal,
            });
            continue;
        }
        let targets = target::targets(config, &event.change)?;
        if let Change::Release {
            chart_version,
            values,
            ..
        } = &event.change
        {
            // Explicit edits are bounded by what their release declares, not by `from`.
            for target in targets {
                let reference = target.reference();
                match admission::check_explicit_edit(
                    config,
                    &reference,
                    chart_version.as_deref(),
                    values.as_ref(),
                ) {
                    Ok(()) => work.push((target, &event.stamp)),
                    Err(refusal) => refused.push(Refused {
                        release: Some(reference),
                        refusal,
                    }),
                }
            }
            continue;
        }
        let checked = check_origin(state, event, &targets).await?;
        for target in targets {
            let reference = target.reference();
            let Some(rule) = config.releases.get(target.rule) else {
                return Err(Error::Internal(format!("no release rule {}", target.rule)));
            };
            match admission::admits(config, rule, &reference, &checked) {
                Ok(()) => work.push((target, &event.stamp)),
                Err(refusal) => refused.push(Refused {
                    release: Some(reference),
                    refusal,
                }),
            }
        }
    }
    for refusal in &refused {
        state.inner.refused.inc(&[refusal.refusal.kind()]);
        tracing::warn!(
            reason = refusal.refusal.kind(),
            release = refusal.release.as_deref().unwrap_or(""),
            "refused: {}",
            refusal.refusal
        );
    }
    if work.is_empty() {
        if !refused.is_empty() {
            return Ok(Released::Refused(refused));
        }
        state.inner.releases.inc(&["ignored"]);
        return Ok(Released::NoRule);
    }
    let kube = state.kube()?;
    let mut outcomes = Vec::with_capacity(work.len());
    for (target, stamp) in work {
        match apply(kube, &target, stamp, dry_run, now).await {
            Ok(outcome) => {
                let result = match (outcome.stale, dry_run) {
                    (true, _) => "stale",
                    (false, true) => "dry_run",
                    (false, false) => "applied",
                };
                state.inner.releases.inc(&[result]);
                outcomes.push(outcome);
            }
            Err(error) => {
                // Releases applied before this one stay applied; the retry re-applies them,
                // which server-side apply makes a no-op.
                state.inner.releases.inc(&["failed"]);
                return Err(error);
            }
        }
    }
    Ok(if outcomes.iter().all(|outcome| outcome.stale) {
        Released::AllStale { outcomes, refused }
    } else {
        Released::Applied { outcomes, refused }
    })
}

impl AppState {
    /// The Kubernetes client, or 503 (retried, then dead-lettered) without one.
    fn kube(&self) -> Result<&kube::Client> {
        self.inner.kube.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "no Kubernetes cluster is configured; the release will be retried".to_owned(),
            )
        })
    }
}

/// What is known about where `event`'s change came from, as far as the rules of `targets`
/// need it: the run it names is read from the API server only when a rule's `from` is not
/// `any`, and only in a namespace where such a rule's runs are created.
async fn check_origin(
    state: &AppState,
    event: &ChangeEvent,
    targets: &[Target],
) -> Result<Checked> {
    let config = &state.inner.config;
    let guarded: Vec<_> = targets
        .iter()
        .filter_map(|target| config.releases.get(target.rule))
        .filter(|rule| !rule.from_any())
        .collect();
    let identity = match &event.origin {
        Origin::Unverified => return Ok(Checked::Unverified),
        Origin::Registry => return Ok(Checked::Registry),
        Origin::Run(identity) => identity,
    };
    let Change::Image(image) = &event.change else {
        return Ok(Checked::Unverified);
    };
    if guarded.is_empty() {
        return Ok(Checked::Unverified);
    }
    if !admission::run_namespaces(config, guarded).contains(&identity.namespace.as_str()) {
        return Ok(Checked::Failed(Refusal::NamespaceNotAllowed {
            run: identity.describe(),
            namespace: identity.namespace.clone(),
        }));
    }
    let Some(run) = read_run(state.kube()?, identity).await? else {
        return Ok(Checked::Failed(Refusal::RunNotFound {
            run: identity.describe(),
        }));
    };
    Ok(match admission::verify_run(&run, identity, image) {
        Ok(facts) => Checked::Run(facts),
        Err(refusal) => Checked::Failed(refusal),
    })
}

/// The API server's copy of the run `identity` names; `None` when there is none. Failures are
/// 503 or 429, as for every other call.
async fn read_run(kube: &kube::Client, identity: &RunIdentity) -> Result<Option<Value>> {
    let gvk = GroupVersionKind::gvk(TEKTON_GROUP, TEKTON_VERSION, identity.kind.as_str());
    let resource = ApiResource::from_gvk_with_plural(&gvk, identity.kind.plural());
    let api: Api<DynamicObject> =
        Api::namespaced_with(kube.clone(), &identity.namespace, &resource);
    let Some(run) = api.get_opt(&identity.name).await? else {
        return Ok(None);
    };
    serde_json::to_value(run)
        .map(Some)
        .map_err(|error| Error::internal("cannot read the run", error))
}

fn describe_all(changes: &[ChangeEvent]) -> String {
    changes
        .iter()
        .map(|event| describe(&event.change))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the release, checks it can take the edit and is not newer, and applies the edit.
async fn apply(
    kube: &kube::Client,
    target: &Target,
    stamp: &Stamp,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let resource = helm_release::api_resource(target.api);
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &target.namespace, &resource);
    let current = match api.get_opt(&target.name).await? {
        Some(object) => serde_json::to_value(object)
            .map_err(|error| Error::internal("cannot read the HelmRelease", error))?,
        // Applying would create a HelmRelease with nothing but our fields. Flux (or a person)
        // creates it; until then the event is retried and finally dead-lettered.
        None => {
            return Err(Error::Unavailable(format!(
                "HelmRelease {} ({}) does not exist; it is retried until it does",
                target.reference(),
                resource.api_version
            )));
        }
    };
    helm_release::check_editable(target, &current)?;
    let previous = helm_release::current_version(target, &current);
    if helm_release::is_stale(&current, stamp, now) {
        tracing::info!(release = %target.reference(), "skipped: a newer event was applied");
        return Ok(Outcome {
            target: target.clone(),
            previous,
            stale: true,
        });
    }
    let patch = helm_release::apply_patch(target, stamp);
    // Forced: the release-changed owns exactly the fields it sets; another manager holding
    // `image.tag` (a `kubectl apply` of the same value, say) must not block every release.
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    api.patch(&target.name, &params, &Patch::Apply(&patch))
        .await?;
    tracing::info!(
        release = %target.reference(),
        version = %target.version,
        previous = previous.as_deref().unwrap_or(""),
        dry_run,
        "applied"
    );
    Ok(Outcome {
        target: target.clone(),
        previous,
        stale: false,
    })
}

fn describe(change: &Change) -> String {
    match change {
        Change::Image(image) => format!("image {}", image.reference()),
        Change::Chart { name, version } => format!("chart {name} {version}"),
        Change::Release { release, .. } => format!("release {release}"),
    }
}

fn outcome_json(outcome: &Outcome) -> Value {
    let target = &outcome.target;
    json!({
        "namespace": target.namespace,
        "name": target.name,
        "apiVersion": helm_release::api_resource(target.api).api_version,
        "version": target.version,
        "previous": outcome.previous,
        "applied": !outcome.stale,
    })
}

/// The artifact a change is about, as a package URL: the image's, or the chart's.
fn artifact(change: &Change, first: &Target) -> String {
    match change {
        Change::Image(image) => {
            let version = image
                .digest
                .as_deref()
                .or(image.tag.as_deref())
                .unwrap_or_default();
            oci_purl(&image.repository, version, image.tag.as_deref())
        }
        Change::Chart { name, version } => format!("pkg:helm/{name}@{version}"),
        Change::Release { .. } => format!("pkg:helm/{}@{}", first.name, first.version),
    }
}

/// `dev.tekflux.release.applied.v1`: the desired state changed; whether the release then
/// upgraded is Flux's to tell (see [`crate::flux`]). `subject` is the first applied release,
/// `data.releases` lists every release the request touched.
fn applied_reply(
    builder: EventBuilderV10,
    correlation: Correlation,
    changes: &[ChangeEvent],
    outcomes: &[Outcome],
    refused: &[Refused],
) -> Result<cloudevents::Event> {
    let first = outcomes
        .iter()
        .find(|outcome| !outcome.stale)
        .map(|outcome| &outcome.target)
        .ok_or_else(|| Error::Internal("a reply without an applied release".to_owned()))?;
    let first_artifact = changes.first().map(|event| artifact(&event.change, first));
    let mut data = json!({
        "change": describe_all(changes),
        "artifact": first_artifact,
        "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
    });
    if !refused.is_empty() {
        data["refused"] = json!(refused_json(refused));
    }
    let builder = builder
        .subject(first.reference())
        .data("application/json", data);
    let mut reply = build_reply(builder)?;
    correlation
        .with_namespace(first.namespace.clone())
        .stamp(&mut reply);
    Ok(reply)
}

/// `POST /webhooks/registry`: checks the token, then releases each tagged image pushed.
async fn receive_registry(
    State(state): State<AppState>,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let dry_run = query.wanted(&headers)?;
    registry::verify(state.inner.config.providers.registry.as_ref(), &headers)?;
    let (source, pushes) = registry::parse(&body)?;
    let changes: Vec<ChangeEvent> = pushes
        .iter()
        .map(|push| {
            let (change, stamp) = push.change(&source);
            ChangeEvent {
                change,
                stamp,
                origin: Origin::Registry,
            }
        })
        .collect();
    // Refusals are answered 200 here, with the reasons: a registry retries anything else,
    // some of them forever.
    let (outcomes, refused) = match release(&state, &changes, dry_run).await? {
        Released::Applied { outcomes, refused } => (outcomes, refused),
        released => return Ok(released.into_summary(&changes)),
    };
    if dry_run {
        return Ok(dry_run_summary(&changes, &outcomes, &refused));
    }
    let mut parts = vec![source.as_str()];
    parts.extend(pushes.iter().map(|push| push.id.as_str()));
    let builder = reply_builder(RELEASE_APPLIED_TYPE, &source).id(derived_id("registry", &parts));
    let reply = applied_reply(
        builder,
        Correlation::default(),
        &changes,
        &outcomes,
        &refused,
    )?;
    state.inner.replies.deliver(reply).await
}

/// `POST /webhooks/flux`: checks Flux's signature and turns its event into a CloudEvent.
async fn receive_flux(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    flux::verify(state.inner.config.providers.flux.as_ref(), &headers, &body)?;
    let event = FluxEvent::parse(&body)?;
    let Some(outcome) = event.outcome() else {
        state.inner.flux_events.inc(&["ignored"]);
        return Ok(no_reply(
            StatusCode::OK,
            json!({
                "ignored": format!("{} {}", event.involved_object.kind, event.release()),
                "reason": "only a HelmRelease's install, upgrade, rollback, uninstall or failure \
                           becomes an event",
            }),
        ));
    };
    state.inner.flux_events.inc(&[outcome.kind()]);
    let reply = flux::reply(&event, outcome)?;
    state.inner.replies.deliver(reply).await
}
