//! The run-complete function on its own: one Knative Service, plain server or AWS Lambda function.

use std::process::ExitCode;
use tekflux_common::startup::{self, Startup};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = startup::function_arguments(
        "tekflux-run-complete",
        "run-complete: takes Tekton's run events, archives workspaces and logs to S3 and frees the volume.",
    ) {
        return code;
    }
    let startup = match Startup::from_process() {
        Ok(startup) => startup,
        Err(error) => {
            eprintln!("{}", error.report());
            return error.exit_code();
        }
    };
    let routes = tekflux_run_complete::routes_from_startup(&startup).await;
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}
