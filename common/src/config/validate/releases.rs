//! `releases`: what triggers each release, which builds may release it, and which values
//! explicit events may set.

use super::repositories::rough_repository_key;
use super::{Findings, is_dns1123_label};
use crate::config::capture::{capture_name, has_embedded_capture};
use crate::config::keys;
use crate::config::locate::FieldPath;
use crate::config::model::Config;
use crate::config::ref_glob::RefGlob;
use crate::config::releases::{ReleaseFrom, ReleaseRule, ReleaseSources};

pub(super) fn release(rule: &ReleaseRule, path: &FieldPath, findings: &mut Findings) {
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

/// Every release rule says which builds may release it: `from:` sources, or `from: any`.
pub(super) fn release_from(
    config: &Config,
    rule: &ReleaseRule,
    path: &FieldPath,
    findings: &mut Findings,
) {
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
pub(super) fn release_values(
    config: &Config,
    rule: &ReleaseRule,
    path: &FieldPath,
    findings: &mut Findings,
) {
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
