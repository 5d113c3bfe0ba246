//! The HTTP face of release-changed.
//!
//! | route                 | input                                                        |
//! |-----------------------|--------------------------------------------------------------|
//! | `POST /`              | a CloudEvent saying a new version exists: the HelmReleases it concerns, whose rules admit it (see [`crate::admission`]), are server-side-applied, and `dev.tekflux.release.applied.v1` answers once they are |
//! | `POST /webhooks/registry` | a container registry's push notification (Distribution or Harbor): handled like an image change on `POST /` (see [`crate::registry`]) |
//! | `POST /webhooks/flux` | Flux notification-controller's event about a HelmRelease: answered with a CDEvents service event (deployed, upgraded, rolled back, removed) or `dev.tekflux.release.failed.v1` (see [`crate::flux`]) |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use serde_json::json;
use tekflux_common::clients;
use tekflux_common::cloudevent::{
    AttributesReader, Correlation, IncomingEvent, ReplySink, no_reply, reply_builder, reply_to,
};
use tekflux_common::config::Config;
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server::{self, DryRunQuery};
use tekflux_common::{Error, Result};

use crate::admission::{Origin, RunIdentity};
use crate::answer::{applied_reply, dry_run_summary, refusal_response};
use crate::change::{self, ARTIFACT_PUBLISHED_TYPE, RELEASE_CHANGED_TYPE};
use crate::derived_id;
use crate::flux::{self, FluxEvent};
use crate::helm_release::Stamp;
use crate::registry;
use crate::releasing::{ChangeEvent, Released, release};
use crate::target::RuleImages;
use crate::watched::WatchedReleases;

/// The field manager release-changed's applies are recorded under.
pub const FIELD_MANAGER: &str = "tekflux-release-changed";

/// Type of the reply once the releases are applied.
pub const RELEASE_APPLIED_TYPE: &str = "dev.tekflux.release.applied.v1";

/// Event types release-changed acts on.
pub const ACCEPTED_TYPES: [&str; 2] = [ARTIFACT_PUBLISHED_TYPE, RELEASE_CHANGED_TYPE];

/// What release-changed needs to answer requests. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) kube: Option<kube::Client>,
    pub(crate) replies: ReplySink,
    pub(crate) releases: CounterFamily,
    pub(crate) refused: CounterFamily,
    pub(crate) flux_events: CounterFamily,
    pub(crate) senders: SenderAuth,
    /// The watched copies of the releases the rules name (none unless started).
    pub(crate) watched: WatchedReleases,
    /// The rules' images in normal form.
    pub(crate) rule_images: RuleImages,
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
        Self::build(config, kube, replies, metrics, WatchedReleases::default())
    }

    /// [`AppState::new`], also listing and watching the HelmReleases the rules name, so each
    /// event is decided without reading its release first (see [`crate::watched`]). For a
    /// process that keeps running between requests (a server, not Lambda). Must be called inside
    /// a Tokio runtime; the watches stop when the last clone of the state is dropped.
    ///
    /// The watches go through `kube`, so each is renewed a second before its read timeout
    /// (`kubernetes.timeoutSeconds`); a server watches through a client of its own instead
    /// ([`AppState::watching_releases_through`]).
    pub fn watching_releases(
        config: &Config,
        kube: Option<kube::Client>,
        replies: ReplySink,
        metrics: &Metrics,
    ) -> Self {
        let watcher = request_client_as_watcher(config, kube.as_ref());
        Self::watching_releases_through(config, kube, watcher, replies, metrics)
    }

    /// [`AppState::watching_releases`], watching through `watcher`: a client to the same
    /// cluster and the time its reads may stay quiet, which each watch ends a second before
    /// (`clients::kube_watch_client_from_config` gives one that lasts minutes).
    pub fn watching_releases_through(
        config: &Config,
        kube: Option<kube::Client>,
        watcher: Option<(kube::Client, Duration)>,
        replies: ReplySink,
        metrics: &Metrics,
    ) -> Self {
        let watched = watcher.map_or_else(WatchedReleases::default, |(watcher, read_timeout)| {
            WatchedReleases::start(&watcher, config, read_timeout)
        });
        Self::build(config, kube, replies, metrics, watched)
    }

    /// Whether every watched namespace has been listed (always true when nothing is watched):
    /// from then on, events for its releases are decided without a read.
    pub fn watched_releases_listed(&self) -> bool {
        self.inner.watched.all_listed()
    }

    fn build(
        config: &Config,
        kube: Option<kube::Client>,
        replies: ReplySink,
        metrics: &Metrics,
        watched: WatchedReleases,
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
                watched,
                rule_images: RuleImages::new(config),
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

/// The request client as the watches' client: its read timeout is `kubernetes.timeoutSeconds`.
fn request_client_as_watcher(
    config: &Config,
    kube: Option<&kube::Client>,
) -> Option<(kube::Client, Duration)> {
    let read_timeout = Duration::from_secs(config.kubernetes.timeout_seconds.max(1));
    kube.map(|kube| (kube.clone(), read_timeout))
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
    // A Lambda function is frozen between invocations: a watch would fall behind unseen.
    let on_lambda = startup
        .env
        .get_non_empty(server::LAMBDA_RUNTIME_API)
        .is_some();
    let (config, replies, metrics) = (
        &startup.config,
        startup.reply_sink(),
        &startup.server.metrics,
    );
    let state = if on_lambda {
        AppState::new(config, kube, replies, metrics)
    } else {
        // Watches get a client of their own whose reads may stay quiet for minutes, so each is
        // renewed every few minutes, not every `kubernetes.timeoutSeconds`.
        let watcher = match startup.kube_for_watches().await {
            Some(watcher) => Some((watcher, clients::WATCH_READ_TIMEOUT)),
            None => request_client_as_watcher(config, kube.as_ref()),
        };
        AppState::watching_releases_through(config, kube, watcher, replies, metrics)
    };
    state.inner.senders.log_startup();
    app(state)
}

#[tracing::instrument(name = "release_changed", skip_all)]
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

/// `POST /webhooks/registry`: checks the token, then releases each tagged image pushed.
#[tracing::instrument(name = "release_changed_registry", skip_all)]
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
#[tracing::instrument(name = "release_changed_flux", skip_all)]
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
