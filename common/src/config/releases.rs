//! `releases`: which artifacts update which HelmReleases, and which builds may release them.

use serde::Deserialize;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HelmReleaseApi {
    /// Flux v2 `helm.toolkit.fluxcd.io/v2`.
    #[default]
    Flux,
    /// The older Helm Operator `helm.fluxcd.io/v1`.
    HelmOperator,
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
