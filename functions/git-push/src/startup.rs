//! Building git-push's routes the way a `main` does, from the process's [`Startup`].

use axum::Router;
use tekflux_common::startup::Startup;

use crate::app::{AppState, app, webhook_app};
use crate::error::StartupError;

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
