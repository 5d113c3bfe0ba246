//! Which HelmReleases a change updates, and how: the config's `releases` rules applied to a
//! [`Change`]. Pure; no I/O.

use serde_json::{Map, Value};
use tekflux_common::config::capture::{self, Captures};
use tekflux_common::config::{Config, HelmReleaseApi, ReleaseRule, is_dns1123_label};
use tekflux_common::{Error, Result};

use crate::change::{Change, normalize_repository};

/// One HelmRelease to update.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Flux v2 or Helm Operator.
    pub api: HelmReleaseApi,
    /// What to change in it.
    pub edit: Edit,
    /// The new version, as recorded on the release and in the reply.
    pub version: String,
    /// Index of the rule in the config's `releases` that names it.
    pub rule: usize,
}

/// A change to a HelmRelease's spec.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Set one value (`image.tag`) to a string.
    SetValue {
        /// The dotted path's keys.
        path: Vec<String>,
        /// The value.
        value: String,
    },
    /// Set the chart version.
    ChartVersion(String),
    /// Set the chart version and/or values given in an explicit release event.
    Explicit {
        /// The chart version.
        chart_version: Option<String>,
        /// Values merged into the release's values.
        values: Option<Map<String, Value>>,
    },
}

impl Target {
    /// `namespace/name`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The `image:` of each of a config's `releases` rules in normal form
/// ([`normalize_repository`]), made once rather than for every event.
#[derive(Debug, Clone, Default)]
pub struct RuleImages(Vec<Option<String>>);

impl RuleImages {
    /// The normal forms of `config`'s rule images, in rule order.
    pub fn new(config: &Config) -> Self {
        Self(
            config
                .releases
                .iter()
                .map(|rule| {
                    rule.image
                        .as_deref()
                        .map(|image| normalize_repository(image).into_owned())
                })
                .collect(),
        )
    }
}

/// The HelmReleases `change` updates under `config`'s rules, in rule order, each once.
///
/// # Errors
/// [`Error::Unprocessable`] when a matching rule cannot be satisfied (an image rule that sets a
/// value from an image that has no tag) or an explicit release is not one the config manages.
pub fn targets(config: &Config, change: &Change) -> Result<Vec<Target>> {
    targets_with(config, &RuleImages::new(config), change)
}

/// [`targets`], with the rule images of `config` already in normal form.
///
/// # Errors
/// As [`targets`].
pub fn targets_with(config: &Config, images: &RuleImages, change: &Change) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    match change {
        Change::Image(image) => {
            for (index, (rule, rule_image)) in config.releases.iter().zip(&images.0).enumerate() {
                let Some(rule_image) = rule_image else {
                    continue;
                };
                // A plain image names one repository; `registry/{api}` captures a segment of
                // it, and the HelmRelease is the one those values name.
                let Some(captures) = capture::match_segments(rule_image, &image.repository) else {
                    continue;
                };
                check_release_name(config, index, &image.repository, &captures)?;
                // Tags are what charts template into `repository:tag`; a digest alone cannot
                // be written there without breaking the reference.
                let tag = image.tag.clone().ok_or_else(|| {
                    Error::Unprocessable(format!(
                        "{} has no tag to set in {} (only a digest); push a tagged image",
                        image.reference(),
                        rule.helm_release
                    ))
                })?;
                targets.push(target(
                    config,
                    index,
                    &captures,
                    edit_for(rule, tag.clone()),
                    tag,
                ));
            }
        }
        Change::Chart { name, version } => {
            for (index, rule) in config.releases.iter().enumerate() {
                // One chart, or `"{api}"`: every chart, each into the release its name names.
                let Some(captures) = rule
                    .chart
                    .as_deref()
                    .and_then(|chart| capture::match_segments(chart, name))
                else {
                    continue;
                };
                check_release_name(config, index, name, &captures)?;
                targets.push(target(
                    config,
                    index,
                    &captures,
                    edit_for(rule, version.clone()),
                    version.clone(),
                ));
            }
        }
        Change::Release {
            release,
            chart_version,
            values,
        } => {
            let (namespace, name) = split_reference(release, &config.namespace);
            // Only releases the config manages: the event must not reach beyond them.
            let (index, captures) = config
                .releases
                .iter()
                .enumerate()
                .find_map(|(index, rule)| {
                    let captures = rule.names_release(&config.namespace, &namespace, &name)?;
                    Some((index, captures))
                })
                .ok_or_else(|| {
                    Error::Unprocessable(format!(
                        "{namespace}/{name} is not a release in the config's `releases`; \
                         release-changed only edits releases it is configured for"
                    ))
                })?;
            let version = chart_version.clone().unwrap_or_else(|| "values".to_owned());
            targets.push(target(
                config,
                index,
                &captures,
                Edit::Explicit {
                    chart_version: chart_version.clone(),
                    values: values.clone(),
                },
                version,
            ));
        }
    }
    // Two rules for the same release (say, image and chart) would fight over it in one request.
    let mut seen = std::collections::BTreeSet::new();
    targets.retain(|target| seen.insert(target.reference()));
    Ok(targets)
}

