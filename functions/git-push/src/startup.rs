//! Building git-push's routes the way a `main` does, from the process's [`Startup`].

use axum::Router;
use tekflux_common::config::{Config, FieldPath, Finding};
use tekflux_common::startup::Startup;

use crate::app::{AppState, app, webhook_app};
use crate::error::StartupError;
use crate::routing::RoutingTable;

/// git-push's own config check ([`tekflux_common::config::Check`]): the routing table compiles
/// (globs, captures, templates, names). `check-config` and every `serve` run it while loading,
/// so its problems carry `file:line:column` like the common rules' and a config that passes
/// never fails [`routes_from_startup`].
pub fn config_check(config: &Config) -> Vec<Finding> {
    match RoutingTable::compile(config) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|error| Finding {
                path: FieldPath::parse(&error.field),
                message: error.message,
            })
            .collect(),
    }
}

/// git-push's routes with the Kubernetes client from `KUBECONFIG` or the pod's service account
/// (without one, only dry runs work and deliveries are answered 503) and the routing table.
///
/// Rules that do not compile are returned, each naming its field; the caller prints the error
/// and exits with [`StartupError::exit_code`] like any config error.
pub async fn routes_from_startup(startup: &Startup) -> Result<Router, StartupError> {
    let state = state_from_startup(startup).await?;
    state.senders().log_startup();
    Ok(app(state))
}

/// Like [`routes_from_startup`], with only the webhook routes ([`webhook_app`]).
pub async fn webhook_routes_from_startup(startup: &Startup) -> Result<Router, StartupError> {
    Ok(webhook_app(state_from_startup(startup).await?))
}

async fn state_from_startup(startup: &Startup) -> Result<AppState, StartupError> {
    let kube = startup.kube().await;
    if kube.is_none() {
        startup.server.readiness.limit(
            "git-push",
            "no Kubernetes cluster: dry runs are answered, real deliveries get 503",
        );
    }
    AppState::new(
        startup.config.clone(),
        kube,
        startup.reply_sink(),
        &startup.server.metrics,
    )
    .map_err(|errors| StartupError {
        origin: startup.config_origin(),
        errors,
    })
}
