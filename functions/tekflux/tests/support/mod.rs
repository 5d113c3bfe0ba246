//! The real `tekflux` binary against the test S3 server, shared by the tests that use a bucket.

use std::path::Path;
use std::process::{Command, Output};

use tekflux_testkit::s3::TestS3;

/// The binary with only S3 settings in its environment, run from `cwd` (an empty directory, so
/// no `./tekflux.yaml` is picked up: the embedded defaults plus what the env says).
pub fn tekflux(s3: &TestS3, cwd: &Path) -> Command {
    let credentials = s3.credentials();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key())
        .env("AWS_REGION", tekflux_testkit::s3::REGION)
        .env("AWS_ENDPOINT_URL_S3", s3.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TEKFLUX_S3_FORCE_PATH_STYLE", "true")
        .current_dir(cwd);
    command
}

/// Runs the command off the async runtime, which serves the S3 server meanwhile.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("tekflux runs"))
        .await
        .expect("the command's thread ends")
}
