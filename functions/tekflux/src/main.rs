//! `tekflux`: every function in one binary, and the command line.
//!
//! `tekflux serve` runs all three functions in one process (each under its own path prefix), or
//! one of them at the root with `--function`, which is how the Knative Services in `knative/`
//! run it. `tekflux check-config` validates the config file, and `tekflux render` shows offline
//! what a webhook payload would start. `tekflux archive` and `tekflux restore` move a workspace
//! to and from S3 (see `transfer`). `tekflux send` sends one CloudEvent (see `send`), and
//! `tekflux trace` follows a push through its runs, archives and releases (see `trace`).

mod dead_letters;
mod send;
mod sender;
mod trace;
mod transfer;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use axum::Router;
use clap::{Parser, Subcommand, ValueEnum};
use tekflux_common::config::{self, Config, Env, Sections, vars};
use tekflux_common::environment::{self, Reader};
use tekflux_common::startup::Startup;
use tekflux_git_push::Provider;

#[derive(Debug, Parser)]
#[command(
    name = "tekflux",
    version,
    about = "Event-driven CI/CD glue for Tekton, Knative and Flux"
)]
struct Cli {
    /// The config file, for every command (overrides TEKFLUX_CONFIG; default ./tekflux.yaml if
    /// present, else the built-in defaults).
    #[arg(short = 'f', long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the functions over HTTP (or AWS Lambda when AWS_LAMBDA_RUNTIME_API is set).
    #[command(after_help = environment::help(Reader::Serve))]
    Serve {
        /// Which function to serve; `all` nests each under /<function>/.
        #[arg(long, value_enum, default_value_t = Function::All)]
        function: Function,
        /// Serve only the provider webhook routes, with no CloudEvent route: for the public
        /// Service in front of git-push (requires `--function git-push`).
        #[arg(long)]
        webhooks_only: bool,
        /// Where to listen: `ADDRESS:PORT`, `ADDRESS` or `:PORT` (e.g. `127.0.0.1:8080` to keep
        /// it to this machine). Default: `server.address` and `PORT`/`server.port`, 0.0.0.0:8080.
        #[arg(long, value_name = "ADDRESS", value_parser = parse_listen)]
        listen: Option<Listen>,
    },
    /// The whole chain without Knative: the three functions and a Broker at POST /broker that
    /// routes by the shipped Triggers (retries, dead letters, replies onward).
    #[command(after_help = environment::help(Reader::Serve))]
    Up {
        #[command(flatten)]
        args: up::UpArgs,
        /// Where to listen: `ADDRESS:PORT`, `ADDRESS` or `:PORT`, as for `serve`.
        #[arg(long, value_name = "ADDRESS", value_parser = parse_listen)]
        listen: Option<Listen>,
    },
    /// Validate the config file (--config, TEKFLUX_CONFIG, default ./tekflux.yaml) and exit: 0
    /// valid, 64 not.
    #[command(after_help = environment::help(Reader::Config))]
    CheckConfig,
    /// Show offline which runs a webhook payload would create, and why each rule matched or not.
    #[command(after_help = environment::help(Reader::Config))]
    Render {
        /// The provider that sends the payload.
        #[arg(long, value_parser = provider_arg())]
        provider: Provider,
        /// The payload file (the webhook's JSON body); `-` reads it from standard input.
        #[arg(long)]
        event: PathBuf,
        /// The provider's event name, when not its push event (e.g. `Tag Push Hook`).
        #[arg(long)]
        event_name: Option<String>,
        /// The delivery id to derive run names from.
        #[arg(long)]
        delivery: Option<String>,
        /// `summary`: the runs and why each rule matched or not; `json` (a v1 List) or `yaml`
        /// (one document per run): only the runs, to pipe into `kubectl create -f -`.
        #[arg(short, long, value_enum, default_value_t = RenderOutput::Summary)]
        output: RenderOutput,
    },
    /// Archive a directory to s3://bucket/key (tar + zstd, streamed), then check what was stored.
    #[command(after_help = environment::help(Reader::Transfer))]
    Archive(transfer::ArchiveArgs),
    /// Restore s3://bucket/key into an empty or new directory, refusing hostile archives.
    #[command(after_help = environment::help(Reader::Transfer))]
    Restore(transfer::RestoreArgs),
    /// List the events the Broker could not deliver, kept in the bucket by run-complete.
    #[command(after_help = environment::help(Reader::Transfer))]
    DeadLetters(dead_letters::ListArgs),
    /// Send dead letters again (same id and source, so nothing is done twice) and remove each
    /// once it was accepted.
    #[command(after_help = environment::help(Reader::Transfer))]
    Replay(dead_letters::ReplayArgs),
    /// Send one CloudEvent (binary mode) to the Broker or a function, retrying 408/429/5xx
    /// and unreachable receivers: exit 0 accepted, 64 usage, 65 refused data, 66 no data
    /// file, 69 unavailable after the retries, 77 credentials refused (401/403).
    #[command(after_help = environment::help(Reader::Send))]
    Send(send::SendArgs),
    /// What happened to a push: the runs it started, their outcome, archives and logs (also
    /// of runs Tekton pruned) and the releases applied from them.
    #[command(after_help = environment::help(Reader::Trace))]
    Trace(trace::TraceArgs),
    /// Print a shell completion script: `source <(tekflux completion bash)`, or save it where
    /// your shell loads completions from.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `serve --listen`: an address, a port, or both.
#[derive(Debug, Clone, Copy)]
struct Listen {
    address: Option<std::net::IpAddr>,
    port: Option<u16>,
}

fn parse_listen(text: &str) -> Result<Listen, String> {
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Ok(Listen {
            address: Some(socket.ip()),
            port: Some(socket.port()),
        });
    }
    if let Ok(address) = text.trim_matches(['[', ']']).parse() {
        return Ok(Listen {
            address: Some(address),
            port: None,
        });
    }
    if let Some(port) = text.strip_prefix(':')
        && let Ok(port) = port.parse()
    {
        return Ok(Listen {
            address: None,
            port: Some(port),
        });
    }
    Err(format!(
        "{text:?} is not an address to listen on: use ADDRESS:PORT (127.0.0.1:8080, \
         [::1]:8080), ADDRESS, or :PORT"
    ))
}

