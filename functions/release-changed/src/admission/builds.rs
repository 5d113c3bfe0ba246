//! Builds: whether the Tekton run an event names built the image and may release a rule.

use serde_json::{Map, Value};
use tekflux_common::cloudevent::split_image_reference;
use tekflux_common::config::{
    Config, RefGlob, ReleaseFrom, ReleaseRule, ReleaseSources, is_dns1123_label,
    is_dns1123_subdomain,
};

use super::{
    IMAGE_DIGEST_RESULT, IMAGE_URL_RESULT, MANAGED_BY, MANAGED_BY_LABEL, REF_ANNOTATION,
    REF_KIND_LABEL, RULE_LABEL, Refusal, RunKind,
};
use crate::change::{ImageVersion, normalize_repository};

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
