//! What every function's `main` does before it serves: load and validate the config (an error
//! that `main` turns into exit 64, before any runtime work), set up tracing, and serve the
//! function's routes inside the common scaffolding until SIGTERM.

use crate::clients::{self, KubeConnection};
use crate::cloudevent::{ReplySink, SinkError};
use crate::config::{self, Check, Config, ConfigError, EX_USAGE, Env, Prepared, Sections};
use crate::server::{self, ServerState};
use crate::telemetry;
use axum::Router;
use std::process::ExitCode;

/// Knative's SinkBinding variable: when set, reply events are sent there.
pub const K_SINK: &str = "K_SINK";

/// What a per-function binary does with its arguments, before any config is read or server
/// started: it takes none, answers `--help` (with the environment it reads) and `--version`,
/// and refuses anything else with 64. `None`: no arguments, go on and serve.
pub fn function_arguments(binary: &str, about: &str) -> Option<ExitCode> {
    let first = std::env::args().nth(1)?;
    Some(match first.as_str() {
        "-h" | "--help" => {
            println!(
                "{about}\n\nUsage: {binary}\n\nIt takes no arguments: everything comes from the \
                 config file and the environment.\n\n{}",
                crate::environment::help(crate::environment::Reader::Serve)
            );
            ExitCode::SUCCESS
        }
        "-V" | "--version" => {
            println!("{binary} {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "{binary}: unexpected argument {other:?}; it takes none (see {binary} --help)"
            );
            ExitCode::from(EX_USAGE as u8)
        }
    })
}

/// A function's own binary, whole: its arguments ([`function_arguments`]), the startup with the
/// function's own config `checks`, the routes `routes` builds, served until SIGTERM. A problem
/// before serving is printed as the CLI prints it (`report`) and answered with 64; nothing
/// exits but the `main` that returns this code.
pub async fn run_function(
    binary: &str,
    about: &str,
    checks: &[Check],
    routes: impl AsyncFnOnce(&Startup) -> Result<Router, String>,
) -> ExitCode {
    if let Some(code) = function_arguments(binary, about) {
        return code;
    }
    let startup = match Startup::from_process_checked(checks) {
        Ok(startup) => startup,
        Err(error) => {
            eprintln!("{}", error.report());
            return error.exit_code();
        }
    };
    let routes = match routes(&startup).await {
        Ok(routes) => routes,
        Err(report) => {
            eprintln!("{report}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}

/// Why a process cannot start: its config or its `K_SINK` is invalid. `main` prints
/// [`StartupError::report`] and exits with [`StartupError::exit_code`] (64).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config file, its overrides or its secrets.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `K_SINK` is not a URL replies can be sent to.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl StartupError {
    /// A stable label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StartupError::Config(error) => error.kind(),
            StartupError::Sink(_) => "sink",
        }
    }

    /// What `main` prints before it exits: a first line saying the configuration is invalid,
    /// then every problem.
    pub fn report(&self) -> String {
        format!("tekflux: invalid configuration\n{self}")
    }

    /// The exit code: 64 (`EX_USAGE`), as for every configuration error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(EX_USAGE as u8)
    }
}

/// The process environment, the validated config and the scaffolding state of one process.
#[derive(Debug)]
pub struct Startup {
    /// The process environment, read once.
    pub env: Env,
    /// The validated config.
    pub config: Config,
    /// Metrics, readiness and server settings shared with the function.
    pub server: ServerState,
    /// What the function's config checks built (git-push's routing table).
    prepared: Prepared,
    /// Where replies go, from `K_SINK` (checked before anything starts).
    replies: ReplySink,
    /// The Kubernetes connection, made once for every function the process serves.
    kube: tokio::sync::OnceCell<Option<KubeConnection>>,
}

impl Startup {
    /// Reads the environment and the config, and installs the tracing subscriber; an invalid
    /// config or `K_SINK` is an error for `main` to report (exit 64).
    pub fn from_process() -> Result<Self, StartupError> {
        Self::from_env(Env::from_process())
    }

    /// [`Startup::from_process`] with the served function's own config `checks` (git-push's
    /// rule compilation), located in the file like the common rules' problems.
    pub fn from_process_checked(checks: &[Check]) -> Result<Self, StartupError> {
        Self::from_env_checked(Env::from_process(), checks)
    }

