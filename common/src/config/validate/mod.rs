//! Rules a parsed config must keep; each finding names the field path it is about.
//!
//! Param templates and the `repositories` globs are not checked here: git-push owns their syntax
//! and checks them when it compiles its routing table at start. Which provider a rule is bound
//! to ([`bound_provider`]) is decided here, once, for both: git-push calls the same function.
//! The branch and tag globs of `releases[].from` are checked here
//! ([`crate::config::RefGlob`]), since release-changed only matches them.
//!
//! The rules are split by what they are about: [`providers`] (credentials and commit-status
//! settings), [`repositories`] (rules, their names and the provider each is bound to),
//! [`releases`] and [`service`] (storage, server, CloudEvent senders).

mod providers;
mod releases;
mod repositories;
mod service;

pub use releases::path_covers;
pub use repositories::{BindingProblem, bound_provider, looks_like_git_url, url_host};

use super::keys;
use super::locate::FieldPath;
use super::model::Config;
use super::{Part, Sections};

/// Longest rule name: it becomes part of run names, which Kubernetes caps at 63 characters,
/// and the rest is taken by the delivery-derived suffix.
pub const MAX_RULE_NAME_LEN: usize = 30;
/// Longest request or drain timeout. Knative sets a revision's `terminationGracePeriodSeconds`
/// to its `timeoutSeconds` (300 s by default, at most `max-revision-timeout-seconds`), so both
/// timeouts must stay below what the Service sets; this bound only catches nonsense values.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
/// zstd's compression levels.
pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;
/// S3's multipart limits: parts of at least 5 MiB (except the last) and at most 5 GiB.
pub const PART_SIZE_MIB: std::ops::RangeInclusive<u64> = 5..=5120;

/// One rule broken at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where in the file.
    pub path: FieldPath,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Every rule of `sections` broken by `config`.
pub fn validate(config: &Config, sections: Sections) -> Vec<Finding> {
    let mut findings = Findings::default();
    let root = FieldPath::root();
    if sections.includes(Part::Routing) {
        if !is_dns1123_label(&config.namespace) {
            findings.push(root.key(keys::NAMESPACE), not_a_label(&config.namespace));
        }
        providers::providers(config, &root.key(keys::PROVIDERS), &mut findings);
        repositories::repositories(config, &root.key(keys::REPOSITORIES), &mut findings);
    }
    if sections.includes(Part::Storage) {
        service::storage(config, &root.key(keys::STORAGE), &mut findings);
    }
    if sections.includes(Part::Service) {
        service::server(config, &root, &mut findings);
        for (index, rule) in config.releases.iter().enumerate() {
            let path = root.key(keys::RELEASES).index(index);
            releases::release(rule, &path, &mut findings);
            releases::release_from(config, rule, &path, &mut findings);
            releases::release_values(config, rule, &path, &mut findings);
        }
        service::events(config, &root.key(keys::EVENTS), &mut findings);
    }
    findings.0
}

#[derive(Default)]
pub(super) struct Findings(Vec<Finding>);

impl Findings {
    pub(super) fn push(&mut self, path: FieldPath, message: String) {
        self.0.push(Finding { path, message });
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace and most object names.
pub fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS-1123 subdomain, as Kubernetes checks most object names: at most 253 characters, parts
/// of `[a-z0-9-]` that start and end alphanumeric, joined by dots (unlike a label, a part may be
/// longer than 63 characters).
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253
        && value.split('.').all(|part| {
            let bytes = part.as_bytes();
            bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

pub(super) fn not_a_label(value: &str) -> String {
    format!(
        "{value:?} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', \
         starting and ending with a letter or digit)"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "cicd", "team-1", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }
}
