//! `repositories`: each rule's shape, its name, and the one provider whose pushes may start it.

use std::collections::BTreeMap;

use super::providers::rule_status;
use super::{Findings, MAX_RULE_NAME_LEN, is_dns1123_label, not_a_label};
use crate::config::duration::parse_go_duration;
use crate::config::keys;
use crate::config::locate::FieldPath;
use crate::config::model::{Config, Providers};
use crate::config::repositories::{RepositoryRule, WorkspaceBinding};
use crate::provider::{self, GitProvider};

/// How a rule got its name, for messages that tell the user what to change.
enum NameSource {
    Explicit,
    Target(&'static str),
}

pub(super) fn repositories(config: &Config, path: &FieldPath, findings: &mut Findings) {
    // Names need only be unique per repository: run names hash the rule's URL too, so ten
    // repositories can each have a rule named after their shared `build` pipeline.
    let mut names: BTreeMap<(&str, String), (usize, bool)> = BTreeMap::new();
    for (index, rule) in config.repositories.iter().enumerate() {
        let path = path.index(index);
        repository(rule, &path, findings);
        if looks_like_git_url(&rule.url) {
            match bound_provider(rule, &config.providers) {
                Ok(provider) => rule_status(config, rule, provider, &path, findings),
                Err(problem) => {
                    let at = match problem.key {
                        Some(key) => path.key(key),
                        None => path.clone(),
                    };
                    findings.push(at, problem.message);
                }
            }
        }
        let (name, source) = match (&rule.name, &rule.pipeline, &rule.task) {
            (Some(name), _, _) => (name, NameSource::Explicit),
            (None, Some(pipeline), _) => (pipeline, NameSource::Target(keys::PIPELINE)),
            (None, None, Some(task)) => (task, NameSource::Target(keys::TASK)),
            (None, None, None) => continue,
        };
        let (name_path, hint) = match source {
            NameSource::Explicit => (path.key(keys::NAME), String::new()),
            NameSource::Target(key) => (
                path.key(key),
                format!(
                    "; the rule name defaults to the {key} name, set `{}` to choose another",
                    keys::NAME
                ),
            ),
        };
        if name.len() > MAX_RULE_NAME_LEN || !is_dns1123_label(name) {
            findings.push(
                name_path,
                format!(
                    "rule name {name:?} must be a DNS-1123 label of at most {MAX_RULE_NAME_LEN} \
                     characters (lowercase letters, digits and '-'), as it becomes part of run \
                     names{hint}"
                ),
            );
            continue;
        }
        let defaulted = rule.name.is_none();
        let repository = rough_repository_key(&rule.url);
        match names.get(&(name.as_str(), repository.clone())) {
            Some(&(first, first_defaulted)) => {
                let advice = if defaulted || first_defaulted {
                    format!(
                        "; rules of one repository that run the same pipeline or task need \
                         explicit, distinct `{}`s",
                        keys::NAME
                    )
                } else {
                    String::new()
                };
                findings.push(
                    name_path,
                    format!(
                        "rule name {name:?} is already used for this repository by {}{advice}",
                        FieldPath::root().key(keys::REPOSITORIES).index(first)
                    ),
                );
            }
            None => {
                names.insert((name, repository), (index, defaulted));
            }
        }
    }
}

/// The same repository written with or without `.git`, a trailing slash or other letter case
/// gives one key; git-push's routing compares canonical URLs exactly at its own start.
pub(super) fn rough_repository_key(url: &str) -> String {
    let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
    url.strip_suffix(".git").map(str::to_owned).unwrap_or(url)
}

fn repository(rule: &RepositoryRule, path: &FieldPath, findings: &mut Findings) {
    if !looks_like_git_url(&rule.url) {
        findings.push(
            path.key(keys::URL),
            format!(
                "{:?} is not a git repository URL (https://host/owner/name, ssh://git@host/owner/name \
                 or git@host:owner/name; `*` globs allowed)",
                rule.url
            ),
        );
    }
    match (&rule.pipeline, &rule.task) {
        (Some(_), Some(_)) => findings.push(
            path.key(keys::TASK),
            format!("set only one of `{}` and `{}`", keys::PIPELINE, keys::TASK),
        ),
        (None, None) => findings.push(
            path.clone(),
            format!(
                "set `{}` (a PipelineRun) or `{}` (a TaskRun)",
                keys::PIPELINE,
                keys::TASK
            ),
        ),
        _ => {}
    }
    if let Some(namespace) = &rule.namespace
        && !is_dns1123_label(namespace)
    {
        findings.push(path.key(keys::NAMESPACE), not_a_label(namespace));
    }
    if let Some(timeout) = &rule.timeout
        && let Err(message) = parse_go_duration(timeout)
    {
        findings.push(path.key(keys::TIMEOUT), message);
    }
    for (name, binding) in &rule.workspaces {
        workspace(binding, &path.key(keys::WORKSPACES).key(name), findings);
    }
}

fn workspace(binding: &WorkspaceBinding, path: &FieldPath, findings: &mut Findings) {
    let sources = [
        binding.claim.is_some(),
        binding.volume_claim_template.is_some(),
        binding.empty_dir.is_some(),
        binding.config_map.is_some(),
        binding.secret.is_some(),
    ];
    if sources.iter().filter(|set| **set).count() != 1 {
        findings.push(
            path.clone(),
            "set exactly one volume source: `claim`, `volumeClaimTemplate`, `emptyDir`, \
             `configMap` or `secret`"
                .into(),
        );
    }
    if binding.archive && binding.claim.is_none() {
        findings.push(
            path.key(keys::ARCHIVE),
            format!(
                "only a `{}` workspace can be archived: other volumes are gone, or never held \
                 run output, when the run finishes",
                keys::CLAIM
            ),
        );
    }
}

/// Why a rule cannot be bound to a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingProblem {
    /// The rule's key the problem is about (`url`, `provider`), or `None` for the rule itself
    /// when `provider` is missing.
    pub key: Option<&'static str>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The one git provider whose pushes may start `rule`.
///
/// `provider:` when the rule sets it; otherwise the provider of a well-known host
/// (a row's `hosts` in [`crate::provider`]); otherwise the only git provider with an entry under `providers`.
/// Anything else is a problem that asks for `provider:`, as is a `provider:` that contradicts a
/// well-known host, or a glob in the URL's host (globs match owners and names, never hosts).
///
/// Both `tekflux check-config` (this module) and git-push's routing table call this, so they
/// accept the same rules and bind them to the same provider.
pub fn bound_provider(
    rule: &RepositoryRule,
    providers: &Providers,
) -> Result<GitProvider, BindingProblem> {
    let problem = |key, message| BindingProblem { key, message };
    let Some(host) = url_host(&rule.url) else {
        return Err(problem(
            Some(keys::URL),
            format!("{:?} names no host", rule.url),
        ));
    };
    if host_has_glob(&host) {
        return Err(problem(
            Some(keys::URL),
            format!(
                "the host {host:?} contains a glob character; globs may match owners and names \
                 in the path, never the host"
            ),
        ));
    }
    let known = provider::provider_of_host(&host);
    match (rule.provider, known) {
        (Some(chosen), Some(known)) if chosen != known => Err(problem(
            Some(keys::PROVIDER),
            format!(
                "{host} is {known}'s, so its pushes come only from {known}: set \
                 `{}: {known}` or leave it out",
                keys::PROVIDER
            ),
        )),
        (Some(chosen), _) => Ok(chosen),
        (None, Some(known)) => Ok(known),
        (None, None) => match providers.configured_git().as_slice() {
            [only] => Ok(*only),
            configured => {
                let which = if configured.is_empty() {
                    "no git provider is configured".to_owned()
                } else {
                    let names: Vec<&str> = configured.iter().map(|p| p.as_str()).collect();
                    format!(
                        "{} git providers are configured ({})",
                        configured.len(),
                        names.join(", ")
                    )
                };
                Err(problem(
                    None,
                    format!(
                        "{host} is not a well-known host and {which}: set `{}` ({}) to say whose \
                         pushes may start this rule",
                        keys::PROVIDER,
                        provider::git_keys(true)
                    ),
                ))
            }
        },
    }
}

/// The lowercased host of a git URL (https, http, ssh, git or scp-like), without user, port
/// or path; `None` when there is none.
pub fn url_host(url: &str) -> Option<String> {
    let url = url.trim();
    let authority = match url.split_once("://") {
        Some((_, rest)) => rest.split('/').next().unwrap_or_default(),
        None => {
            let (authority, _) = url.split_once(':')?;
            if authority.contains('/') {
                return None;
            }
            authority
        }
    };
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host_port.starts_with('[') {
        // An IPv6 literal keeps its brackets; a port may follow them.
        host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end])
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => host_port,
        }
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether a host holds a glob metacharacter (an IPv6 literal's brackets are not one).
fn host_has_glob(host: &str) -> bool {
    let rest = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner)
            if inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
        {
            ""
        }
        _ => host,
    };
    rest.contains(['*', '?', '[', ']', '{', '}'])
}

