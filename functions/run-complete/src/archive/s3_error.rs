//! The SDK's errors turned into what went wrong in plain words, what to do about it, and
//! whether retrying may help; shared by archive, restore and run-complete's own requests.
//!
//! The SDK's `Display` of an error ends in the `Debug` form of the whole error, raw response
//! headers included, so none of it is shown: the message is built from the error's kind, the
//! store's error code and the HTTP status.

use std::error::Error as StdError;
use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ConnectorError, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::endpoint::error::ResolveEndpointError;

/// What kind of S3 failure: the CLI's exit code and the function's HTTP status follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The client cannot reach or sign for the store as configured: no region, no credentials,
    /// credentials the store does not accept or that may not do this, an endpoint that is not a
    /// URL, a bucket in another region. Only the configuration can fix it.
    Config,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The object does not exist.
    NoSuchKey,
    /// The store is unreachable, too slow, overloaded or failing (connection failures, timeouts,
    /// 5xx, throttling): retrying later may succeed.
    Unavailable,
    /// The store refused the request for another reason.
    Refused,
}

impl S3ErrorKind {
    /// A short stable name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::NoSuchBucket => "no_such_bucket",
            Self::NoSuchKey => "no_such_key",
            Self::Unavailable => "unavailable",
            Self::Refused => "refused",
        }
    }
}

/// An S3 request that failed: which request, on what, why in plain words, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Failure {
    operation: &'static str,
    bucket: String,
    key: String,
    kind: S3ErrorKind,
    reason: String,
    advice: Option<String>,
    endpoint: Option<String>,
}

impl S3Failure {
    /// Classifies the SDK's `error` for `operation` on `s3://bucket/key`.
    pub fn from_sdk<E>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        error: &SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let (kind, reason, advice) = classify(operation, bucket, error);
        Self {
            operation,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            kind,
            reason,
            advice,
            endpoint: None,
        }
    }

    /// A failure found after the store answered (a body cut short, an answer missing a field):
    /// the store's fault, worth a retry.
    pub fn unavailable(operation: &'static str, bucket: &str, key: &str, reason: String) -> Self {
        Self {
            operation,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            kind: S3ErrorKind::Unavailable,
            reason,
            advice: Some("retrying later may succeed".to_owned()),
            endpoint: None,
        }
    }

    /// Names the endpoint the request went to in the message (the caller knows it; the SDK's
    /// error does not say).
    #[must_use]
    pub fn at(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    /// What kind of failure.
    pub fn kind(&self) -> S3ErrorKind {
        self.kind
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == S3ErrorKind::Unavailable
    }

    /// The S3 operation, e.g. `PutObject`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "S3 {} of s3://{}/{}",
            self.operation, self.bucket, self.key
        )?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        write!(f, " failed: {}", self.reason)?;
        if let Some(advice) = &self.advice {
            write!(f, "; {advice}")?;
        }
        Ok(())
    }
}

impl StdError for S3Failure {}

/// How the function answers its own S3 requests' failures (manifest, logs, archives): 503 only
/// when a retry may succeed; a store refusing the configuration (credentials, permissions, a
/// missing bucket) is a 500, which the Broker also retries before dead-lettering. The message
/// holds the whole reason: the SDK's error is not kept, since its words hold raw headers.
impl From<S3Failure> for tekflux_common::Error {
    fn from(failure: S3Failure) -> Self {
        if failure.is_transient() {
            Self::Unavailable(failure.to_string())
        } else {
            Self::Internal(failure.to_string())
        }
    }
}

const CHECK_KEYS: &str = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the Tekton Tasks \
                          read them from the tekflux-s3 Secret) against the store's keys";
const RETRY: &str = "retrying later may succeed";

type Classified = (S3ErrorKind, String, Option<String>);

fn classify<E>(operation: &str, bucket: &str, error: &SdkError<E, HttpResponse>) -> Classified
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            answered(operation, bucket, context.err().code(), status)
        }
        SdkError::TimeoutError(_) => (
            S3ErrorKind::Unavailable,
            "the store did not answer in time".to_owned(),
            Some(format!(
                "{RETRY}; if it keeps happening, check the endpoint"
            )),
        ),
        SdkError::ResponseError(_) => (
            S3ErrorKind::Unavailable,
            "the store's answer could not be read (cut short, or not an S3 answer)".to_owned(),
            Some(format!(
                "{RETRY}; if it keeps happening, check that the endpoint is an S3 API"
            )),
        ),
        SdkError::DispatchFailure(failure) => {
            not_sent(error, failure.is_io() || failure.is_timeout())
        }
        SdkError::ConstructionFailure(_) => (
            S3ErrorKind::Config,
            format!("the request could not be built: {}", innermost(error)),
            None,
        ),
        _ => (
            S3ErrorKind::Refused,
            format!("unexpected error: {}", innermost(error)),
            None,
        ),
    }
}

