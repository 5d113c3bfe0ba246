//! One error type for every function, mapped to HTTP once, for Knative's retry rules.
//!
//! Knative Eventing retries on 5xx, 404, 408, 409 and 429, and gives up on the other 4xx. So input
//! that can never succeed gets a 4xx that is *not* retried (400, 401, 403, 413, 415, 422), transient
//! trouble gets 503 or 429, and an upstream 404/409 is never passed through as is.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// Result with the common [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause an [`Error`] keeps: any error that can cross threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a function can answer with other than success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: bad JSON, missing attribute, bad CloudEvent (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request is not authenticated: missing or wrong signature or token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The request is authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// The body is larger than the configured limit (413).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The content type or CloudEvents mode is not supported, e.g. batch mode (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The input is well-formed but can never be acted on, e.g. a run the schema rejects (422).
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency asked us to slow down; the sender should retry after the delay (429).
    #[error("{message}")]
    TooManyRequests {
        /// What was throttled.
        message: String,
        /// How long the sender should wait, when known.
        retry_after: Option<Duration>,
    },
    /// A dependency (Kubernetes, S3) failed or timed out; the sender should retry (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state on our side (500).
    #[error("{0}")]
    Internal(String),
    /// One of the errors above with the error that caused it. It is answered like `error`
    /// (same status, kind and body shape, the cause's words after the message), and the cause
    /// stays an error, so the request's log line has it as a chain rather than as text.
    ///
    /// Made by [`Error::because`] and the constructors that take a cause
    /// ([`Error::unavailable`], …); match the kind with [`Error::kind`] or [`Error::context`].
    #[error("{error}")]
    Caused {
        /// What went wrong, in the words of the request (never a secret).
        error: Box<Error>,
        /// Why: the library's or the OS's error, with its own causes.
        source: BoxError,
    },
}

impl Error {
    /// A request that can never succeed (400), because of `source`.
    pub fn bad_request(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::BadRequest(context.into()).because(source)
    }

    /// Input that is well-formed but can never be acted on (422), because of `source`.
    pub fn unprocessable(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unprocessable(context.into()).because(source)
    }

    /// A dependency that failed or timed out (503), because of `source`.
    pub fn unavailable(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable(context.into()).because(source)
    }

    /// A bug or an unexpected state on our side (500), because of `source`.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Internal(context.into()).because(source)
    }

    /// This error, keeping `source` as its cause (see [`Error::Caused`]). A cause given to an
    /// error that has one already replaces it: the context is the request's, the cause the
    /// nearest failure.
    pub fn because(self, source: impl Into<BoxError>) -> Self {
        let error = match self {
            Error::Caused { error, .. } => error,
            plain => Box::new(plain),
        };
        Error::Caused {
            error,
            source: source.into(),
        }
    }

    /// The error without its cause: one of the plain variants, for matching on the kind.
    pub fn context(&self) -> &Error {
        match self {
            Error::Caused { error, .. } => error.context(),
            plain => plain,
        }
    }

    /// The cause kept by [`Error::because`], if any.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Caused { source, .. } => Some(&**source),
            _ => None,
        }
    }

    /// The message of the JSON body: this error's words, then its cause's in plain words (see
    /// [`plain_chain`]), each once.
    pub fn message(&self) -> String {
        match self.cause() {
            None => self.to_string(),
            Some(_) => plain_chain(self),
        }
    }

    /// What the cause adds to the message, for the log: its chain in plain words without what
    /// the message says already. `None` without a cause, or when it adds nothing.
    pub fn cause_text(&self) -> Option<String> {
        self.cause()?;
        let context = without_os_error(&self.to_string());
        let chain = plain_chain(self);
        let rest = chain
            .strip_prefix(context.as_str())
            .unwrap_or(&chain)
            .trim_start_matches(": ");
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// A short, stable name for metric labels and the `error` field of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::Unprocessable(_) => "unprocessable",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            Error::Caused { error, .. } => error.kind(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Caused { error, .. } => error.status(),
        }
    }

    /// True when the sender should retry the same request later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.context(),
            Error::TooManyRequests { .. } | Error::Unavailable(_) | Error::Internal(_)
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.kind(), "message": self.message() });
        let mut response = (status, Json(body)).into_response();
        if let Error::TooManyRequests {
            retry_after: Some(delay),
            ..
        } = self.context()
        {
            // Whole seconds, at least one: Retry-After has no finer unit.
            let secs = delay.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        // Server errors are logged once by the request middleware, not here.
        response.extensions_mut().insert(ErrorKind(self.kind()));
        response
            .extensions_mut()
            .insert(ResponseError(Arc::new(self)));
        response
    }
}

