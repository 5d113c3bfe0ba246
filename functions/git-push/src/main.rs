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
    let startup = Startup::from_process();
    let routes = tekflux_git_push::routes_from_startup(&startup).await;
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}
