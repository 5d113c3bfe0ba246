//! One error type for every function, mapped to HTTP once, for Knative's retry rules.
//!
//! Knative Eventing retries on 5xx, 404, 408, 409 and 429, and gives up on the other 4xx. So input
//! that can never succeed gets a 4xx that is *not* retried (400, 401, 403, 413, 415, 422), transient
//! trouble gets 503 or 429, and an upstream 404/409 is never passed through as is.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Result with the common [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

impl Error {
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
        }
    }

    /// True when the sender should retry the same request later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::TooManyRequests { .. } | Error::Unavailable(_) | Error::Internal(_)
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.kind(), "message": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        if let Error::TooManyRequests {
            retry_after: Some(delay),
            ..
        } = &self
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
            .insert(ErrorMessage(self.to_string().into()));
        response
    }
}

/// Response extension carrying the error kind, so middleware can label metrics and logs.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

/// Response extension carrying the error's message (the one in the body), so the request's log
/// line says why it was refused without reading the body again. Messages are written for the
/// sender and never hold a secret.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub std::sync::Arc<str>);

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        match &err {
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
            kube::Error::Service(inner) => Error::Unavailable(plain_chain(&**inner)),
            _ => Error::Unavailable(format!(
                "the Kubernetes API call failed: {}",
                plain_chain(&err)
            )),
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
