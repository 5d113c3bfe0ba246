//! A `repositories` rule compiled: every glob, capture, template, name and workspace checked
//! once at start, each problem named by its config field (`repositories[2].branches[0]: …`).
//!
//! The compiled rule is what both routing ([`crate::routing`], which rules a push matches) and
//! the run builder ([`crate::run`], what a matched rule creates) read; neither depends on the
//! other.

use std::collections::{BTreeMap, HashMap};

use tekflux_common::config::{
    Concurrency, Providers, RepositoryRule, WorkspaceBinding, bound_provider, parse_go_duration,
};
use tekflux_common::run_contract::RunKind;

use crate::labels::{
    is_dns1123_label, is_label_key, is_label_value, is_reserved_label, is_rule_name,
};
use crate::path_capture::CapturePattern;
use crate::patterns::Patterns;
use crate::push::Provider;
use crate::repo_url;
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
    /// The only provider whose pushes match.
    pub provider: Provider,
    /// Host of `url` (lowercase, without port); a push's clone URL must be on it.
    pub host: String,
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
    /// The names `paths` capture (`{api}`), in the order the first pattern has them; empty for a
    /// rule without fan-out.
    pub captures: Vec<String>,
    pub(crate) branches: Patterns,
    pub(crate) tags: Patterns,
    pub(crate) paths: Patterns,
    pub(crate) capture_patterns: Vec<CapturePattern>,
}

impl CompiledRule {
    /// The kind of run this rule creates.
    pub fn run_kind(&self) -> RunKind {
        match self.target {
            Target::Pipeline(_) => RunKind::PipelineRun,
            Target::Task(_) => RunKind::TaskRun,
        }
    }
}

/// Compiles the rule at `index`, or lists every problem with it.
pub(crate) fn compile_rule(
    index: usize,
    rule: &RepositoryRule,
    providers: &Providers,
) -> Result<CompiledRule, Vec<RuleError>> {
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
    // Only for a URL that is one, as `tekflux check-config` does: a bad URL is one error.
    let provider = if url.is_empty() {
        None
    } else {
        match bound_provider(rule, providers) {
            Ok(provider) => Some(provider),
            Err(problem) => {
                let field = problem.key.map(|key| format!(".{key}")).unwrap_or_default();
                error(field, problem.message);
                None
            }
        }
    };
    let host = repo_url::host(&url).unwrap_or_default();

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
    if target.is_some() && !is_rule_name(&name) {
        error(
            ".name".into(),
            format!(
                "{name:?} is not a valid rule name (lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 63 characters)"
            ),
        );
    }

    let mut globs = |field: &str, sources: &[String]| -> Patterns {
        Patterns::compile(sources).unwrap_or_else(|problems| {
            for (at, message) in problems {
                let position = at.map(|i| format!("[{i}]")).unwrap_or_default();
                error(format!(".{field}{position}"), message);
            }
            Patterns::default()
        })
    };
    let branches = globs("branches", &rule.branches);
    let tags = globs("tags", &rule.tags);
    let paths = globs("paths", &rule.paths);
    let mut capture_patterns = Vec::new();
    let mut plain_paths = Vec::new();
    for (i, source) in rule.paths.iter().enumerate() {
        match CapturePattern::parse(source) {
            Ok(Some(pattern)) => capture_patterns.push(pattern),
            Ok(None) => plain_paths.push(i),
            Err(message) => error(format!(".paths[{i}]"), message),
        }
    }
    let mut captures: Vec<String> = Vec::new();
    if let Some(first) = capture_patterns.first() {
        let in_order: Vec<&str> = first.names();
        let mut names = in_order.clone();
        names.sort_unstable();
        // Every run gets every value: all patterns of a fan-out rule capture the same names.
        for (i, pattern) in capture_patterns.iter().enumerate().skip(1) {
            let mut other = pattern.names();
            other.sort_unstable();
            if other != names {
                error(
                    ".paths".into(),
                    format!(
                        "{:?} captures {{{}}} but {:?} captures {{{}}}: every pattern of a \
                         fan-out rule captures the same names",
                        first.source(),
                        names.join("}, {"),
                        capture_patterns[i].source(),
                        other.join("}, {")
                    ),
                );
            }
        }
        for i in &plain_paths {
            error(
                format!(".paths[{i}]"),
                format!(
                    "captures nothing while {:?} captures: in a fan-out rule every pattern \
                     captures the same names",
                    first.source()
                ),
            );
        }
        captures = in_order.into_iter().map(str::to_owned).collect();
    }

    if let Some(ns) = &rule.namespace
        && !is_dns1123_label(ns)
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
            Ok(t) => {
                for name in t.captures() {
                    if !captures.iter().any(|captured| captured == name) {
                        error(
                            format!(".params.{param}"),
                            if captures.is_empty() {
                                format!(
                                    "{{{{ paths.{name} }}}}: this rule's paths capture nothing; \
                                     capture a segment with {{{name}}}, e.g. `apis/{{{name}}}/**`"
                                )
                            } else {
                                format!(
                                    "{{{{ paths.{name} }}}}: this rule's paths capture only \
                                     {{{}}}",
                                    captures.join("}, {")
                                )
                            },
                        );
                    }
                }
                params.push((param.clone(), t));
            }
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
        if !is_label_key(key) {
            error(format!(".labels.{key}"), "not a valid label key".into());
        } else if is_reserved_label(key) {
            error(
                format!(".labels.{key}"),
                "this label is set by tekflux".into(),
            );
        }
        if !is_label_value(value) {
            error(
                format!(".labels.{key}"),
                format!("{value:?} is not a valid label value"),
            );
        }
    }

    match (target, provider) {
        (Some(target), Some(provider)) if errors.is_empty() => Ok(CompiledRule {
            index,
            name,
            url,
            provider,
            host,
            target,
            namespace: rule.namespace.clone(),
            params,
            workspaces,
            service_account: rule.service_account.clone().filter(|s| !s.is_empty()),
            timeout: rule.timeout.clone(),
            concurrency: rule.concurrency,
            labels: rule.labels.clone(),
            captures,
            branches,
            tags,
            paths,
            capture_patterns,
        }),
        _ => Err(errors),
    }
}

/// Two rules with one name for one repository would create runs with the same name for the same
/// delivery, so the second would be taken for a redelivery and never run.
pub(crate) fn check_unique_names(rules: &[CompiledRule], errors: &mut Vec<RuleError>) {
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
