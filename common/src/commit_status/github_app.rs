//! GitHub App authentication for check runs: a JWT signed with the App's private key (RS256,
//! issued 60 s in the past, expiring 9 minutes ahead) is exchanged for an installation token at
//! `POST /app/installations/{id}/access_tokens`. Installation tokens live an hour and a run can
//! take longer, so a token is minted when a report needs one and reused for at most 50 minutes.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::GithubAppSettings;

/// How long a minted installation token is reused (GitHub's last an hour).
const TOKEN_REUSE: Duration = Duration::from_secs(50 * 60);

/// A GitHub App installation, able to mint tokens.
pub struct GithubApp {
    app_id: u64,
    installation_id: u64,
    key: EncodingKey,
    cached: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

/// The DER bytes of a PEM block labelled `label` (e.g. `RSA PRIVATE KEY`).
pub fn pem_block(pem: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the key is not PEM text".to_owned())?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no `{begin}` block"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no `{end}` line"))?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| format!("the `{label}` block is not base64"))
}

impl GithubApp {
    /// The App of `settings`, whose private key is resolved. The key must be the PKCS#1 PEM
    /// GitHub hands out (`BEGIN RSA PRIVATE KEY`); errors never include key material.
    pub fn new(settings: &GithubAppSettings) -> Result<Self, String> {
        crate::jwt::install();
        let pem = settings.private_key.expose();
        let der = pem_block(pem, "RSA PRIVATE KEY").map_err(|error| {
            format!(
                "{}: {error}; GitHub's downloaded key (BEGIN RSA PRIVATE KEY) is expected, convert \
                 a PKCS#8 key with `openssl rsa -traditional`",
                settings.private_key
            )
        })?;
        // Parsed now, so that a key that cannot sign fails at start, not at the first check run.
        // ring's reasons name what is wrong (`InvalidEncoding`, `TooSmall`), never the key.
        ring::signature::RsaKeyPair::from_der(&der).map_err(|error| {
            format!(
                "{}: the `RSA PRIVATE KEY` block is not an RSA key tekflux can sign with \
                 ({error}); GitHub's downloaded key (2048 bits) is expected",
                settings.private_key
            )
        })?;
        Ok(Self {
            app_id: settings.id,
            installation_id: settings.installation_id,
            key: EncodingKey::from_rsa_der(&der),
            cached: Mutex::new(None),
        })
    }

    /// The App's JWT at `now` (seconds since the epoch).
    pub fn jwt(&self, now: u64) -> Result<String, String> {
        let claims = Claims {
            iat: now.saturating_sub(60),
            exp: now + 9 * 60,
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|error| format!("cannot sign the GitHub App JWT: {error}"))
    }

    /// The path that mints an installation token.
    pub fn access_tokens_path(&self) -> String {
        format!("/app/installations/{}/access_tokens", self.installation_id)
    }

    /// A token minted less than [`TOKEN_REUSE`] ago.
    pub fn cached_token(&self) -> Option<String> {
        let cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|(_, minted)| minted.elapsed() < TOKEN_REUSE)
            .map(|(token, _)| token.clone())
    }

    /// Keeps `token` for reuse; `None` forgets the one kept (after a 401).
    pub fn keep_token(&self, token: Option<String>) {
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            token.map(|token| (token, Instant::now()));
    }
}

/// Seconds since the epoch.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
