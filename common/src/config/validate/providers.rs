//! `providers`: each entry's credential, from the provider table, and its commit-status settings.

use super::Findings;
use super::repositories::url_host;
use crate::config::keys;
use crate::config::locate::FieldPath;
use crate::config::model::{Config, ProviderSettings, StatusSettings};
use crate::config::repositories::{RepositoryRule, RuleStatus};
use crate::provider::{GitProvider, SecretKind};

pub(super) fn providers(config: &Config, path: &FieldPath, findings: &mut Findings) {
    for (provider, settings) in config.providers.configured() {
        let path = path.key(provider.key);
        if let Some(status) = &settings.status {
            match provider.git {
                Some(git) => status_settings(git, status, &path.key(keys::STATUS), findings),
                None => findings.push(
                    path.key(keys::STATUS),
                    "commit statuses are reported to git providers only".to_owned(),
                ),
            }
        }
        let (wrong, wrong_key) = match provider.secret {
            SecretKind::Secret => (&settings.token, keys::TOKEN),
            SecretKind::Token => (&settings.secret, keys::SECRET),
        };
        if wrong.is_some() {
            let name = provider.key;
            let message = match provider.secret {
                SecretKind::Secret => format!(
                    "{name} signs webhooks with an HMAC secret: use `{}`, not `{}`",
                    keys::SECRET,
                    keys::TOKEN
                ),
                SecretKind::Token => format!(
                    "{name} authenticates webhooks with a shared token ({}): use `{}`, not `{}`",
                    provider.verification.header().display,
                    keys::TOKEN,
                    keys::SECRET
                ),
            };
            findings.push(path.key(wrong_key), message);
        } else {
            unauthenticated(settings, provider.secret, &path, findings);
        }
    }
}

/// Longest status context: GitHub and Gitea take 255 characters; Bitbucket's 40-character key
/// is made from a longer context by shortening it with a hash.
pub const MAX_STATUS_CONTEXT_LEN: usize = 255;

/// The variables a `status.targetUrl` template may use.
pub const TARGET_URL_VARIABLES: [&str; 6] = ["namespace", "name", "kind", "uid", "rule", "sha"];

/// `providers.<git>.status`: a token, an http(s) API base (required where there is no hosted
/// default), a readable CA bundle, a known-variables link template.
fn status_settings(
    provider: GitProvider,
    settings: &StatusSettings,
    path: &FieldPath,
    findings: &mut Findings,
) {
    // Without `token` or `app`, each reporting rule must bring its own token (checked per rule).
    match (&settings.token, &settings.app) {
        (Some(_), Some(_)) => findings.push(
            path.key(keys::APP),
            format!(
                "set only one of `{}` (commit statuses) and `{}` (check runs)",
                keys::TOKEN,
                keys::APP
            ),
        ),
        (None, Some(_)) if provider != GitProvider::Github => findings.push(
            path.key(keys::APP),
            "only GitHub reports as an App (check runs); use `token`".to_owned(),
        ),
        _ => {}
    }
    match &settings.api {
        Some(api)
            if !(api.starts_with("https://") || api.starts_with("http://"))
                || url_host(api).is_none() =>
        {
            findings.push(
                path.key(keys::API),
                format!("{api:?} is not an http(s) URL of the provider's REST API"),
            );
        }
        Some(_) => {}
        None if provider.spec().status_api.is_none() => findings.push(
            path.key(keys::API),
            format!(
                "{provider} has no hosted default: set `{}` to the server's REST API, e.g. \
                 https://git.example.com/api/v1",
                keys::API
            ),
        ),
        None => {}
    }
    if let Some(bundle) = &settings.ca_bundle
        && let Err(error) = std::fs::metadata(bundle)
    {
        findings.push(
            path.key(keys::CA_BUNDLE),
            format!("cannot read {bundle}: {error}"),
        );
    }
    if let Some(context) = &settings.context {
        status_context(context, &path.key(keys::CONTEXT), findings);
    }
    if let Some(template) = &settings.target_url {
        for variable in template_variables(template) {
            if !TARGET_URL_VARIABLES.contains(&variable) {
                findings.push(
                    path.key(keys::TARGET_URL),
                    format!(
                        "unknown variable {{{variable}}}; known: {}",
                        TARGET_URL_VARIABLES.map(|v| format!("{{{v}}}")).join(", ")
                    ),
                );
            }
        }
    }
}

/// The `{name}` parts of a template.
pub fn template_variables(template: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        found.push(&after[..close]);
        rest = &after[close + 1..];
    }
    found
}

fn status_context(context: &str, path: &FieldPath, findings: &mut Findings) {
    if context.trim().is_empty() || context.chars().count() > MAX_STATUS_CONTEXT_LEN {
        findings.push(
            path.clone(),
            format!("a status context must be 1 to {MAX_STATUS_CONTEXT_LEN} characters"),
        );
    } else if context.chars().any(|c| c.is_control() || c.len_utf8() == 4) {
        findings.push(
            path.clone(),
            "a status context may not hold control characters or emoji (GitHub refuses them)"
                .to_owned(),
        );
    }
}

/// `repositories[].status`: `true` or a context needs the provider's `status` entry.
pub(super) fn rule_status(
    config: &Config,
    rule: &RepositoryRule,
    provider: GitProvider,
    path: &FieldPath,
    findings: &mut Findings,
) {
    let settings = config
        .providers
        .git(provider)
        .and_then(|p| p.status.as_ref());
    let path = path.key(keys::STATUS);
    match &rule.status {
        Some(RuleStatus::Enabled(false)) | None => {}
        Some(RuleStatus::Enabled(true)) | Some(RuleStatus::Settings(_)) if settings.is_none() => {
            findings.push(
                path.clone(),
                format!(
                    "the rule reports to {provider}, but `providers.{provider}.{}` is not set \
                     (its API token)",
                    keys::STATUS
                ),
            );
        }
        Some(RuleStatus::Settings(rule_settings)) => {
            if let Some(context) = &rule_settings.context {
                status_context(context, &path.key(keys::CONTEXT), findings);
            }
        }
        Some(RuleStatus::Enabled(true)) => {}
    }
    if let Some(settings) = settings
        && rule.reports_status(Some(settings))
        && settings.token.is_none()
        && settings.app.is_none()
        && rule.status_token().is_none()
    {
        findings.push(
            path,
            format!(
                "the rule reports to {provider} without a token: set `providers.{provider}.{}.{}` \
                 (`env:NAME` or `file:/path`), or this rule's own `{}: {{{}: ...}}`, or `{}: false`",
                keys::STATUS,
                keys::TOKEN,
                keys::STATUS,
                keys::TOKEN,
                keys::STATUS
            ),
        );
    }
}

/// A provider entry with no credential rejects every webhook; say so at start instead.
fn unauthenticated(
    settings: &ProviderSettings,
    kind: SecretKind,
    path: &FieldPath,
    findings: &mut Findings,
) {
    let credential = match kind {
        SecretKind::Secret => &settings.secret,
        SecretKind::Token => &settings.token,
    };
    if credential.is_none() && !settings.insecure {
        findings.push(
            path.clone(),
            format!(
                "set `{}` (`env:NAME` or `file:/path`), or `{}: true` to accept unsigned \
                 webhooks",
                kind.key(),
                keys::INSECURE
            ),
        );
    }
}
