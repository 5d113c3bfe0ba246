//! Which `repositories` rules a push matches, and why the others do not.
//!
//! The config's rules are compiled once at start into a [`RoutingTable`]; every glob and template
//! is checked then, so a bad rule stops the function with an error naming it
//! (`repositories[2].branches[0]: invalid glob …`) instead of failing on the first push.
//!
//! Matching, in order:
//! - **Repository.** Rule URLs go through [`crate::repo_url::canonical`] like pushes' do, so the
//!   https, `http`, `ssh://`, scp-like `git@host:owner/name` and `.git` forms of one repository
//!   are equal; host and path compare case-insensitively, as every supported provider treats
//!   them. In a URL pattern `*` matches within one path segment (`https://github.com/org/*`),
//!   `**` any depth (`https://gitlab.com/group/**`). Globs are allowed in the path only: the
//!   scheme and host of a pattern are matched literally, so no pattern can reach another host.
//! - **Provider.** Every rule is bound to one provider
//!   ([`tekflux_common::config::bound_provider`]: its `provider:`, else the provider of a
//!   well-known host, else the one configured git provider). A push from any other provider
//!   does not match, whichever secret it was signed with or however `insecure` its provider is.
//!   Knative GitHubSource and GitLabSource events are github and gitlab pushes; a
//!   `dev.tekflux.git.pushed.v1` event is the provider its `data.provider` names (its sender
//!   is authenticated as a CloudEvent sender, and trusted to say where the push came from).
//! - **Clone host.** The push's clone URL (what a run fetches as `{{ clone_url }}`) must be on
//!   the rule's host (ports aside), so a payload cannot pair a trusted repository name with code
//!   from elsewhere.
//! - **Deleted refs** never match.
//! - **Branches and tags.** Globs where `*` stays within one `/`-separated segment and `**` crosses
//!   them. A rule with neither `branches` nor `tags` matches every branch and no tag; a rule with
//!   only `tags` matches no branch. Other refs (notes, pull refs) never match.
//! - **Changed paths.** A rule with `paths` matches when any changed path matches any glob. When
//!   the provider's commit list was truncated or missing (`Push::paths_complete` false) the rule
//!   matches rather than dropping the push, and the decision says the filter was not applied.
//!   Path filters are not applied to tag pushes (a tag push carries no changes of its own), as in
//!   GitHub Actions.
//! - **Fan-out.** When the rule's `paths` capture a segment (`apis/*/{api}/**`, see
//!   [`crate::path_capture`]), the rule matches once per distinct set of captured values among
//!   the changed paths ([`RuleDecision::fan_out`]), and one run is created for each. Such a rule
//!   never matches a tag push (no changed paths to fan out over). When the changed-path list is
//!   incomplete, the values found in the listed paths still start their runs and the decision
//!   says the list was incomplete; when none is found, nothing can be fanned out and the rule
//!   does not match, with that reason (`ignored_total{reason="paths_incomplete"}`): never a
//!   silent drop, and never a guess.
//!
//! Cost: exact repository URLs are kept in a hash map and all URL patterns in one compiled
//! `GlobSet`, so routing a push only looks at the rules for its repository however many rules the
//! config holds; the rest are reported as one count.

use std::collections::HashMap;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;
use tekflux_common::config::Config;

use crate::path_capture::Captures;
use crate::push::{Push, RefKind};
use crate::repo_url;
use crate::rule::{CompiledRule, RuleError};
use crate::rule::{check_unique_names, compile_rule};

/// The outcome of one rule for one push.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleDecision<'a> {
    /// The rule, to build its run from.
    #[serde(skip)]
    pub rule: &'a CompiledRule,
    /// Index of the rule in `repositories`.
    pub index: usize,
    /// Rule name.
    pub name: &'a str,
    /// Whether the push starts this rule's run.
    pub matched: bool,
    /// Why (or why not), for replies and dry runs.
    pub reason: String,
    /// Matched although the rule's path filter could not be checked (changed-path list
    /// incomplete).
    pub path_filter_skipped: bool,
    /// Why the rule did not match, for metrics; `None` when it matched.
    #[serde(skip)]
    pub miss: Option<Miss>,
    /// For a rule whose `paths` capture: one entry per run to start, the values it captured,
    /// in order. Empty for other rules (one run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fan_out: Vec<Captures>,
}

