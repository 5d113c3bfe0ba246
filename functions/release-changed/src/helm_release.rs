//! The server-side apply patches release-changed sends: only the fields it changes, so every
//! other field keeps its owner (Flux's kustomize-controller, a person's `kubectl apply`).
//! Pure; no I/O.

use chrono::{DateTime, Utc};
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Map, Value, json};
use tekflux_common::config::HelmReleaseApi;
use tekflux_common::{Error, Result};

use crate::admission::{MAX_CLOCK_SKEW, parse_time};
use crate::target::{Edit, Target};

/// Annotation holding the version tekflux last applied.
pub const VERSION_ANNOTATION: &str = "tekflux.dev/release-version";
/// Annotation holding the event (`source#id`) that applied it.
pub const EVENT_ANNOTATION: &str = "tekflux.dev/release-event";
/// Annotation holding the time of that event (RFC 3339), to refuse older events that arrive
/// later: the Broker does not keep order.
pub const TIME_ANNOTATION: &str = "tekflux.dev/release-time";
/// Annotation naming the Tekton run (`namespace/name`) the applied version came from, when the
/// event names one (an artifact published event's `customData.run`), so `tekflux trace` can
/// link a push to its releases. As the event states it; the run is checked only when the
/// rule's `from` asks for it.
pub const RUN_ANNOTATION: &str = "tekflux.dev/release-run";
/// Annotation with the commit sha the applied version was built from, when the event carries
/// one (the `tekfluxsha` extension).
pub const SHA_ANNOTATION: &str = "tekflux.dev/release-sha";

/// The Kubernetes resource of a HelmRelease API.
pub fn api_resource(api: HelmReleaseApi) -> ApiResource {
    let gvk = match api {
        HelmReleaseApi::Flux => {
            GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease")
        }
        HelmReleaseApi::HelmOperator => {
            GroupVersionKind::gvk("helm.fluxcd.io", "v1", "HelmRelease")
        }
    };
    ApiResource::from_gvk_with_plural(&gvk, "helmreleases")
}

/// Where the chart version lives in the spec.
fn chart_version_path(api: HelmReleaseApi) -> &'static [&'static str] {
    match api {
        HelmReleaseApi::Flux => &["chart", "spec", "version"],
        HelmReleaseApi::HelmOperator => &["chart", "version"],
    }
}

/// Facts about the event recorded on the release.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// `source#id` of the event.
    pub event: String,
    /// The event's time, RFC 3339, when it had one.
    pub time: Option<String>,
    /// The run (`namespace/name`) the event names as the version's origin.
    pub run: Option<String>,
    /// The commit sha the event carries.
    pub sha: Option<String>,
}

/// Refuses edits the current release cannot take. A Flux release whose chart comes from
/// `chartRef` (an OCIRepository or HelmChart object) has no chart version of its own.
///
/// # Errors
/// [`Error::Unprocessable`] naming the release.
pub fn check_editable(target: &Target, current: &Value) -> Result<()> {
    let sets_chart_version = matches!(
        &target.edit,
        Edit::ChartVersion(_)
            | Edit::Explicit {
                chart_version: Some(_),
                ..
            }
    );
    if sets_chart_version
        && target.api == HelmReleaseApi::Flux
        && current.pointer("/spec/chartRef").is_some()
    {
        return Err(Error::Unprocessable(format!(
            "{} takes its chart from spec.chartRef, which has no version to set; set the \
             version on the referenced source, or use `set:` to change a value",
            target.reference()
        )));
    }
    Ok(())
}

