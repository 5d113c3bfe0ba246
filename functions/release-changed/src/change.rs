//! What an event says changed, before any release rule is consulted.
//!
//! Two CloudEvent types carry a change:
//!
//! - `dev.cdevents.artifact.published.0.3.0` (run-complete's reply for a run that built an
//!   image, or any CDEvents producer): the subject id is the image's package URL
//!   `pkg:oci/<name>@<digest>?repository_url=<repository>&tag=<tag>`.
//! - `dev.tekflux.release.changed.v1`, sent by a person or a script, with one of
//!   `{"image": "registry/app:1.2.3"}` (or `image` without a tag plus `tag`/`digest`),
//!   `{"chart": "app", "version": "1.2.3"}`, or
//!   `{"release": "[namespace/]name", "chartVersion": "1.2.3", "values": {…}}`.

use std::borrow::Cow;

use serde_json::{Map, Value};
use tekflux_common::cloudevent::{is_image_digest, percent_decode_strict, split_image_reference};
use tekflux_common::{Error, Result};

/// CDEvents' artifact published type, as run-complete emits it.
pub const ARTIFACT_PUBLISHED_TYPE: &str = "dev.cdevents.artifact.published.0.3.0";
/// The project's explicit release event.
pub const RELEASE_CHANGED_TYPE: &str = "dev.tekflux.release.changed.v1";

/// A new version of something releases depend on.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new image.
    Image(ImageVersion),
    /// A new chart version.
    Chart {
        /// The chart's name.
        name: String,
        /// Its new version.
        version: String,
    },
    /// A release edited by name.
    Release {
        /// `name` or `namespace/name`.
        release: String,
        /// The chart version to set.
        chart_version: Option<String>,
        /// Values to set (merged into the release's values, field by field).
        values: Option<Map<String, Value>>,
    },
}

/// An image repository and the tag and/or digest that is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVersion {
    /// `registry/path/name`, normalised (see [`normalize_repository`]).
    pub repository: String,
    /// The tag, when known.
    pub tag: Option<String>,
    /// `sha256:…`, when known.
    pub digest: Option<String>,
}

impl ImageVersion {
    /// Splits `registry[:port]/path/name[:tag][@digest]`.
    ///
    /// # Errors
    /// [`Error::Unprocessable`] for an empty name or a digest that is not `algorithm:hex`.
    pub fn parse(reference: &str) -> Result<Self> {
        let (repository, tag, digest) = split_image_reference(reference);
        Self::from_parts(
            repository,
            tag.map(str::to_owned),
            digest.map(str::to_owned),
        )
    }

    fn from_parts(repository: &str, tag: Option<String>, digest: Option<String>) -> Result<Self> {
        let repository = repository.trim();
        if repository.is_empty() || repository.chars().any(char::is_whitespace) {
            return Err(Error::Unprocessable(format!(
                "{repository:?} is not an image repository"
            )));
        }
        if let Some(digest) = &digest
            && !is_image_digest(digest)
        {
            return Err(Error::Unprocessable(format!(
                "{digest:?} is not an image digest (algorithm:hex)"
            )));
        }
        if let Some(tag) = &tag
            && !is_tag(tag)
        {
            return Err(Error::Unprocessable(format!(
                "{tag:?} is not an image tag (up to 128 letters, digits, '_', '.', '-')"
            )));
        }
        Ok(Self {
            repository: normalize_repository(repository).into_owned(),
            tag,
            digest,
        })
    }

    /// `repository[:tag][@digest]`.
    pub fn reference(&self) -> String {
        let mut reference = self.repository.clone();
        if let Some(tag) = &self.tag {
            reference.push(':');
            reference.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            reference.push('@');
            reference.push_str(digest);
        }
        reference
    }
}