/// Response extension carrying the error kind, so middleware can label metrics and logs.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

/// Response extension carrying the error a response was made from, cause included, so the
/// request's log line says what went wrong and why without reading the body again.
///
/// Inserted by [`Error`]'s `IntoResponse`; a handler that writes its own error body inserts it
/// too. Messages are written for the sender and never hold a secret; causes are library and OS
/// errors, which do not either.
#[derive(Debug, Clone)]
pub struct ResponseError(pub Arc<Error>);

impl ResponseError {
    /// The error.
    pub fn error(&self) -> &Error {
        &self.0
    }
}

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => match status.code {
                429 => Error::TooManyRequests {
                    message: format!("Kubernetes API throttled the request: {}", status.message),
                    // The API server puts Retry-After into the Status details as well.
                    retry_after: status
                        .details
                        .as_ref()
                        .map(|details| details.retry_after_seconds)
                        .filter(|secs| *secs > 0)
                        .map(|secs| Duration::from_secs(u64::from(secs))),
                },
                422 => Error::Unprocessable(format!(
                    "Kubernetes API rejected the object: {}",
                    status.message
                )),
                400 => Error::Unprocessable(format!(
                    "Kubernetes API rejected the request: {}",
                    status.message
                )),
                // 404/409 and everything else are transient from the sender's point of view:
                // never pass them through (Knative would retry a 404 anyway, and a 409 that the
                // caller did not handle means state changed under us).
                _ => Error::Unavailable(format!(
                    "Kubernetes API answered {}: {}",
                    status.code, status.message
                )),
            },
            // The Status and the transport's chain are the whole message: nothing is left for
            // a cause to add.
            kube::Error::Service(inner) => Error::Unavailable(plain_chain(&*inner)),
            err => Error::unavailable("the Kubernetes API call failed", err),
        }
    }
}

/// `text` without the ` (os error N)` the standard library appends to an OS error's message:
/// "Permission denied" says it to a person, the number does not.
pub fn without_os_error(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text.to_owned(),
    }
}

/// An error and its causes in plain words, joined with `: `: each cause once (libraries often
/// repeat their source in their own message), without the `(os error N)` that `std` appends.
pub fn plain_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = without_os_error(&error.to_string());
        if !parts.iter().any(|part| part.contains(&text)) && !text.is_empty() {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> std::io::Error {
        std::io::Error::other("disk on fire")
    }

    #[test]
    fn a_cause_is_kept_beside_the_message_and_answered_like_its_kind() {
        let error = Error::unavailable("cannot write the manifest", disk());
        assert_eq!(error.kind(), "unavailable");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.is_transient());
        assert!(matches!(error.context(), Error::Unavailable(_)));
        // The message is the context alone; the body and the log add the cause once.
        assert_eq!(error.to_string(), "cannot write the manifest");
        assert_eq!(error.message(), "cannot write the manifest: disk on fire");
        assert_eq!(error.cause_text().as_deref(), Some("disk on fire"));
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some("disk on fire".to_owned())
        );
    }

    #[test]
    fn the_response_carries_the_error_itself() {
        let response = Error::internal("cannot serialise", disk()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let carried = response
            .extensions()
            .get::<ResponseError>()
            .map(ResponseError::error);
        assert_eq!(carried.map(Error::kind), Some("internal"));
        assert_eq!(
            carried.and_then(Error::cause_text).as_deref(),
            Some("disk on fire")
        );
        assert_eq!(
            response.extensions().get::<ErrorKind>().map(|kind| kind.0),
            Some("internal")
        );
    }

    #[test]
    fn a_plain_error_has_no_cause_and_its_message_unchanged() {
        let error = Error::BadRequest("bad (os error 2)".to_owned());
        assert_eq!(error.message(), "bad (os error 2)");
        assert_eq!(error.cause_text(), None);
        // A second cause replaces the first: the context stays the request's.
        let error = Error::Unprocessable("no".to_owned())
            .because(disk())
            .because(std::io::Error::other("later"));
        assert_eq!(error.message(), "no: later");
        assert!(matches!(error.context(), Error::Unprocessable(message) if message == "no"));
    }

    #[test]
    fn retry_after_is_read_through_a_cause() {
        let error = Error::TooManyRequests {
            message: "slow down".to_owned(),
            retry_after: Some(Duration::from_secs(3)),
        }
        .because(disk());
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("3"))
        );
    }
}
