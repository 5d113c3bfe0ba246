//! Why a webhook or push CloudEvent was refused.
//!
//! Messages are written for the sender's delivery log: they name the header, field or setting
//! to fix, and never contain a received signature, a token or a configured secret.

use crate::push::Provider;

/// A webhook or push CloudEvent that will never be accepted as sent (4xx, no retry helps).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The provider has no secret or token configured and `insecure: true` is not set, so
    /// nothing from it can be trusted.
    #[error(
        "no secret configured for {provider}; set providers.{provider}.{key} or insecure: true",
        provider = provider.as_str(),
        key = if *provider == Provider::Gitlab { "token" } else { "secret" }
    )]
    NoSecret {
        /// The provider whose settings are missing.
        provider: Provider,
    },
    /// The header carrying the signature or token is absent.
    #[error("missing {header} header; the {provider} webhook must be configured with a secret", provider = provider.as_str())]
    MissingSignature {
        /// The provider that should have signed.
        provider: Provider,
        /// The header that was expected.
        header: &'static str,
    },
    /// The signature or token is wrong or malformed; which of the two is not said.
    #[error("invalid {header} for {provider} webhook", provider = provider.as_str())]
    BadSignature {
        /// The provider that signed.
        provider: Provider,
        /// The header that was checked.
        header: &'static str,
    },
    /// A header the request cannot be handled without is absent or not text.
    #[error("missing or invalid {header} header: {why}")]
    MissingHeader {
        /// The header (or headers, in order of preference) looked for.
        header: &'static str,
        /// What it is needed for.
        why: &'static str,
    },
    /// No provider could be recognised from the request's headers.
    #[error(
        "cannot tell the git provider from the headers (expected X-GitHub-Event, X-Gitlab-Event, \
         X-Gitea-Event, X-Forgejo-Event or X-Event-Key); post to /webhooks/{{provider}} instead"
    )]
    UnknownProvider,
    /// The body is not JSON, or a field has the wrong type or is missing.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read, e.g. `github push payload`.
        what: String,
        /// The serde error with the path of the offending field.
        detail: String,
    },
    /// A webhook body in a media type git-push does not read.
    #[error(
        "the {provider} webhook is sent as {content_type}; set the webhook's content type to \
         application/json",
        provider = provider.as_str()
    )]
    UnsupportedContentType {
        /// The provider that sent it.
        provider: Provider,
        /// The `Content-Type` essence received.
        content_type: String,
    },
    /// The CloudEvent's data is not JSON.
    #[error("unsupported data in {event_type} CloudEvent: {detail}")]
    UnsupportedData {
        /// The CloudEvent type.
        event_type: String,
        /// What was found instead.
        detail: String,
    },
}

impl WebhookError {
    /// A short, stable name for metric labels (`rejected{reason=…}`).
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookError::NoSecret { .. } => "no_secret",
            WebhookError::MissingSignature { .. } => "missing_signature",
            WebhookError::BadSignature { .. } => "bad_signature",
            WebhookError::MissingHeader { .. } => "missing_header",
            WebhookError::UnknownProvider => "unknown_provider",
            WebhookError::Malformed { .. } => "malformed",
            WebhookError::UnsupportedContentType { .. } => "unsupported_content_type",
            WebhookError::UnsupportedData { .. } => "unsupported_data",
        }
    }

    /// True for the errors that mean "not authenticated" (answered 401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            WebhookError::NoSecret { .. }
                | WebhookError::MissingSignature { .. }
                | WebhookError::BadSignature { .. }
        )
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        WebhookError::Malformed {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<WebhookError> for tekflux_common::Error {
    fn from(error: WebhookError) -> Self {
        let message = error.to_string();
        match error {
            WebhookError::NoSecret { .. }
            | WebhookError::MissingSignature { .. }
            | WebhookError::BadSignature { .. } => tekflux_common::Error::Unauthorized(message),
            WebhookError::MissingHeader { .. }
            | WebhookError::UnknownProvider
            | WebhookError::Malformed { .. } => tekflux_common::Error::BadRequest(message),
            WebhookError::UnsupportedData { .. } | WebhookError::UnsupportedContentType { .. } => {
                tekflux_common::Error::UnsupportedMediaType(message)
            }
        }
    }
}