/// Why a rule for the push's repository did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The rule is bound to another provider than the one the push came from.
    ProviderMismatch,
    /// The push's clone URL is not on the rule's host.
    CloneHostMismatch,
    /// The ref was deleted, or the ref, its kind or the changed paths are not selected.
    NotSelected,
    /// A fan-out rule found no captured value, and the changed-path list was incomplete: the
    /// push may have touched what the rule builds, but not in the paths it was told about.
    PathsIncomplete,
}

impl Miss {
    /// The `reason` label of `tekflux_git_push_ignored`.
    pub fn kind(self) -> &'static str {
        match self {
            Miss::ProviderMismatch => "provider_mismatch",
            Miss::CloneHostMismatch => "clone_host_mismatch",
            Miss::NotSelected => "rule_not_matched",
            Miss::PathsIncomplete => "paths_incomplete",
        }
    }
}

/// Every decision for one push.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing<'a> {
    /// One decision per rule whose URL matches the push's repository, in config order.
    pub decisions: Vec<RuleDecision<'a>>,
    /// How many rules were not considered because they are for other repositories.
    pub other_repository_rules: usize,
}

impl<'a> Routing<'a> {
    /// The decisions that start a run.
    pub fn matched(&self) -> impl Iterator<Item = &RuleDecision<'a>> {
        self.decisions.iter().filter(|d| d.matched)
    }

    /// The decisions that do not.
    pub fn ignored(&self) -> impl Iterator<Item = &RuleDecision<'a>> {
        self.decisions.iter().filter(|d| !d.matched)
    }
}

/// The compiled `repositories` rules with an index by repository.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    rules: Vec<CompiledRule>,
    /// Lowercased canonical URL → indices of rules with exactly that URL.
    exact: HashMap<String, Vec<usize>>,
    /// URL patterns, all in one set; `pattern_rules[i]` is the rule of pattern `i`.
    patterns: GlobSet,
    pattern_rules: Vec<usize>,
}

impl RoutingTable {
    /// Compiles every rule of `config`, reporting all invalid fields at once.
    pub fn compile(config: &Config) -> Result<RoutingTable, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(config.repositories.len());
        for (index, rule) in config.repositories.iter().enumerate() {
            match compile_rule(index, rule, &config.providers) {
                Ok(compiled) => rules.push(compiled),
                Err(mut e) => errors.append(&mut e),
            }
        }
        check_unique_names(&rules, &mut errors);

        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut pattern_set = GlobSetBuilder::new();
        let mut pattern_rules = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            if let Some(pattern) = url_pattern(&rule.url) {
                match url_glob(&pattern) {
                    Ok(glob) => {
                        pattern_set.add(glob);
                        pattern_rules.push(position);
                    }
                    Err(e) => errors.push(RuleError {
                        index: rule.index,
                        field: format!("repositories[{}].url", rule.index),
                        message: format!("invalid glob {:?}: {}", rule.url, e.kind()),
                    }),
                }
            } else {
                exact
                    .entry(rule.url.to_lowercase())
                    .or_default()
                    .push(position);
            }
        }
        let patterns = pattern_set.build().map_err(|e| {
            vec![RuleError {
                index: 0,
                field: "repositories".to_owned(),
                message: format!("URL patterns do not compile together: {e}"),
            }]
        });
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.index);
            return Err(errors);
        }
        Ok(RoutingTable {
            rules,
            exact,
            patterns: patterns?,
            pattern_rules,
        })
    }

    /// Every compiled rule, in config order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Decides every rule for the push's repository; rules for other repositories are only
    /// counted.
    pub fn route(&self, push: &Push) -> Routing<'_> {
        let key = push.repo_url.to_lowercase();
        let clone_host = repo_url::host(&push.clone_url);
        let mut candidates: Vec<usize> = self.exact.get(&key).cloned().unwrap_or_default();
        if !self.pattern_rules.is_empty() {
            candidates.extend(
                self.patterns
                    .matches(&key)
                    .into_iter()
                    .map(|i| self.pattern_rules[i]),
            );
            candidates.sort_unstable();
        }
        let decisions: Vec<_> = candidates
            .into_iter()
            .map(|i| decide(&self.rules[i], push, clone_host.as_deref()))
            .collect();
        Routing {
            other_repository_rules: self.rules.len() - decisions.len(),
            decisions,
        }
    }

    /// Decides every rule, including those for other repositories, for dry runs that explain
    /// everything. Linear in the number of rules.
    pub fn route_all(&self, push: &Push) -> Vec<RuleDecision<'_>> {
        let routed = self.route(push);
        let mut by_index: HashMap<usize, RuleDecision<'_>> =
            routed.decisions.into_iter().map(|d| (d.index, d)).collect();
        self.rules
            .iter()
            .map(|rule| {
                by_index
                    .remove(&rule.index)
                    .unwrap_or_else(|| RuleDecision {
                        rule,
                        index: rule.index,
                        name: &rule.name,
                        matched: false,
                        reason: format!("repository {} does not match {}", push.repo_url, rule.url),
                        path_filter_skipped: false,
                        miss: Some(Miss::NotSelected),
                        fan_out: Vec::new(),
                    })
            })
            .collect()
    }
}

