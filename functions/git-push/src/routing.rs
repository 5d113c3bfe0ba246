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
//!   `**` any depth (`https://gitlab.com/group/**`).
//! - **Deleted refs** never match.
//! - **Branches and tags.** Globs where `*` stays within one `/`-separated segment and `**` crosses
//!   them. A rule with neither `branches` nor `tags` matches every branch and no tag; a rule with
//!   only `tags` matches no branch. Other refs (notes, pull refs) never match.
//! - **Changed paths.** A rule with `paths` matches when any changed path matches any glob. When
//!   the provider's commit list was truncated or missing (`Push::paths_complete` false) the rule
//!   matches rather than dropping the push, and the decision says the filter was not applied.
//!   Path filters are not applied to tag pushes (a tag push carries no changes of its own), as in
//!   GitHub Actions.
//!
//! Cost: exact repository URLs are kept in a hash map and all URL patterns in one compiled
//! `GlobSet`, so routing a push only looks at the rules for its repository however many rules the
//! config holds; the rest are reported as one count.

use std::collections::{BTreeMap, HashMap};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;
use tekflux_common::config::{
    Concurrency, Config, RepositoryRule, WorkspaceBinding, parse_go_duration,
};

use crate::push::{Push, RefKind};
use crate::repo_url;
use crate::run;
use crate::template::Template;

/// One rule that could not be compiled, with the config path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// Index of the rule in `repositories`.
    pub index: usize,
    /// Config path of the field, e.g. `repositories[2].branches[0]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Whether a rule starts a PipelineRun or a TaskRun, and of what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `pipeline:` → a PipelineRun referencing this Pipeline.
    Pipeline(String),
    /// `task:` → a TaskRun referencing this Task.
    Task(String),
}

/// A workspace binding with exactly one volume source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    /// An existing PVC; each run gets its own `subPath` (the run name) in it.
    Claim {
        /// PVC name.
        claim: String,
        /// Archive the run's directory to object storage when the run finishes.
        archive: bool,
    },
    /// A fresh PVC per run.
    VolumeClaimTemplate {
        /// Requested size.
        storage: String,
        /// Access modes (never empty: `ReadWriteOnce` by default).
        access_modes: Vec<String>,
        /// Storage class, or the cluster default.
        storage_class_name: Option<String>,
    },
    /// An emptyDir.
    EmptyDir {
        /// `Memory` for tmpfs.
        medium: Option<String>,
        /// Size limit.
        size_limit: Option<String>,
    },
    /// A ConfigMap by name.
    ConfigMap(String),
    /// A Secret by name.
    Secret(String),
}

/// A `repositories` rule checked and ready to route and build runs.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Index in `repositories`.
    pub index: usize,
    /// Rule name: `name`, or the pipeline or task name.
    pub name: String,
    /// Canonical URL or URL pattern, as matched.
    pub url: String,
    /// What the rule runs.
    pub target: Target,
    /// Namespace of the run, when the rule sets one.
    pub namespace: Option<String>,
    /// Params by name, in name order.
    pub params: Vec<(String, Template)>,
    /// Workspaces by name, in name order.
    pub workspaces: Vec<(String, Volume)>,
    /// Service account of the run's pods.
    pub service_account: Option<String>,
    /// Run timeout (Go duration).
    pub timeout: Option<String>,
    /// What happens to older unfinished runs on the same branch.
    pub concurrency: Concurrency,
    /// The rule's own labels.
    pub labels: BTreeMap<String, String>,
    branches: Patterns,
    tags: Patterns,
    paths: Patterns,
}

/// A list of globs and their source text (for explanations).
#[derive(Debug, Clone, Default)]
struct Patterns {
    set: Option<GlobSet>,
    source: Vec<String>,
}

impl Patterns {
    fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    fn matches(&self, candidate: &str) -> bool {
        self.set.as_ref().is_some_and(|s| s.is_match(candidate))
    }