/// Whether the release already records an event newer than `stamp`'s: then `stamp`'s event
/// arrived late and must not roll the release back. A recorded time more than
/// [`MAX_CLOCK_SKEW`] after `now` is ignored: such times are refused on arrival, so one on a
/// release was written before that (or by hand) and must not block every later event.
pub fn is_stale(current: &Value, stamp: &Stamp, now: DateTime<Utc>) -> bool {
    let Some(incoming) = stamp.time.as_deref().and_then(parse_time) else {
        return false;
    };
    current
        .pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(TIME_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(parse_time)
        .is_some_and(|recorded| recorded > incoming && recorded <= now + MAX_CLOCK_SKEW)
}

/// The apply patch for `target`: apiVersion, kind, name, namespace, the tekflux annotations and
/// the changed spec fields, nothing else.
pub fn apply_patch(target: &Target, stamp: &Stamp) -> Value {
    let resource = api_resource(target.api);
    let mut spec = Map::new();
    match &target.edit {
        Edit::SetValue { path, value } => {
            let keys: Vec<&str> = std::iter::once("values")
                .chain(path.iter().map(String::as_str))
                .collect();
            insert_at(&mut spec, &keys, Value::String(value.clone()));
        }
        Edit::ChartVersion(version) => {
            insert_at(
                &mut spec,
                chart_version_path(target.api),
                Value::String(version.clone()),
            );
        }
        Edit::Explicit {
            chart_version,
            values,
        } => {
            if let Some(version) = chart_version {
                insert_at(
                    &mut spec,
                    chart_version_path(target.api),
                    Value::String(version.clone()),
                );
            }
            if let Some(values) = values {
                spec.insert("values".to_owned(), Value::Object(values.clone()));
            }
        }
    }
    let mut annotations = Map::new();
    annotations.insert(VERSION_ANNOTATION.to_owned(), json!(target.version));
    annotations.insert(EVENT_ANNOTATION.to_owned(), json!(stamp.event));
    // Each is set or left out on every apply: server-side apply then drops the one an
    // earlier apply set, so a release never names a run its current version did not come from.
    let optional = [
        (TIME_ANNOTATION, &stamp.time),
        (RUN_ANNOTATION, &stamp.run),
        (SHA_ANNOTATION, &stamp.sha),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            annotations.insert(name.to_owned(), json!(value));
        }
    }
    json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": target.name,
            "namespace": target.namespace,
            "annotations": annotations,
        },
        "spec": spec,
    })
}