/// What `render` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RenderOutput {
    Summary,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Function {
    All,
    GitPush,
    RunComplete,
    ReleaseChanged,
}

/// `--provider`: one of the provider table's git providers, by its key.
fn provider_arg() -> impl clap::builder::TypedValueParser<Value = Provider> {
    let keys: Vec<&'static str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
    clap::builder::TypedValueParser::try_map(
        clap::builder::PossibleValuesParser::new(keys),
        |key: String| {
            Provider::from_path_segment(&key)
                .ok_or_else(|| format!("{key:?} is not a git provider"))
        },
    )
}

/// Loads the config for a command, or prints why not and gives the exit code (64): library
/// code returns the error, only this binary exits.
fn load_config(env: &Env, sections: Sections) -> Result<Config, ExitCode> {
    config::load(env, sections, &[]).map_err(|error| {
        eprintln!("{}", error.report());
        ExitCode::from(config::EX_USAGE as u8)
    })
}

/// The served process's startup with every function's own config checks, or the exit code.
fn startup(env: Env) -> Result<Startup, ExitCode> {
    Startup::from_env_checked(env, &[tekflux_git_push::startup::config_check]).map_err(|error| {
        eprintln!("{}", error.report());
        error.exit_code()
    })
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
    // One environment for every command: `--config` is TEKFLUX_CONFIG by another name, so each
    // command finds (and reports) the file the same way.
    let mut env = Env::from_process();
    if let Some(path) = cli.config {
        env = env.with(vars::TEKFLUX_CONFIG, path.to_string_lossy());
    }
    match cli.command {
        Command::CheckConfig => check_config(&env),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "tekflux",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Archive(args) => transfer::archive(&env, args),
        Command::DeadLetters(args) => dead_letters::list(&env, &args),
        Command::Replay(args) => dead_letters::replay(&env, &args),
        Command::Restore(args) => transfer::restore(&env, args),
        Command::Send(args) => send::send(&args),
        Command::Trace(args) => trace::trace(&env, &args),
        Command::Serve {
            function,
            webhooks_only,
            listen,
        } => {
            if webhooks_only && function != Function::GitPush {
                eprintln!("tekflux serve: --webhooks-only needs --function git-push");
                return ExitCode::from(transfer::EXIT_USAGE);
            }
            // Config first: an invalid one exits 64 before any runtime starts.
            let mut startup = match startup(env) {
                Ok(startup) => startup,
                Err(code) => return code,
            };
            apply_listen(listen, &mut startup.server);
            block_on(serve(startup, function, webhooks_only)).unwrap_or_else(|code| code)
        }
        Command::Up { args, listen } => up::run(env, &args, |server| apply_listen(listen, server)),
        Command::Render {
            provider,
            event,
            event_name,
            delivery,
            output,
        } => {
            // Render checks no signature, so it reads no secret.
            let config = match load_config(&env, Sections::ROUTING) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match render(
                config,
                provider,
                &event,
                event_name.as_deref(),
                delivery.as_deref(),
                output,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("tekflux render: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `--listen` over the configured address and port.
fn apply_listen(listen: Option<Listen>, server: &mut tekflux_common::server::ServerState) {
    if let Some(listen) = listen {
        let settings = &mut server.settings;
        settings.address = listen.address.unwrap_or(settings.address);
        settings.port = listen.port.unwrap_or(settings.port);
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

fn check_config(env: &Env) -> ExitCode {
    // git-push's own checks too, as `serve` runs them: a config check-config accepts is one
    // serve accepts, with the same messages at the same positions.
    let config = match config::load(
        env,
        Sections::ALL,
        &[tekflux_git_push::startup::config_check],
    ) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}", error.report());
            return ExitCode::from(config::EX_USAGE as u8);
        }
    };
    let origin = config::ConfigSource::from_env(env).origin();
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    println!(
        "{origin}: configuration is valid: namespace {}, {}, {}",
        config.namespace,
        count(config.repositories.len(), "repository rule"),
        count(config.releases.len(), "release rule")
    );
    ExitCode::SUCCESS
}

async fn serve(startup: Startup, function: Function, webhooks_only: bool) -> ExitCode {
    let routes = match function {
        Function::GitPush if webhooks_only => {
            tekflux_git_push::webhook_routes_from_startup(&startup).await
        }
        Function::GitPush => tekflux_git_push::routes_from_startup(&startup).await,
        Function::RunComplete => Ok(tekflux_run_complete::routes_from_startup(&startup).await),
        Function::ReleaseChanged => {
            Ok(tekflux_release_changed::routes_from_startup(&startup).await)
        }
        Function::All => all_routes(&startup).await,
    };
    let routes = match routes {
        Ok(routes) => routes,
        Err(code) => return rules_refused(&code),
    };
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}

/// git-push's rules' problems, printed as every config error is, with its exit code (64).
pub(crate) fn rules_refused(error: &tekflux_git_push::StartupError) -> ExitCode {
    eprintln!("{}", error.report());
    ExitCode::from(config::EX_USAGE as u8)
}

/// Every function, each under `/<function>`: what `serve` and `up` serve.
pub(crate) async fn all_routes(
    startup: &Startup,
) -> Result<Router, tekflux_git_push::StartupError> {
    Ok(Router::new()
        .nest(
            "/git-push",
            tekflux_git_push::routes_from_startup(startup).await?,
        )
        .nest(
            "/run-complete",
            tekflux_run_complete::routes_from_startup(startup).await,
        )
        .nest(
            "/release-changed",
            tekflux_release_changed::routes_from_startup(startup).await,
        ))
}

fn render(
    config: Config,
    provider: Provider,
    event: &PathBuf,
    event_name: Option<&str>,
    delivery: Option<&str>,
    output: RenderOutput,
) -> anyhow::Result<()> {
    if config.repositories.is_empty() {
        eprintln!(
            "tekflux render: warning: the config has no repository rules, so no push starts \
             anything; add some under repositories:"
        );
    }
    let body = if event.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
            .context("cannot read the payload from standard input")?;
        body
    } else {
        std::fs::read(event).map_err(|error| {
            anyhow::anyhow!(
                "cannot read {}: {}",
                event.display(),
                tekflux_common::error::plain_chain(&error)
            )
        })?
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let rendered = runtime
        .block_on(tekflux_git_push::render(
            config, provider, event_name, delivery, &body,
        ))
        .map_err(|error| anyhow::anyhow!("{}", error.message()))?;
    let objects = || -> Vec<serde_json::Value> {
        rendered["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|run| run["object"].clone())
            .collect()
    };
    match output {
        RenderOutput::Summary => println!("{}", serde_json::to_string_pretty(&rendered)?),
        RenderOutput::Json => {
            let list =
                serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects() });
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        RenderOutput::Yaml => {
            for object in objects() {
                print!("---\n{}", serde_norway::to_string(&object)?);
            }
        }
    }
    Ok(())
}