/// The OCI distribution spec's tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`. Values that
/// end up in a chart's values must be exactly this, not whatever a sender wrote.
fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// One spelling per repository, so a rule's `image` matches however a producer wrote it:
/// lowercase registry host, and Docker Hub's `docker.io/library/x`, `index.docker.io/x` and
/// `x` all become `docker.io/library/x`. A repository already spelled that way is returned as
/// it is, without a copy.
pub fn normalize_repository(repository: &str) -> Cow<'_, str> {
    let trimmed = repository
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (first, rest) = trimmed.split_once('/').unwrap_or(("", trimmed));
    // The first component is a registry host only if it looks like one (Docker's rule).
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    if !is_host {
        return if trimmed.contains('/') {
            Cow::Owned(format!("docker.io/{trimmed}"))
        } else {
            Cow::Owned(format!("docker.io/library/{trimmed}"))
        };
    }
    let lowered;
    let host = if first.chars().any(char::is_uppercase) {
        lowered = first.to_lowercase();
        lowered.as_str()
    } else {
        first
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        host => host,
    };
    if host == "docker.io" && !rest.contains('/') {
        Cow::Owned(format!("docker.io/library/{rest}"))
    } else if host == first && trimmed.len() == repository.len() {
        Cow::Borrowed(repository)
    } else {
        Cow::Owned(format!("{host}/{rest}"))
    }
}

/// Reads the change an event of type `event_type` carries in `data`.
///
/// # Errors
/// [`Error::BadRequest`] for an unknown type or data of the wrong shape,
/// [`Error::Unprocessable`] for well-formed data that names no usable version.
pub fn from_event(event_type: &str, data: &Value) -> Result<Change> {
    match event_type {
        ARTIFACT_PUBLISHED_TYPE => from_artifact_published(data),
        RELEASE_CHANGED_TYPE => from_release_changed(data),
        other => Err(Error::BadRequest(format!(
            "unsupported event type {other:?}; release-changed takes {ARTIFACT_PUBLISHED_TYPE} \
             and {RELEASE_CHANGED_TYPE}"
        ))),
    }
}

fn from_artifact_published(data: &Value) -> Result<Change> {
    let id = data
        .pointer("/subject/id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::BadRequest(
                "the artifact published event has no subject.id (the artifact's package URL)"
                    .to_owned(),
            )
        })?;
    parse_oci_purl(id).map(Change::Image)
}

/// `pkg:oci/<name>@<digest>?repository_url=<repository>&tag=<tag>` (the purl spec's OCI type;
/// without `repository_url` the image is on Docker Hub).
fn parse_oci_purl(purl: &str) -> Result<ImageVersion> {
    let not_oci = || {
        Error::Unprocessable(format!(
            "the artifact {purl:?} is not an OCI image (pkg:oci/…); release-changed releases images"
        ))
    };
    let rest = purl.strip_prefix("pkg:oci/").ok_or_else(not_oci)?;
    let rest = rest.split('#').next().unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (name, version) = match path.split_once('@') {
        Some((name, version)) => (name, Some(percent_decode(version)?)),
        None => (path, None),
    };
    let mut repository = None;
    let mut tag = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "repository_url" => repository = Some(percent_decode(value)?),
            "tag" => tag = Some(percent_decode(value)?),
            _ => {}
        }
    }
    let repository = match repository {
        Some(repository) => repository,
        None => percent_decode(name)?,
    };
    if version.is_none() && tag.is_none() {
        return Err(Error::Unprocessable(format!(
            "the artifact {purl:?} names neither a digest nor a tag"
        )));
    }
    ImageVersion::from_parts(&repository, tag, version)
}

fn percent_decode(text: &str) -> Result<String> {
    percent_decode_strict(text)
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "bad percent-encoding in {text:?} (a stray %, or not UTF-8)"
            ))
        })
}