    /// [`Startup::from_process`] with a given environment (the CLI's `--config` sets
    /// `TEKFLUX_CONFIG` in it).
    pub fn from_env(env: Env) -> Result<Self, StartupError> {
        Self::from_env_checked(env, &[])
    }

    /// [`Startup::from_env`], with the served functions' own config `checks` (git-push's rule
    /// compilation), so `serve` refuses exactly what `check-config` refuses, at the same
    /// positions.
    pub fn from_env_checked(env: Env, checks: &[Check]) -> Result<Self, StartupError> {
        // Serving uses every section: all of it is resolved and checked before anything starts.
        let (config, prepared) = config::load_prepared(&env, Sections::ALL, checks)?;
        let replies = ReplySink::new(env.get_non_empty(K_SINK).map(str::to_owned))?;
        telemetry::init(
            env.get(telemetry::RUST_LOG),
            env.get(telemetry::LOG_FORMAT),
            telemetry::colour_wanted(env.get(telemetry::NO_COLOR)),
        );
        let server = ServerState::new(config.server.clone());
        let startup = Startup {
            env,
            config,
            server,
            prepared,
            replies,
            kube: tokio::sync::OnceCell::new(),
        };
        tracing::info!(config = %startup.config_origin(), "configuration loaded");
        Ok(startup)
    }

    /// The Kubernetes client, built once per process (see [`clients::kube_connection`]), with
    /// one log line saying which configuration and API server it uses, or why there is none.
    /// `None` without a usable configuration: each function then says what it cannot do.
    pub async fn kube(&self) -> Option<kube::Client> {
        self.kube
            .get_or_init(|| async {
                match clients::kube_connection(&self.config.kubernetes).await {
                    Ok(connection) => {
                        tracing::info!(
                            server = %connection.server,
                            from = %connection.origin,
                            "Kubernetes API server"
                        );
                        Some(connection)
                    }
                    Err(error) => {
                        tracing::warn!(
                            reason = %crate::error::plain_chain(&error),
                            "no Kubernetes cluster"
                        );
                        None
                    }
                }
            })
            .await
            .as_ref()
            .map(|connection| connection.client.clone())
    }

    /// A client to the same cluster for watches ([`clients::kube_watch_client_from_config`]):
    /// its reads may stay quiet for [`clients::WATCH_READ_TIMEOUT`]. `None` where
    /// [`Startup::kube`] is, or when the second client cannot be built (logged).
    pub async fn kube_for_watches(&self) -> Option<kube::Client> {
        self.kube().await?;
        let connection = self.kube.get()?.as_ref()?;
        clients::kube_watch_client_from_config(connection.config.clone(), &self.config.kubernetes)
            .inspect_err(|error| {
                tracing::warn!(
                    reason = %crate::error::plain_chain(error),
                    "no client for watches; watching through the request client"
                );
            })
            .ok()
    }

    /// What a config check kept of type `T` ([`Prepared`]), for the function to start with.
    pub fn prepared<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.prepared.get()
    }

    /// Where the config came from, for messages about it (`TEKFLUX_CONFIG`, or the default).
    pub fn config_origin(&self) -> String {
        config::ConfigSource::from_env(&self.env).origin()
    }

    /// Where replies go (`K_SINK`, or the HTTP response).
    pub fn reply_sink(&self) -> ReplySink {
        self.replies.clone()
    }

    /// Serves `routes` inside the common scaffolding (health, readiness, metrics, limits) until
    /// SIGTERM or ctrl-c, or through AWS Lambda when its Runtime API is set.
    pub async fn serve(self, routes: Router) -> ExitCode {
        let router = self.scaffold(routes);
        self.serve_scaffolded(router).await
    }

    /// `routes` inside the common scaffolding, as [`Startup::serve`] serves them: for a caller
    /// that also needs the whole router (`tekflux up` delivers events through it in-process).
    pub fn scaffold(&self, routes: Router) -> Router {
        server::router(routes, self.server.clone())
    }

    /// Serves a router made by [`Startup::scaffold`] until SIGTERM or ctrl-c (or through Lambda).
    pub async fn serve_scaffolded(self, router: Router) -> ExitCode {
        let settings = self.server.settings.clone();
        let env = self.env;
        match server::run(router, &settings, |name| env.get(name).map(str::to_owned)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "server stopped");
                ExitCode::FAILURE
            }
        }
    }
}
