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

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::post;
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::commit_status::{RetryPolicy, StatusReporter};
use tekflux_common::config::Config;
use tekflux_common::metrics::Metrics;
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};

use crate::handlers::{receive_detected_webhook, receive_event, receive_named_webhook};
use crate::metrics::GitPushMetrics;
use crate::plan::Planner;
use crate::routing::RoutingTable;
use crate::rule::RuleError;
use crate::run::RunContext;

pub use crate::cluster::FIELD_MANAGER;
pub use tekflux_common::server::DRY_RUN_HEADER;

/// What git-push needs to answer requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) routing: RoutingTable,
    pub(crate) kube: Option<kube::Client>,
    pub(crate) replies: ReplySink,
    pub(crate) metrics: GitPushMetrics,
    pub(crate) context: RunContext,
    pub(crate) senders: SenderAuth,
    pub(crate) status: StatusReporter,
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
        Ok(Self::with_routing(
            config, routing, kube, replies, metrics, policy,
        ))
    }

    /// As [`AppState::with_status_policy`], with `routing` already compiled from `config`
    /// (by the config check at start).
    pub fn with_routing(
        config: Config,
        routing: RoutingTable,
        kube: Option<kube::Client>,
        replies: ReplySink,
        metrics: &Metrics,
        policy: RetryPolicy,
    ) -> Self {
        let status = StatusReporter::with_policy(&config, metrics, policy);
        let senders = SenderAuth::new(Receiver::GitPush, &config.events, kube.clone(), metrics);
        let context = RunContext::for_config(&config);
        AppState {
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
        }
    }

    /// The compiled routing table.
    pub fn routing(&self) -> &RoutingTable {
        &self.inner.routing
    }

    /// Who may send CloudEvents to `POST /`.
    pub fn senders(&self) -> &SenderAuth {
        &self.inner.senders
    }

    /// Plans deliveries with this state's rules, config and commit-status settings.
    pub fn planner(&self) -> Planner<'_> {
        Planner {
            routing: &self.inner.routing,
            config: &self.inner.config,
            status: &self.inner.status,
            context: &self.inner.context,
        }
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
        .with_state(state)
}