/// Sets `keys` (a path of object keys) to `value`, creating the objects on the way.
fn insert_at(object: &mut Map<String, Value>, keys: &[&str], value: Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = object;
    for key in parents {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert((*last).to_owned(), value);
}

/// The value the release holds where `target` writes, to tell a change from a no-op.
pub fn current_version(target: &Target, current: &Value) -> Option<String> {
    let path: Vec<String> = match &target.edit {
        Edit::SetValue { path, .. } => std::iter::once("values".to_owned())
            .chain(path.iter().cloned())
            .collect(),
        Edit::ChartVersion(_)
        | Edit::Explicit {
            chart_version: Some(_),
            ..
        } => chart_version_path(target.api)
            .iter()
            .map(|key| (*key).to_owned())
            .collect(),
        Edit::Explicit { .. } => return None,
    };
    let mut value = current.get("spec")?;
    for key in &path {
        value = value.get(key)?;
    }
    value.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn target(api: HelmReleaseApi, edit: Edit) -> Target {
        Target {
            namespace: "cicd".into(),
            name: "api".into(),
            api,
            edit,
            version: "1.2.3".into(),
            rule: 0,
        }
    }

    fn stamp(time: Option<&str>) -> Stamp {
        Stamp {
            event: "https://github.com/acme/api#42".into(),
            time: time.map(str::to_owned),
            run: None,
            sha: None,
        }
    }

    #[test]
    fn patches_carry_only_the_changed_fields() {
        let set = Edit::SetValue {
            path: vec!["image".into(), "tag".into()],
            value: "1.2.3".into(),
        };
        let patch = apply_patch(
            &target(HelmReleaseApi::Flux, set),
            &stamp(Some("2026-11-24T06:00:00Z")),
        );
        assert_eq!(
            patch,
            json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {
                    "name": "api",
                    "namespace": "cicd",
                    "annotations": {
                        VERSION_ANNOTATION: "1.2.3",
                        EVENT_ANNOTATION: "https://github.com/acme/api#42",
                        TIME_ANNOTATION: "2026-11-24T06:00:00Z",
                    },
                },
                "spec": {"values": {"image": {"tag": "1.2.3"}}},
            })
        );
        let patch = apply_patch(
            &target(HelmReleaseApi::Flux, Edit::ChartVersion("1.2.3".into())),
            &stamp(None),
        );
        assert_eq!(
            patch["spec"],
            json!({"chart": {"spec": {"version": "1.2.3"}}})
        );
        assert!(
            patch["metadata"]["annotations"]
                .get(TIME_ANNOTATION)
                .is_none()
        );
        let patch = apply_patch(
            &target(
                HelmReleaseApi::HelmOperator,
                Edit::ChartVersion("1.2.3".into()),
            ),
            &stamp(None),
        );
        assert_eq!(patch["apiVersion"], "helm.fluxcd.io/v1");
        assert_eq!(patch["spec"], json!({"chart": {"version": "1.2.3"}}));
    }

    #[test]
    fn the_run_and_sha_an_event_names_are_recorded() {
        let set = Edit::SetValue {
            path: vec!["image".into(), "tag".into()],
            value: "1.2.3".into(),
        };
        let from_run = Stamp {
            run: Some("cicd/api-build-3f2a9c1d0e4b".into()),
            sha: Some("3f2a9c1d0e4b5a6978812233445566778899aabb".into()),
            ..stamp(None)
        };
        let patch = apply_patch(&target(HelmReleaseApi::Flux, set.clone()), &from_run);
        let annotations = &patch["metadata"]["annotations"];
        assert_eq!(annotations[RUN_ANNOTATION], "cicd/api-build-3f2a9c1d0e4b");
        assert_eq!(
            annotations[SHA_ANNOTATION],
            "3f2a9c1d0e4b5a6978812233445566778899aabb"
        );
        // An event that names no run leaves both out, so the apply removes earlier ones.
        let patch = apply_patch(&target(HelmReleaseApi::Flux, set), &stamp(None));
        let annotations = patch["metadata"]["annotations"].as_object().unwrap();
        assert!(!annotations.contains_key(RUN_ANNOTATION));
        assert!(!annotations.contains_key(SHA_ANNOTATION));
    }

    #[test]
    fn older_events_are_stale_and_chart_refs_have_no_version() {
        let current = json!({"metadata": {"annotations": {TIME_ANNOTATION: "2026-11-24T06:00:00Z"}},
                             "spec": {"chartRef": {"kind": "OCIRepository", "name": "api"}}});
        let now = parse_time("2026-11-24T06:30:00Z").unwrap();
        assert!(is_stale(
            &current,
            &stamp(Some("2026-11-24T05:59:59+00:00")),
            now
        ));
        assert!(!is_stale(
            &current,
            &stamp(Some("2026-11-24T06:00:00Z")),
            now
        ));
        assert!(!is_stale(&current, &stamp(None), now));
        assert!(!is_stale(
            &json!({}),
            &stamp(Some("2026-11-24T05:00:00Z")),
            now
        ));
        // A recorded time far ahead of the clock (written before such times were refused)
        // does not hold every later event back.
        let long_before = parse_time("2026-11-20T00:00:00Z").unwrap();
        assert!(!is_stale(
            &current,
            &stamp(Some("2026-11-19T23:00:00Z")),
            long_before
        ));

        let chart = target(HelmReleaseApi::Flux, Edit::ChartVersion("2.0.0".into()));
        assert!(matches!(
            check_editable(&chart, &current),
            Err(Error::Unprocessable(_))
        ));
        let value = target(
            HelmReleaseApi::Flux,
            Edit::SetValue {
                path: vec!["tag".into()],
                value: "2".into(),
            },
        );
        assert!(check_editable(&value, &current).is_ok());
    }
}
