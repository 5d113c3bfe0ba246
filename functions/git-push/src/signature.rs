//! Webhook authentication, checked on the raw body bytes before anything is parsed.
//!
//! The provider table ([`tekflux_common::provider`]) says which header holds what:
//!
//! | provider        | header                                          | value                     |
//! |-----------------|-------------------------------------------------|---------------------------|
//! | GitHub (+GHES)  | `X-Hub-Signature-256`                           | `sha256=` + hex HMAC-SHA256 |
//! | Gitea           | `X-Gitea-Signature`                             | hex HMAC-SHA256           |
//! | Forgejo         | `X-Forgejo-Signature`, else `X-Gitea-Signature` | hex HMAC-SHA256           |
//! | Bitbucket Cloud | `X-Hub-Signature`                               | `sha256=` + hex HMAC-SHA256 |
//! | GitLab          | `X-Gitlab-Token`                                | the configured token      |
//!
//! GitHub's SHA-1 `X-Hub-Signature` is not accepted: SHA-256 has been sent next to it since 2020.
//! Every comparison is constant-time: HMACs through `Mac::verify_slice`, GitLab's token by
//! comparing SHA-256 digests of both sides, so neither its content nor its length leaks through
//! timing. A malformed header gets the same answer as a wrong one.
//!
//! A provider without a secret rejects every webhook unless its settings say `insecure: true`.
//! When a secret is configured it is always checked, `insecure` or not.
//!
//! A verified webhook proves only who sent it, not which repository it may start: routing
//! ([`crate::routing`]) then matches it only against rules bound to that provider, so one
//! provider's secret (or its `insecure: true`) cannot start another provider's rules.

use http::HeaderMap;
use tekflux_common::config::Providers;
use tekflux_common::provider::{Header, SecretKind, Verification};
use tekflux_common::webhook_auth::{hmac_sha256_hex, hmac_sha256_matches, token_matches};

use crate::error::WebhookError;
use crate::push::Provider;

/// GitHub's SHA-256 signature header.
pub const GITHUB_SIGNATURE: &str = table_header(Provider::Github, 0);
/// Bitbucket Cloud's signature header (SHA-256 despite the name).
pub const BITBUCKET_SIGNATURE: &str = table_header(Provider::Bitbucket, 0);
/// Gitea's signature header, also sent by Forgejo.
pub const GITEA_SIGNATURE: &str = table_header(Provider::Gitea, 0);
/// Forgejo's own signature header.
pub const FORGEJO_SIGNATURE: &str = table_header(Provider::Forgejo, 0);
/// GitLab's shared-secret header.
pub const GITLAB_TOKEN: &str = table_header(Provider::Gitlab, 0);

/// The `index`th header (lowercase) that the provider table says `provider` authenticates
/// with, for the names above; an index past the row's headers does not compile.
const fn table_header(provider: Provider, index: usize) -> &'static str {
    match tekflux_common::provider::GIT[provider as usize].verification {
        Verification::Hmac { headers, .. } => headers[index].name,
        Verification::Token { header } => header.name,
    }
}

/// Checks that `body` was sent by `provider` with the configured `secret` (GitLab: token), as
/// the provider table's verification says.
///
/// `secret` is `None` (or empty) when none is configured: then the webhook is accepted only
/// when `insecure` is true.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: Option<&[u8]>,
    insecure: bool,
) -> Result<(), WebhookError> {
    let secret = match secret {
        Some(secret) if !secret.is_empty() => secret,
        _ if insecure => return Ok(()),
        _ => return Err(WebhookError::NoSecret { provider }),
    };
    match provider.spec().verification {
        Verification::Hmac {
            headers: names,
            prefix,
        } => check_hmac(provider, headers, names, prefix, body, secret),
        Verification::Token { header } => check_token(provider, headers, header, secret),
    }
}

/// Verifies with `provider`'s entry of the config file's `providers` (absent: no secret).
///
/// A provider that takes a `token` (GitLab) falls back to `secret`, the others use `secret`.
/// Forgejo reads only its own `forgejo` entry, never Gitea's: the two are configured separately.
pub fn verify_with(
    provider: Provider,
    providers: &Providers,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), WebhookError> {
    let Some(settings) = providers.git(provider) else {
        return verify(provider, headers, body, None, false);
    };
    let configured = match provider.spec().secret {
        SecretKind::Token => settings.token.as_ref().or(settings.secret.as_ref()),
        SecretKind::Secret => settings.secret.as_ref(),
    };
    // A secret that was never read (a config loaded without its secrets) is no secret: the
    // webhook is refused rather than checked against an empty key.
    let configured = configured.filter(|secret| secret.is_resolved());
    verify(
        provider,
        headers,
        body,
        configured.map(|s| s.expose()),
        settings.insecure,
    )
}

/// The header `provider`'s signature or token is read from (the first one, for Forgejo),
/// lowercase.
pub fn signature_header(provider: Provider) -> &'static str {
    provider.spec().verification.header().name
}

/// Computes the hex HMAC-SHA256 of `body`, as providers send it (without any `sha256=` prefix).
/// Used by tests and by the CLI that replays webhooks.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    hmac_sha256_hex(secret, body)
}

fn check_hmac(
    provider: Provider,
    headers: &HeaderMap,
    names: &'static [Header],
    prefix: &str,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let Some((header, value)) = names
        .iter()
        .find_map(|header| headers.get(header.name).map(|v| (header, v)))
    else {
        return Err(WebhookError::MissingSignature {
            provider,
            header: provider.spec().verification.header().display,
        });
    };
    let bad = WebhookError::BadSignature {
        provider,
        header: header.display,
    };
    let value = value.to_str().map_err(|_| bad.clone())?.trim();
    let hex_digest = value.strip_prefix(prefix).ok_or_else(|| bad.clone())?;
    if hmac_sha256_matches(secret, body, hex_digest) {
        Ok(())
    } else {
        Err(bad)
    }
}

fn check_token(
    provider: Provider,
    headers: &HeaderMap,
    header: Header,
    token: &[u8],
) -> Result<(), WebhookError> {
    let Some(value) = headers.get(header.name) else {
        return Err(WebhookError::MissingSignature {
            provider,
            header: header.display,
        });
    };
    if token_matches(value.as_bytes(), token) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature {
            provider,
            header: header.display,
        })
    }
}