/// `clone_host` is the host of `push.clone_url` ([`repo_url::host`]), `None` when it has none.
fn decide<'a>(rule: &'a CompiledRule, push: &Push, clone_host: Option<&str>) -> RuleDecision<'a> {
    let mut decision = RuleDecision {
        rule,
        index: rule.index,
        name: &rule.name,
        matched: false,
        reason: String::new(),
        path_filter_skipped: false,
        miss: Some(Miss::NotSelected),
        fan_out: Vec::new(),
    };
    if push.provider != rule.provider {
        decision.miss = Some(Miss::ProviderMismatch);
        decision.reason = format!(
            "rule is bound to provider {}, push came from {}",
            rule.provider, push.provider
        );
        return decision;
    }
    match clone_host {
        Some(host) if host == rule.host => {}
        clone_host => {
            decision.miss = Some(Miss::CloneHostMismatch);
            decision.reason = match clone_host {
                Some(host) => format!("clone URL host {host} is not the rule's host {}", rule.host),
                None => format!(
                    "clone URL {:?} names no host; the rule's host is {}",
                    push.clone_url, rule.host
                ),
            };
            return decision;
        }
    }
    if push.deleted {
        decision.reason = "ref deleted".to_owned();
        return decision;
    }
    let is_tag = match &push.ref_kind {
        RefKind::Branch(branch) => {
            if rule.branches.is_empty() {
                if !rule.tags.is_empty() {
                    decision.reason = format!(
                        "branch {branch} not selected: rule lists only tags {}",
                        rule.tags.listed()
                    );
                    return decision;
                }
            } else if !rule.branches.matches(branch) {
                decision.reason =
                    format!("branch {branch} does not match {}", rule.branches.listed());
                return decision;
            }
            false
        }
        RefKind::Tag(tag) => {
            if rule.tags.is_empty() {
                decision.reason = format!("tag {tag} not selected: rule has no tags");
                return decision;
            }
            if !rule.tags.matches(tag) {
                decision.reason = format!("tag {tag} does not match {}", rule.tags.listed());
                return decision;
            }
            true
        }
        RefKind::Other(git_ref) => {
            decision.reason = format!("ref {git_ref} is neither a branch nor a tag");
            return decision;
        }
    };
    if !rule.capture_patterns.is_empty() {
        fan_out(rule, push, is_tag, &mut decision);
        return decision;
    }
    decision.matched = true;
    decision.miss = None;
    decision.reason = "matched".to_owned();
    if rule.paths.is_empty() || is_tag {
        return decision;
    }
    if !push.paths_complete {
        decision.path_filter_skipped = true;
        decision.reason =
            "matched; changed-path list incomplete, path filter not applied".to_owned();
        return decision;
    }
    if !push.changed_paths.iter().any(|p| rule.paths.matches(p)) {
        decision.matched = false;
        decision.miss = Some(Miss::NotSelected);
        decision.reason = format!("no changed path matches {}", rule.paths.listed());
    }
    decision
}

