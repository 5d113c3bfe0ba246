//! Who sent a CloudEvent: authentication of every function's `POST /`.
//!
//! CloudEvent routes are cluster-internal, but "internal" is not "trusted": build pods running
//! pull-request code share the cluster network, and the Broker's ingress accepts events from
//! anyone who can reach it. So each CloudEvent must prove its sender, one of:
//!
//! - **Knative Eventing sender identity** (`authentication-oidc`): `Authorization: Bearer <JWT>`,
//!   a service-account token of the Trigger that delivers the event, issued for the function's
//!   audience. Its signature is checked against the cluster's service-account issuer (see
//!   [`oidc`]), then its subject against the senders the config allows for this function.
//! - **A static bearer token** (`events.token`), for senders that cannot do OIDC: a person's
//!   `curl`, another CI system.
//! - **Nothing**, only when the config says `events.insecure: true`.
//!
//! Everything else is answered 401 (no or bad credentials) or 403 (a valid identity that may
//! not send here), before the body is read; dry runs need the same proof. Both outcomes are
//! counted in `tekflux_events_authenticated{function,method}` and
//! `tekflux_events_refused{function,reason}`.

pub mod oidc;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};

use crate::config::{Events, OidcReceiver, Secret};
use crate::error::Error;
use crate::metrics::{CounterFamily, Metrics};
use crate::webhook_auth::token_matches;

pub use oidc::{OidcVerifier, Refusal};

/// The function a CloudEvent is sent to; each has its own audience and allowed senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// git-push.
    GitPush,
    /// run-complete.
    RunComplete,
    /// release-changed.
    ReleaseChanged,
    /// The dead-letter store, on run-complete's Service.
    DeadLetters,
    /// `tekflux up`'s Broker ingress (`POST /broker`): no Knative, so no OIDC; the token only.
    Broker,
}

impl Receiver {
    /// The function's name, as in metrics and Service names.
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::GitPush => "git-push",
            Receiver::RunComplete => "run-complete",
            Receiver::ReleaseChanged => "release-changed",
            Receiver::DeadLetters => "dead-letters",
            Receiver::Broker => "broker",
        }
    }

    /// The audience tokens are expected for when the config names none: `tekflux/<function>`.
    pub fn default_audience(self) -> String {
        format!("tekflux/{}", self.as_str())
    }

    fn oidc_settings(self, events: &Events) -> Option<&OidcReceiver> {
        let oidc = events.oidc.as_ref()?;
        match self {
            Receiver::GitPush => oidc.git_push.as_ref(),
            Receiver::RunComplete => oidc.run_complete.as_ref(),
            Receiver::ReleaseChanged => oidc.release_changed.as_ref(),
            Receiver::DeadLetters => oidc.dead_letters.as_ref(),
            Receiver::Broker => None,
        }
    }
}

/// Who a CloudEvent came from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A holder of the static `events.token`.
    Token,
    /// A Knative sender identity: the token's subject.
    Oidc(String),
    /// Nobody proven: accepted because `events.insecure` is on.
    Insecure,
}

impl Sender {
    /// `token`, `oidc` or `insecure`, for metric labels.
    pub fn method(&self) -> &'static str {
        match self {
            Sender::Token => "token",
            Sender::Oidc(_) => "oidc",
            Sender::Insecure => "insecure",
        }
    }

    /// A description for logs: the subject for OIDC senders; never a credential.
    pub fn describe(&self) -> &str {
        match self {
            Sender::Token => "events.token",
            Sender::Oidc(subject) => subject,
            Sender::Insecure => "unauthenticated (events.insecure)",
        }
    }
}

/// Authenticates the senders of one function's CloudEvents. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SenderAuth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    receiver: Receiver,
    token: Option<Secret>,
    oidc: Option<OidcVerifier>,
    insecure: bool,
    authenticated: CounterFamily,
    refused: CounterFamily,
}

impl SenderAuth {
    /// The authenticator of `receiver`'s `POST /`, from the config's `events` section. OIDC
    /// keys are fetched through `kube` (the API server's OIDC discovery) on first use.
    pub fn new(
        receiver: Receiver,
        events: &Events,
        kube: Option<kube::Client>,
        metrics: &Metrics,
    ) -> Self {
        let oidc = receiver.oidc_settings(events).map(|settings| {
            let issuer = events.oidc.as_ref().and_then(|oidc| oidc.issuer.clone());
            OidcVerifier::new(
                kube,
                issuer,
                settings
                    .audience
                    .clone()
                    .unwrap_or_else(|| receiver.default_audience()),
                settings.senders.clone(),
            )
        });
        Self {
            inner: Arc::new(Inner {
                receiver,
                // An unread token (a config loaded without its secrets) accepts no one.
                token: events.token.clone().filter(Secret::is_resolved),
                oidc,
                insecure: events.insecure,
                authenticated: metrics.counter_family(
                    "tekflux_events_authenticated",
                    "CloudEvents whose sender was accepted, by function and method",
                    &["function", "method"],
                ),
                refused: metrics.counter_family(
                    "tekflux_events_refused",
                    "CloudEvents refused before reading them, by function and reason",
                    &["function", "reason"],
                ),
            }),
        }
    }

