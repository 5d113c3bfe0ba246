//! Constant-time checks of webhook credentials, for every function that takes webhooks (git
//! providers in git-push; Flux and container registries in release-changed). Callers decide
//! which header holds what and how to answer; the comparisons live here once.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The lowercase hex HMAC-SHA256 of `body` under `secret`, as senders put it in their header
/// (without any `sha256=` prefix).
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Whether `hex_digest` (any case) is the HMAC-SHA256 of `body` under `secret`, compared in
/// constant time. Malformed hex is simply no match.
pub fn hmac_sha256_matches(secret: &[u8], body: &[u8], hex_digest: &str) -> bool {
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Whether a shared token sent by a caller equals the configured one. Both sides are hashed
/// first, so neither the token's content nor its length leaks through timing.
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    bool::from(Sha256::digest(given).ct_eq(&Sha256::digest(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmacs_and_tokens_match_only_themselves() {
        // RFC 4231, test case 2.
        let digest = hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            digest,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            &digest
        ));
        assert!(hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            &digest.to_uppercase()
        ));
        assert!(!hmac_sha256_matches(b"Jefe", b"what do ya want?", &digest));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            "zz"
        ));
        assert!(token_matches(b"t0ken", b"t0ken"));
        assert!(!token_matches(b"t0ken", b"t0ken2"));
    }
}
