//! Verification of Knative Eventing sender identities: Kubernetes service-account JWTs.
//!
//! The keys come from the cluster's own issuer through the API server (OIDC discovery at
//! `/.well-known/openid-configuration` for the issuer, keys at `/openid/v1/jwks`; every service
//! account may read both through the default `system:service-account-issuer-discovery`
//! binding). They are cached for [`KEYS_TTL`] and fetched again when a token names a key id the
//! cache does not hold (the issuer rotated its keys), at most once per [`MIN_REFRESH_INTERVAL`]
//! so that tokens with made-up key ids cannot turn into a flood of API calls.
//!
//! A token is accepted when its algorithm is an asymmetric one Kubernetes signs with (never
//! `none` or an HMAC, which would let the public key act as a shared secret), its signature
//! checks out under the named key, `iss` is the issuer, `aud` holds the function's audience,
//! `exp`/`nbf` hold within [`LEEWAY_SECONDS`], and `sub` is one of the allowed senders.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::error::Error;

/// How long fetched keys are used before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
/// The least time between two fetches caused by unknown key ids.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;
/// Where the API server announces its service-account issuer.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where the API server serves the issuer's public keys.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Algorithms Kubernetes signs service-account tokens with (RSA keys: RS256; ECDSA keys:
/// ES256/ES384 by curve).
const ACCEPTED_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::ES384];

/// Why a sender was refused. Never holds the credential itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header.
    #[error(
        "no credentials: send `Authorization: Bearer <token>` with events.token, or enable \
         Knative's sender identity (OIDC) and list the Trigger in events.oidc"
    )]
    Missing,
    /// An `Authorization` header that is neither `Bearer <credential>` nor `Basic` with a
    /// password.
    #[error(
        "the Authorization header is neither `Bearer <token>` nor `Basic` with events.token as \
         the password"
    )]
    NotBearer,
    /// A bearer credential that is neither the configured token nor a JWT this function checks.
    #[error("the bearer token is not events.token, and no OIDC sender is configured for it")]
    WrongToken,
    /// A JWT that cannot be decoded, or names an algorithm no verifier knows (`none`).
    #[error(
        "the bearer token is not a well-formed JWT signed with an accepted algorithm (RS256, \
         ES256, ES384)"
    )]
    Malformed,
    /// A JWT signed with an algorithm Kubernetes does not use (`none`, HMAC, …).
    #[error("the token's algorithm {0} is not accepted (RS256, ES256, ES384)")]
    Algorithm(String),
    /// A key id the issuer does not publish, even after fetching its keys again.
    #[error("the token names key id {0:?}, which the cluster's issuer does not publish")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the token's signature does not verify against the issuer's key")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the cluster's issuer.
    #[error("the token was issued by another issuer than the cluster's")]
    WrongIssuer,
    /// `aud` does not name this function.
    #[error("the token was issued for another audience than {0:?}")]
    WrongAudience(String),
    /// A required claim is missing.
    #[error("the token has no {0:?} claim")]
    MissingClaim(String),
    /// A valid identity that is not allowed to send to this function.
    #[error("sender {0:?} is not allowed to send to this function")]
    Subject(String),
    /// The issuer's keys could not be fetched; the sender should retry.
    #[error("the cluster's OIDC keys are unavailable: {0}")]
    IssuerUnavailable(String),
}

impl Refusal {
    /// A short, stable name for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing_credentials",
            Refusal::NotBearer => "not_bearer",
            Refusal::WrongToken => "wrong_token",
            Refusal::Malformed => "malformed_token",
            Refusal::Algorithm(_) => "algorithm",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience(_) => "wrong_audience",
            Refusal::MissingClaim(_) => "missing_claim",
            Refusal::Subject(_) => "sender_not_allowed",
            Refusal::IssuerUnavailable(_) => "issuer_unavailable",
        }
    }

    /// True when the same request may succeed later (the keys could not be fetched).
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::IssuerUnavailable(_))
    }

    /// The answer: 401 without valid credentials, 403 for a valid identity not allowed here,
    /// 503 when the keys could not be fetched.
    pub fn into_error(self, function: &str) -> Error {
        match self {
            Refusal::Subject(_) => Error::Forbidden(format!("{function}: {self}")),
            Refusal::IssuerUnavailable(_) => Error::Unavailable(format!("{function}: {self}")),
            _ => Error::Unauthorized(format!("{function}: {self}")),
        }
    }
}

