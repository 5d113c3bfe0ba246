//! The typed shape of the one config file (`tekflux.yaml`, a ConfigMap in the cluster).
//!
//! Keys are camelCase as in Kubernetes manifests, and unknown keys are rejected so that typos do
//! not pass silently. Loading, validation, secret resolution and environment overrides live in the
//! parent module; this file only says what the file may contain, apart from the rules of
//! `repositories` ([`super::repositories`]) and `releases` ([`super::releases`]).

use serde::Deserialize;
use std::collections::BTreeMap;

use super::releases::ReleaseRule;
use super::repositories::RepositoryRule;
use super::secret::Secret;
use crate::provider::{self, GitProvider, ProviderSpec};

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

/// Webhook verification settings, one entry per row of the provider table
/// ([`crate::provider`], which says each one's credential, variables and headers).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Providers {
    /// GitHub and GitHub Enterprise Server.
    pub github: Option<ProviderSettings>,
    /// GitLab.
    pub gitlab: Option<ProviderSettings>,
    /// Gitea.
    pub gitea: Option<ProviderSettings>,
    /// Forgejo.
    pub forgejo: Option<ProviderSettings>,
    /// Bitbucket Cloud.
    pub bitbucket: Option<ProviderSettings>,
    /// Flux's notification-controller, to release-changed.
    pub flux: Option<ProviderSettings>,
    /// Container registries' push notifications, to release-changed.
    pub registry: Option<ProviderSettings>,
}

/// A provider key that is no row of the provider table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key:?} is not a provider; known providers: {}",
    provider::known_keys()
)]
pub struct UnknownProvider {
    /// The key as given.
    pub key: String,
}

impl Providers {
    /// Every entry, in the provider table's order ([`provider::all`]). Destructured, so a field
    /// added to the struct without a row here does not compile; a test checks the order.
    fn slots(&self) -> [&Option<ProviderSettings>; 7] {
        let Providers {
            github,
            gitlab,
            gitea,
            forgejo,
            bitbucket,
            flux,
            registry,
        } = self;
        [github, gitlab, gitea, forgejo, bitbucket, flux, registry]
    }

    /// [`Providers::slots`], mutably.
    fn slots_mut(&mut self) -> [&mut Option<ProviderSettings>; 7] {
        let Providers {
            github,
            gitlab,
            gitea,
            forgejo,
            bitbucket,
            flux,
            registry,
        } = self;
        [github, gitlab, gitea, forgejo, bitbucket, flux, registry]
    }

    /// The entry of the provider `key`, when the file (or an override) has one.
    pub fn get(&self, key: &str) -> Option<&ProviderSettings> {
        let row = provider::all().position(|spec| spec.key == key)?;
        self.slots()[row].as_ref()
    }

    /// The entry of the provider `key`, made empty first when there is none; an unknown key is
    /// an error, never another provider's entry.
    pub fn entry(&mut self, key: &str) -> Result<&mut ProviderSettings, UnknownProvider> {
        let unknown = || UnknownProvider {
            key: key.to_owned(),
        };
        let row = provider::all()
            .position(|spec| spec.key == key)
            .ok_or_else(unknown)?;
        let slot = self.slots_mut().into_iter().nth(row).ok_or_else(unknown)?;
        Ok(slot.get_or_insert_with(ProviderSettings::default))
    }

    /// Every row of the table that has an entry, with its entry, in table order.
    pub fn configured(&self) -> impl Iterator<Item = (&'static ProviderSpec, &ProviderSettings)> {
        provider::all()
            .zip(self.slots())
            .filter_map(|(spec, slot)| Some((spec, slot.as_ref()?)))
    }

    /// [`Providers::configured`], mutably.
    pub fn configured_mut(
        &mut self,
    ) -> impl Iterator<Item = (&'static ProviderSpec, &mut ProviderSettings)> {
        provider::all()
            .zip(self.slots_mut())
            .filter_map(|(spec, slot)| Some((spec, slot.as_mut()?)))
    }

    /// The entry of a git provider, when the file (or an override) has one.
    pub fn git(&self, provider: GitProvider) -> Option<&ProviderSettings> {
        self.get(provider.as_str())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    #[test]
    fn every_row_has_its_own_field_and_no_key_falls_into_another() {
        for spec in provider::all() {
            let yaml = format!("{}: {{ insecure: true }}", spec.key);
            let providers: Providers = serde_norway::from_str(&yaml).unwrap();
            let configured: Vec<&str> = providers.configured().map(|(row, _)| row.key).collect();
            assert_eq!(configured, [spec.key]);

            let mut providers = Providers::default();
            providers.entry(spec.key).unwrap().insecure = true;
            let configured: Vec<&str> = providers.configured().map(|(row, _)| row.key).collect();
            assert_eq!(configured, [spec.key]);
            assert!(providers.get(spec.key).is_some_and(|entry| entry.insecure));
        }
        let mut providers = Providers::default();
        let error = providers.entry("gitlba").unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"gitlba\" is not a provider; known providers: github, gitlab, gitea, forgejo, \
             bitbucket, flux, registry"
        );
        assert!(providers.configured().next().is_none());
    }
}