/// https, http, ssh and scp-like (`git@host:owner/name`) URLs; globs pass as ordinary characters.
pub fn looks_like_git_url(url: &str) -> bool {
    if url.is_empty() || url.chars().any(char::is_whitespace) {
        return false;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let (host, repo) = rest.split_once('/').unwrap_or((rest, ""));
        let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
        return matches!(scheme, "https" | "http" | "ssh")
            && !host.is_empty()
            && !repo.trim_matches('/').is_empty();
    }
    let Some((user_host, repo)) = url.split_once(':') else {
        return false;
    };
    let host = user_host
        .rsplit_once('@')
        .map_or(user_host, |(_, host)| host);
    !host.is_empty() && !user_host.contains('/') && !repo.trim_matches('/').is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/org/repo",
            "https://github.com/org/*",
            "http://gitea.local:3000/org/repo.git",
            "ssh://git@github.com/org/repo.git",
            "git@github.com:org/repo.git",
            "github.com:org/repo",
        ] {
            assert!(looks_like_git_url(ok), "{ok}");
        }
        for bad in [
            "",
            "github.com/org/repo",
            "ftp://host/repo",
            "https://",
            "https://host",
            "https://host/ x",
            "git@github.com:",
            "/srv/git/repo",
        ] {
            assert!(!looks_like_git_url(bad), "{bad}");
        }
    }

    #[test]
    fn hosts_of_git_urls() {
        for (url, host) in [
            ("https://GitHub.com/org/repo", "github.com"),
            ("http://user:token@git.local:3000/org/repo.git", "git.local"),
            ("ssh://git@host:2222/org/repo", "host"),
            ("git@gitlab.com:group/sub/repo.git", "gitlab.com"),
            ("https://[::1]:8443/org/repo", "[::1]"),
            ("https://github.com*/org/repo", "github.com*"),
            ("https://h:*/org/repo", "h:*"),
        ] {
            assert_eq!(url_host(url).as_deref(), Some(host), "{url}");
        }
        for url in ["https:///org/repo", "/srv/git/repo", "dir/x:y"] {
            assert_eq!(url_host(url), None, "{url}");
        }
        assert!(!host_has_glob("[fd00::1]"));
        for glob in ["*", "git?b.com", "[ab].com", "{a,b}", "[::1]*"] {
            assert!(host_has_glob(glob), "{glob}");
        }
    }
}
