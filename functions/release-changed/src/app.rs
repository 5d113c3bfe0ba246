//! The HTTP face of release-changed.
//!
//! | route                 | input                                                        |
//! |-----------------------|--------------------------------------------------------------|
//! | `POST /`              | a CloudEvent saying a new version exists: the HelmReleases it concerns are server-side-applied, and `dev.tekflux.release.applied.v1` answers once they are |
//! | `POST /webhooks/registry` | a container registry's push notification (Distribution or Harbor): handled like an image change on `POST /` (see [`crate::registry`]) |
//! | `POST /webhooks/flux` | Flux notification-controller's event about a HelmRelease: answered with a CDEvents service event (deployed, upgraded, rolled back, removed) or `dev.tekflux.release.failed.v1` (see [`crate::flux`]) |

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tekflux_common::cloudevent::{
    AttributesReader, Correlation, EventBuilderV10, IncomingEvent, ReplySink, build_reply,
    no_reply, oci_purl, reply_builder, reply_to,
};
use tekflux_common::config::Config;
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server::DryRunQuery;
use tekflux_common::{Error, Result};

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
pub fn app(state: AppState) -> Router {
    let senders = middleware::from_fn_with_state(state.inner.senders.clone(), require_sender);
    Router::new()
        .route("/", post(receive).layer(senders))
        .route("/webhooks/flux", post(receive_flux))
        .route("/webhooks/registry", post(receive_registry))
        .with_state(state)
}

/// Builds the function's routes the way a `main` does.
pub async fn routes_from_startup(startup: &tekflux_common::startup::Startup) -> Router {
    let kube = match tekflux_common::clients::kube_client(&startup.config.kubernetes).await {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::warn!(%error, "no Kubernetes cluster: matching releases are answered 503");
            None
        }
    };
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
    let dry_run = query.wanted(&headers);
    let event_type = incoming.event.ty().to_owned();
    if !ACCEPTED_TYPES.contains(&event_type.as_str()) {
        return Err(Error::BadRequest(format!(
            "unsupported event type {event_type:?}; release-changed takes {}",
            ACCEPTED_TYPES.join(", ")
        )));
    }
    let data = incoming.data_json("it should name the new artifact or release")?;
    let change = change::from_event(&event_type, &data)?;
    let stamp = Stamp {
        event: format!("{}#{}", incoming.event.source(), incoming.event.id()),
        time: incoming.event.time().map(chrono::DateTime::to_rfc3339),
    };
    let changes = [(change, stamp)];
    let released = release(&state, &changes, dry_run).await?;
    let Released::Applied(outcomes) = released else {
        return Ok(released.into_summary(&changes));
    };
    if dry_run {
        return Ok(dry_run_summary(&changes, &outcomes));
    }
    let source = incoming.event.source().to_string();
    let builder = reply_to(&incoming, RELEASE_APPLIED_TYPE, &source);
    let reply = applied_reply(builder, incoming.correlation.clone(), &changes, &outcomes)?;
    state.inner.replies.deliver(reply).await
}

/// What became of a request's changes.
#[derive(Debug)]
enum Released {
    /// No rule names anything that changed.
    NoRule,
    /// Every matching release already records a newer event.
    AllStale(Vec<Outcome>),
    /// At least one release was applied.
    Applied(Vec<Outcome>),
}

impl Released {
    /// The 200 answer without a reply event, for the cases that applied nothing.
    fn into_summary(self, changes: &[(Change, Stamp)]) -> Response {
        let ignored = describe_all(changes);
        match self {
            Released::NoRule => no_reply(
                StatusCode::OK,
                json!({"ignored": ignored, "reason": "no release rule matches it"}),
            ),
            Released::AllStale(outcomes) | Released::Applied(outcomes) => no_reply(
                StatusCode::OK,
                json!({
                    "ignored": ignored,
                    "reason": "every matching release already has a newer version",
                    "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
                }),
            ),
        }
    }
}

/// What a dry run would have applied; no reply event, since nothing changed.
fn dry_run_summary(changes: &[(Change, Stamp)], outcomes: &[Outcome]) -> Response {
    no_reply(
        StatusCode::OK,
        json!({
            "dryRun": true,
            "change": describe_all(changes),
            "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
        }),
    )
}

/// Applies every release the rules name for `changes`, in order; with `dry_run`, the API
/// server validates each apply (`dryRun=All`) and stores nothing.
async fn release(state: &AppState, changes: &[(Change, Stamp)], dry_run: bool) -> Result<Released> {
    let mut work = Vec::new();
    for (change, stamp) in changes {
        for target in target::targets(&state.inner.config, change)? {
            work.push((target, stamp));
        }
    }
    if work.is_empty() {
        state.inner.releases.inc(&["ignored"]);
        return Ok(Released::NoRule);
    }
    let Some(kube) = &state.inner.kube else {
        return Err(Error::Unavailable(
            "no Kubernetes cluster is configured; the release will be retried".to_owned(),
        ));
    };
    let mut outcomes = Vec::with_capacity(work.len());
    for (target, stamp) in work {
        match apply(kube, &target, stamp, dry_run).await {
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
        Released::AllStale(outcomes)
    } else {
        Released::Applied(outcomes)
    })
}

fn describe_all(changes: &[(Change, Stamp)]) -> String {
    changes
        .iter()
        .map(|(change, _)| describe(change))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the release, checks it can take the edit and is not newer, and applies the edit.
async fn apply(
    kube: &kube::Client,
    target: &Target,
    stamp: &Stamp,
    dry_run: bool,
) -> Result<Outcome> {
    let resource = helm_release::api_resource(target.api);
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &target.namespace, &resource);
    let current = match api.get_opt(&target.name).await? {
        Some(object) => serde_json::to_value(object)
            .map_err(|error| Error::Internal(format!("cannot read the HelmRelease: {error}")))?,
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
    if helm_release::is_stale(&current, stamp) {
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
    changes: &[(Change, Stamp)],
    outcomes: &[Outcome],
) -> Result<cloudevents::Event> {
    let first = outcomes
        .iter()
        .find(|outcome| !outcome.stale)
        .map(|outcome| &outcome.target)
        .ok_or_else(|| Error::Internal("a reply without an applied release".to_owned()))?;
    let first_artifact = changes.first().map(|(change, _)| artifact(change, first));
    let data = json!({
        "change": describe_all(changes),
        "artifact": first_artifact,
        "releases": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
    });
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
    let dry_run = query.wanted(&headers);
    registry::verify(state.inner.config.providers.registry.as_ref(), &headers)?;
    let (source, pushes) = registry::parse(&body)?;
    let changes: Vec<(Change, Stamp)> = pushes.iter().map(|push| push.change(&source)).collect();
    let released = release(&state, &changes, dry_run).await?;
    let Released::Applied(outcomes) = released else {
        return Ok(released.into_summary(&changes));
    };
    if dry_run {
        return Ok(dry_run_summary(&changes, &outcomes));
    }
    let mut parts = vec![source.as_str()];
    parts.extend(pushes.iter().map(|push| push.id.as_str()));
    let builder = reply_builder(RELEASE_APPLIED_TYPE, &source).id(derived_id("registry", &parts));
    let reply = applied_reply(builder, Correlation::default(), &changes, &outcomes)?;
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
    state
        .inner
        .flux_events
        .inc(&[&format!("{outcome:?}").to_lowercase()]);
    let reply = flux::reply(&event, outcome)?;
    state.inner.replies.deliver(reply).await
}
