//! Rules a parsed config must keep; each finding names the field path it is about.
//!
//! Param templates and the `repositories` globs are not checked here: git-push owns their syntax
//! and checks them when it compiles its routing table at start. Which provider a rule is bound
//! to ([`bound_provider`]) is decided here, once, for both: git-push calls the same function.
//! The branch and tag globs of `releases[].from` are checked here ([`RefGlob`]), since
//! release-changed only matches them.

use std::collections::BTreeMap;
use std::path::Path;

use super::capture::{capture_name, has_embedded_capture};
use super::duration::parse_go_duration;
use super::keys;
use super::locate::FieldPath;
use super::model::{
    Config, GitProvider, ProviderSettings, Providers, ReleaseFrom, ReleaseRule, ReleaseSources,
    RepositoryRule, RuleStatus, StatusSettings, WorkspaceBinding,
};
use super::ref_glob::RefGlob;
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
        providers(config, &root.key(keys::PROVIDERS), &mut findings);
        repositories(config, &root.key(keys::REPOSITORIES), &mut findings);
    }
    if sections.includes(Part::Storage) {
        storage(config, &root.key(keys::STORAGE), &mut findings);
    }
    if sections.includes(Part::Service) {
        server(config, &root, &mut findings);
        for (index, rule) in config.releases.iter().enumerate() {
            let path = root.key(keys::RELEASES).index(index);
            release(rule, &path, &mut findings);
            release_from(config, rule, &path, &mut findings);
            release_values(config, rule, &path, &mut findings);
        }
        events(config, &root.key(keys::EVENTS), &mut findings);
    }
    findings.0
}

