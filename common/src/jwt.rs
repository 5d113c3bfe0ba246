//! JSON Web Token signatures on `ring`, the crypto library rustls and kube already use.
//!
//! `jsonwebtoken` checks a token's claims and leaves the signature arithmetic to a
//! [`CryptoProvider`]; its own providers are aws-lc (1.5 MB of the binary, here only for JWTs once
//! the S3 client runs on ring) and RustCrypto's `rsa` (whose private-key operations carry the
//! Marvin timing advisory, and tekflux signs GitHub App JWTs with an RSA key). This provider
//! does the same operations through `ring`: HMAC, RSA PKCS#1 v1.5 and PSS, ECDSA P-256/P-384 and
//! Ed25519. Call [`install`] before the first `jsonwebtoken::encode` or `decode`; the sender
//! check and the GitHub App do.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_signature, KeyPair as _};
use ring::{digest, hmac};

/// Makes [`PROVIDER`] jsonwebtoken's provider for this process. Idempotent; safe from any
/// thread.
pub fn install() {
    // `Err` means a provider is already in place: ours, installed by an earlier call.
    let _ = PROVIDER.install_default();
}

/// jsonwebtoken's cryptography through `ring`.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_component_from_private_key,
        compute_digest,
    },
};

/// Signs with one algorithm and one key; the key's family was checked when it was made.
struct RingSigner {
    algorithm: Algorithm,
    key: EncodingKey,
}

/// Verifies with one algorithm and one key; the key's family was checked when it was made.
struct RingVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    // An RSA key offered for HS256 (or any other mismatch) is refused here, not signed with.
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingSigner {
        algorithm: *algorithm,
        key: key.clone(),
    }))
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    // The classic confusion: an RSA public key used as an HMAC secret. Refused here.
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key: key.clone(),
    }))
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let key = self.key.as_bytes();
        let rng = SystemRandom::new();
        match self.algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let key = hmac::Key::new(hmac_algorithm(self.algorithm), key);
                Ok(hmac::sign(&key, message).as_ref().to_vec())
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let padding: &'static dyn ring_signature::RsaEncoding = match self.algorithm {
                    Algorithm::RS256 => &ring_signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &ring_signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &ring_signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &ring_signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &ring_signature::RSA_PSS_SHA384,
                    _ => &ring_signature::RSA_PSS_SHA512,
                };
                // PKCS#1 RSAPrivateKey, what `EncodingKey::from_rsa_der` holds.
                let pair = ring_signature::RsaKeyPair::from_der(key).map_err(failed)?;
                let mut signed = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, message, &mut signed)
                    .map_err(failed)?;
                Ok(signed)
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = if self.algorithm == Algorithm::ES256 {
                    &ring_signature::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &ring_signature::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                // PKCS#8, what `EncodingKey::from_ec_der` holds.
                let pair =
                    ring_signature::EcdsaKeyPair::from_pkcs8(curve, key, &rng).map_err(failed)?;
                let signed = pair.sign(&rng, message).map_err(failed)?;
                Ok(signed.as_ref().to_vec())
            }
            Algorithm::EdDSA => {
                // PKCS#8 v1 too (what `openssl genpkey -algorithm ed25519` writes).
                let pair = ring_signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key)
                    .map_err(failed)?;
                Ok(pair.sign(message).as_ref().to_vec())
            }
            // A newer jsonwebtoken's algorithm this provider does not know.
            other => Err(failed(format!("{other:?} is not supported"))),
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(
        &self,
        message: &[u8],
        signed: &Vec<u8>,
    ) -> std::result::Result<(), signature::Error> {
        let bad = |_| signature::Error::new();
        match (self.algorithm, self.key.kind()) {
            (
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512,
                DecodingKeyKind::SecretOrDer(secret),
            ) => {
                // Constant-time comparison inside `hmac::verify`.
                let key = hmac::Key::new(hmac_algorithm(self.algorithm), secret);
                hmac::verify(&key, message, signed).map_err(bad)
            }
            (algorithm, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                let parameters = rsa_parameters(algorithm).ok_or_else(signature::Error::new)?;
                ring_signature::RsaPublicKeyComponents { n, e }
                    .verify(parameters, message, signed)
                    .map_err(bad)
            }
            (algorithm, DecodingKeyKind::SecretOrDer(public)) => {
                let parameters: &'static dyn ring_signature::VerificationAlgorithm = match algorithm
                {
                    Algorithm::ES256 => &ring_signature::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES384 => &ring_signature::ECDSA_P384_SHA384_FIXED,
                    Algorithm::EdDSA => &ring_signature::ED25519,
                    // An RSA key as DER: PKCS#1 RSAPublicKey.
                    other => rsa_parameters(other).ok_or_else(signature::Error::new)?,
                };
                ring_signature::UnparsedPublicKey::new(parameters, public)
                    .verify(message, signed)
                    .map_err(bad)
            }
        }
    }
}