    /// The function this authenticator guards.
    pub fn receiver(&self) -> Receiver {
        self.inner.receiver
    }

    /// Says at start what the route accepts, so an open door or a closed one is visible in
    /// the first lines of the log.
    pub fn log_startup(&self) {
        let inner = &self.inner;
        let function = inner.receiver.as_str();
        if inner.insecure {
            tracing::warn!(
                function,
                "events.insecure is on: POST / accepts CloudEvents from anyone who can reach it"
            );
        } else if inner.token.is_none() && inner.oidc.is_none() {
            tracing::warn!(
                function,
                "neither events.token nor events.oidc is set for this function: POST / answers \
                 401 to every CloudEvent"
            );
        }
        if let Some(oidc) = &inner.oidc {
            tracing::info!(
                function,
                audience = oidc.audience(),
                senders = oidc.senders().len(),
                "CloudEvents accepted from Knative sender identities"
            );
        }
    }

    /// Who sent the request with `headers`.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] without valid credentials, [`Error::Forbidden`] for a valid
    /// identity that may not send to this function, [`Error::Unavailable`] when the issuer's
    /// keys cannot be fetched (the sender retries).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Sender, Error> {
        let inner = &self.inner;
        let function = inner.receiver.as_str();
        let outcome = self.check(headers).await;
        match outcome {
            Ok(sender) => {
                inner.authenticated.inc(&[function, sender.method()]);
                Ok(sender)
            }
            Err(refusal) if inner.insecure && !refusal.is_transient() => {
                tracing::debug!(function, reason = refusal.reason(), "accepted: insecure");
                inner
                    .authenticated
                    .inc(&[function, Sender::Insecure.method()]);
                Ok(Sender::Insecure)
            }
            Err(refusal) => {
                inner.refused.inc(&[function, refusal.reason()]);
                tracing::info!(
                    function,
                    reason = refusal.reason(),
                    detail = %refusal,
                    "CloudEvent sender refused"
                );
                Err(refusal.into_error(function))
            }
        }
    }

    async fn check(&self, headers: &HeaderMap) -> Result<Sender, Refusal> {
        let inner = &self.inner;
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal::Missing);
        };
        let credential = value
            .to_str()
            .ok()
            .and_then(credential_of)
            .ok_or(Refusal::NotBearer)?;
        let bearer = match credential {
            Credential::Bearer(bearer) => bearer,
            // Basic carries the static token only (as its password): it is for senders that can
            // put credentials only in a URL, like Tekton's `config-events` sink
            // (`http://tekflux:<token>@host/broker`, which Go's HTTP client sends as Basic).
            Credential::BasicPassword(password) => {
                return match &inner.token {
                    Some(token) if token_matches(password.as_bytes(), token.expose()) => {
                        Ok(Sender::Token)
                    }
                    _ => Err(Refusal::WrongToken),
                };
            }
        };
        if let Some(token) = &inner.token
            && token_matches(bearer.as_bytes(), token.expose())
        {
            return Ok(Sender::Token);
        }
        match &inner.oidc {
            Some(oidc) if oidc::looks_like_jwt(bearer) => {
                oidc.verify(bearer).await.map(Sender::Oidc)
            }
            _ => Err(Refusal::WrongToken),
        }
    }
}

/// What an `Authorization` header carries.
enum Credential<'a> {
    /// `Bearer <credential>`: the static token or a JWT.
    Bearer(&'a str),
    /// `Basic base64(user:password)`: the password, compared with the static token only.
    BasicPassword(String),
}

fn credential_of(value: &str) -> Option<Credential<'_>> {
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    if credential.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credential::Bearer(credential));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| Credential::BasicPassword(password.to_owned()));
    }
    None
}

/// Middleware for a function's `POST /`: authenticates the sender before the handler (and so
/// before the body is read), records it on the request span, and answers refusals itself.
pub async fn require_sender(
    State(auth): State<SenderAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.authenticate(request.headers()).await {
        Ok(sender) => {
            tracing::Span::current().record(crate::server::fields::SENDER, sender.describe());
            request.extensions_mut().insert(sender);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}