/// Whether a bearer credential has a JWT's shape (three base64url parts), as opposed to a
/// static token.
pub fn looks_like_jwt(credential: &str) -> bool {
    let mut parts = 0;
    for part in credential.split('.') {
        parts += 1;
        if (part.is_empty() && parts < 3)
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// The claims a sender identity is judged by; the standard ones are checked by `jsonwebtoken`.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Optional here so that a missing `sub` is reported as such by the validation.
    sub: Option<String>,
}

/// The issuer's keys as last fetched.
struct KeySet {
    issuer: String,
    keys: HashMap<String, DecodingKey>,
    fetched: Instant,
}

/// Verifies one function's sender identities; keys are fetched through the Kubernetes client.
pub struct OidcVerifier {
    kube: Option<kube::Client>,
    configured_issuer: Option<String>,
    audience: String,
    senders: Vec<String>,
    keys: RwLock<Option<KeySet>>,
    /// Held while fetching; when a token's unknown key id last caused a fetch.
    last_unknown_refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.configured_issuer)
            .field("audience", &self.audience)
            .field("senders", &self.senders)
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier for tokens issued for `audience` to one of `senders`; `issuer` pins `iss`
    /// (otherwise the API server's discovery document names it).
    pub fn new(
        kube: Option<kube::Client>,
        issuer: Option<String>,
        audience: String,
        senders: Vec<String>,
    ) -> Self {
        crate::jwt::install();
        Self {
            kube,
            configured_issuer: issuer,
            audience,
            senders,
            keys: RwLock::new(None),
            last_unknown_refresh: Mutex::new(None),
        }
    }

    /// The audience tokens must be issued for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The allowed senders.
    pub fn senders(&self) -> &[String] {
        &self.senders
    }

    /// The token's subject, when the token is valid and its subject may send here.
    ///
    /// # Errors
    /// The [`Refusal`] that says why not.
    pub async fn verify(&self, token: &str) -> Result<String, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| Refusal::MissingClaim("kid".to_owned()))?;
        let (issuer, key) = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| self.refusal(error.kind()))?
            .claims;
        let subject = claims
            .sub
            .ok_or_else(|| Refusal::MissingClaim("sub".to_owned()))?;
        if self
            .senders
            .iter()
            .any(|allowed| matches(allowed, &subject))
        {
            Ok(subject)
        } else {
            Err(Refusal::Subject(subject))
        }
    }

    fn refusal(&self, kind: &ErrorKind) -> Refusal {
        match kind {
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
            ErrorKind::InvalidAudience => Refusal::WrongAudience(self.audience.clone()),
            ErrorKind::MissingRequiredClaim(claim) => Refusal::MissingClaim(claim.clone()),
            ErrorKind::InvalidSignature => Refusal::BadSignature,
            ErrorKind::InvalidAlgorithm => Refusal::Algorithm("that does not fit the key".into()),
            _ => Refusal::Malformed,
        }
    }

    /// The expected issuer and the key `kid`, fetching the keys when they are missing or old,
    /// or when `kid` is unknown (no more than once per [`MIN_REFRESH_INTERVAL`] for that cause).
    async fn key(&self, kid: &str) -> Result<(String, DecodingKey), Refusal> {
        if let Some(found) = self.cached(kid, true).await {
            return Ok(found);
        }
        let mut last_unknown = self.last_unknown_refresh.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(found) = self.cached(kid, true).await {
            return Ok(found);
        }
        let (have_keys, fresh) = match &*self.keys.read().await {
            Some(keys) => (true, keys.fetched.elapsed() <= KEYS_TTL),
            None => (false, false),
        };
        let unknown_kid = have_keys && fresh;
        let spaced = last_unknown.is_none_or(|at| at.elapsed() >= MIN_REFRESH_INTERVAL);
        if !unknown_kid || spaced {
            if unknown_kid {
                *last_unknown = Some(Instant::now());
            }
            match self.fetch().await {
                Ok(keys) => *self.keys.write().await = Some(keys),
                // Old keys stay usable while the API server cannot be reached.
                Err(error) if have_keys => {
                    tracing::warn!(%error, "refreshing the cluster's OIDC keys failed");
                }
                Err(error) => return Err(error),
            }
        }
        self.cached(kid, false)
            .await
            .ok_or_else(|| Refusal::UnknownKey(kid.to_owned()))
    }

    async fn cached(&self, kid: &str, fresh_only: bool) -> Option<(String, DecodingKey)> {
        let keys = self.keys.read().await;
        let keys = keys.as_ref()?;
        if fresh_only && keys.fetched.elapsed() > KEYS_TTL {
            return None;
        }
        let key = keys.keys.get(kid)?.clone();
        Some((keys.issuer.clone(), key))
    }

    async fn fetch(&self) -> Result<KeySet, Refusal> {
        let Some(kube) = &self.kube else {
            return Err(Refusal::IssuerUnavailable(
                "no Kubernetes client, so the cluster's issuer cannot be asked".to_owned(),
            ));
        };
        let issuer = match &self.configured_issuer {
            Some(issuer) => issuer.clone(),
            None => {
                let discovery: Discovery = get_json(kube, DISCOVERY_PATH).await?;
                discovery.issuer
            }
        };
        let set: JwkSet = get_json(kube, JWKS_PATH).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid.clone(), key);
                }
                Err(error) => tracing::warn!(kid, %error, "skipping an unusable OIDC key"),
            }
        }
        tracing::info!(issuer, keys = keys.len(), "fetched the cluster's OIDC keys");
        Ok(KeySet {
            issuer,
            keys,
            fetched: Instant::now(),
        })
    }
}

