//! The provider table: every sender whose webhooks a `providers` entry authenticates, and all
//! that tekflux knows about it in one row.
//!
//! A row says the provider's config key (also its `/webhooks/<key>` path segment and its metric
//! label), which credential it takes (`secret` or `token`), the environment variables that set
//! that credential and its commit-status token, the headers its webhooks carry (event, delivery,
//! signature) and how they are verified, the largest body it sends and the hosts known to be
//! its. The config (overrides, secrets, validation, rule binding), git-push (detection, header
//! reading, signatures) and the CLI derive from these rows; a new provider is a new row, a
//! variant of [`GitProvider`] for a git provider, its field in [`crate::config::Providers`], and
//! its payload adapter in git-push.
//!
//! Knative's GitHubSource and GitLabSource are not rows: they arrive as CloudEvents, already
//! verified by the source, and carry no credential of their own in the config.

use serde::{Deserialize, Serialize};

mod rows;

pub use rows::{FLUX, GIT, OTHER, REGISTRY};

/// A git provider: who sends pushes, and who a `repositories` rule is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitProvider {
    /// GitHub.com or GitHub Enterprise Server.
    Github,
    /// GitLab.com or self-managed GitLab.
    Gitlab,
    /// Gitea.
    Gitea,
    /// Forgejo.
    Forgejo,
    /// Bitbucket Cloud.
    Bitbucket,
}

impl GitProvider {
    /// Every git provider, in the order the config lists them (the order of [`GIT`]).
    pub const ALL: [GitProvider; 5] = [
        GitProvider::Github,
        GitProvider::Gitlab,
        GitProvider::Gitea,
        GitProvider::Forgejo,
        GitProvider::Bitbucket,
    ];

    /// The provider's row of the table.
    pub fn spec(self) -> &'static ProviderSpec {
        // `GIT` is in declaration order (checked by a test), so the discriminant is the row.
        &GIT[self as usize]
    }

    /// The lowercase name used in config keys, paths (`/webhooks/{provider}`) and labels.
    pub fn as_str(self) -> &'static str {
        self.spec().key
    }

    /// The provider a `/webhooks/<segment>` path (or a run's provider label) names; `None` for
    /// anything else, including other letter cases.
    pub fn from_path_segment(segment: &str) -> Option<GitProvider> {
        GitProvider::ALL
            .into_iter()
            .find(|provider| provider.as_str() == segment)
    }

    /// The largest webhook body the provider sends, in bytes (see [`ProviderSpec::max_webhook_bytes`]).
    pub fn max_webhook_bytes(self) -> usize {
        self.spec().max_webhook_bytes
    }

    /// The headers of the provider's webhooks.
    pub fn headers(self) -> &'static WebhookHeaders {
        // Every git row has webhook headers (checked by a test); `EMPTY_HEADERS` is never used.
        self.spec().webhook.as_ref().unwrap_or(&EMPTY_HEADERS)
    }
}

impl std::fmt::Display for GitProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which key of its `providers` entry holds a provider's webhook credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `secret`: an HMAC key; the sender signs the body with it.
    Secret,
    /// `token`: a shared token the sender puts in a header whole.
    Token,
}

impl SecretKind {
    /// The config key: `secret` or `token`.
    pub fn key(self) -> &'static str {
        match self {
            SecretKind::Secret => crate::config::keys::SECRET,
            SecretKind::Token => crate::config::keys::TOKEN,
        }
    }

    /// The kind the provider does not take (its key is a mistake in that provider's entry).
    pub fn other(self) -> SecretKind {
        match self {
            SecretKind::Secret => SecretKind::Token,
            SecretKind::Token => SecretKind::Secret,
        }
    }
}

/// An HTTP header: as looked up (lowercase) and as the provider's docs spell it (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Lowercase, as `http::HeaderMap` looks it up.
    pub name: &'static str,
    /// As the provider documents it, e.g. `X-Hub-Signature-256`.
    pub display: &'static str,
}

