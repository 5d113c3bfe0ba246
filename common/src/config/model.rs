//! The typed shape of the one config file (`tekflux.yaml`, a ConfigMap in the cluster).
//!
//! Keys are camelCase as in Kubernetes manifests, and unknown keys are rejected so that typos do
//! not pass silently. Loading, validation, secret resolution and environment overrides live in the
//! parent module; this file only says what the file may contain.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use super::duration::parse_go_duration;

use super::secret::Secret;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Namespace where runs are created and releases looked up when a rule names none.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Webhook secrets per git provider.
    #[serde(default)]
    pub providers: Providers,
    /// Object storage for archived workspaces and logs.
    #[serde(default)]
    pub storage: Storage,
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerSettings,
    /// Kubernetes client settings.
    #[serde(default)]
    pub kubernetes: KubernetesSettings,
    /// Which pushes start which Tekton runs.
    #[serde(default)]
    pub repositories: Vec<RepositoryRule>,
    /// Which artifacts update which HelmReleases.
    #[serde(default)]
    pub releases: Vec<ReleaseRule>,
    /// Who may send CloudEvents to the functions' `POST /`.
    #[serde(default)]
    pub events: Events,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// Webhook verification settings, one entry per provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Providers {
    /// GitHub and GitHub Enterprise Server (`X-Hub-Signature-256`).
    pub github: Option<ProviderSettings>,
    /// GitLab (`X-Gitlab-Token`).
    pub gitlab: Option<ProviderSettings>,
    /// Gitea (`X-Gitea-Signature`).
    pub gitea: Option<ProviderSettings>,
    /// Forgejo (`X-Forgejo-Signature`, or Gitea's headers).
    pub forgejo: Option<ProviderSettings>,
    /// Bitbucket Cloud (`X-Hub-Signature`).
    pub bitbucket: Option<ProviderSettings>,
    /// Flux's notification-controller, to release-changed (`generic-hmac`: `X-Signature`).
    pub flux: Option<ProviderSettings>,
    /// Container registries' push notifications, to release-changed (`Authorization` token).
    pub registry: Option<ProviderSettings>,
}

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
    /// Every git provider, in the order the config lists them.
    pub const ALL: [GitProvider; 5] = [
        GitProvider::Github,
        GitProvider::Gitlab,
        GitProvider::Gitea,
        GitProvider::Forgejo,
        GitProvider::Bitbucket,
    ];

    /// The lowercase name used in config keys, paths (`/webhooks/{provider}`) and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            GitProvider::Github => "github",
            GitProvider::Gitlab => "gitlab",
            GitProvider::Gitea => "gitea",
            GitProvider::Forgejo => "forgejo",
            GitProvider::Bitbucket => "bitbucket",
        }
    }

    /// The largest webhook body the provider sends, in bytes: git-push reads no more from a
    /// webhook that says it comes from this provider (never more than `server.bodyLimit`).
    ///
    /// - GitHub: "payloads are capped at 25 MB" (GitHub's webhook docs).
    /// - GitLab: 25 MB since GitLab 13.3 (gitlab-org/gitlab!38687; larger payloads are not sent).
    /// - Bitbucket Cloud: 256 KB (larger webhooks fail on Bitbucket's side, BCLOUD-22312); 1 MiB
    ///   leaves room.
    /// - Gitea and Forgejo publish no cap (their commit lists are short, `PAYLOAD_COMMIT_LIMIT`),
    ///   so 25 MiB like the others.
    pub fn max_webhook_bytes(self) -> usize {
        match self {
            GitProvider::Bitbucket => 1024 * 1024,
            GitProvider::Github
            | GitProvider::Gitlab
            | GitProvider::Gitea
            | GitProvider::Forgejo => 25 * 1024 * 1024,
        }
    }
}

impl std::fmt::Display for GitProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Providers {
    /// The entry of a git provider, when the file (or an override) has one.
    pub fn git(&self, provider: GitProvider) -> Option<&ProviderSettings> {
        match provider {
            GitProvider::Github => self.github.as_ref(),
            GitProvider::Gitlab => self.gitlab.as_ref(),
            GitProvider::Gitea => self.gitea.as_ref(),
            GitProvider::Forgejo => self.forgejo.as_ref(),
            GitProvider::Bitbucket => self.bitbucket.as_ref(),
        }
    }