    fn listed(&self) -> String {
        format!("[{}]", self.source.join(", "))
    }
}

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
            match compile_rule(index, rule) {
                Ok(compiled) => rules.push(compiled),
                Err(mut e) => errors.append(&mut e),
            }
        }
        check_unique_names(&rules, &mut errors);

        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut pattern_set = GlobSetBuilder::new();
        let mut pattern_rules = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            if is_glob(&rule.url) {
                match url_glob(&rule.url) {
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
            .map(|i| decide(&self.rules[i], push))
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
                    })
            })
            .collect()
    }
}

fn decide<'a>(rule: &'a CompiledRule, push: &Push) -> RuleDecision<'a> {
    let mut decision = RuleDecision {
        rule,
        index: rule.index,
        name: &rule.name,
        matched: false,
        reason: String::new(),
        path_filter_skipped: false,
    };
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
    decision.matched = true;
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
        decision.reason = format!("no changed path matches {}", rule.paths.listed());
    }
    decision
}

fn compile_rule(index: usize, rule: &RepositoryRule) -> Result<CompiledRule, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut error = |field: String, message: String| {
        errors.push(RuleError {
            index,
            field: format!("repositories[{index}]{field}"),
            message,
        })
    };

    let url = match repo_url::canonical(&rule.url) {
        Some(url) => url,
        None => {
            error(
                ".url".into(),
                format!(
                    "{:?} is not a repository URL (https://host/owner/name, git@host:owner/name)",
                    rule.url
                ),
            );
            String::new()
        }
    };

    let target = match (&rule.pipeline, &rule.task) {
        (Some(p), None) if !p.is_empty() => Some(Target::Pipeline(p.clone())),
        (None, Some(t)) if !t.is_empty() => Some(Target::Task(t.clone())),
        (Some(_), Some(_)) => {
            error(
                String::new(),
                "set only one of `pipeline` and `task`".into(),
            );
            None
        }
        _ => {
            error(String::new(), "set one of `pipeline` or `task`".into());
            None
        }
    };
    let name = rule
        .name
        .clone()
        .or_else(|| rule.pipeline.clone())
        .or_else(|| rule.task.clone())
        .unwrap_or_default();
    if target.is_some() && !run::is_rule_name(&name) {
        error(
            ".name".into(),
            format!(
                "{name:?} is not a valid rule name (lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 63 characters)"
            ),
        );
    }

    let mut globs = |field: &str, sources: &[String], separator: bool| -> Patterns {
        let mut set = GlobSetBuilder::new();
        for (i, source) in sources.iter().enumerate() {
            match GlobBuilder::new(source)
                .literal_separator(separator)
                .backslash_escape(true)
                .build()
            {
                Ok(glob) => {
                    set.add(glob);
                }
                Err(e) => error(
                    format!(".{field}[{i}]"),
                    format!("invalid glob {source:?}: {}", e.kind()),
                ),
            }
        }
        Patterns {
            set: set.build().ok(),
            source: sources.to_vec(),
        }
    };
    let branches = globs("branches", &rule.branches, true);
    let tags = globs("tags", &rule.tags, true);
    let paths = globs("paths", &rule.paths, true);

    if let Some(ns) = &rule.namespace
        && !run::is_dns1123_label(ns)
    {
        error(
            ".namespace".into(),
            format!("{ns:?} is not a valid namespace name"),
        );
    }

    let mut params = Vec::with_capacity(rule.params.len());
    for (param, source) in &rule.params {
        if param.is_empty() {
            error(".params".into(), "empty param name".into());
            continue;
        }
        match Template::parse(source) {
            Ok(t) => params.push((param.clone(), t)),
            Err(e) => error(format!(".params.{param}"), e.to_string()),
        }
    }

    let mut workspaces = Vec::with_capacity(rule.workspaces.len());
    for (workspace, binding) in &rule.workspaces {
        match volume(binding) {
            Ok(v) if !workspace.is_empty() => workspaces.push((workspace.clone(), v)),
            Ok(_) => error(".workspaces".into(), "empty workspace name".into()),
            Err(message) => error(format!(".workspaces.{workspace}"), message),
        }
    }

    if let Some(timeout) = &rule.timeout
        && let Err(message) = parse_go_duration(timeout)
    {
        error(".timeout".into(), message);
    }

    for (key, value) in &rule.labels {
        if !run::is_label_key(key) {
            error(format!(".labels.{key}"), "not a valid label key".into());
        } else if run::is_reserved_label(key) {
            error(
                format!(".labels.{key}"),
                "this label is set by tekflux".into(),
            );
        }
        if !run::is_label_value(value) {
            error(
                format!(".labels.{key}"),
                format!("{value:?} is not a valid label value"),
            );
        }
    }

    match target {
        Some(target) if errors.is_empty() => Ok(CompiledRule {
            index,
            name,
            url,
            target,
            namespace: rule.namespace.clone(),
            params,
            workspaces,
            service_account: rule.service_account.clone().filter(|s| !s.is_empty()),
            timeout: rule.timeout.clone(),
            concurrency: rule.concurrency,
            labels: rule.labels.clone(),
            branches,
            tags,
            paths,
        }),
        _ => Err(errors),
    }
}