/// A captured value becomes part of a HelmRelease's name: it must make a valid one, or the
/// change is refused rather than applied somewhere unexpected.
fn check_release_name(
    config: &Config,
    index: usize,
    what: &str,
    captures: &Captures,
) -> Result<()> {
    let rule = &config.releases[index];
    let (namespace, name) = rule.helm_release_for(&config.namespace, captures);
    if is_dns1123_label(&namespace) && is_dns1123_label(&name) {
        return Ok(());
    }
    Err(Error::Unprocessable(format!(
        "{what} matches releases[{index}] ({}), but the release it names, {namespace}/{name}, \
         is not a valid HelmRelease name",
        rule.helm_release
    )))
}

fn edit_for(rule: &ReleaseRule, version: String) -> Edit {
    match &rule.set {
        Some(path) => Edit::SetValue {
            path: path.split('.').map(str::to_owned).collect(),
            value: version,
        },
        None => Edit::ChartVersion(version),
    }
}

fn target(
    config: &Config,
    index: usize,
    captures: &Captures,
    edit: Edit,
    version: String,
) -> Target {
    let rule = &config.releases[index];
    let (namespace, name) = rule.helm_release_for(&config.namespace, captures);
    Target {
        namespace,
        name,
        api: rule.api,
        edit,
        version,
        rule: index,
    }
}