    /// The git providers that have an entry, in [`GitProvider::ALL`] order.
    pub fn configured_git(&self) -> Vec<GitProvider> {
        GitProvider::ALL
            .into_iter()
            .filter(|provider| self.git(*provider).is_some())
            .collect()
    }
}

/// How one provider's webhooks are authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderSettings {
    /// HMAC secret (GitHub, Gitea, Forgejo, Bitbucket).
    pub secret: Option<Secret>,
    /// Shared token compared in constant time (GitLab's `X-Gitlab-Token`).
    pub token: Option<Secret>,
    /// Accept unsigned webhooks. Off by default: without a secret, webhooks are rejected.
    #[serde(default)]
    pub insecure: bool,
    /// Reporting builds back to the provider as commit statuses (git providers only): with
    /// this set, every rule bound to the provider reports unless it says `status: false`.
    pub status: Option<StatusSettings>,
}

/// `providers.<git provider>.status`: where and how the build's state is posted on the commit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusSettings {
    /// The provider's REST API base (`https://github.example.com/api/v3`); only this host ever
    /// receives the token, never one taken from a webhook. Defaults for the hosted services:
    /// `https://api.github.com`, `https://gitlab.com/api/v4`, `https://api.bitbucket.org/2.0`;
    /// required for Gitea and Forgejo.
    pub api: Option<String>,
    /// API token (`env:`/`file:`): a GitHub token with commit-status write, a GitLab token with
    /// `api`, a Gitea/Forgejo token with `write:repository`, a Bitbucket access token with
    /// `repository:write`.
    pub token: Option<Secret>,
    /// GitHub only: report check runs as this GitHub App (installation tokens minted when
    /// reporting) instead of commit statuses with `token`.
    pub app: Option<GithubAppSettings>,
    /// PEM file of extra CA certificates that the API's TLS certificate may chain to.
    pub ca_bundle: Option<String>,
    /// First part of every status context (`<context>/<rule>`), e.g. a cluster name so two
    /// clusters never overwrite each other's statuses; `tekflux` when unset.
    pub context: Option<String>,
    /// Link on the status, with `{namespace}`, `{name}`, `{kind}`, `{uid}`, `{rule}`, `{sha}`
    /// replaced (e.g. `https://dashboard/#/namespaces/{namespace}/pipelineruns/{name}`).
    pub target_url: Option<String>,
}

/// `providers.github.status.app`: the GitHub App that reports check runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GithubAppSettings {
    /// The App's id (its settings page, "App ID").
    pub id: u64,
    /// The installation's id on the organisation or account that holds the repositories.
    pub installation_id: u64,
    /// The App's private key, the PEM GitHub hands out (`env:`/`file:`).
    pub private_key: Secret,
}

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

/// How CloudEvent senders (`POST /` of every function) are authenticated: Knative Eventing's
/// sender identity (OIDC), a static bearer token, or neither when `insecure` says so.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Events {
    /// Bearer token for senders that cannot do OIDC: a person's `curl`, another CI system.
    pub token: Option<Secret>,
    /// Knative Eventing sender identity: service-account JWTs checked against the cluster's
    /// issuer, per function.
    pub oidc: Option<OidcSettings>,
    /// Accept unauthenticated CloudEvents. Off by default: without a token or OIDC, `POST /`
    /// answers 401.
    #[serde(default)]
    pub insecure: bool,
}

/// Knative Eventing sender identity (OIDC) settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcSettings {
    /// The issuer tokens must name (`iss`); when unset, the one the API server's OIDC discovery
    /// document names.
    pub issuer: Option<String>,
    /// Who may send to git-push.
    pub git_push: Option<OidcReceiver>,
    /// Who may send to run-complete.
    pub run_complete: Option<OidcReceiver>,
    /// Who may send to release-changed.
    pub release_changed: Option<OidcReceiver>,
    /// Who may send undeliverable events to the dead-letter store (`POST /dead-letters` of
    /// run-complete's Service): the Broker's Triggers.
    pub dead_letters: Option<OidcReceiver>,
}

