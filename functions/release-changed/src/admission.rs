//! Which events may release what: the checks between "an event names a change" and "a
//! HelmRelease is applied". Pure; the handler does the one read they need (the run, from the API
//! server) and hands its copy in.
//!
//! - **Builds** ([`verify_run`], [`admits`]): an image releases a rule whose `from` is not `any`
//!   only when the event names the Tekton run that built it (`customData.run`, as run-complete
//!   sends it) and the API server's copy of that run has the same uid, succeeded, reports the
//!   same image and digest in its results, was created by git-push (its `tekflux.dev/*` labels
//!   and `tekflux.dev/ref` annotation), and its rule, namespace and branch or tag are ones the
//!   rule's `from` lists. Registry pushes release only rules with `from: { registry: true }`.
//! - **Explicit edits** ([`check_explicit_edit`]): a `dev.tekflux.release.changed.v1` event
//!   naming a release may set only the values paths its rules declare in `values:`; the `set:`
//!   path and the chart version only where `from: any` already lets any event release.
//! - **Time** ([`check_time`]): an event more than [`MAX_CLOCK_SKEW`] in the future is refused,
//!   so its time is never recorded and cannot make later events look stale.
//!
//! Every refusal is final for its input (403 or 422, never retried by Knative), applies nothing
//! and is counted by [`Refusal::kind`].

use chrono::{DateTime, TimeDelta, Utc};
use http::StatusCode;
use serde_json::{Map, Value};
use tekflux_common::cloudevent::split_image_reference;
use tekflux_common::config::{
    Config, RefGlob, ReleaseFrom, ReleaseRule, ReleaseSources, is_dns1123_label,
    is_dns1123_subdomain, path_covers,
};

use crate::change::{ImageVersion, normalize_repository};

/// How far in the future an event's `time` may be: clocks of senders and of this pod differ a
/// little, but a time further ahead would make every later event look stale.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

pub use tekflux_common::run_contract::{
    IMAGE_DIGEST_RESULT, IMAGE_URL_RESULT, MANAGED_BY, MANAGED_BY_LABEL, REF_ANNOTATION,
    REF_KIND_LABEL, RULE_LABEL, RunKind,
};

/// Why an input may not release (a release, or at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The event names no Tekton run, so nothing can be checked.
    #[error(
        "the event names no Tekton run (customData.run with kind, name, namespace and uid), so \
         it releases only rules with `from: any`"
    )]
    NoRun,
    /// The run the event names is in a namespace none of the allowed rules creates runs in; it
    /// is not even read.
    #[error("{run} is in namespace {namespace:?}, where no rule named in `from` creates runs")]
    NamespaceNotAllowed {
        /// `Kind namespace/name`.
        run: String,
        /// Its namespace.
        namespace: String,
    },
    /// The run does not exist (any more).
    #[error("{run} does not exist")]
    RunNotFound {
        /// `Kind namespace/name`.
        run: String,
    },
    /// The run exists under another uid: the event names another (perhaps deleted) run.
    #[error("{run} has uid {actual:?}, not the event's {claimed:?}")]
    RunUidMismatch {
        /// `Kind namespace/name`.
        run: String,
        /// The event's uid.
        claimed: String,
        /// The API server's.
        actual: String,
    },
    /// The run did not succeed (or has not finished).
    #[error("{run} has not succeeded (its Succeeded condition is {status:?})")]
    RunNotSucceeded {
        /// `Kind namespace/name`.
        run: String,
        /// The condition's status, or `missing`.
        status: String,
    },
    /// The run's results name another image, tag or digest than the event.
    #[error("{run} did not build {image}: {detail}")]
    ImageMismatch {
        /// `Kind namespace/name`.
        run: String,
        /// What the event names.
        image: String,
        /// What differs.
        detail: String,
    },
    /// The run lacks the labels and annotations git-push gives every run.
    #[error("{run} was not created by tekflux's git-push: {detail}")]
    NotTekfluxRun {
        /// `Kind namespace/name`.
        run: String,
        /// What is missing or inconsistent.
        detail: String,
    },
    /// The run's rule is not in the release rule's `from.rules`.
    #[error("{run} was created by rule {rule:?}, which the `from.rules` of {release} do not list")]
    RuleNotAllowed {
        /// `Kind namespace/name`.
        run: String,
        /// Its `tekflux.dev/rule`.
        rule: String,
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
    /// The run's rule creates runs in another namespace than the run's.
    #[error(
        "{run} is in namespace {namespace:?}, but rule {rule:?} creates its runs in {expected:?}"
    )]
    WrongNamespace {
        /// `Kind namespace/name`.
        run: String,
        /// The run's namespace.
        namespace: String,
        /// Its `tekflux.dev/rule`.
        rule: String,
        /// Where that rule's runs are.
        expected: String,
    },
    /// The run's branch or tag is not one the release rule's `from` allows.
    #[error("{run} was built from {git_ref}, which the `from` of {release} does not allow")]
    RefNotAllowed {
        /// `Kind namespace/name`.
        run: String,
        /// The run's full ref.
        git_ref: String,
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
    /// A registry push for a rule whose `from` does not say `registry: true`.
    #[error("registry pushes do not release {release}: its rule's `from` has no `registry: true`")]
    RegistryNotAllowed {
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
    /// The event's `time` is too far in the future.
    #[error(
        "the event's time {time} is more than {} minutes in the future; it is refused so that \
         it cannot make later events look stale",
        MAX_CLOCK_SKEW.num_minutes()
    )]
    FutureTime {
        /// The time, as sent.
        time: String,
    },
    /// An explicit edit sets a value its release does not declare.
    #[error(
        "`values.{path}` may not be set on {release} by an explicit event; its release rules \
         allow {allowed}"
    )]
    ValueNotAllowed {
        /// `namespace/name` of the HelmRelease.
        release: String,
        /// The dotted path.
        path: String,
        /// The paths that are allowed, for the message.
        allowed: String,
    },
    /// An explicit edit sets a chart version its release does not let events set.
    #[error(
        "`chartVersion` may not be set on {release} by an explicit event: only a rule with \
         `from: any` and no `set:` (one that releases chart versions) allows it"
    )]
    ChartVersionNotAllowed {
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
}

