//! The run-complete function on its own: one Knative Service, plain server or AWS Lambda function.

use std::process::ExitCode;
use tekflux_common::startup::{Startup, run_function};

#[tokio::main]
async fn main() -> ExitCode {
    run_function(
        "tekflux-run-complete",
        "run-complete: takes Tekton's run events, archives workspaces and logs to S3 and frees the volume.",
        &[],
        async |startup: &Startup| { Ok(tekflux_run_complete::routes_from_startup(startup).await) },
    )
    .await
}
