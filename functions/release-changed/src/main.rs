//! The release-changed function on its own: one Knative Service, plain server or AWS Lambda function.

use std::process::ExitCode;
use tekflux_common::startup::{Startup, run_function};

#[tokio::main]
async fn main() -> ExitCode {
    run_function(
        "tekflux-release-changed",
        "release-changed: takes new-artifact events and server-side-applies HelmReleases.",
        &[],
        async |startup: &Startup| Ok(tekflux_release_changed::routes_from_startup(startup).await),
    )
    .await
}