impl Refusal {
    /// The `reason` label of `tekflux_release_changed_refused_total` and of the JSON answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoRun => "no_run",
            Refusal::NamespaceNotAllowed { .. } | Refusal::WrongNamespace { .. } => {
                "namespace_not_allowed"
            }
            Refusal::RunNotFound { .. } => "run_not_found",
            Refusal::RunUidMismatch { .. } => "run_uid_mismatch",
            Refusal::RunNotSucceeded { .. } => "run_not_succeeded",
            Refusal::ImageMismatch { .. } => "image_mismatch",
            Refusal::NotTekfluxRun { .. } => "not_tekflux_run",
            Refusal::RuleNotAllowed { .. } => "rule_not_allowed",
            Refusal::RefNotAllowed { .. } => "ref_not_allowed",
            Refusal::RegistryNotAllowed { .. } => "registry_not_allowed",
            Refusal::FutureTime { .. } => "future_time",
            Refusal::ValueNotAllowed { .. } => "value_not_allowed",
            Refusal::ChartVersionNotAllowed { .. } => "chart_version_not_allowed",
        }
    }

    /// 403 when the build (or sender) may not release, 422 when the event itself can never be
    /// applied as sent. Knative retries neither.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::FutureTime { .. }
            | Refusal::ValueNotAllowed { .. }
            | Refusal::ChartVersionNotAllowed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// The Tekton run an artifact published event says built the image (`customData.run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    /// `PipelineRun` or `TaskRun`.
    pub kind: RunKind,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
    /// `customData.imageDigest`, when the event gives it apart from the package URL.
    pub image_digest: Option<String>,
}

impl RunIdentity {
    /// `customData.run` of an artifact published event, when it names a run that can exist:
    /// a known kind, a DNS-1123 namespace, a DNS-1123 subdomain name and a uid.
    pub fn from_event_data(data: &Value) -> Option<Self> {
        let run = data.pointer("/customData/run")?;
        let text = |key: &str| {
            run.get(key)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
        };
        let kind = RunKind::from_kind(text("kind")?)?;
        let name = text("name").filter(|name| is_dns1123_subdomain(name))?;
        let namespace = text("namespace").filter(|namespace| is_dns1123_label(namespace))?;
        let uid = text("uid")?;
        let image_digest = data
            .pointer("/customData/imageDigest")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Self {
            kind,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: uid.to_owned(),
            image_digest,
        })
    }

    /// `Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Where the change in an input came from, before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A CloudEvent that names the run that built the image.
    Run(RunIdentity),
    /// A CloudEvent that names no run: an explicit release event, a third-party producer.
    Unverified,
    /// A registry's push notification (token-checked; no run to verify).
    Registry,
}