/// One function's OIDC audience and allowed senders.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcReceiver {
    /// The audience tokens must be issued for (`aud`), as the Trigger's `subscriber.audience`
    /// says; `tekflux/<function>` when unset.
    pub audience: Option<String>,
    /// Token subjects (`sub`) allowed to send, e.g.
    /// `system:serviceaccount:cicd:git-push-github-oidc-eventing.knative.dev-trigger`; a
    /// trailing `*` matches any rest, as in Knative's EventPolicy.
    #[serde(default)]
    pub senders: Vec<String>,
}

/// Object storage (S3 or an S3-compatible store such as MinIO).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Storage {
    /// Bucket that holds archives, logs and manifests.
    pub bucket: Option<String>,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL; overrides `AWS_ENDPOINT_URL_S3` when set here.
    pub endpoint: Option<String>,
    /// Region; the SDK's own region chain is used when unset.
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`), needed by MinIO and most S3-compatible stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// Where each claim is mounted in the function's pod, by claim name.
    #[serde(default)]
    pub mounts: BTreeMap<String, String>,
    /// zstd compression level for workspace archives.
    pub compression_level: Option<i32>,
    /// Multipart upload part size in MiB.
    pub part_size_mib: Option<u64>,
    /// Most bytes of file content one workspace archive may hold; a larger tree is refused as
    /// soon as the walk reaches the file that crosses it, before that file is read.
    pub max_archive_bytes: Option<u64>,
    /// Most entries (files, directories, links) one workspace archive may hold; a larger tree
    /// is refused when the walk reaches the entry that crosses it. Restore accepts 1,000,000 by
    /// default, so archiving more would only store what cannot come back.
    pub max_archive_entries: Option<u64>,
    /// Most bytes kept of one step's log; a longer log is cut there and marked truncated in the
    /// manifest (never a failure).
    pub max_log_bytes: Option<u64>,
    /// Remove a run's workspace directory after its archive is verified.
    #[serde(default)]
    pub cleanup: bool,
}

/// HTTP server settings. `PORT` overrides `port`, as Knative expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSettings {
    /// Address to listen on: every interface by default (what a pod needs), `127.0.0.1` to
    /// keep a laptop's server to itself.
    pub address: std::net::IpAddr,
    /// Listen port.
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Longest time a request may take, in seconds; keep it below the pod's grace period.
    pub request_timeout_seconds: u64,
    /// Longest time in-flight requests get to finish after SIGTERM, in seconds.
    pub shutdown_timeout_seconds: u64,
    /// Most requests a process works on at once (health and metrics aside); more are answered
    /// 503 with `Retry-After` instead of queueing in memory.
    pub max_concurrent_requests: usize,
    /// Most request-body bytes a process holds at once: each request reserves its
    /// `Content-Length` (or, without one, `bodyLimit`) before its body is read; a request that
    /// does not fit is answered 503 with `Retry-After`.
    pub max_body_bytes_in_flight: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 8080,
            body_limit: 25 * 1024 * 1024,
            request_timeout_seconds: 25,
            shutdown_timeout_seconds: 20,
            max_concurrent_requests: 64,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
        }
    }
}

/// Kubernetes client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSettings {
    /// Timeout for every API call, in seconds.
    pub timeout_seconds: u64,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            timeout_seconds: 10,
        }
    }
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

/// Which artifact updates which HelmRelease.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseRule {
    /// Image repository (without tag or digest) whose new versions trigger the release.
    pub image: Option<String>,
    /// Chart whose new versions trigger the release.
    pub chart: Option<String>,
    /// The HelmRelease, as `namespace/name` (or `name` in the top-level namespace).
    pub helm_release: String,
    /// Dotted path in the release's values that receives the new version (e.g. `image.tag`);
    /// when unset, the chart version is changed instead.
    pub set: Option<String>,
    /// Which HelmRelease API to apply.
    #[serde(default)]
    pub api: HelmReleaseApi,
    /// Which builds may release: required for every rule (a loaded config always has it).
    pub from: Option<ReleaseFrom>,
    /// Dotted values paths that explicit `dev.tekflux.release.changed.v1` events may set in
    /// this release (a path covers everything beneath it); no others.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `releases[].from`: which builds may release a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseFrom {
    /// `from: any`: every event that names the image or chart releases, whoever sent it and
    /// whatever built it. For third-party CDEvents producers, whose builds cannot be checked.
    Any,
    /// Only builds that these sources describe.
    Sources(ReleaseSources),
}

/// The text of [`ReleaseFrom::Any`].
pub const FROM_ANY: &str = "any";

/// `from: { rules, branches, tags, registry }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseSources {
    /// Names of `repositories` rules whose succeeded runs may release.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Branch globs those runs must have been created for.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Tag globs those runs must have been created for.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether registry push notifications (`/webhooks/registry`, token-checked, no run to
    /// verify) may release.
    #[serde(default)]
    pub registry: bool,
}

