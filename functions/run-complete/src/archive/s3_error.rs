//! Turning the SDK's errors into a message and a retry decision, shared by archive and restore.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What callers keep of an SDK error: a printable chain and whether retrying may succeed.
pub(crate) struct S3Failure {
    pub(crate) detail: String,
    pub(crate) transient: bool,
}

impl<E> From<SdkError<E, HttpResponse>> for S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn from(err: SdkError<E, HttpResponse>) -> Self {
        let transient = match &err {
            // The request never got a complete answer: the store is down, slow or unreachable.
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                status >= 500
                    || status == 408
                    || status == 429
                    || matches!(
                        context.err().code(),
                        Some(
                            "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                        )
                    )
            }
            // A request that could not even be built will not build on the next attempt.
            _ => false,
        };
        Self {
            detail: DisplayErrorContext(&err).to_string(),
            transient,
        }
    }
}