/// The branch or tag a run was created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// `refs/heads/<branch>`.
    Branch(String),
    /// `refs/tags/<tag>`.
    Tag(String),
}

impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRef::Branch(branch) => write!(f, "branch {branch:?}"),
            GitRef::Tag(tag) => write!(f, "tag {tag:?}"),
        }
    }
}

/// What the API server's copy of a verified run says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts {
    /// `Kind namespace/name`.
    pub run: String,
    /// Its namespace.
    pub namespace: String,
    /// The `repositories` rule that created it.
    pub rule: String,
    /// The branch or tag it was created for.
    pub git_ref: GitRef,
}

/// What is known about an input's origin once the run (if any) was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The run exists and built the image.
    Run(RunFacts),
    /// The run could not be verified; every rule that needs it is refused for this reason.
    Failed(Refusal),
    /// No run was named.
    Unverified,
    /// A registry push.
    Registry,
}

/// Checks that `run` (the API server's copy) is the run `identity` names and that it built
/// `image` (as the event names it): same uid, `Succeeded=True`, results `IMAGE_DIGEST` and
/// `IMAGE_URL` (v1 `status.results`, or v1beta1's `pipelineResults`/`taskResults`), and
/// git-push's labels.
///
/// # Errors
/// The [`Refusal`] for the first check that fails.
pub fn verify_run(
    run: &Value,
    identity: &RunIdentity,
    image: &ImageVersion,
) -> Result<RunFacts, Refusal> {
    let described = identity.describe();
    let actual = run
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if actual != identity.uid {
        return Err(Refusal::RunUidMismatch {
            run: described,
            claimed: identity.uid.clone(),
            actual: actual.to_owned(),
        });
    }
    let succeeded = run
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Succeeded")
        .and_then(|condition| condition["status"].as_str())
        .unwrap_or("missing");
    if succeeded != "True" {
        return Err(Refusal::RunNotSucceeded {
            run: described,
            status: succeeded.to_owned(),
        });
    }
    check_image(run, identity, image).map_err(|detail| Refusal::ImageMismatch {
        run: described.clone(),
        image: image.reference(),
        detail,
    })?;
    let (rule, git_ref) = tekflux_origin(run).map_err(|detail| Refusal::NotTekfluxRun {
        run: described.clone(),
        detail,
    })?;
    Ok(RunFacts {
        run: described,
        namespace: identity.namespace.clone(),
        rule,
        git_ref,
    })
}

/// The run's string results by name, from v1 `results` or v1beta1's two spellings.
fn results(run: &Value) -> Map<String, Value> {
    let mut found = Map::new();
    for key in ["results", "pipelineResults", "taskResults"] {
        let entries = run
            .pointer(&format!("/status/{key}"))
            .and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            if let (Some(name), Some(value)) = (entry["name"].as_str(), entry["value"].as_str()) {
                found
                    .entry(name.to_owned())
                    .or_insert_with(|| Value::String(value.trim().to_owned()));
            }
        }
    }
    found
}

