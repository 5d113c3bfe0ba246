//! Explicit edits: which values paths and chart versions a release-changed event may set.

use serde_json::{Map, Value};
use tekflux_common::config::{Config, ReleaseRule, path_covers};

use super::Refusal;

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