fn from_release_changed(data: &Value) -> Result<Change> {
    let object = data.as_object().ok_or_else(|| {
        Error::BadRequest(format!(
            "{RELEASE_CHANGED_TYPE} data must be a JSON object with `image`, `chart` or `release`"
        ))
    })?;
    let text = |key: &str| -> Result<Option<String>> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if !text.trim().is_empty() => {
                Ok(Some(text.trim().to_owned()))
            }
            Some(_) => Err(Error::BadRequest(format!(
                "`{key}` must be a non-empty string"
            ))),
        }
    };
    let given: Vec<&str> = ["image", "chart", "release"]
        .into_iter()
        .filter(|key| object.contains_key(*key))
        .collect();
    if given.len() != 1 {
        return Err(Error::BadRequest(format!(
            "{RELEASE_CHANGED_TYPE} data needs exactly one of `image`, `chart` and `release`; \
             it has {given:?}"
        )));
    }
    match given[0] {
        "image" => {
            let reference = text("image")?.unwrap_or_default();
            let mut image = ImageVersion::parse(&reference)?;
            if let Some(tag) = text("tag")? {
                image = ImageVersion::from_parts(&image.repository, Some(tag), image.digest)?;
            }
            if let Some(digest) = text("digest")? {
                image = ImageVersion::from_parts(&image.repository, image.tag, Some(digest))?;
            }
            if image.tag.is_none() && image.digest.is_none() {
                return Err(Error::Unprocessable(format!(
                    "the image {reference:?} names neither a tag nor a digest"
                )));
            }
            Ok(Change::Image(image))
        }
        "chart" => {
            let name = text("chart")?.unwrap_or_default();
            let version = text("version")?.ok_or_else(|| {
                Error::BadRequest(format!("the chart {name:?} comes without a `version`"))
            })?;
            check_chart_version(&version)?;
            Ok(Change::Chart { name, version })
        }
        _ => {
            let release = text("release")?.unwrap_or_default();
            let chart_version = text("chartVersion")?;
            if let Some(version) = &chart_version {
                check_chart_version(version)?;
            }
            let values = match object.get("values") {
                None | Some(Value::Null) => None,
                Some(Value::Object(values)) => Some(values.clone()),
                Some(_) => {
                    return Err(Error::BadRequest(
                        "`values` must be a JSON object".to_owned(),
                    ));
                }
            };
            if chart_version.is_none() && values.is_none() {
                return Err(Error::BadRequest(format!(
                    "the release {release:?} comes with neither `chartVersion` nor `values`: \
                     nothing to change"
                )));
            }
            Ok(Change::Release {
                release,
                chart_version,
                values,
            })
        }
    }
}