/// The part of the OIDC discovery document used here.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
}

async fn get_json<T: serde::de::DeserializeOwned>(
    kube: &kube::Client,
    path: &str,
) -> Result<T, Refusal> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|error| Refusal::IssuerUnavailable(format!("GET {path}: {error}")))?;
    let text = kube.request_text(request).await.map_err(|error| {
        let hint = match &error {
            kube::Error::Api(status) if status.code == 403 || status.code == 401 => {
                "; bind the system:service-account-issuer-discovery ClusterRole to this \
                 function's ServiceAccount"
            }
            _ => "",
        };
        Refusal::IssuerUnavailable(format!("GET {path} through the API server: {error}{hint}"))
    })?;
    serde_json::from_str(&text).map_err(|error| {
        Refusal::IssuerUnavailable(format!("GET {path} answered something unreadable: {error}"))
    })
}

/// Whether `subject` is `allowed`, where a trailing `*` in `allowed` matches any rest.
fn matches(allowed: &str, subject: &str) -> bool {
    match allowed.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => allowed == subject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_is_told_from_static_tokens() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("a.b."));
        assert!(!looks_like_jwt("s3cr3t-token"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a b.c.d"));
    }

    #[test]
    fn senders_match_exactly_or_by_trailing_star() {
        let sub = "system:serviceaccount:cicd:git-push-github-oidc-eventing.knative.dev-trigger";
        assert!(matches(sub, sub));
        assert!(matches("system:serviceaccount:cicd:git-push-*", sub));
        assert!(!matches("system:serviceaccount:cicd:git-push", sub));
        assert!(!matches("system:serviceaccount:other:*", sub));
    }

    #[test]
    fn refusals_map_to_statuses_knative_does_not_retry() {
        use axum::http::StatusCode;
        let status = |refusal: Refusal| refusal.into_error("git-push").status();
        assert_eq!(status(Refusal::Missing), StatusCode::UNAUTHORIZED);
        assert_eq!(status(Refusal::BadSignature), StatusCode::UNAUTHORIZED);
        assert_eq!(status(Refusal::Subject("x".into())), StatusCode::FORBIDDEN);
        assert_eq!(
            status(Refusal::IssuerUnavailable("down".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