/// A request that never got an answer. Working out the endpoint and finding credentials happen
/// before anything is sent, and the SDK reports their failures as dispatch failures too.
fn not_sent(error: &(dyn StdError + 'static), connection: bool) -> Classified {
    if let Some(endpoint) = find::<ResolveEndpointError>(error) {
        return (
            S3ErrorKind::Config,
            format!("the S3 endpoint cannot be worked out: {endpoint}"),
            Some(
                "set AWS_REGION (any name the store accepts, usually us-east-1, for MinIO) and \
                 write the endpoint (storage.endpoint or AWS_ENDPOINT_URL_S3) as \
                 http(s)://host[:port]"
                    .to_owned(),
            ),
        );
    }
    if let Some(credentials) = find::<CredentialsError>(error) {
        return credentials_failure(credentials);
    }
    if connection {
        return (
            S3ErrorKind::Unavailable,
            format!("cannot connect to the store: {}", innermost(error)),
            Some(format!(
                "check that the store is running and the endpoint is right; {RETRY}"
            )),
        );
    }
    (
        S3ErrorKind::Unavailable,
        format!("the request could not be sent: {}", innermost(error)),
        Some(RETRY.to_owned()),
    )
}

fn credentials_failure(error: &CredentialsError) -> Classified {
    match error {
        CredentialsError::CredentialsNotLoaded(_) => (
            S3ErrorKind::Config,
            "no S3 credentials were found (not in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             an AWS profile, a web identity token or a container credentials endpoint)"
                .to_owned(),
            Some(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the Tekton Tasks read them \
                 from the tekflux-s3 Secret), or give the pod an AWS identity (IRSA, EKS \
                 Pod Identity)"
                    .to_owned(),
            ),
        ),
        CredentialsError::ProviderTimedOut(_) => (
            S3ErrorKind::Unavailable,
            "looking up S3 credentials timed out".to_owned(),
            Some(RETRY.to_owned()),
        ),
        CredentialsError::InvalidConfiguration(_) => (
            S3ErrorKind::Config,
            format!("the S3 credentials are misconfigured: {}", innermost(error)),
            Some(CHECK_KEYS.to_owned()),
        ),
        // A credentials service (STS, the container endpoint) failed: unreachable is worth a
        // retry, a refusal (a role that may not be assumed) is configuration.
        _ if find::<ConnectorError>(error).is_some_and(|c| c.is_io() || c.is_timeout()) => (
            S3ErrorKind::Unavailable,
            format!(
                "the credentials service could not be reached: {}",
                innermost(error)
            ),
            Some(RETRY.to_owned()),
        ),
        _ => (
            S3ErrorKind::Config,
            format!(
                "the S3 credentials could not be loaded: {}",
                innermost(error)
            ),
            Some(
                "check the pod's AWS identity (the role and its trust policy) or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .to_owned(),
            ),
        ),
    }
}