/// Two rules with one name for one repository would create runs with the same name for the same
/// delivery, so the second would be taken for a redelivery and never run.
fn check_unique_names(rules: &[CompiledRule], errors: &mut Vec<RuleError>) {
    let mut seen: HashMap<(String, &str), usize> = HashMap::new();
    for rule in rules {
        let key = (rule.url.to_lowercase(), rule.name.as_str());
        if let Some(first) = seen.insert(key, rule.index) {
            errors.push(RuleError {
                index: rule.index,
                field: format!("repositories[{}].name", rule.index),
                message: format!(
                    "rule name {:?} is already used for this repository by repositories[{first}]; \
                     set distinct `name`s",
                    rule.name
                ),
            });
        }
    }
}

fn volume(binding: &WorkspaceBinding) -> Result<Volume, String> {
    let mut sources = Vec::new();
    if let Some(claim) = &binding.claim {
        sources.push(Volume::Claim {
            claim: claim.clone(),
            archive: binding.archive,
        });
    }
    if let Some(t) = &binding.volume_claim_template {
        if t.storage.is_empty() {
            return Err("volumeClaimTemplate needs `storage` (e.g. 1Gi)".into());
        }
        sources.push(Volume::VolumeClaimTemplate {
            storage: t.storage.clone(),
            access_modes: if t.access_modes.is_empty() {
                vec!["ReadWriteOnce".to_owned()]
            } else {
                t.access_modes.clone()
            },
            storage_class_name: t.storage_class_name.clone(),
        });
    }
    if let Some(e) = &binding.empty_dir {
        sources.push(Volume::EmptyDir {
            medium: e.medium.clone(),
            size_limit: e.size_limit.clone(),
        });
    }
    if let Some(c) = &binding.config_map {
        sources.push(Volume::ConfigMap(c.clone()));
    }
    if let Some(s) = &binding.secret {
        sources.push(Volume::Secret(s.clone()));
    }
    if sources.len() != 1 {
        return Err(
            "set exactly one of `claim`, `volumeClaimTemplate`, `emptyDir`, `configMap`, `secret`"
                .into(),
        );
    }
    let source = sources.remove(0);
    if binding.archive && !matches!(source, Volume::Claim { .. }) {
        return Err("`archive: true` needs a `claim` (only a claim outlives the run)".into());
    }
    if let Volume::Claim { claim, .. } | Volume::ConfigMap(claim) | Volume::Secret(claim) = &source
        && claim.is_empty()
    {
        return Err("empty name".into());
    }
    Ok(source)
}

fn is_glob(url: &str) -> bool {
    url.contains(['*', '?', '[', '{'])
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

    fn push(repo: &str, branch: &str) -> Push {
        Push {
            provider: Provider::Github,
            repo_url: repo.to_owned(),
            clone_url: format!("{repo}.git"),
            git_ref: format!("refs/heads/{branch}"),
            ref_kind: RefKind::Branch(branch.to_owned()),
            before: "1".repeat(40),
            after: "2".repeat(40),
            created: false,
            deleted: false,
            forced: false,
            changed_paths: vec![],
            paths_complete: true,
            pusher: "me".into(),
            delivery_id: "d1".into(),
        }
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
