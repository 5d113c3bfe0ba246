//! `tekflux up`: the whole chain without Knative. One process serves the three functions (under
//! `/git-push`, `/run-complete` and `/release-changed`, as `serve` does) and a Broker at
//! `POST /broker` that applies the shipped Triggers as Knative's Broker would (see [`broker`]).
//! Tekton's `config-events` sink, the functions' replies and any other sender point at
//! `/broker`; provider webhooks still go to `/git-push/webhooks/...`.

mod broker;
mod filter;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::post;
use tekflux_common::config::{EX_USAGE, Env};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::server;

use broker::Broker;
use wiring::Wiring;

/// `tekflux up`'s arguments.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// A directory of Knative manifests (one Broker, its Triggers; other kinds are skipped) to
    /// route by, instead of the shipped knative/base ones built into the binary.
    #[arg(long, value_name = "DIR")]
    pub triggers: Option<PathBuf>,
}

/// Runs `up` until SIGTERM or ctrl-c; `listen` is applied to the server settings.
pub fn run(env: Env, args: &UpArgs, listen: impl FnOnce(&mut server::ServerState)) -> ExitCode {
    // The wiring and the config are checked before anything starts: 64 when either is wrong.
    let wiring = match &args.triggers {
        Some(dir) => Wiring::from_dir(dir),
        None => Wiring::shipped(),
    };
    let wiring = match wiring {
        Ok(wiring) => wiring,
        Err(error) => {
            eprintln!("tekflux up: cannot route by these Triggers\n{error}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    let origin = args.triggers.as_ref().map_or_else(
        || wiring::SHIPPED_ORIGIN.to_owned(),
        |dir| dir.display().to_string(),
    );
    let mut startup = match crate::startup(env) {
        Ok(startup) => startup,
        Err(code) => return code,
    };
    listen(&mut startup.server);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tekflux up: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let functions = match crate::all_routes(&startup).await {
            Ok(functions) => functions,
            Err(error) => return crate::rules_refused(&error),
        };
        let broker = Broker::new(wiring.clone(), &startup.server.metrics);
        let auth = SenderAuth::new(
            Receiver::Broker,
            &startup.config.events,
            None,
            &startup.server.metrics,
        );
        auth.log_startup();
        if startup.config.events.token.is_none() && !startup.config.events.insecure {
            startup.server.readiness.limit(
                "broker",
                "neither events.token (TEKFLUX_EVENTS_TOKEN) nor events.insecure is set: POST \
                 /broker answers 401 to every event",
            );
        }
        let ingress = Router::new()
            .route("/broker", post(Broker::ingress))
            .layer(middleware::from_fn_with_state(
                server::KUBERNETES_OBJECT_EVENT_BYTES,
                server::limit_body,
            ))
            .layer(middleware::from_fn_with_state(auth, require_sender))
            .with_state(broker.clone());
        let app = startup.scaffold(functions.merge(ingress));
        broker.attach(app.clone());
        tracing::info!(
            triggers = wiring.triggers.len(),
            from = %origin,
            dead_letters = wiring
                .dead_letter_sink
                .as_ref()
                .map(wiring::Subscriber::path)
                .unwrap_or_default(),
            "Broker at POST /broker"
        );
        print_missing(&startup.server.readiness.limits());
        startup.server.readiness.set_ready();
        let drain = Duration::from_secs(startup.server.settings.shutdown_timeout_seconds);
        let code = startup.serve_scaffolded(app).await;
        broker.drain(drain).await;
        code
    })
}

/// What `up` cannot do with what it was given, in one block a person reads at start.
fn print_missing(limits: &[String]) {
    if limits.is_empty() {
        return;
    }
    eprintln!(
        "tekflux up: health, readiness and dry runs answer (webhooks need their provider's \
         secret); for real work this is missing:"
    );
    for limit in limits {
        eprintln!("  - {limit}");
    }
}