impl<'de> Deserialize<'de> for ReleaseFrom {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FromVisitor;

        impl<'de> serde::de::Visitor<'de> for FromVisitor {
            type Value = ReleaseFrom;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "`{FROM_ANY}` or a mapping with `rules`, `branches`, `tags` and `registry`"
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ReleaseFrom, E> {
                if text == FROM_ANY {
                    Ok(ReleaseFrom::Any)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(text), &self))
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ReleaseFrom, A::Error> {
                ReleaseSources::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ReleaseFrom::Sources)
            }
        }

        deserializer.deserialize_any(FromVisitor)
    }
}

/// The HelmRelease flavour a release rule targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HelmReleaseApi {
    /// Flux v2 `helm.toolkit.fluxcd.io/v2`.
    #[default]
    Flux,
    /// The older Helm Operator `helm.fluxcd.io/v1`.
    HelmOperator,
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

impl ReleaseRule {
    /// The HelmRelease's namespace and name, taking `default_namespace` (the top-level
    /// `namespace`) when `helmRelease` has no `namespace/` part.
    pub fn helm_release_ref<'a>(&'a self, default_namespace: &'a str) -> (&'a str, &'a str) {
        match self.helm_release.split_once('/') {
            Some((namespace, name)) => (namespace, name),
            None => (default_namespace, &self.helm_release),
        }
    }

    /// The names `image:` captures (`registry.example.com/{api}`), or `chart:` (`"{api}"`, the
    /// whole chart name); empty for a plain image or chart.
    pub fn captures(&self) -> Vec<&str> {
        match (&self.image, &self.chart) {
            (Some(image), _) => super::capture::capture_names(image),
            (None, Some(chart)) => super::capture::capture_name(chart).into_iter().collect(),
            (None, None) => Vec::new(),
        }
    }

    /// `(namespace, name)` of the HelmRelease for the values `image:` captured; for a rule
    /// without captures, its one HelmRelease.
    pub fn helm_release_for(
        &self,
        default_namespace: &str,
        captures: &super::capture::Captures,
    ) -> (String, String) {
        let (namespace, name) = self.helm_release_ref(default_namespace);
        (
            super::capture::substitute(namespace, captures),
            super::capture::substitute(name, captures),
        )
    }

    /// The captures when `namespace/name` is a HelmRelease this rule names: its literal parts
    /// equal, its captured parts any non-empty value. `None` when it names another.
    pub fn names_release(
        &self,
        default_namespace: &str,
        namespace: &str,
        name: &str,
    ) -> Option<super::capture::Captures> {
        let (rule_namespace, rule_name) = self.helm_release_ref(default_namespace);
        let mut captures = super::capture::match_segments(rule_namespace, namespace)?;
        for (key, value) in super::capture::match_segments(rule_name, name)? {
            // `{api}/{api}`: both parts must agree.
            if captures
                .insert(key, value.clone())
                .is_some_and(|first| first != value)
            {
                return None;
            }
        }
        Some(captures)
    }

    /// Whether `from: any`: events release this rule without any check of what built them.
    pub fn from_any(&self) -> bool {
        self.from == Some(ReleaseFrom::Any)
    }

    /// The `from:` sources, unless `from: any` (or missing, which a loaded config never is).
    pub fn from_sources(&self) -> Option<&ReleaseSources> {
        match &self.from {
            Some(ReleaseFrom::Sources(sources)) => Some(sources),
            _ => None,
        }
    }

    /// The `set` path's keys, when the rule writes a value.
    pub fn set_path(&self) -> Option<Vec<&str>> {
        self.set.as_deref().map(|set| set.split('.').collect())
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
