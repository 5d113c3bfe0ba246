//! Compact JSON Web Tokens for the test doubles (the service-account issuer, the fake GitHub),
//! signed and checked with `ring` directly. They share no code with the provider tekflux signs
//! and verifies with (`tekflux_common::jwt`), so a mistake there cannot hide behind the same
//! mistake here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{Value, json};

/// The signature algorithms the test keys sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256 (Kubernetes' default), from a PKCS#1 private key.
    Rs256,
    /// ECDSA P-256 with SHA-256, from a PKCS#8 private key.
    Es256,
}

impl TestAlgorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// `header.claims.signature`, with `alg` set in `header` from `algorithm`.
///
/// # Panics
/// When `private_der` is not a key of that algorithm (a broken test fixture).
pub fn sign(
    algorithm: TestAlgorithm,
    private_der: &[u8],
    header: &Value,
    claims: &Value,
) -> String {
    let mut header = header.clone();
    header["alg"] = json!(algorithm.name());
    let message = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let rng = SystemRandom::new();
    let signed = match algorithm {
        TestAlgorithm::Rs256 => {
            let pair = rsa_key(private_der);
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                message.as_bytes(),
                &mut out,
            )
            .unwrap_or_else(|error| panic!("cannot sign with the RSA test key: {error}"));
            out
        }
        TestAlgorithm::Es256 => p256_key(private_der)
            .sign(&rng, message.as_bytes())
            .unwrap_or_else(|error| panic!("cannot sign with the P-256 test key: {error}"))
            .as_ref()
            .to_vec(),
    };
    format!("{message}.{}", base64url(&signed))
}

/// The public JWK of a private key, as a cluster's `/openid/v1/jwks` lists it.
///
/// # Panics
/// When `private_der` is not a key of that algorithm.
pub fn public_jwk(algorithm: TestAlgorithm, private_der: &[u8], kid: &str) -> Value {
    match algorithm {
        TestAlgorithm::Rs256 => {
            let public =
                signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa_key(private_der).public());
            json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                   "n": base64url(&public.n), "e": base64url(&public.e)})
        }
        TestAlgorithm::Es256 => {
            let pair = p256_key(private_der);
            // 0x04, then x and y, 32 bytes each.
            let point = &pair.public_key().as_ref()[1..];
            let (x, y) = point.split_at(32);
            json!({"use": "sig", "kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
                   "x": base64url(x), "y": base64url(y)})
        }
    }
}

/// A PKCS#1 RSA test key.
fn rsa_key(private_der: &[u8]) -> signature::RsaKeyPair {
    signature::RsaKeyPair::from_der(private_der)
        .unwrap_or_else(|error| panic!("the RSA test key is unusable: {error}"))
}

/// A PKCS#8 P-256 test key.
fn p256_key(private_der: &[u8]) -> signature::EcdsaKeyPair {
    signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        private_der,
        &SystemRandom::new(),
    )
    .unwrap_or_else(|error| panic!("the P-256 test key is unusable: {error}"))
}

/// The claims of an RS256 token whose signature `public_pkcs1_der` (an RSAPublicKey) verifies;
/// `None` for anything else (another algorithm, a bad signature, a malformed token).
pub fn verified_rs256_claims(token: &str, public_pkcs1_der: &[u8]) -> Option<Value> {
    let (message, signed) = token.rsplit_once('.')?;
    let (header, claims) = message.split_once('.')?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "RS256" {
        return None;
    }
    let signed = URL_SAFE_NO_PAD.decode(signed).ok()?;
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_pkcs1_der)
        .verify(message.as_bytes(), &signed)
        .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// Unpadded base64url (RFC 7515's encoding of every token part).
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