/// The store answered with an error: its code when it sent a body, else the status (HEAD
/// answers have no body).
fn answered(operation: &str, bucket: &str, code: Option<&str>, status: u16) -> Classified {
    let with_code = |text: &str| match code {
        Some(code) => format!("{text} ({code})"),
        None => format!("{text} (HTTP {status})"),
    };
    match code {
        Some("NoSuchBucket") => (
            S3ErrorKind::NoSuchBucket,
            format!("bucket {bucket} does not exist"),
            Some("create it, or correct the bucket name".to_owned()),
        ),
        Some("NoSuchKey") => (
            S3ErrorKind::NoSuchKey,
            "the object does not exist".to_owned(),
            None,
        ),
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => (
            S3ErrorKind::Config,
            with_code(&format!(
                "access denied: the credentials may not {operation} in bucket {bucket}"
            )),
            Some(format!(
                "grant them s3:{} on the bucket (bucket policy, IAM or MinIO policy), or use \
                 credentials that have it",
                permission(operation)
            )),
        ),
        Some("InvalidAccessKeyId" | "NotSignedUp") => (
            S3ErrorKind::Config,
            with_code("the store does not know the access key ID"),
            Some(CHECK_KEYS.to_owned()),
        ),
        Some("SignatureDoesNotMatch") => (
            S3ErrorKind::Config,
            with_code("the secret key does not match the access key ID"),
            Some(CHECK_KEYS.to_owned()),
        ),
        Some("InvalidToken" | "ExpiredToken" | "TokenRefreshRequired" | "InvalidSecurity") => (
            S3ErrorKind::Config,
            with_code("the session token is invalid or expired"),
            Some("renew AWS_SESSION_TOKEN, or unset it when the keys are long-lived".to_owned()),
        ),
        Some(
            "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException"
            | "InvalidRegion",
        ) => (
            S3ErrorKind::Config,
            with_code(&format!(
                "bucket {bucket} is not in the region requests are signed for"
            )),
            Some("set AWS_REGION (or storage.region) to the bucket's region".to_owned()),
        ),
        Some("RequestTimeTooSkewed") => (
            S3ErrorKind::Config,
            with_code("this machine's clock is too far from the store's"),
            Some("synchronise the clock (NTP)".to_owned()),
        ),
        Some(
            "SlowDown"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => (
            S3ErrorKind::Unavailable,
            with_code("the store is overloaded or failing"),
            Some(RETRY.to_owned()),
        ),
        // HEAD answers carry no body; the SDK calls a bodyless 404 `NotFound`.
        Some("NotFound") | None if status == 404 && operation == "HeadObject" => (
            S3ErrorKind::NoSuchKey,
            "the object (or its bucket) does not exist".to_owned(),
            None,
        ),
        _ => match status {
            500..=599 | 408 | 429 => (
                S3ErrorKind::Unavailable,
                with_code("the store is overloaded or failing"),
                Some(RETRY.to_owned()),
            ),
            401 | 403 => (
                S3ErrorKind::Config,
                with_code("the store refused the credentials, or their permission"),
                Some(format!(
                    "{CHECK_KEYS}, and that they may {operation} in bucket {bucket}"
                )),
            ),
            301 | 307 => (
                S3ErrorKind::Config,
                with_code(&format!(
                    "the store redirects requests for bucket {bucket} elsewhere"
                )),
                Some(
                    "set AWS_REGION (or storage.region) to the bucket's region, or correct \
                     the endpoint"
                        .to_owned(),
                ),
            ),
            _ => (
                S3ErrorKind::Refused,
                with_code("the store refused the request"),
                None,
            ),
        },
    }
}

/// The IAM action an operation needs.
fn permission(operation: &str) -> &'static str {
    match operation {
        "GetObject" | "HeadObject" => "GetObject",
        "AbortMultipartUpload" => "AbortMultipartUpload",
        _ => "PutObject",
    }
}

/// The first error of type `T` in `error`'s chain of sources.
fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The last error of the chain, the one that says what actually happened ("Connection
/// refused"), without the `(os error N)` that the standard library appends.
fn innermost(error: &(dyn StdError + 'static)) -> String {
    let mut last = error;
    while let Some(source) = last.source() {
        last = source;
    }
    // Sentences end where the advice begins, not with the source's own full stop.
    super::without_os_error(last.to_string().trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_code_then_status() {
        let kind = |operation, code, status| answered(operation, "b", code, status).0;
        assert_eq!(
            kind("PutObject", Some("NoSuchBucket"), 404),
            S3ErrorKind::NoSuchBucket
        );
        assert_eq!(
            kind("GetObject", Some("NoSuchKey"), 404),
            S3ErrorKind::NoSuchKey
        );
        assert_eq!(kind("HeadObject", None, 404), S3ErrorKind::NoSuchKey);
        assert_eq!(
            kind("HeadObject", Some("NotFound"), 404),
            S3ErrorKind::NoSuchKey
        );
        for code in [
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
        ] {
            assert_eq!(
                kind("PutObject", Some(code), 403),
                S3ErrorKind::Config,
                "{code}"
            );
        }
        assert_eq!(kind("HeadObject", None, 403), S3ErrorKind::Config);
        assert_eq!(
            kind("PutObject", Some("PermanentRedirect"), 301),
            S3ErrorKind::Config
        );
        assert_eq!(
            kind("PutObject", Some("SlowDown"), 503),
            S3ErrorKind::Unavailable
        );
        assert_eq!(kind("PutObject", None, 502), S3ErrorKind::Unavailable);
        assert_eq!(
            kind("PutObject", Some("Whatever"), 429),
            S3ErrorKind::Unavailable
        );
        assert_eq!(
            kind("PutObject", Some("InvalidArgument"), 400),
            S3ErrorKind::Refused
        );
        assert_eq!(kind("PutObject", None, 404), S3ErrorKind::Refused);
    }

    #[test]
    fn messages_name_the_request_and_say_what_to_do() {
        let (kind, reason, advice) = answered("PutObject", "ws", Some("AccessDenied"), 403);
        let failure = S3Failure {
            operation: "PutObject",
            bucket: "ws".into(),
            key: "a/b.tar.zst".into(),
            kind,
            reason,
            advice,
            endpoint: None,
        }
        .at("http://127.0.0.1:9000");
        assert_eq!(
            failure.to_string(),
            "S3 PutObject of s3://ws/a/b.tar.zst at http://127.0.0.1:9000 failed: access \
             denied: the credentials may not PutObject in bucket ws (AccessDenied); grant them \
             s3:PutObject on the bucket (bucket policy, IAM or MinIO policy), or use \
             credentials that have it"
        );
    }
}
