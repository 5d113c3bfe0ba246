//! `tekflux`: every function in one binary, and the command line.
//!
//! `tekflux serve` runs all three functions in one process (each under its own path prefix), or
//! one of them at the root with `--function`, which is how the Knative Services in `knative/`
//! run it. `tekflux check-config` validates the config file, and `tekflux render` shows offline
//! what a webhook payload would start. `tekflux archive` and `tekflux restore` move a workspace
//! to and from S3 (see `transfer`).

mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use axum::Router;
use clap::{Parser, Subcommand, ValueEnum};
use tekflux_common::config::{self, Env, Sections};
use tekflux_common::startup::Startup;
use tekflux_git_push::Provider;

#[derive(Debug, Parser)]
#[command(
    name = "tekflux",
    version,
    about = "Event-driven CI/CD glue for Tekton, Knative and Flux"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the functions over HTTP (or AWS Lambda when AWS_LAMBDA_RUNTIME_API is set).
    Serve {
        /// Which function to serve; `all` nests each under /<function>/.
        #[arg(long, value_enum, default_value_t = Function::All)]
        function: Function,
        /// Serve only the provider webhook routes, with no CloudEvent route: for the public
        /// Service in front of git-push (requires `--function git-push`).
        #[arg(long)]
        webhooks_only: bool,
    },
    /// Validate the config file (TEKFLUX_CONFIG, default ./tekflux.yaml) and exit: 0 valid, 64 not.
    CheckConfig,
    /// Show offline which runs a webhook payload would create, and why each rule matched or not.
    Render {
        /// The provider that sends the payload.
        #[arg(long, value_enum)]
        provider: ProviderArg,
        /// The payload file (the webhook's JSON body).
        #[arg(long)]
        event: PathBuf,
        /// The provider's event name, when not its push event (e.g. `Tag Push Hook`).
        #[arg(long)]
        event_name: Option<String>,
        /// The delivery id to derive run names from.
        #[arg(long)]
        delivery: Option<String>,
    },
    /// Archive a directory to s3://bucket/key (tar + zstd, streamed), then check what was stored.
    Archive(transfer::ArchiveArgs),
    /// Restore s3://bucket/key into an empty or new directory, refusing hostile archives.
    Restore(transfer::RestoreArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Function {
    All,
    GitPush,
    RunComplete,
    ReleaseChanged,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProviderArg {
    Github,
    Gitlab,
    Gitea,
    Forgejo,
    Bitbucket,
}

impl From<ProviderArg> for Provider {
    fn from(arg: ProviderArg) -> Self {
        match arg {
            ProviderArg::Github => Provider::Github,
            ProviderArg::Gitlab => Provider::Gitlab,
            ProviderArg::Gitea => Provider::Gitea,
            ProviderArg::Forgejo => Provider::Forgejo,
            ProviderArg::Bitbucket => Provider::Bitbucket,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Bad arguments exit 64 (EX_USAGE) like a bad config, not clap's 2; --help and
        // --version are not errors.
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(transfer::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::CheckConfig => check_config(),
        Command::Archive(args) => transfer::archive(args),
        Command::Restore(args) => transfer::restore(args),
        Command::Serve {
            function,
            webhooks_only,
        } => {
            if webhooks_only && function != Function::GitPush {
                eprintln!("tekflux serve: --webhooks-only needs --function git-push");
                return ExitCode::from(transfer::EXIT_USAGE);
            }
            // Config first: an invalid one exits 64 before any runtime starts.
            let startup = Startup::from_process();
            block_on(serve(startup, function, webhooks_only)).unwrap_or_else(|code| code)
        }
        Command::Render {
            provider,
            event,
            event_name,
            delivery,
        } => match render(
            provider.into(),
            &event,
            event_name.as_deref(),
            delivery.as_deref(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("tekflux render: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs `future` on a fresh runtime; `Err` carries the exit code when none can start.
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => Ok(runtime.block_on(future)),
        Err(error) => {
            eprintln!("tekflux: cannot start the async runtime: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn check_config() -> ExitCode {
    let env = Env::from_process();
    let config = config::load_or_exit(&env, Sections::ALL);
    println!(
        "configuration is valid: namespace {}, {} repository rules, {} release rules",
        config.namespace,
        config.repositories.len(),
        config.releases.len()
    );
    ExitCode::SUCCESS
}

async fn serve(startup: Startup, function: Function, webhooks_only: bool) -> ExitCode {
    let routes = match function {
        Function::GitPush if webhooks_only => {
            tekflux_git_push::webhook_routes_from_startup(&startup).await
        }
        Function::GitPush => tekflux_git_push::routes_from_startup(&startup).await,
        Function::RunComplete => tekflux_run_complete::routes_from_startup(&startup).await,
        Function::ReleaseChanged => tekflux_release_changed::routes_from_startup(&startup).await,
        Function::All => {
            let git_push = tekflux_git_push::routes_from_startup(&startup).await;
            Router::new()
                .nest("/git-push", git_push)
                .nest(
                    "/run-complete",
                    tekflux_run_complete::routes_from_startup(&startup).await,
                )
                .nest(
                    "/release-changed",
                    tekflux_release_changed::routes_from_startup(&startup).await,
                )
        }
    };
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}

fn render(
    provider: Provider,
    event: &PathBuf,
    event_name: Option<&str>,
    delivery: Option<&str>,
) -> anyhow::Result<()> {
    let env = Env::from_process();
    // Render checks no signature, so it reads no secret.
    let config = config::load_or_exit(&env, Sections::ROUTING);
    let body = std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let rendered = runtime
        .block_on(tekflux_git_push::render(
            config, provider, event_name, delivery, &body,
        ))
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    println!("{}", serde_json::to_string_pretty(&rendered)?);
    Ok(())
}
