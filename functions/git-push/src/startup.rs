//! Building git-push's routes the way a `main` does, from the process's [`Startup`].

use axum::Router;
use tekflux_common::config::{Config, FieldPath, Finding, Prepared};
use tekflux_common::startup::Startup;

use crate::app::{AppState, app, webhook_app};
use crate::error::StartupError;
use crate::routing::RoutingTable;
use tekflux_common::commit_status::RetryPolicy;

/// git-push's own config check ([`tekflux_common::config::Check`]): the routing table compiles
/// (globs, captures, templates, names). `check-config` and every `serve` run it while loading,
/// so its problems carry `file:line:column` like the common rules' and a config that passes
/// never fails [`routes_from_startup`]. The table it compiled is kept for the routes, so a
/// config is compiled once per start.
pub fn config_check(config: &Config, prepared: &mut Prepared) -> Vec<Finding> {
    match RoutingTable::compile(config) {
        Ok(table) => {
            prepared.insert(table);
            Vec::new()
        }
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
    // Compiled by `config_check` while the config loaded; a startup without that check
    // compiles here.
    let routing = match startup.prepared::<RoutingTable>() {
        Some(table) => table.clone(),
        None => RoutingTable::compile(&startup.config).map_err(|errors| StartupError {
            origin: startup.config_origin(),
            errors,
        })?,
    };
    Ok(AppState::with_routing(
        startup.config.clone(),
        routing,
        kube,
        startup.reply_sink(),
        &startup.server.metrics,
        RetryPolicy::default(),
    ))
}
