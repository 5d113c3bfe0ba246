//! The git-push function on its own: one Knative Service, plain server or AWS Lambda function.

use std::process::ExitCode;
use tekflux_common::startup::{self, Startup};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = startup::function_arguments(
        "tekflux-git-push",
        "git-push: takes push webhooks and CloudEvents and creates Tekton runs, once per delivery.",
    ) {
        return code;
    }
    let startup = match Startup::from_process_checked(&[tekflux_git_push::startup::config_check]) {
        Ok(startup) => startup,
        Err(error) => {
            eprintln!("{}", error.report());
            return error.exit_code();
        }
    };
    let routes = match tekflux_git_push::routes_from_startup(&startup).await {
        Ok(routes) => routes,
        Err(error) => {
            eprintln!("{}", error.report());
            return error.exit_code();
        }
    };
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}
