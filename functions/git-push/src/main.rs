//! The git-push function on its own: one Knative Service, plain server or AWS Lambda function.

use std::process::ExitCode;
use tekflux_common::startup::{Startup, run_function};

#[tokio::main]
async fn main() -> ExitCode {
    run_function(
        "tekflux-git-push",
        "git-push: takes push webhooks and CloudEvents and creates Tekton runs, once per delivery.",
        &[tekflux_git_push::startup::config_check],
        async |startup: &Startup| {
            tekflux_git_push::routes_from_startup(startup)
                .await
                .map_err(|error| error.report())
        },
    )
    .await
}
