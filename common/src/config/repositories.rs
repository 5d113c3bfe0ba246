//! `repositories`: which pushes start which Tekton runs, and how a rule reports its build.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::duration::parse_go_duration;
use super::model::StatusSettings;
use super::secret::Secret;
use crate::provider::GitProvider;

/// `repositories[].status`: `false` turns reporting off for the rule, `true` insists on it
/// (a config without the provider's `status` is then refused), a mapping sets the context.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RuleStatus {
    /// `status: true` / `status: false`.
    Enabled(bool),
    /// `status: { context: ... }`.
    Settings(RuleStatusSettings),
}

/// `repositories[].status` as a mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleStatusSettings {
    /// The whole status context (Bitbucket's key) of this rule's runs, instead of
    /// `<providers.*.status.context>/<rule>`.
    pub context: Option<String>,
    /// This rule's own API token (`env:`/`file:`), instead of the provider's: for tokens that
    /// reach one repository (GitLab project and Bitbucket repository access tokens).
    pub token: Option<Secret>,
}

/// One onboarded repository (or a glob of them): which pushes start which Tekton run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepositoryRule {
    /// Stable rule name, part of run names; defaults to the pipeline or task name.
    pub name: Option<String>,
    /// Repository URL (https, ssh or `.git` form); `*` globs match organisations or names.
    pub url: String,
    /// The only provider whose pushes may start this rule. When unset it is inferred (see
    /// [`super::bound_provider`]): from a well-known host, else the one configured git provider.
    pub provider: Option<GitProvider>,
    /// Branch globs; empty means every branch (unless `tags` is set).
    #[serde(default)]
    pub branches: Vec<String>,
    /// Tag globs; empty means no tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Changed-path globs; empty means any change.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Pipeline to run as a PipelineRun (exactly one of `pipeline` and `task`).
    pub pipeline: Option<String>,
    /// Task to run as a TaskRun.
    pub task: Option<String>,
    /// Namespace of the run; the top-level `namespace` when unset.
    pub namespace: Option<String>,
    /// Params passed to the run; values may use `{{ variable }}`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Workspaces bound to the run, by workspace name.
    #[serde(default)]
    pub workspaces: BTreeMap<String, WorkspaceBinding>,
    /// Service account the run's pods use.
    pub service_account: Option<String>,
    /// Run timeout as a Go duration (`1h30m`).
    pub timeout: Option<String>,
    /// What happens to older unfinished runs of this rule on the same branch.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Extra labels on the run.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Commit status reporting for this rule's runs (see [`RuleStatus`]); on by default when
    /// the rule's provider has a `status` entry.
    pub status: Option<RuleStatus>,
}

/// What a new push does to older unfinished runs of the same rule, repository and branch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Concurrency {
    /// Older runs go on.
    #[default]
    Allow,
    /// Older runs are cancelled (`spec.status: Cancelled`).
    Supersede,
}

/// How one Tekton workspace is bound. Exactly one volume source is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkspaceBinding {
    /// An existing PersistentVolumeClaim; each run gets its own `subPath` in it.
    pub claim: Option<String>,
    /// A fresh volume per run, from this template.
    pub volume_claim_template: Option<VolumeClaimTemplate>,
    /// An emptyDir volume.
    pub empty_dir: Option<EmptyDir>,
    /// A ConfigMap mounted read-only.
    pub config_map: Option<String>,
    /// A Secret mounted read-only.
    pub secret: Option<String>,
    /// Archive this workspace to object storage when the run finishes (claims only).
    #[serde(default)]
    pub archive: bool,
}

/// The parts of a PersistentVolumeClaim spec users set for a per-run volume.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeClaimTemplate {
    /// Requested size, e.g. `1Gi`.
    pub storage: String,
    /// Access modes; `ReadWriteOnce` when empty.
    #[serde(default)]
    pub access_modes: Vec<String>,
    /// Storage class; the cluster default when unset.
    pub storage_class_name: Option<String>,
}

/// An emptyDir volume.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmptyDir {
    /// `Memory` for tmpfs.
    pub medium: Option<String>,
    /// Size limit, e.g. `1Gi`.
    pub size_limit: Option<String>,
}

impl RepositoryRule {
    /// The rule's name: `name`, or else the pipeline or task name. `None` only for a rule that
    /// names neither, which a loaded config never has.
    pub fn rule_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or(self.pipeline.as_deref())
            .or(self.task.as_deref())
    }

    /// The run timeout; `None` when unset or unparseable (a loaded config has it validated).
    /// `Some(Duration::ZERO)` means "no timeout", as `0` does for Tekton.
    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout
            .as_deref()
            .and_then(|t| parse_go_duration(t).ok())
    }
}

/// The context prefix when `providers.*.status.context` is unset.
pub const DEFAULT_STATUS_CONTEXT: &str = "tekflux";

impl RepositoryRule {
    /// Whether the rule's runs are reported, given its provider's status settings.
    pub fn reports_status(&self, provider: Option<&StatusSettings>) -> bool {
        provider.is_some() && !matches!(self.status, Some(RuleStatus::Enabled(false)))
    }

    /// The status context (Bitbucket: key) of the rule's runs: the rule's own `context`, else
    /// `<provider context>/<rule name>`. Stable: it changes only when the config does.
    pub fn status_context(&self, provider: Option<&StatusSettings>) -> String {
        if let Some(RuleStatus::Settings(RuleStatusSettings {
            context: Some(context),
            ..
        })) = &self.status
        {
            return context.clone();
        }
        let prefix = provider
            .and_then(|settings| settings.context.as_deref())
            .unwrap_or(DEFAULT_STATUS_CONTEXT);
        format!("{prefix}/{}", self.rule_name().unwrap_or_default())
    }

    /// The rule's own status token, when it has one.
    pub fn status_token(&self) -> Option<&Secret> {
        match &self.status {
            Some(RuleStatus::Settings(settings)) => settings.token.as_ref(),
            _ => None,
        }
    }

    /// The namespace the rule's runs are created in.
    pub fn run_namespace<'a>(&'a self, default_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default_namespace)
    }
}