/// `events.oidc`: an issuer that is a URL, and for each function named, allowed senders
/// whose only wildcard is a trailing `*`.
fn events(config: &Config, path: &FieldPath, findings: &mut Findings) {
    let Some(oidc) = &config.events.oidc else {
        return;
    };
    let path = path.key(keys::OIDC);
    if let Some(issuer) = &oidc.issuer
        && url::Url::parse(issuer).is_err()
    {
        findings.push(
            path.key(keys::ISSUER),
            format!(
                "{issuer:?} is not a URL; use the cluster's service-account issuer, e.g. \
                 https://kubernetes.default.svc.cluster.local, or leave it out to take the \
                 one the API server announces"
            ),
        );
    }
    let receivers = [
        (keys::GIT_PUSH, &oidc.git_push),
        (keys::RUN_COMPLETE, &oidc.run_complete),
        (keys::RELEASE_CHANGED, &oidc.release_changed),
        (keys::DEAD_LETTERS, &oidc.dead_letters),
    ];
    if receivers.iter().all(|(_, receiver)| receiver.is_none()) {
        findings.push(
            path.clone(),
            format!(
                "names no function: add `{}`, `{}` or `{}` with the `{}` allowed to send to it",
                keys::GIT_PUSH,
                keys::RUN_COMPLETE,
                keys::RELEASE_CHANGED,
                keys::SENDERS
            ),
        );
    }
    for (name, receiver) in receivers {
        let Some(receiver) = receiver else { continue };
        let path = path.key(name);
        if receiver
            .audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            findings.push(
                path.key(keys::AUDIENCE),
                "must not be empty; leave it out for the default".to_owned(),
            );
        }
        if receiver.senders.is_empty() {
            findings.push(
                path.key(keys::SENDERS),
                "lists no sender: name the service accounts of the Triggers that deliver to \
                 this function (system:serviceaccount:<namespace>:<trigger>-oidc-eventing.knative.dev-trigger)"
                    .to_owned(),
            );
        }
        for (index, sender) in receiver.senders.iter().enumerate() {
            let star = sender.find('*');
            if sender.trim().is_empty()
                || star.is_some_and(|at| at + 1 != sender.len())
                || sender == "*"
            {
                findings.push(
                    path.key(keys::SENDERS).index(index),
                    format!(
                        "{sender:?} is not a sender: a token subject such as \
                         system:serviceaccount:<namespace>:<name>, with at most a trailing `*`"
                    ),
                );
            }
        }
    }
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, path: FieldPath, message: String) {
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

fn not_a_label(value: &str) -> String {
    format!(
        "{value:?} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', \
         starting and ending with a letter or digit)"
    )
}

fn providers(config: &Config, path: &FieldPath, findings: &mut Findings) {
    let providers = &config.providers;
    for provider in GitProvider::ALL {
        if let Some(status) = providers.git(provider).and_then(|p| p.status.as_ref()) {
            status_settings(
                provider,
                status,
                &path.key(provider.as_str()).key(keys::STATUS),
                findings,
            );
        }
    }
    for (name, settings) in [
        (keys::FLUX, &providers.flux),
        (keys::REGISTRY, &providers.registry),
    ] {
        if settings.as_ref().is_some_and(|s| s.status.is_some()) {
            findings.push(
                path.key(name).key(keys::STATUS),
                "commit statuses are reported to git providers only".to_owned(),
            );
        }
    }
    let hmac = [
        (keys::GITHUB, &providers.github),
        (keys::GITEA, &providers.gitea),
        (keys::FORGEJO, &providers.forgejo),
        (keys::BITBUCKET, &providers.bitbucket),
        (keys::FLUX, &providers.flux),
    ];
    for (name, settings) in hmac {
        let Some(settings) = settings else { continue };
        let path = path.key(name);
        if settings.token.is_some() {
            findings.push(
                path.key(keys::TOKEN),
                format!(
                    "{name} signs webhooks with an HMAC secret: use `{}`, not `{}`",
                    keys::SECRET,
                    keys::TOKEN
                ),
            );
        } else {
            unauthenticated(settings, keys::SECRET, &path, findings);
        }
    }
    let token = [
        (keys::GITLAB, &providers.gitlab, "X-Gitlab-Token"),
        (keys::REGISTRY, &providers.registry, "Authorization"),
    ];
    for (name, settings, header) in token {
        let Some(settings) = settings else { continue };
        let path = path.key(name);
        if settings.secret.is_some() {
            findings.push(
                path.key(keys::SECRET),
                format!(
                    "{name} authenticates webhooks with a shared token ({header}): \
                     use `{}`, not `{}`",
                    keys::TOKEN,
                    keys::SECRET
                ),
            );
        } else {
            unauthenticated(settings, keys::TOKEN, &path, findings);
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
        None if matches!(provider, GitProvider::Gitea | GitProvider::Forgejo) => findings.push(
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
fn rule_status(
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
    key: &str,
    path: &FieldPath,
    findings: &mut Findings,
) {
    let credential = if key == keys::TOKEN {
        &settings.token
    } else {
        &settings.secret
    };
    if credential.is_none() && !settings.insecure {
        findings.push(
            path.clone(),
            format!(
                "set `{key}` (`env:NAME` or `file:/path`), or `{}: true` to accept unsigned \
                 webhooks",
                keys::INSECURE
            ),
        );
    }
}

fn storage(config: &Config, path: &FieldPath, findings: &mut Findings) {
    let storage = &config.storage;
    if storage.bucket.as_deref().is_some_and(str::is_empty) {
        findings.push(path.key(keys::BUCKET), "must not be empty".into());
    }
    if let Some(endpoint) = &storage.endpoint {
        let ok = url::Url::parse(endpoint)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !ok {
            findings.push(
                path.key(keys::ENDPOINT),
                format!("{endpoint:?} is not an http(s) URL"),
            );
        }
    }
    if let Some(level) = storage.compression_level
        && !COMPRESSION_LEVELS.contains(&level)
    {
        findings.push(
            path.key(keys::COMPRESSION_LEVEL),
            format!(
                "{level} is not a zstd level ({} to {})",
                COMPRESSION_LEVELS.start(),
                COMPRESSION_LEVELS.end()
            ),
        );
    }
    if let Some(size) = storage.part_size_mib
        && !PART_SIZE_MIB.contains(&size)
    {
        findings.push(
            path.key(keys::PART_SIZE_MIB),
            format!(
                "{size} MiB is outside S3's multipart part sizes ({} to {} MiB)",
                PART_SIZE_MIB.start(),
                PART_SIZE_MIB.end()
            ),
        );
    }
    if storage.max_archive_bytes == Some(0) {
        findings.push(
            path.key(keys::MAX_ARCHIVE_BYTES),
            "must be above 0 (leave it out for the default)".into(),
        );
    }
    if storage.max_archive_entries == Some(0) {
        findings.push(
            path.key(keys::MAX_ARCHIVE_ENTRIES),
            "must be above 0 (leave it out for the default)".into(),
        );
    }
    if storage.max_log_bytes == Some(0) {
        findings.push(
            path.key(keys::MAX_LOG_BYTES),
            "must be above 0 (leave it out for the default)".into(),
        );
    }
    for (claim, mount) in &storage.mounts {
        if !Path::new(mount).is_absolute() {
            findings.push(
                path.key(keys::MOUNTS).key(claim),
                format!("{mount:?} is not an absolute path"),
            );
        }
    }
}

fn server(config: &Config, root: &FieldPath, findings: &mut Findings) {
    let server = &config.server;
    let path = root.key(keys::SERVER);
    if server.body_limit == 0 {
        findings.push(path.key(keys::BODY_LIMIT), "must be above 0".into());
    }
    if server.max_concurrent_requests == 0 {
        findings.push(
            path.key(keys::MAX_CONCURRENT_REQUESTS),
            "must be above 0".into(),
        );
    }
    if server.max_body_bytes_in_flight < server.body_limit {
        findings.push(
            path.key(keys::MAX_BODY_BYTES_IN_FLIGHT),
            format!(
                "{} is below bodyLimit ({}), so a body of the largest allowed size could never \
                 be read; raise it or lower bodyLimit",
                server.max_body_bytes_in_flight, server.body_limit
            ),
        );
    }
    let timeouts = [
        (
            keys::REQUEST_TIMEOUT_SECONDS,
            server.request_timeout_seconds,
        ),
        (
            keys::SHUTDOWN_TIMEOUT_SECONDS,
            server.shutdown_timeout_seconds,
        ),
    ];
    for (key, seconds) in timeouts {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
            findings.push(
                path.key(key),
                format!(
                    "{seconds} is outside 1 to {MAX_TIMEOUT_SECONDS}; keep it below the pod's \
                     termination grace period (Knative: the Service's timeoutSeconds)"
                ),
            );
        }
    }
    if config.kubernetes.timeout_seconds == 0 {
        findings.push(
            root.key(keys::KUBERNETES).key(keys::TIMEOUT_SECONDS),
            "must be above 0".into(),
        );
    }
}

/// How a rule got its name, for messages that tell the user what to change.
enum NameSource {
    Explicit,
    Target(&'static str),
}

fn repositories(config: &Config, path: &FieldPath, findings: &mut Findings) {
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
fn rough_repository_key(url: &str) -> String {
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

fn release(rule: &ReleaseRule, path: &FieldPath, findings: &mut Findings) {
    let reference = &rule.helm_release;
    let captured = rule.captures();
    // A part is a DNS-1123 label, or a capture of `image:` (an image per API).
    let part_ok = |part: &str| is_dns1123_label(part) || capture_name(part).is_some();
    let parts_ok = match reference.split_once('/') {
        Some((namespace, name)) => part_ok(namespace) && part_ok(name),
        None => part_ok(reference),
    };
    if !parts_ok {
        findings.push(
            path.key(keys::HELM_RELEASE),
            format!(
                "{reference:?} is not `name` or `namespace/name` with DNS-1123 labels \
                 (lowercase letters, digits and '-'), each part possibly a capture of `{}:` \
                 such as `{{api}}`",
                keys::IMAGE
            ),
        );
    }
    for name in reference.split('/').filter_map(capture_name) {
        if !captured.contains(&name) {
            findings.push(
                path.key(keys::HELM_RELEASE),
                if rule.image.is_some() {
                    format!(
                        "{{{name}}} is not captured by `{}:`; capture it there, e.g. \
                         `registry.example.com/{{{name}}}`",
                        keys::IMAGE
                    )
                } else {
                    format!(
                        "{{{name}}} is not captured by `{}:`; a chart rule captures the whole \
                         chart name, `{}: \"{{{name}}}\"`",
                        keys::CHART,
                        keys::CHART
                    )
                },
            );
        }
    }
    if let Some(chart) = &rule.chart
        && chart
            .split('/')
            .any(|part| capture_name(part).is_some() || has_embedded_capture(part))
        && capture_name(chart).is_none()
    {
        findings.push(
            path.key(keys::CHART),
            format!(
                "{chart:?}: a chart is one name, or a capture of the whole name such as \
                 \"{{api}}\""
            ),
        );
    }
    if let Some(image) = &rule.image {
        let segments: Vec<&str> = image.split('/').collect();
        let mut seen = Vec::new();
        for (index, segment) in segments.iter().enumerate() {
            let problem = if has_embedded_capture(segment) {
                Some(format!(
                    "{segment:?}: a capture must be a whole path segment, like \
                     `registry.example.com/{{api}}`"
                ))
            } else if let Some(name) = capture_name(segment) {
                if index == 0 && segments.len() > 1 {
                    Some(format!("{{{name}}}: the registry host cannot be captured"))
                } else if seen.contains(&name) {
                    Some(format!("{{{name}}} is captured twice"))
                } else {
                    seen.push(name);
                    None
                }
            } else {
                None
            };
            if let Some(problem) = problem {
                findings.push(path.key(keys::IMAGE), problem);
            }
        }
    }
    match (&rule.image, &rule.chart) {
        (Some(_), Some(_)) => findings.push(
            path.key(keys::CHART),
            format!("set only one of `{}` and `{}`", keys::IMAGE, keys::CHART),
        ),
        (None, None) => findings.push(
            path.clone(),
            format!(
                "set `{}` (an image repository) or `{}` (a chart) to say what triggers the release",
                keys::IMAGE,
                keys::CHART
            ),
        ),
        _ => {}
    }
    if let Some(set) = &rule.set
        && set.split('.').any(str::is_empty)
    {
        findings.push(
            path.key(keys::SET),
            format!("{set:?} is not a dotted values path such as `image.tag`"),
        );
    }
}

/// Hosts whose provider is known, so that rules for them need no `provider:`.
pub const WELL_KNOWN_HOSTS: [(&str, GitProvider); 5] = [
    ("github.com", GitProvider::Github),
    ("gitlab.com", GitProvider::Gitlab),
    ("bitbucket.org", GitProvider::Bitbucket),
    ("codeberg.org", GitProvider::Forgejo),
    ("gitea.com", GitProvider::Gitea),
];

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
/// ([`WELL_KNOWN_HOSTS`]); otherwise the only git provider with an entry under `providers`.
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
    let known = WELL_KNOWN_HOSTS
        .iter()
        .find(|(known, _)| *known == host)
        .map(|(_, provider)| *provider);
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
                        "{host} is not a well-known host and {which}: set `{}` (github, gitlab, \
                         gitea, forgejo or bitbucket) to say whose pushes may start this rule",
                        keys::PROVIDER
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

/// Every release rule says which builds may release it: `from:` sources, or `from: any`.
fn release_from(config: &Config, rule: &ReleaseRule, path: &FieldPath, findings: &mut Findings) {
    let sources = match &rule.from {
        None => {
            findings.push(
                path.clone(),
                format!(
                    "no `{from}:` for {release}: say which builds may release it. `{from}: {{ \
                     {rules}: [<repositories rule>], {branches}: [main] }}` releases only images \
                     that a succeeded run of that rule built from those branches (release-changed \
                     checks the run with the Kubernetes API); `{from}: any` releases whatever an \
                     event names, for third-party CDEvents producers whose builds cannot be \
                     checked (anyone who can send release-changed an event can then release)",
                    from = keys::FROM,
                    rules = keys::RULES,
                    branches = keys::BRANCHES,
                    release = rule.helm_release,
                ),
            );
            return;
        }
        Some(ReleaseFrom::Any) => return,
        Some(ReleaseFrom::Sources(sources)) => sources,
    };
    let path = path.key(keys::FROM);
    if rule.chart.is_some() {
        findings.push(
            path,
            format!(
                "a chart's new versions arrive only in explicit dev.tekflux.release.changed.v1 \
                 events, which name no build to check: use `{}: any`",
                keys::FROM
            ),
        );
        return;
    }
    from_shape(sources, &path, findings);
    for (index, name) in sources.rules.iter().enumerate() {
        let repositories: std::collections::BTreeSet<String> = config
            .repositories
            .iter()
            .filter(|repository| repository.rule_name() == Some(name.as_str()))
            .map(|repository| rough_repository_key(&repository.url))
            .collect();
        let message = match repositories.len() {
            0 => format!(
                "no rule named {name:?} in `{}` (a rule's name is its `{}`, else its pipeline or \
                 task)",
                keys::REPOSITORIES,
                keys::NAME
            ),
            1 => continue,
            _ => format!(
                "{name:?} names rules of several repositories ({}); give the rule whose runs may \
                 release its own `{}`",
                repositories.into_iter().collect::<Vec<_>>().join(", "),
                keys::NAME
            ),
        };
        findings.push(path.key(keys::RULES).index(index), message);
    }
    for (key, globs) in [
        (keys::BRANCHES, &sources.branches),
        (keys::TAGS, &sources.tags),
    ] {
        for (index, glob) in globs.iter().enumerate() {
            if let Err(message) = RefGlob::parse(glob) {
                findings.push(path.key(key).index(index), message);
            }
        }
    }
}

/// `from:` must admit something, and never runs of any repository.
fn from_shape(sources: &ReleaseSources, path: &FieldPath, findings: &mut Findings) {
    let refs = !sources.branches.is_empty() || !sources.tags.is_empty();
    match (sources.rules.is_empty(), refs) {
        (true, true) => findings.push(
            path.key(keys::RULES),
            format!(
                "name the `{}` rules whose runs may release (`{}: [build]`): branches and tags \
                 alone would admit a run of any repository",
                keys::REPOSITORIES,
                keys::RULES
            ),
        ),
        (true, false) if !sources.registry => findings.push(
            path.clone(),
            format!(
                "admits nothing: list `{}` with `{}` or `{}`, set `{}: true` for registry \
                 pushes, or write `{}: any`",
                keys::RULES,
                keys::BRANCHES,
                keys::TAGS,
                keys::REGISTRY,
                keys::FROM
            ),
        ),
        (false, false) => findings.push(
            path.clone(),
            format!(
                "say which refs of those rules' runs may release: `{}: [main]`, `{}: [\"v*\"]`, \
                 or `{}: [\"**\"]` for every branch",
                keys::BRANCHES,
                keys::TAGS,
                keys::BRANCHES
            ),
        ),
        _ => {}
    }
}

/// `values` paths are dotted, and never reach a `set` path that `from:` guards: an explicit
/// event writing there would release any image, whatever built it.
fn release_values(config: &Config, rule: &ReleaseRule, path: &FieldPath, findings: &mut Findings) {
    let release = rule.helm_release_ref(&config.namespace);
    for (index, value) in rule.values.iter().enumerate() {
        let path = path.key(keys::VALUES).index(index);
        if value.split('.').any(str::is_empty) {
            findings.push(
                path,
                format!(
                    "{value:?} is not a dotted values path such as `replicaCount` or \
                     `resources.limits`"
                ),
            );
            continue;
        }
        let declared: Vec<&str> = value.split('.').collect();
        let guarded = config
            .releases
            .iter()
            .enumerate()
            .find_map(|(other, guard)| {
                let set = guard.set_path()?;
                let overlaps = path_covers(&declared, &set) || path_covers(&set, &declared);
                (overlaps
                    && !guard.from_any()
                    && may_be_the_same_release(guard.helm_release_ref(&config.namespace), release))
                .then_some((other, guard.set.clone().unwrap_or_default()))
            });
        if let Some((other, set)) = guarded {
            findings.push(
                path,
                format!(
                    "{value:?} overlaps {set:?}, the `{}` path of {} whose `{}:` decides which \
                     builds it releases; an explicit event could write any image there. Remove \
                     it, or use `{}: any` on that rule",
                    keys::SET,
                    FieldPath::root().key(keys::RELEASES).index(other),
                    keys::FROM,
                    keys::FROM
                ),
            );
        }
    }
}

/// Whether two `(namespace, name)` references can name one HelmRelease: each part equal, or a
/// capture on either side (which may take the other's value).
fn may_be_the_same_release(a: (&str, &str), b: (&str, &str)) -> bool {
    let part = |x: &str, y: &str| x == y || capture_name(x).is_some() || capture_name(y).is_some();
    part(a.0, b.0) && part(a.1, b.1)
}

/// Whether the values path `outer` is `inner` or one of its parents, key by key.
pub fn path_covers<A: AsRef<str>, B: AsRef<str>>(outer: &[A], inner: &[B]) -> bool {
    outer.len() <= inner.len()
        && outer
            .iter()
            .zip(inner)
            .all(|(outer, inner)| outer.as_ref() == inner.as_ref())
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