pub(crate) const fn header(name: &'static str, display: &'static str) -> Header {
    Header { name, display }
}

/// How a provider's webhooks prove who sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The hex HMAC-SHA256 of the raw body under the `secret`, in the first of `headers`
    /// present, after `prefix` (`sha256=`, or nothing).
    Hmac {
        /// Where the signature is looked for, in order.
        headers: &'static [Header],
        /// What precedes the hex digest.
        prefix: &'static str,
    },
    /// The configured `token`, whole, in `header`, compared in constant time.
    Token {
        /// Where the token is.
        header: Header,
    },
}

impl Verification {
    /// The header a signature or token is read from (the first, when there are several).
    pub fn header(&self) -> Header {
        match self {
            Verification::Hmac { headers, .. } => headers.first().copied().unwrap_or(NO_HEADER),
            Verification::Token { header } => *header,
        }
    }
}

const NO_HEADER: Header = header("", "");

/// The headers that say what a git provider's webhook is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// Headers naming the event, the provider's own first, then the ones it sends for
    /// compatibility; the first present wins.
    pub event: &'static [Header],
    /// How a missing event header is named in messages.
    pub event_display: &'static str,
    /// Headers holding the delivery id (git-push's idempotency key), in order of preference.
    pub delivery: &'static [Header],
    /// How a missing delivery header is named in messages.
    pub delivery_display: &'static str,
    /// The event name of a push.
    pub push_event: &'static str,
    /// The headers that identify the provider among webhooks to `/webhooks` (no provider in
    /// the path): its own event headers, not the ones it imitates.
    pub identified_by: &'static [&'static str],
    /// Providers whose headers this one also sends, which it must win over when detected.
    pub imitates: &'static [GitProvider],
}

const EMPTY_HEADERS: WebhookHeaders = WebhookHeaders {
    event: &[],
    event_display: "",
    delivery: &[],
    delivery_display: "",
    push_event: "",
    identified_by: &[],
    imitates: &[],
};

/// The environment variables that set a provider's credentials (see `docs/configuration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialVars {
    /// The webhook credential itself (`secretKeyRef` puts it there).
    pub value: &'static str,
    /// The path of a file holding it.
    pub file: &'static str,
    /// The variables of the credential kind the provider does not take, refused with advice.
    pub misnamed: [&'static str; 2],
    /// The commit-status API token and its file form (git providers only).
    pub status_token: Option<[&'static str; 2]>,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSpec {
    /// The key under `providers`, the `/webhooks/<key>` segment and the metric label.
    pub key: &'static str,
    /// The name people know it by.
    pub title: &'static str,
    /// The git provider this row is, or `None` for a sender of other webhooks (Flux, registries).
    pub git: Option<GitProvider>,
    /// The credential its entry takes.
    pub secret: SecretKind,
    /// The environment variables of its credentials.
    pub vars: CredentialVars,
    /// How its webhooks are verified.
    pub verification: Verification,
    /// The headers of its webhooks (git providers).
    pub webhook: Option<WebhookHeaders>,
    /// The largest webhook body it sends, in bytes: git-push reads no more from a webhook that
    /// says it comes from this provider (never more than `server.bodyLimit`).
    pub max_webhook_bytes: usize,
    /// Hosts that are this provider's, so rules for them need no `provider:`.
    pub hosts: &'static [&'static str],
    /// The hosted REST API that commit statuses go to when `providers.<key>.status.api` is
    /// unset; `None` where there is no hosted service (the API must then be configured).
    pub status_api: Option<&'static str>,
}

/// Every row: the git providers, then the others, in the order the config lists them.
pub fn all() -> impl Iterator<Item = &'static ProviderSpec> {
    GIT.iter().chain(OTHER.iter())
}

/// The row whose key is `key`.
pub fn by_key(key: &str) -> Option<&'static ProviderSpec> {
    all().find(|spec| spec.key == key)
}