fn check_image(run: &Value, identity: &RunIdentity, image: &ImageVersion) -> Result<(), String> {
    let results = results(run);
    let result = |name: &str| results.get(name).and_then(Value::as_str);
    let Some(built_digest) = result(IMAGE_DIGEST_RESULT) else {
        return Err(format!("its results have no {IMAGE_DIGEST_RESULT}"));
    };
    let Some(digest) = image.digest.as_deref() else {
        return Err("the event names no digest to compare with".to_owned());
    };
    if built_digest != digest {
        return Err(format!(
            "its {IMAGE_DIGEST_RESULT} is {built_digest:?}, the event's digest {digest:?}"
        ));
    }
    if let Some(announced) = identity.image_digest.as_deref()
        && announced != digest
    {
        return Err(format!(
            "the event's customData.imageDigest {announced:?} differs from its package URL's \
             {digest:?}"
        ));
    }
    let Some(url) = result(IMAGE_URL_RESULT) else {
        return Err(format!("its results have no {IMAGE_URL_RESULT}"));
    };
    let (repository, tag, _) = split_image_reference(url);
    if normalize_repository(repository) != image.repository {
        return Err(format!(
            "its {IMAGE_URL_RESULT} {url:?} names another repository"
        ));
    }
    if tag != image.tag.as_deref() {
        return Err(format!(
            "its {IMAGE_URL_RESULT} {url:?} has another tag than the event's {:?}",
            image.tag.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}

/// The rule and ref git-push recorded on the run.
fn tekflux_origin(run: &Value) -> Result<(String, GitRef), String> {
    let metadata = &run["metadata"];
    let label = |key: &str| metadata["labels"][key].as_str().filter(|v| !v.is_empty());
    if label(MANAGED_BY_LABEL) != Some(MANAGED_BY) {
        return Err(format!("no {MANAGED_BY_LABEL}={MANAGED_BY} label"));
    }
    let rule = label(RULE_LABEL).ok_or_else(|| format!("no {RULE_LABEL} label"))?;
    let git_ref = metadata["annotations"][REF_ANNOTATION]
        .as_str()
        .ok_or_else(|| format!("no {REF_ANNOTATION} annotation"))?;
    let parsed = match (label(REF_KIND_LABEL), git_ref) {
        (Some("branch"), _) => git_ref
            .strip_prefix("refs/heads/")
            .map(|branch| GitRef::Branch(branch.to_owned())),
        (Some("tag"), _) => git_ref
            .strip_prefix("refs/tags/")
            .map(|tag| GitRef::Tag(tag.to_owned())),
        _ => None,
    };
    let parsed = parsed.filter(|parsed| match parsed {
        GitRef::Branch(name) | GitRef::Tag(name) => !name.is_empty(),
    });
    let parsed = parsed.ok_or_else(|| {
        format!("its {REF_KIND_LABEL} label and {REF_ANNOTATION} {git_ref:?} name no branch or tag")
    })?;
    Ok((rule.to_owned(), parsed))
}

/// The namespaces whose runs could release one of `rules` (those named in their `from.rules`),
/// so a run elsewhere is refused without reading it.
pub fn run_namespaces<'a>(
    config: &'a Config,
    rules: impl IntoIterator<Item = &'a ReleaseRule>,
) -> Vec<&'a str> {
    let mut namespaces: Vec<&str> = rules
        .into_iter()
        .filter_map(ReleaseRule::from_sources)
        .flat_map(|sources| &sources.rules)
        .filter_map(|name| repository_rule_namespace(config, name))
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    namespaces
}

fn repository_rule_namespace<'a>(config: &'a Config, name: &str) -> Option<&'a str> {
    config
        .repositories
        .iter()
        .find(|rule| rule.rule_name() == Some(name))
        .map(|rule| rule.run_namespace(&config.namespace))
}

/// Whether `rule` (for the HelmRelease `release`) may be released by an input whose origin
/// was checked as `checked`.
///
/// # Errors
/// The [`Refusal`] saying why not.
pub fn admits(
    config: &Config,
    rule: &ReleaseRule,
    release: &str,
    checked: &Checked,
) -> Result<(), Refusal> {
    let nothing = ReleaseSources::default();
    let sources = match &rule.from {
        Some(ReleaseFrom::Any) => return Ok(()),
        Some(ReleaseFrom::Sources(sources)) => sources,
        // A loaded config always has `from`; without one nothing is admitted.
        None => &nothing,
    };
    let facts = match checked {
        Checked::Run(facts) => facts,
        Checked::Failed(refusal) => return Err(refusal.clone()),
        Checked::Unverified => return Err(Refusal::NoRun),
        Checked::Registry if sources.registry => return Ok(()),
        Checked::Registry => {
            return Err(Refusal::RegistryNotAllowed {
                release: release.to_owned(),
            });
        }
    };
    if !sources.rules.contains(&facts.rule) {
        return Err(Refusal::RuleNotAllowed {
            run: facts.run.clone(),
            rule: facts.rule.clone(),
            release: release.to_owned(),
        });
    }
    let expected = repository_rule_namespace(config, &facts.rule).unwrap_or_default();
    if expected != facts.namespace {
        return Err(Refusal::WrongNamespace {
            run: facts.run.clone(),
            namespace: facts.namespace.clone(),
            rule: facts.rule.clone(),
            expected: expected.to_owned(),
        });
    }
    let (globs, name, full) = match &facts.git_ref {
        GitRef::Branch(branch) => (&sources.branches, branch, format!("refs/heads/{branch}")),
        GitRef::Tag(tag) => (&sources.tags, tag, format!("refs/tags/{tag}")),
    };
    let allowed = globs
        .iter()
        .any(|glob| RefGlob::parse(glob).is_ok_and(|glob| glob.matches(name)));
    if allowed {
        Ok(())
    } else {
        Err(Refusal::RefNotAllowed {
            run: facts.run.clone(),
            git_ref: full,
            release: release.to_owned(),
        })
    }
}

