//! A service-account issuer of the tests' own: it signs tokens shaped like the ones Knative
//! Eventing sends with its sender identity (`authentication-oidc`), and publishes its keys
//! through the [`TestApiServer`] the way a cluster's API server does (OIDC discovery + JWKS).
//!
//! The keys under `tests/data/oidc/` were generated for these tests only and protect nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::jwt::{TestAlgorithm, base64url, public_jwk};
use crate::kube_api::TestApiServer;

/// The issuer of a kubeadm cluster, which the test issuer names by default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// One signing key with its published half.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: TestAlgorithm,
    private_der: &'static [u8],
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The first (`which = 1`) or second (`2`) RSA test key, signing RS256 as Kubernetes does.
    pub fn rsa(kid: &str, which: u8) -> Self {
        let der: &[u8] = match which {
            1 => include_bytes!("../data/oidc/rsa-1.pkcs1.der"),
            _ => include_bytes!("../data/oidc/rsa-2.pkcs1.der"),
        };
        Self::new(kid, TestAlgorithm::Rs256, der)
    }

    /// The P-256 test key, signing ES256 (clusters whose issuer key is ECDSA).
    pub fn ec(kid: &str) -> Self {
        let der = include_bytes!("../data/oidc/ec-p256.pkcs8.der");
        Self::new(kid, TestAlgorithm::Es256, der)
    }

    fn new(kid: &str, alg: TestAlgorithm, private_der: &'static [u8]) -> Self {
        Self {
            kid: kid.to_owned(),
            alg,
            private_der,
            jwk: public_jwk(alg, private_der, kid),
        }
    }

    /// The key id tokens signed with this key name.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// A service-account issuer: its name and the keys it publishes.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    issuer: String,
    keys: Vec<SigningKey>,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    /// [`ISSUER`], publishing an RSA key (`rsa-1`, the one tokens are signed with by default)
    /// and an ECDSA key (`ec-1`).
    pub fn new() -> Self {
        Self {
            issuer: ISSUER.to_owned(),
            keys: vec![SigningKey::rsa("rsa-1", 1), SigningKey::ec("ec-1")],
        }
    }

    /// The issuer's name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The published key with id `kid`.
    pub fn key(&self, kid: &str) -> SigningKey {
        match self.keys.iter().find(|key| key.kid == kid) {
            Some(key) => key.clone(),
            None => panic!("the test issuer has no key {kid}"),
        }
    }

    /// The same issuer publishing `keys` instead (a key rotation).
    pub fn with_keys(&self, keys: Vec<SigningKey>) -> Self {
        Self {
            issuer: self.issuer.clone(),
            keys,
        }
    }

    /// The JWKS document the API server serves at `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()})
    }

    /// Makes `api` serve this issuer's discovery document and keys.
    pub fn publish(&self, api: &TestApiServer) {
        api.set_oidc(&self.issuer, self.jwks());
    }

    /// A token for `audience` and `subject`, valid for an hour, signed with the first key;
    /// the builder changes any of that.
    pub fn token(&self, audience: &str, subject: &str) -> TokenBuilder {
        let now = now();
        let claims = json!({
            "iss": self.issuer,
            "aud": [audience],
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "kubernetes.io": {"namespace": "cicd", "serviceaccount": {"name": subject, "uid": "u-1"}},
        });
        TokenBuilder {
            key: self.keys[0].clone(),
            kid: None,
            claims: match claims {
                Value::Object(map) => map,
                _ => Map::new(),
            },
        }
    }
}

/// A token being built; [`TokenBuilder::sign`] finishes it.
#[derive(Debug)]
pub struct TokenBuilder {
    key: SigningKey,
    kid: Option<String>,
    claims: Map<String, Value>,
}

impl TokenBuilder {
    /// Sets (or with `Value::Null`, removes) a claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        if value.is_null() {
            self.claims.remove(name);
        } else {
            self.claims.insert(name.to_owned(), value);
        }
        self
    }

    /// Expiry `seconds` from now (negative: already expired).
    pub fn expires_in(self, seconds: i64) -> Self {
        self.claim("exp", json!(now() + seconds))
    }

    /// Signs with `key` (and names its id).
    pub fn signed_with(mut self, key: SigningKey) -> Self {
        self.key = key;
        self
    }

    /// Names key id `kid` in the header, whatever key signs.
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// The compact JWT.
    pub fn sign(self) -> String {
        let header = json!({"typ": "JWT", "kid": self.kid.unwrap_or(self.key.kid)});
        crate::jwt::sign(
            self.key.alg,
            self.key.private_der,
            &header,
            &Value::Object(self.claims),
        )
    }

    /// The same claims as an unsigned token (`alg: none`), which no verifier may accept.
    pub fn unsigned(self) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": self.kid.unwrap_or(self.key.kid)});
        format!(
            "{}.{}.",
            base64url(header.to_string().as_bytes()),
            base64url(Value::Object(self.claims).to_string().as_bytes())
        )
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}