/// A signing failure as `signature`'s error; ring's errors say only what was wrong with the key
/// (`InvalidEncoding`, `TooSmall`), never the key.
fn failed(error: impl std::fmt::Display) -> signature::Error {
    signature::Error::from_source(error.to_string())
}

fn hmac_algorithm(algorithm: Algorithm) -> hmac::Algorithm {
    match algorithm {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

/// The RSA verification parameters of an RSA algorithm; keys under 2048 bits are refused.
fn rsa_parameters(algorithm: Algorithm) -> Option<&'static ring_signature::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &ring_signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = ring_signature::RsaKeyPair::from_der(der)
        .map_err(|error| Error::from(ErrorKind::InvalidRsaKey(error.to_string())))?;
    let components = ring_signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((components.n, components.e))
}

/// `n` and `e` of a PKCS#1 RSAPublicKey: `SEQUENCE { INTEGER n, INTEGER e }`. ring verifies with
/// such DER but does not take it apart, so this reads the two integers itself.
fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let invalid = || Error::from(ErrorKind::InvalidRsaKey("not a PKCS#1 RSAPublicKey".into()));
    let (sequence, rest) = der_element(der, 0x30).ok_or_else(invalid)?;
    if !rest.is_empty() {
        return Err(invalid());
    }
    let (n, rest) = der_element(sequence, 0x02).ok_or_else(invalid)?;
    let (e, rest) = der_element(rest, 0x02).ok_or_else(invalid)?;
    if !rest.is_empty() {
        return Err(invalid());
    }
    Ok((unsigned(n).to_vec(), unsigned(e).to_vec()))
}

/// The contents of the DER element at the start of `input` if its tag is `tag`, and what
/// follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits say how many length bytes follow (at most 4 here).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        (length, rest)
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// A DER INTEGER's big-endian magnitude, without the sign byte DER adds to a high first bit.
fn unsigned(integer: &[u8]) -> &[u8] {
    match integer {
        [0, rest @ ..] if !rest.is_empty() => rest,
        whole => whole,
    }
}

fn ec_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve) = match algorithm {
        Algorithm::ES256 => (
            &ring_signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
        ),
        Algorithm::ES384 => (
            &ring_signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
        ),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = ring_signature::EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    // The uncompressed point: 0x04, then x and y of equal length.
    match pair.public_key().as_ref().split_first() {
        Some((0x04, point)) if point.len() % 2 == 0 => {
            let (x, y) = point.split_at(point.len() / 2);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_component_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = ring_signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_read_with_long_lengths_and_sign_bytes() {
        // SEQUENCE (long form length 0x81 0x0a) { INTEGER 00 ff 01, INTEGER 01 00 01 }.
        let der = [
            0x30, 0x81, 0x0a, 0x02, 0x03, 0x00, 0xff, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        let (n, e) = rsa_components_from_public_key(&der).unwrap();
        assert_eq!(n, [0xff, 0x01]);
        assert_eq!(e, [0x01, 0x00, 0x01]);
    }

    #[test]
    fn malformed_public_key_der_is_refused() {
        for der in [
            &[][..],
            &[0x31, 0x00],
            &[0x30, 0x05, 0x02, 0x01, 0x01],
            &[0x30, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x03, 0x00],
            &[0x30, 0x85, 0, 0, 0, 0, 0],
        ] {
            assert!(rsa_components_from_public_key(der).is_err(), "{der:?}");
        }
    }

    #[test]
    fn keys_of_another_family_are_refused_for_an_algorithm() {
        let secret = EncodingKey::from_secret(b"secret").unwrap();
        assert!(new_signer(&Algorithm::RS256, &secret).is_err());
        let public = DecodingKey::from_rsa_raw_components(&[1; 256], &[1, 0, 1]);
        assert!(new_verifier(&Algorithm::HS256, &public).is_err());
        assert!(new_verifier(&Algorithm::RS256, &public).is_ok());
    }

    #[test]
    fn hmac_tokens_round_trip_and_a_changed_byte_fails() {
        install();
        let key = EncodingKey::from_secret(b"a shared secret").unwrap();
        let signer = new_signer(&Algorithm::HS256, &key).unwrap();
        let signed = signer.try_sign(b"message").unwrap();
        let verifier = new_verifier(
            &Algorithm::HS256,
            &DecodingKey::from_secret(b"a shared secret").unwrap(),
        )
        .unwrap();
        assert!(verifier.verify(b"message", &signed).is_ok());
        assert!(verifier.verify(b"messagf", &signed).is_err());
    }
}