/// Every provider's key, as a list for messages: `github, gitlab, …, registry`.
pub fn known_keys() -> String {
    all().map(|spec| spec.key).collect::<Vec<_>>().join(", ")
}

/// The git providers' keys for messages, joined with `, ` and, when `or` is set, the last one
/// with ` or `: `github, gitlab, gitea, forgejo or bitbucket`.
pub fn git_keys(or: bool) -> String {
    let keys: Vec<&str> = GIT.iter().map(|spec| spec.key).collect();
    match keys.split_last() {
        Some((last, rest)) if or && !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => keys.join(", "),
    }
}

/// The git provider known to own `host` (lowercase), if any.
pub fn provider_of_host(host: &str) -> Option<GitProvider> {
    GIT.iter()
        .find(|spec| spec.hosts.contains(&host))
        .and_then(|spec| spec.git)
}

/// The git provider whose webhook `has_header` describes: among the providers whose own event
/// header is present, the one no other present provider imitates (Gitea and Forgejo also send
/// GitHub's `X-GitHub-Event`, Forgejo also Gitea's).
pub fn detect(has_header: impl Fn(&str) -> bool) -> Option<GitProvider> {
    let present: Vec<GitProvider> = GitProvider::ALL
        .into_iter()
        .filter(|provider| {
            provider
                .headers()
                .identified_by
                .iter()
                .any(|name| has_header(name))
        })
        .collect();
    present.iter().copied().find(|candidate| {
        !present
            .iter()
            .any(|other| other.headers().imitates.contains(candidate))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_rows_follow_the_enum_and_have_webhook_headers() {
        for (row, provider) in GIT.iter().zip(GitProvider::ALL) {
            assert_eq!(row.git, Some(provider));
            assert!(row.webhook.is_some(), "{}", row.key);
            assert!(row.vars.status_token.is_some(), "{}", row.key);
        }
        assert!(
            OTHER
                .iter()
                .all(|row| row.git.is_none() && row.status_api.is_none())
        );
        assert_eq!((FLUX.key, REGISTRY.key), ("flux", "registry"));
    }

    #[test]
    fn keys_are_unique_and_lowercase() {
        let keys: Vec<&str> = all().map(|row| row.key).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
        assert!(
            keys.iter()
                .all(|key| key.bytes().all(|b| b.is_ascii_lowercase()))
        );
    }

    #[test]
    fn variables_follow_the_documented_pattern() {
        for row in all() {
            let upper = row.key.to_ascii_uppercase();
            let (own, other) = match row.secret {
                SecretKind::Secret => ("SECRET", "TOKEN"),
                SecretKind::Token => ("TOKEN", "SECRET"),
            };
            assert_eq!(row.vars.value, format!("TEKFLUX_{upper}_{own}"));
            assert_eq!(row.vars.file, format!("TEKFLUX_{upper}_{own}_FILE"));
            assert_eq!(
                row.vars.misnamed,
                [
                    format!("TEKFLUX_{upper}_{other}"),
                    format!("TEKFLUX_{upper}_{other}_FILE")
                ]
            );
            if let Some([token, file]) = row.vars.status_token {
                assert_eq!(token, format!("TEKFLUX_{upper}_STATUS_TOKEN"));
                assert_eq!(file, format!("{token}_FILE"));
            }
        }
    }

    #[test]
    fn path_segments_and_names() {
        assert_eq!(
            GitProvider::from_path_segment("forgejo"),
            Some(GitProvider::Forgejo)
        );
        assert_eq!(GitProvider::from_path_segment("GitHub"), None);
        assert_eq!(GitProvider::from_path_segment("flux"), None);
        assert_eq!(
            git_keys(true),
            "github, gitlab, gitea, forgejo or bitbucket"
        );
        assert_eq!(
            known_keys(),
            "github, gitlab, gitea, forgejo, bitbucket, flux, registry"
        );
    }
}
