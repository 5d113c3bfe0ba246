//! Why a webhook or push CloudEvent was refused, why an accepted push did not become runs, and
//! why git-push cannot start.
//!
//! Messages are written for the sender's delivery log: they name the header, field or setting
//! to fix, and never contain a received signature, a token or a configured secret. Each error
//! keeps its cause typed until it is answered; the conversions into the shared
//! [`tekflux_common::Error`] (one HTTP status per kind) are here, beside the types.

use crate::push::Provider;
use crate::rule::RuleError;
use crate::run::BuildError;

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
    /// The provider named in the webhook's path is not one git-push knows. Answered 400 rather
    /// than 404: a typo in the webhook URL will never succeed, and 404 is retried.
    #[error(
        "unknown provider {name:?} in the path; use one of {}",
        provider_keys()
    )]
    UnknownProviderInPath {
        /// The path segment received.
        name: String,
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

/// Every git provider's path segment, in the table's order: `github, gitlab, …`.
fn provider_keys() -> String {
    Provider::ALL.map(Provider::as_str).join(", ")
}

impl WebhookError {
    /// A short, stable name for metric labels (`rejected{reason=…}`).
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookError::NoSecret { .. } => "no_secret",
            WebhookError::MissingSignature { .. } => "missing_signature",
            WebhookError::BadSignature { .. } => "bad_signature",
            WebhookError::MissingHeader { .. } => "missing_header",
            WebhookError::UnknownProviderInPath { .. } => "unknown_provider_in_path",
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
            | WebhookError::UnknownProviderInPath { .. }
            | WebhookError::UnknownProvider
            | WebhookError::Malformed { .. } => tekflux_common::Error::BadRequest(message),
            WebhookError::UnsupportedData { .. } | WebhookError::UnsupportedContentType { .. } => {
                tekflux_common::Error::UnsupportedMediaType(message)
            }
        }
    }
}

/// Why an accepted push (or `tekflux render`'s payload) did not become runs, or its answer could
/// not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A matched rule's run could not be built (422: the same push always fails the same way).
    #[error("rule {rule:?}")]
    Build {
        /// The rule's name.
        rule: String,
        /// Why its run could not be built.
        #[source]
        error: BuildError,
    },
    /// No Kubernetes client: only dry runs work (503, so the sender retries once the cluster is
    /// reachable).
    #[error("no Kubernetes cluster is configured (KUBECONFIG or in-cluster); only dry runs work")]
    NoCluster,
    /// A planned run, or an object the API server returned, could not be written as JSON (500).
    #[error("cannot serialise a Kubernetes object")]
    Serialise(#[source] serde_json::Error),
    /// The Kubernetes API refused or failed; answered as every Kubernetes error is
    /// (`tekflux_common::Error`'s conversion: 429, 422, 503, …).
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The CDEvents reply could not be built from the run (500).
    #[error("{what}")]
    Reply {
        /// Which part of the reply.
        what: &'static str,
        /// What the CDEvents SDK refused.
        #[source]
        error: cdevents_sdk::Error,
    },
    /// `tekflux render`: the config's repository rules do not compile (422).
    #[error("invalid repositories: {}", join(.0))]
    InvalidRules(Vec<RuleError>),
    /// `tekflux render`: an event name or delivery id that cannot be a header value (400).
    #[error("{0:?} is not a valid header value")]
    HeaderValue(String),
    /// `tekflux render`: the summary could not be written as JSON (500).
    #[error("cannot serialise the summary")]
    Summary(#[source] serde_json::Error),
    /// A refusal the shared code made (reply delivery, CloudEvent building), passed on as is.
    #[error(transparent)]
    Common(#[from] tekflux_common::Error),
}

fn join(errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One HTTP status per failure; the cause travels with the answer ([`tekflux_common::Error::because`]), so the
/// request's log line has it as a chain and the body says it after the message.
impl From<DeliveryError> for tekflux_common::Error {
    fn from(error: DeliveryError) -> Self {
        use tekflux_common::Error;
        let message = error.to_string();
        match error {
            DeliveryError::Kube(error) => error.into(),
            DeliveryError::Common(error) => error,
            DeliveryError::Build { error, .. } => Error::unprocessable(message, error),
            DeliveryError::InvalidRules(_) => Error::Unprocessable(message),
            DeliveryError::NoCluster => Error::Unavailable(message),
            DeliveryError::HeaderValue(_) => Error::BadRequest(message),
            DeliveryError::Serialise(error) | DeliveryError::Summary(error) => {
                Error::internal(message, error)
            }
            DeliveryError::Reply { error, .. } => Error::internal(message, error),
        }
    }
}

/// Why git-push cannot start: the config's repository rules do not compile. Only `main` ends
/// the process: it prints [`StartupError::report`] and exits with [`StartupError::exit_code`].
#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.origin, .errors))]
pub struct StartupError {
    /// Where the config came from (`file`, or the built-in defaults), prefixed to every line.
    pub origin: String,
    /// Every rule problem, each naming its field.
    pub errors: Vec<RuleError>,
}

impl StartupError {
    /// What `main` prints before it exits: a first line saying the configuration is invalid,
    /// then every problem on its own line.
    pub fn report(&self) -> String {
        format!("tekflux: invalid configuration\n{self}")
    }

    /// The exit code: 64 (`EX_USAGE`), as for every configuration error.
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(tekflux_common::config::EX_USAGE as u8)
    }
}

fn lines(origin: &str, errors: &[RuleError]) -> String {
    errors
        .iter()
        .map(|error| format!("{origin}: {error}"))
        .collect::<Vec<_>>()
        .join("\n")
}