/// Refuses an event whose `time` is more than [`MAX_CLOCK_SKEW`] after `now`.
///
/// # Errors
/// [`Refusal::FutureTime`].
pub fn check_time(time: Option<&str>, now: DateTime<Utc>) -> Result<(), Refusal> {
    match time.and_then(parse_time) {
        Some(at) if at > now + MAX_CLOCK_SKEW => Err(Refusal::FutureTime {
            time: time.unwrap_or_default().to_owned(),
        }),
        _ => Ok(()),
    }
}

/// An RFC 3339 time, in UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// Checks an explicit edit of the HelmRelease `release` (`namespace/name`) against every rule
/// that names it: each `values` leaf must lie under a path some rule lists in `values:` (or be
/// the `set:` path of a `from: any` rule), and never at or under the `set:` path of a rule
/// whose `from` guards it; `chartVersion` needs a `from: any` rule without `set:` and no
/// guarded rule that writes the chart version.
///
/// # Errors
/// [`Refusal::ValueNotAllowed`] naming the first path refused, or
/// [`Refusal::ChartVersionNotAllowed`].
pub fn check_explicit_edit(
    config: &Config,
    release: &str,
    chart_version: Option<&str>,
    values: Option<&Map<String, Value>>,
) -> Result<(), Refusal> {
    let rules: Vec<&ReleaseRule> = config
        .releases
        .iter()
        .filter(|rule| {
            let (namespace, name) = release
                .split_once('/')
                .unwrap_or((&config.namespace, release));
            rule.names_release(&config.namespace, namespace, name)
                .is_some()
        })
        .collect();
    if chart_version.is_some() {
        let opened = rules
            .iter()
            .any(|rule| rule.from_any() && rule.set.is_none());
        let guarded = rules
            .iter()
            .any(|rule| !rule.from_any() && rule.set.is_none());
        if !opened || guarded {
            return Err(Refusal::ChartVersionNotAllowed {
                release: release.to_owned(),
            });
        }
    }
    let Some(values) = values else {
        return Ok(());
    };
    let mut declared: Vec<Vec<&str>> = Vec::new();
    let mut guarded: Vec<Vec<&str>> = Vec::new();
    for rule in &rules {
        declared.extend(rule.values.iter().map(|path| path.split('.').collect()));
        if let Some(set) = rule.set_path() {
            if rule.from_any() {
                declared.push(set);
            } else {
                guarded.push(set);
            }
        }
    }
    for path in leaf_paths(values) {
        let allowed = declared.iter().any(|outer| path_covers(outer, &path))
            && !guarded
                .iter()
                .any(|set| path_covers(set, &path) || path_covers(&path, set));
        if !allowed {
            let mut names: Vec<String> = declared.iter().map(|path| path.join(".")).collect();
            names.sort();
            names.dedup();
            return Err(Refusal::ValueNotAllowed {
                release: release.to_owned(),
                path: path.join("."),
                allowed: if names.is_empty() {
                    "none (list them in `values:`)".to_owned()
                } else {
                    names.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// The key paths to every leaf of `values`: objects are walked, anything else (arrays, empty
/// objects included) is a leaf.
fn leaf_paths(values: &Map<String, Value>) -> Vec<Vec<&str>> {
    let mut paths = Vec::new();
    let mut stack: Vec<(Vec<&str>, &Map<String, Value>)> = vec![(Vec::new(), values)];
    while let Some((prefix, object)) = stack.pop() {
        for (key, value) in object {
            let mut path = prefix.clone();
            path.push(key.as_str());
            match value {
                Value::Object(inner) if !inner.is_empty() => stack.push((path, inner)),
                _ => paths.push(path),
            }
        }
    }
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use tekflux_common::config::Env;

    const DIGEST: &str = "sha256:0123abcd";

    fn config() -> Config {
        Config::from_yaml(
            "namespace: cicd
repositories:
  - url: https://github.com/acme/api
    pipeline: api-pipeline
  - url: https://github.com/acme/tools
    name: tools
    task: build
    namespace: tools
releases:
  - image: registry.example.com/acme/api
    helmRelease: api
    set: image.tag
    from: { rules: [api-pipeline], branches: [main, \"release/*\"], tags: [\"v*\"] }
    values: [replicaCount, resources]
  - image: registry.example.com/acme/api
    helmRelease: staging/api
    set: image.tag
    from: any
  - chart: platform
    helmRelease: platform
    from: any
  - image: registry.example.com/acme/web
    helmRelease: web
    set: image.tag
    from: { registry: true }
",
            "test.yaml",
            &Env::new(),
        )
        .unwrap()
    }

    fn identity() -> RunIdentity {
        RunIdentity {
            kind: RunKind::PipelineRun,
            name: "api-pipeline-0123456789ab".into(),
            namespace: "cicd".into(),
            uid: "uid-1".into(),
            image_digest: Some(DIGEST.into()),
        }
    }

    fn image() -> ImageVersion {
        ImageVersion::parse(&format!("registry.example.com/acme/api:1.2.3@{DIGEST}")).unwrap()
    }

    fn run(git_ref: &str) -> Value {
        let (kind, name) = match git_ref.strip_prefix("refs/tags/") {
            Some(tag) => ("tag", tag),
            None => ("branch", git_ref.trim_start_matches("refs/heads/")),
        };
        json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {
                "name": "api-pipeline-0123456789ab", "namespace": "cicd", "uid": "uid-1",
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, RULE_LABEL: "api-pipeline",
                           REF_KIND_LABEL: kind, format!("tekflux.dev/{kind}"): name},
                "annotations": {REF_ANNOTATION: git_ref},
            },
            "status": {
                "conditions": [{"type": "Succeeded", "status": "True"}],
                "results": [{"name": "IMAGE_URL", "value": "registry.example.com/acme/api:1.2.3"},
                            {"name": "IMAGE_DIGEST", "value": DIGEST}],
            },
        })
    }

    #[test]
    fn run_identity_comes_from_custom_data_and_must_be_able_to_exist() {
        let data = json!({"customData": {"run": {"kind": "PipelineRun",
            "name": "api-pipeline-0123456789ab", "namespace": "cicd", "uid": "uid-1"},
            "imageDigest": DIGEST}});
        assert_eq!(RunIdentity::from_event_data(&data), Some(identity()));
        for bad in [
            json!({}),
            json!({"customData": {"run": {"kind": "Pod", "name": "a", "namespace": "b", "uid": "c"}}}),
            json!({"customData": {"run": {"kind": "TaskRun", "name": "../x", "namespace": "b", "uid": "c"}}}),
            json!({"customData": {"run": {"kind": "TaskRun", "name": "a", "namespace": "b"}}}),
        ] {
            assert_eq!(RunIdentity::from_event_data(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_run_is_verified_against_the_api_servers_copy() {
        let facts = verify_run(&run("refs/heads/main"), &identity(), &image()).unwrap();
        assert_eq!(facts.rule, "api-pipeline");
        assert_eq!(facts.git_ref, GitRef::Branch("main".into()));

        let mut other = run("refs/heads/main");
        other["metadata"]["uid"] = json!("uid-2");
        let refusal = verify_run(&other, &identity(), &image()).unwrap_err();
        assert_eq!(refusal.kind(), "run_uid_mismatch");

        let mut failed = run("refs/heads/main");
        failed["status"]["conditions"][0]["status"] = json!("False");
        let refusal = verify_run(&failed, &identity(), &image()).unwrap_err();
        assert_eq!(refusal.kind(), "run_not_succeeded");

        // v1beta1 spelling, other digest.
        let mut beta = run("refs/heads/main");
        let results = beta["status"].as_object_mut().unwrap().remove("results");
        beta["status"]["pipelineResults"] = results.unwrap();
        assert!(verify_run(&beta, &identity(), &image()).is_ok());
        beta["status"]["pipelineResults"][1]["value"] = json!("sha256:ffff");
        let refusal = verify_run(&beta, &identity(), &image()).unwrap_err();
        assert_eq!(refusal.kind(), "image_mismatch");

        // Another tag than the one built.
        let retagged =
            ImageVersion::parse(&format!("registry.example.com/acme/api:9.9.9@{DIGEST}")).unwrap();
        let refusal = verify_run(&run("refs/heads/main"), &identity(), &retagged).unwrap_err();
        assert_eq!(refusal.kind(), "image_mismatch");

        let mut foreign = run("refs/heads/main");
        foreign["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(MANAGED_BY_LABEL);
        let refusal = verify_run(&foreign, &identity(), &image()).unwrap_err();
        assert_eq!(refusal.kind(), "not_tekflux_run");
    }

    #[test]
    fn from_admits_listed_rules_branches_and_tags_only() {
        let config = config();
        let guarded = &config.releases[0];
        let facts =
            |git_ref: &str| Checked::Run(verify_run(&run(git_ref), &identity(), &image()).unwrap());
        for allowed in [
            "refs/heads/main",
            "refs/heads/release/1.0",
            "refs/tags/v1.2.3",
        ] {
            assert_eq!(
                admits(&config, guarded, "cicd/api", &facts(allowed)),
                Ok(()),
                "{allowed}"
            );
        }
        for refused in [
            "refs/heads/feature/x",
            "refs/heads/release/1.0/x",
            "refs/tags/1.0",
        ] {
            let refusal = admits(&config, guarded, "cicd/api", &facts(refused)).unwrap_err();
            assert_eq!(refusal.kind(), "ref_not_allowed", "{refused}");
        }
        let mut tools = run("refs/heads/main");
        tools["metadata"]["labels"][RULE_LABEL] = json!("tools");
        let facts = verify_run(&tools, &identity(), &image()).unwrap();
        let refusal = admits(&config, guarded, "cicd/api", &Checked::Run(facts)).unwrap_err();
        assert_eq!(refusal.kind(), "rule_not_allowed");
        assert_eq!(
            admits(&config, guarded, "cicd/api", &Checked::Unverified),
            Err(Refusal::NoRun)
        );
        assert_eq!(
            admits(&config, guarded, "cicd/api", &Checked::Registry)
                .unwrap_err()
                .kind(),
            "registry_not_allowed"
        );
        // `from: any` takes anything; `registry: true` takes registry pushes.
        assert_eq!(
            admits(
                &config,
                &config.releases[1],
                "staging/api",
                &Checked::Unverified
            ),
            Ok(())
        );
        assert_eq!(
            admits(&config, &config.releases[3], "cicd/web", &Checked::Registry),
            Ok(())
        );
        assert_eq!(run_namespaces(&config, &config.releases), ["cicd"]);
    }

    #[test]
    fn explicit_edits_set_only_declared_paths() {
        let config = config();
        let values = |value: Value| value.as_object().cloned().unwrap();
        let ok = values(json!({"replicaCount": 3, "resources": {"limits": {"memory": "1Gi"}}}));
        assert_eq!(
            check_explicit_edit(&config, "cicd/api", None, Some(&ok)),
            Ok(())
        );
        for bad in [
            json!({"image": {"tag": "evil"}}),
            json!({"image": {"repository": "evil.example.com/x"}}),
            json!({"replicaCount": 3, "podAnnotations": {"a": "b"}}),
        ] {
            let refusal =
                check_explicit_edit(&config, "cicd/api", None, Some(&values(bad.clone())))
                    .unwrap_err();
            assert_eq!(refusal.kind(), "value_not_allowed", "{bad}");
        }
        // The guarded rule's release takes no chart version; `from: any` opens the set path.
        assert_eq!(
            check_explicit_edit(&config, "cicd/api", Some("1.0.0"), None)
                .unwrap_err()
                .kind(),
            "chart_version_not_allowed"
        );
        assert_eq!(
            check_explicit_edit(&config, "cicd/platform", Some("1.0.0"), None),
            Ok(())
        );
        let tag = values(json!({"image": {"tag": "2.0.0"}}));
        assert_eq!(
            check_explicit_edit(&config, "staging/api", None, Some(&tag)),
            Ok(())
        );
    }

    #[test]
    fn times_far_in_the_future_are_refused() {
        let now = parse_time("2026-11-24T06:00:00Z").unwrap();
        assert_eq!(check_time(None, now), Ok(()));
        assert_eq!(check_time(Some("2026-11-24T06:04:59Z"), now), Ok(()));
        assert_eq!(check_time(Some("2020-01-01T00:00:00Z"), now), Ok(()));
        assert_eq!(
            check_time(Some("2026-11-24T06:05:01Z"), now)
                .unwrap_err()
                .kind(),
            "future_time"
        );
    }
}