/// `namespace/name`, or `name` in `default_namespace`.
fn split_reference(reference: &str, default_namespace: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((namespace, name)) => (namespace.to_owned(), name.to_owned()),
        None => (default_namespace.to_owned(), reference.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::change::ImageVersion;
    use serde_json::json;
    use tekflux_common::config::Env;

    fn config() -> Config {
        Config::from_yaml(
            "namespace: cicd\nreleases:\n\
             - image: registry.example.com/api-launcher\n  helmRelease: api-launcher\n  set: image.tag\n  from: any\n\
             - image: registry.example.com/api-launcher\n  helmRelease: staging/api-launcher\n  set: image.tag\n  api: helmOperator\n  from: any\n\
             - chart: platform\n  helmRelease: ops/platform\n  from: any\n\
             - image: nginx\n  helmRelease: web\n  from: any\n",
            "test.yaml",
            &Env::new(),
        )
        .unwrap()
    }

    fn image(reference: &str) -> Change {
        Change::Image(ImageVersion::parse(reference).unwrap())
    }

    #[test]
    fn an_image_updates_every_release_that_names_it() {
        let found = targets(
            &config(),
            &image("Registry.Example.com/api-launcher:1.2.3@sha256:ab"),
        )
        .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].reference(), "cicd/api-launcher");
        assert_eq!(found[0].rule, 0);
        assert_eq!(found[0].api, HelmReleaseApi::Flux);
        assert_eq!(
            found[0].edit,
            Edit::SetValue {
                path: vec!["image".into(), "tag".into()],
                value: "1.2.3".into()
            }
        );
        assert_eq!(found[1].reference(), "staging/api-launcher");
        assert_eq!(found[1].api, HelmReleaseApi::HelmOperator);
        // Docker Hub spellings match, and without `set` the chart version follows the tag.
        let found = targets(&config(), &image("docker.io/library/nginx:1.27")).unwrap();
        assert_eq!(found[0].edit, Edit::ChartVersion("1.27".into()));
        assert!(
            targets(&config(), &image("registry.example.com/other:1"))
                .unwrap()
                .is_empty()
        );
        // A digest alone cannot become a tag.
        assert!(matches!(
            targets(
                &config(),
                &image("registry.example.com/api-launcher@sha256:ab")
            ),
            Err(Error::Unprocessable(_))
        ));
    }

    #[test]
    fn charts_and_explicit_releases_find_their_rules() {
        let change = Change::Chart {
            name: "platform".into(),
            version: "0.9.1".into(),
        };
        let found = targets(&config(), &change).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reference(), "ops/platform");
        assert_eq!(found[0].edit, Edit::ChartVersion("0.9.1".into()));

        let values = json!({"replicaCount": 2}).as_object().cloned();
        let change = Change::Release {
            release: "cicd/api-launcher".into(),
            chart_version: None,
            values: values.clone(),
        };
        let found = targets(&config(), &change).unwrap();
        assert_eq!(
            found[0].edit,
            Edit::Explicit {
                chart_version: None,
                values
            }
        );
        // Unqualified names are in the top-level namespace; unmanaged releases are refused.
        let change = Change::Release {
            release: "web".into(),
            chart_version: Some("1.0.0".into()),
            values: None,
        };
        assert_eq!(
            targets(&config(), &change).unwrap()[0].reference(),
            "cicd/web"
        );
        let change = Change::Release {
            release: "kube-system/coredns".into(),
            chart_version: Some("1.0.0".into()),
            values: None,
        };
        assert!(matches!(
            targets(&config(), &change),
            Err(Error::Unprocessable(_))
        ));
    }

    /// One rule for every API of a monorepo: `image:` captures the API, `helmRelease:` reuses it.
    fn per_api() -> Config {
        Config::from_yaml(
            "namespace: cicd\nreleases:\n\
             - image: registry.example.com/acme/{api}\n  helmRelease: apps/{api}\n  set: image.tag\n  from: any\n  values: [replicaCount]\n",
            "test.yaml",
            &Env::new(),
        )
        .unwrap()
    }

    #[test]
    fn an_image_per_api_updates_the_release_its_api_names() {
        for (reference, release) in [
            ("registry.example.com/acme/launcher:1.2.3", "apps/launcher"),
            ("registry.example.com/acme/gateway:2.0.0", "apps/gateway"),
        ] {
            let found = targets(&per_api(), &image(reference)).unwrap();
            assert_eq!(found.len(), 1, "{reference}");
            assert_eq!(found[0].reference(), release);
        }
        // Another depth or registry is not this rule's.
        for other in [
            "registry.example.com/acme/team/launcher:1",
            "registry.example.com/launcher:1",
            "other.example.com/acme/launcher:1",
        ] {
            assert!(
                targets(&per_api(), &image(other)).unwrap().is_empty(),
                "{other}"
            );
        }
        // A repository segment that cannot be a HelmRelease name is refused, never guessed.
        assert!(matches!(
            targets(&per_api(), &image("registry.example.com/acme/web.v2:1")),
            Err(Error::Unprocessable(message)) if message.contains("apps/web.v2")
        ));
        // Explicit events name a release the pattern covers.
        let change = Change::Release {
            release: "apps/launcher".into(),
            chart_version: None,
            values: Some(json!({"replicaCount": 3}).as_object().unwrap().clone()),
        };
        assert_eq!(
            targets(&per_api(), &change).unwrap()[0].reference(),
            "apps/launcher"
        );
        let change = Change::Release {
            release: "ops/launcher".into(),
            chart_version: None,
            values: None,
        };
        assert!(targets(&per_api(), &change).is_err());
    }

    #[test]
    fn a_chart_per_api_updates_the_release_its_name_names() {
        let config = Config::from_yaml(
            "namespace: cicd\nreleases:\n\
             - chart: \"{api}\"\n  helmRelease: \"int/{api}\"\n  api: helmOperator\n  from: any\n",
            "test.yaml",
            &Env::new(),
        )
        .unwrap();
        let chart = |name: &str| Change::Chart {
            name: name.into(),
            version: "1.2.0".into(),
        };
        let found = targets(&config, &chart("api-launcher")).unwrap();
        assert_eq!(found[0].reference(), "int/api-launcher");
        assert_eq!(found[0].edit, Edit::ChartVersion("1.2.0".into()));
        assert!(matches!(
            targets(&config, &chart("Bad_Chart")),
            Err(Error::Unprocessable(_))
        ));
    }

    #[test]
    fn captures_are_checked_when_the_config_loads() {
        let load = |rule: &str| {
            Config::from_yaml(
                &format!("namespace: cicd\nreleases:\n{rule}"),
                "test.yaml",
                &Env::new(),
            )
            .err()
            .map(|error| error.to_string())
        };
        for (rule, expected) in [
            (
                "- image: r.example.com/{api}\n  helmRelease: \"{svc}\"\n  from: any\n",
                "{svc} is not captured by `image:`",
            ),
            (
                "- image: r.example.com/{api}\n  helmRelease: {api}\n  from: any\n",
                "quote it, as in \"{api}\"",
            ),
            (
                "- chart: platform\n  helmRelease: \"{api}\"\n  from: any\n",
                "{api} is not captured by `chart:`",
            ),
            (
                "- chart: \"api-{api}\"\n  helmRelease: x\n  from: any\n",
                "a chart is one name",
            ),
            (
                "- image: r.example.com/api-{api}\n  helmRelease: x\n  from: any\n",
                "whole path segment",
            ),
            (
                "- image: \"{host}/x\"\n  helmRelease: x\n  from: any\n",
                "registry host cannot be captured",
            ),
        ] {
            let error = load(rule).unwrap_or_else(|| panic!("accepted: {rule}"));
            assert!(error.contains(expected), "{rule}: {error}");
        }
        assert!(load("- image: r.example.com/{team}/{api}\n  helmRelease: \"{team}/{api}\"\n  from: any\n").is_none());
    }
}
