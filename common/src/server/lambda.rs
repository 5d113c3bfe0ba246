//! The AWS Lambda front door: the same router, served through the Lambda Runtime API.
//!
//! API Gateway (REST and HTTP APIs), Function URLs and ALB events become HTTP requests for the
//! router, and its responses go back in the shape the event source expects, so a function behaves
//! the same on Lambda as behind Knative. The body limit, timeout and tracing middleware apply
//! unchanged.

use super::ServeError;
use axum::Router;

/// Variables `lambda_runtime` reads from the process environment and panics without.
const REQUIRED: [&str; 3] = [
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
];

/// Serves `router` through the Lambda Runtime API until the runtime loop ends.
///
/// `env` must see the same environment as the process: `lambda_runtime` reads its settings from
/// the process environment itself, and the check here only turns its panics on a missing or
/// malformed variable into an error that names the variable.
pub async fn run(router: Router, env: impl Fn(&str) -> Option<String>) -> Result<(), ServeError> {
    for name in REQUIRED {
        if env(name).is_none() {
            return Err(ServeError::LambdaEnvironment(name));
        }
    }
    if env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").is_some_and(|memory| memory.parse::<i32>().is_err()) {
        return Err(ServeError::LambdaEnvironment(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        ));
    }
    tracing::info!("serving through the Lambda Runtime API");
    lambda_http::run(router).await.map_err(ServeError::Lambda)
}