/// The decision of a rule whose `paths` capture, once its repository, provider and ref matched:
/// one run per distinct set of captured values among the changed paths.
fn fan_out(rule: &CompiledRule, push: &Push, is_tag: bool, decision: &mut RuleDecision<'_>) {
    let listed = rule.paths.listed();
    if is_tag {
        decision.reason =
            format!("tag push: {listed} capture from changed paths, and a tag push carries none");
        return;
    }
    // Distinct and in order: each path counts for the first pattern it matches.
    let found: std::collections::BTreeSet<Captures> = push
        .changed_paths
        .iter()
        .filter_map(|path| {
            rule.capture_patterns
                .iter()
                .find_map(|pattern| pattern.captures(path))
        })
        .collect();
    let values = || {
        found
            .iter()
            .map(|captures| {
                captures
                    .iter()
                    .map(|(name, value)| format!("{name}={value:?}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (found.is_empty(), push.paths_complete) {
        (true, true) => decision.reason = format!("no changed path matches {listed}"),
        (true, false) => {
            decision.miss = Some(Miss::PathsIncomplete);
            decision.reason = format!(
                "the provider sent an incomplete changed-path list and none of the listed paths \
                 matches {listed}: nothing to fan out over, so no run; push again or start the \
                 runs you need by hand"
            );
        }
        (false, complete) => {
            decision.matched = true;
            decision.miss = None;
            decision.reason = format!("matched; one run per value: {}", values());
            if !complete {
                decision.path_filter_skipped = true;
                decision.reason.push_str(
                    "; the changed-path list was incomplete, so values changed only in the                      commits it left out have no run",
                );
            }
            decision.fan_out = found.into_iter().collect();
        }
    }
}

/// The glob pattern of a canonical rule URL whose path holds glob characters, with its
/// `https://host[:port]/` prefix escaped so that it matches only itself; `None` for a URL
/// without globs.
fn url_pattern(url: &str) -> Option<String> {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let path_start = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |at| after_scheme + at);
    let (prefix, path) = url.split_at(path_start);
    path.contains(['*', '?', '[', '{'])
        .then(|| format!("{}{path}", globset::escape(prefix)))
}

fn url_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .case_insensitive(true)
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;
    use crate::push::Provider;
    use tekflux_common::config::RepositoryRule;

    fn push(repo: &str, branch: &str) -> Push {
        tekflux_testkit::push::TestPush::new(Provider::Github, repo)
            .branch(branch)
            .pusher("me")
            .delivery("d1")
            .build()
    }

    /// Routing looks only at the rules of the push's repository: with 10,000 exact rules it
    /// decides one and counts the rest, rather than walking them.
    #[test]
    fn ten_thousand_rules_route_to_a_single_candidate() {
        let mut config = Config::default();
        for i in 0..10_000 {
            config.repositories.push(RepositoryRule {
                url: format!("https://github.com/org/repo-{i}"),
                pipeline: Some("build".into()),
                ..Default::default()
            });
        }
        config.repositories.push(RepositoryRule {
            url: "https://github.com/other/*".into(),
            pipeline: Some("build".into()),
            ..Default::default()
        });
        let table = RoutingTable::compile(&config).unwrap();
        let routing = table.route(&push("https://github.com/org/repo-4242", "main"));
        assert_eq!(routing.decisions.len(), 1);
        assert_eq!(routing.decisions[0].index, 4242);
        assert!(routing.decisions[0].matched);
        assert_eq!(routing.other_repository_rules, 10_000);
    }
}
