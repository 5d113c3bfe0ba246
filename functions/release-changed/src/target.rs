//! Which HelmReleases a change updates, and how: the config's `releases` rules applied to a
//! [`Change`]. Pure; no I/O.

use serde_json::{Map, Value};
use tekflux_common::config::{Config, HelmReleaseApi, ReleaseRule};
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

/// The HelmReleases `change` updates under `config`'s rules, in rule order, each once.
///
/// # Errors
/// [`Error::Unprocessable`] when a matching rule cannot be satisfied (an image rule that sets a
/// value from an image that has no tag) or an explicit release is not one the config manages.
pub fn targets(config: &Config, change: &Change) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    match change {
        Change::Image(image) => {
            for (index, rule) in config.releases.iter().enumerate() {
                let Some(rule_image) = &rule.image else {
                    continue;
                };
                if normalize_repository(rule_image) != image.repository {
                    continue;
                }
                // Tags are what charts template into `repository:tag`; a digest alone cannot
                // be written there without breaking the reference.
                let tag = image.tag.clone().ok_or_else(|| {
                    Error::Unprocessable(format!(
                        "{} has no tag to set in {} (only a digest); push a tagged image",
                        image.reference(),
                        rule.helm_release
                    ))
                })?;
                targets.push(target(config, index, edit_for(rule, tag.clone()), tag));
            }
        }
        Change::Chart { name, version } => {
            for (index, rule) in config.releases.iter().enumerate() {
                if rule.chart.as_deref() == Some(name.as_str()) {
                    targets.push(target(
                        config,
                        index,
                        edit_for(rule, version.clone()),
                        version.clone(),
                    ));
                }
            }
        }
        Change::Release {
            release,
            chart_version,
            values,
        } => {
            let (namespace, name) = split_reference(release, &config.namespace);
            // Only releases the config manages: the event must not reach beyond them.
            let index = config
                .releases
                .iter()
                .position(|rule| {
                    split_reference(&rule.helm_release, &config.namespace)
                        == (namespace.clone(), name.clone())
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

fn edit_for(rule: &ReleaseRule, version: String) -> Edit {
    match &rule.set {
        Some(path) => Edit::SetValue {
            path: path.split('.').map(str::to_owned).collect(),
            value: version,
        },
        None => Edit::ChartVersion(version),
    }
}

fn target(config: &Config, index: usize, edit: Edit, version: String) -> Target {
    let rule = &config.releases[index];
    let (namespace, name) = split_reference(&rule.helm_release, &config.namespace);
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
}
