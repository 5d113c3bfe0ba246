//! The release-changed function on its own: one Knative Service, plain server or AWS Lambda function.

use std::process::ExitCode;
use tekflux_common::startup::{self, Startup};

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = startup::function_arguments(
        "tekflux-release-changed",
        "release-changed: takes new-artifact events and server-side-applies HelmReleases.",
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
    let routes = tekflux_release_changed::routes_from_startup(&startup).await;
    startup.server.readiness.set_ready();
    startup.serve(routes).await
}