/// A chart version or semver range, as Flux's `spec.chart.spec.version` takes it: printable,
/// no spaces at the ends, not absurdly long.
fn check_chart_version(version: &str) -> Result<()> {
    if version.len() > 128 || !version.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(Error::Unprocessable(format!(
            "{version:?} is not a chart version"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn repositories_are_normalised_like_docker_does() {
        assert_eq!(normalize_repository("nginx"), "docker.io/library/nginx");
        assert_eq!(
            normalize_repository("index.docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(normalize_repository("acme/app"), "docker.io/acme/app");
        assert_eq!(
            normalize_repository("Registry.Example.com:5000/org/app/"),
            "registry.example.com:5000/org/app"
        );
        assert_eq!(normalize_repository("localhost/app"), "localhost/app");
        assert_eq!(
            normalize_repository(" https://ghcr.io/acme/app "),
            "ghcr.io/acme/app"
        );
        assert_eq!(
            normalize_repository("registry-1.docker.io/acme/app"),
            "docker.io/acme/app"
        );
        assert_eq!(
            normalize_repository("docker.io/nginx"),
            "docker.io/library/nginx"
        );
        // A host with non-ASCII capitals is lowercased like any other.
        assert_eq!(normalize_repository("RÉG.example/app"), "rég.example/app");
        // Already normal: the same text, not a copy.
        for normal in [
            "ghcr.io/acme/app",
            "registry.example.com:5000/org/app",
            "docker.io/library/nginx",
        ] {
            assert!(
                matches!(normalize_repository(normal), Cow::Borrowed(text) if text == normal),
                "{normal}"
            );
        }
    }

    #[test]
    fn image_references_split_port_tag_and_digest() {
        let image =
            ImageVersion::parse("registry.example.com:5000/org/app:v1.2@sha256:ab12").unwrap();
        assert_eq!(image.repository, "registry.example.com:5000/org/app");
        assert_eq!(image.tag.as_deref(), Some("v1.2"));
        assert_eq!(image.digest.as_deref(), Some("sha256:ab12"));
        let image = ImageVersion::parse("registry.example.com:5000/org/app").unwrap();
        assert_eq!(image.tag, None);
        assert!(ImageVersion::parse("app:bad tag").is_err());
        assert!(ImageVersion::parse("app:$(rm -rf /)").is_err());
        assert!(ImageVersion::parse("app@sha256:nothex").is_err());
    }

    #[test]
    fn artifact_published_purls_give_repository_tag_and_digest() {
        let data = json!({"subject": {"id":
            "pkg:oci/app@sha256%3A0123abcd?repository_url=registry.example.com:5000/org/app&tag=v1"}});
        let change = from_event(ARTIFACT_PUBLISHED_TYPE, &data).unwrap();
        assert_eq!(
            change,
            Change::Image(ImageVersion {
                repository: "registry.example.com:5000/org/app".into(),
                tag: Some("v1".into()),
                digest: Some("sha256:0123abcd".into()),
            })
        );
        // Docker Hub, no repository_url.
        let data = json!({"subject": {"id": "pkg:oci/nginx@sha256%3Aff?tag=1.27"}});
        let Change::Image(image) = from_event(ARTIFACT_PUBLISHED_TYPE, &data).unwrap() else {
            panic!("an image")
        };
        assert_eq!(image.repository, "docker.io/library/nginx");
        // Not an image.
        let data = json!({"subject": {"id": "pkg:maven/org.acme/app@1.0"}});
        assert!(matches!(
            from_event(ARTIFACT_PUBLISHED_TYPE, &data),
            Err(Error::Unprocessable(_))
        ));
        assert!(matches!(
            from_event(ARTIFACT_PUBLISHED_TYPE, &json!({"subject": {}})),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn explicit_release_events_take_one_of_three_shapes() {
        let image = from_event(
            RELEASE_CHANGED_TYPE,
            &json!({"image": "ghcr.io/acme/app:2.0.1"}),
        );
        assert!(
            matches!(image, Ok(Change::Image(ImageVersion { ref tag, .. })) if tag.as_deref() == Some("2.0.1"))
        );
        let image = from_event(
            RELEASE_CHANGED_TYPE,
            &json!({"image": "ghcr.io/acme/app", "tag": "2.0.1"}),
        )
        .unwrap();
        assert!(
            matches!(image, Change::Image(ImageVersion { ref tag, .. }) if tag.as_deref() == Some("2.0.1"))
        );
        assert_eq!(
            from_event(
                RELEASE_CHANGED_TYPE,
                &json!({"chart": "app", "version": "1.4.0"})
            )
            .unwrap(),
            Change::Chart {
                name: "app".into(),
                version: "1.4.0".into()
            }
        );
        let release = from_event(
            RELEASE_CHANGED_TYPE,
            &json!({"release": "cicd/app", "values": {"replicaCount": 3}}),
        )
        .unwrap();
        assert!(
            matches!(release, Change::Release { ref release, chart_version: None, values: Some(_) } if release == "cicd/app")
        );

        for bad in [
            json!([]),
            json!({}),
            json!({"image": "a/b:1", "chart": "c"}),
            json!({"chart": "app"}),
            json!({"release": "app"}),
            json!({"release": "app", "values": [1]}),
            json!({"image": 3}),
        ] {
            assert!(
                matches!(
                    from_event(RELEASE_CHANGED_TYPE, &bad),
                    Err(Error::BadRequest(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            from_event(RELEASE_CHANGED_TYPE, &json!({"image": "ghcr.io/acme/app"})),
            Err(Error::Unprocessable(_))
        ));
    }
}
