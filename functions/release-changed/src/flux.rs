//! Flux notification-controller events in, CloudEvents out: what became of a HelmRelease after
//! its spec changed. Flux's `generic-hmac` Provider posts its JSON `Event` to
//! `POST /webhooks/flux`, signed in `X-Signature: sha256=<hex HMAC of the body>`.
//!
//! | Flux event on a HelmRelease                         | reply                                   |
//! |-----------------------------------------------------|-----------------------------------------|
//! | `InstallSucceeded` ("Helm install succeeded")       | `dev.cdevents.service.deployed.0.3.0`   |
//! | `UpgradeSucceeded` ("Helm upgrade succeeded")       | `dev.cdevents.service.upgraded.0.3.0`   |
//! | `RollbackSucceeded`                                 | `dev.cdevents.service.rolledback.0.3.0` |
//! | `UninstallSucceeded`                                | `dev.cdevents.service.removed.0.3.0`    |
//! | any `severity: error`                               | `dev.tekflux.release.failed.v1`         |
//!
//! Anything else (other kinds, progress messages) is acknowledged and ignored.

use std::collections::BTreeMap;

use cdevents_sdk::latest::{
    service_deployed, service_removed, service_rolledback, service_upgraded,
};
use cdevents_sdk::{CDEvent, Content, Subject};
use chrono::{DateTime, Utc};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tekflux_common::cloudevent::{Correlation, build_reply, cdevent_builder};
use tekflux_common::config::ProviderSettings;
use tekflux_common::webhook_auth::hmac_sha256_matches;
use tekflux_common::{Error, Result};
use time::OffsetDateTime;

/// The header Flux's `generic-hmac` Provider signs with.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Type of the reply for a release that failed.
pub const RELEASE_FAILED_TYPE: &str = "dev.tekflux.release.failed.v1";

/// Checks the request against `providers.flux`: the HMAC in `X-Signature`, or nothing when the
/// entry says `insecure: true`. No entry rejects every request.
///
/// # Errors
/// [`Error::Unauthorized`] naming what is missing or wrong, never the secret.
pub fn verify(settings: Option<&ProviderSettings>, headers: &HeaderMap, body: &[u8]) -> Result<()> {
    let Some(settings) = settings else {
        return Err(Error::Unauthorized(
            "Flux events are not accepted: configure providers.flux.secret (the generic-hmac \
             Provider's token)"
                .to_owned(),
        ));
    };
    let Some(secret) = settings
        .secret
        .as_ref()
        .filter(|secret| secret.is_resolved())
    else {
        if settings.insecure {
            return Ok(());
        }
        return Err(Error::Unauthorized(
            "providers.flux has no secret to check X-Signature with".to_owned(),
        ));
    };
    let header = headers.get(SIGNATURE_HEADER).ok_or_else(|| {
        Error::Unauthorized("missing X-Signature (use a generic-hmac Provider)".to_owned())
    })?;
    let bad = || Error::Unauthorized("X-Signature does not match the body".to_owned());
    let value = header.to_str().map_err(|_| bad())?.trim();
    let (algorithm, hex_digest) = value.split_once('=').ok_or_else(bad)?;
    if algorithm != "sha256" {
        return Err(Error::Unauthorized(format!(
            "X-Signature uses {algorithm:?}; only sha256 (Flux's default) is accepted"
        )));
    }
    // Compared in constant time.
    if hmac_sha256_matches(secret.expose(), body, hex_digest) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Flux's event (notification-controller `Event`), the fields tekflux uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxEvent {
    /// The object the event is about.
    pub involved_object: InvolvedObject,
    /// `info` or `error`.
    pub severity: String,
    /// When it happened.
    pub timestamp: Option<String>,
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
    /// Machine-readable reason (`UpgradeSucceeded`, …; `info`/`error` in old versions).
    #[serde(default)]
    pub reason: String,
    /// Extra facts; `revision` (or `<group>/revision`) holds the chart version.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The controller that sent it.
    #[serde(default)]
    pub reporting_controller: String,
}

/// The object a Flux event is about.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvolvedObject {
    /// `HelmRelease`, `Kustomization`, …
    pub kind: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
    /// `group/version`.
    #[serde(default)]
    pub api_version: String,
}

/// What a Flux event says became of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Installed for the first time.
    Deployed,
    /// Upgraded to a new revision.
    Upgraded,
    /// Rolled back after a failure.
    RolledBack,
    /// Uninstalled.
    Removed,
    /// Failed (install, upgrade, test, rollback, fetching the chart…).
    Failed,
}

impl ReleaseOutcome {
    /// A short, stable name for metric labels (`tekflux_release_changed_flux_events_total`).
    pub fn kind(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Upgraded => "upgraded",
            Self::RolledBack => "rolledback",
            Self::Removed => "removed",
            Self::Failed => "failed",
        }
    }
}

impl FluxEvent {
    /// Parses Flux's JSON body.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for anything that is not a Flux event.
    pub fn parse(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body)
            .map_err(|error| Error::bad_request("not a Flux notification event", error))
    }

    /// What the event says became of the release; `None` when it is about something else or
    /// says nothing final.
    pub fn outcome(&self) -> Option<ReleaseOutcome> {
        if self.involved_object.kind != "HelmRelease" {
            return None;
        }
        if self.severity.eq_ignore_ascii_case("error") {
            return Some(ReleaseOutcome::Failed);
        }
        // Current helm-controllers set the reason; older ones only said it in the message.
        let message = self.message.to_ascii_lowercase();
        let said = |reason: &str, words: &str| self.reason == reason || message.contains(words);
        if said("InstallSucceeded", "helm install succeeded") {
            Some(ReleaseOutcome::Deployed)
        } else if said("UpgradeSucceeded", "helm upgrade succeeded") {
            Some(ReleaseOutcome::Upgraded)
        } else if said("RollbackSucceeded", "helm rollback succeeded") {
            Some(ReleaseOutcome::RolledBack)
        } else if said("UninstallSucceeded", "helm uninstall succeeded") {
            Some(ReleaseOutcome::Removed)
        } else {
            None
        }
    }

    /// The chart version the event reports, when it does.
    pub fn revision(&self) -> Option<&str> {
        self.metadata
            .get("revision")
            .or_else(|| self.metadata.get("helm.toolkit.fluxcd.io/revision"))
            .map(String::as_str)
    }

    /// `namespace/name` of the release.
    pub fn release(&self) -> String {
        format!(
            "{}/{}",
            self.involved_object.namespace, self.involved_object.name
        )
    }

    /// The release's API path, the reply's `source`.
    fn source(&self) -> String {
        let object = &self.involved_object;
        let api_version = if object.api_version.is_empty() {
            "helm.toolkit.fluxcd.io/v2"
        } else {
            &object.api_version
        };
        format!(
            "/apis/{api_version}/namespaces/{}/helmreleases/{}",
            object.namespace, object.name
        )
    }

    /// A reply id that is the same for Flux's retries of one event: Flux events carry no id.
    fn reply_id(&self) -> String {
        let object = &self.involved_object;
        crate::derived_id(
            "flux",
            &[
                object.uid.as_str(),
                object.namespace.as_str(),
                object.name.as_str(),
                self.timestamp.as_deref().unwrap_or_default(),
                self.reason.as_str(),
                self.message.as_str(),
                self.revision().unwrap_or_default(),
            ],
        )
    }
}

/// The CloudEvent for `event`, whose outcome is `outcome`.
///
/// # Errors
/// [`Error::Internal`] when the reply cannot be built (a bug).
pub fn reply(event: &FluxEvent, outcome: ReleaseOutcome) -> Result<Event> {
    let internal =
        |what: &'static str| move |error: cdevents_sdk::Error| Error::internal(what, error);
    let source = event.source();
    let namespace = event.involved_object.namespace.clone();
    let details = json!({
        "release": event.release(),
        "reason": event.reason,
        "message": event.message,
        "revision": event.revision(),
        "severity": event.severity,
        "reportingController": event.reporting_controller,
    });
    // When the release changed, as Flux saw it; now when Flux did not say.
    let time = event
        .timestamp
        .as_deref()
        .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
        .map_or_else(Utc::now, |time| time.with_timezone(&Utc));
    let builder = if outcome == ReleaseOutcome::Failed {
        EventBuilderV10::new()
            .id(event.reply_id())
            .ty(RELEASE_FAILED_TYPE)
            .source(source)
            .time(time)
            .subject(event.release())
            .data("application/json", details)
    } else {
        let occurred = time
            .timestamp_nanos_opt()
            .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos.into()).ok())
            .ok_or_else(|| Error::Internal(format!("the event time {time} is out of range")))?;
        let artifact = match event.revision() {
            Some(revision) => format!("pkg:helm/{}@{revision}", event.involved_object.name),
            None => format!("pkg:helm/{}", event.involved_object.name),
        };
        let artifact_id = || {
            artifact
                .as_str()
                .try_into()
                .map_err(internal("the chart is not a CDEvents id"))
        };
        let environment_id = || {
            namespace
                .as_str()
                .try_into()
                .map_err(internal("the namespace is not a CDEvents id"))
        };
        let content: Content = match outcome {
            ReleaseOutcome::Deployed => service_deployed::Content {
                artifact_id: artifact_id()?,
                environment: service_deployed::ContentEnvironment {
                    id: environment_id()?,
                    source: None,
                },
            }
            .into(),
            ReleaseOutcome::RolledBack => service_rolledback::Content {
                artifact_id: artifact_id()?,
                environment: service_rolledback::ContentEnvironment {
                    id: environment_id()?,
                    source: None,
                },
            }
            .into(),
            ReleaseOutcome::Removed => service_removed::Content {
                environment: Some(service_removed::ContentEnvironment {
                    id: environment_id()?,
                    source: None,
                }),
            }
            .into(),
            ReleaseOutcome::Upgraded | ReleaseOutcome::Failed => service_upgraded::Content {
                artifact_id: artifact_id()?,
                environment: service_upgraded::ContentEnvironment {
                    id: environment_id()?,
                    source: None,
                },
            }
            .into(),
        };
        let subject = Subject::from(content)
            .with_id(
                event
                    .release()
                    .as_str()
                    .try_into()
                    .map_err(internal("the release is not a CDEvents id"))?,
            )
            .with_source(
                source
                    .as_str()
                    .try_into()
                    .map_err(internal("the source is not a URI reference"))?,
            );
        let cdevent = CDEvent::from(subject)
            .with_timestamp(occurred)
            .with_id(
                event
                    .reply_id()
                    .as_str()
                    .try_into()
                    .map_err(internal("bad CDEvent id"))?,
            )
            .with_source(
                source
                    .as_str()
                    .try_into()
                    .map_err(internal("the source is not a URI reference"))?,
            )
            .with_custom_data(details);
        // The binding: id, source, type, subject and time are the CDEvent's.
        cdevent_builder(&cdevent)?
    };
    let mut reply = build_reply(builder)?;
    Correlation::default()
        .with_namespace(namespace)
        .stamp(&mut reply);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(reason: &str, severity: &str, message: &str) -> FluxEvent {
        FluxEvent::parse(
            json!({
                "involvedObject": {"kind": "HelmRelease", "namespace": "cicd", "name": "api",
                                   "uid": "u-1", "apiVersion": "helm.toolkit.fluxcd.io/v2"},
                "severity": severity, "timestamp": "2026-11-24T06:00:00Z",
                "message": message, "reason": reason,
                "metadata": {"revision": "1.4.0"},
                "reportingController": "helm-controller",
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn outcomes_follow_reasons_and_old_messages() {
        let cases = [
            (
                "InstallSucceeded",
                "info",
                "",
                Some(ReleaseOutcome::Deployed),
            ),
            (
                "UpgradeSucceeded",
                "info",
                "",
                Some(ReleaseOutcome::Upgraded),
            ),
            (
                "info",
                "info",
                "Helm upgrade succeeded",
                Some(ReleaseOutcome::Upgraded),
            ),
            (
                "RollbackSucceeded",
                "info",
                "",
                Some(ReleaseOutcome::RolledBack),
            ),
            (
                "UninstallSucceeded",
                "info",
                "",
                Some(ReleaseOutcome::Removed),
            ),
            (
                "UpgradeFailed",
                "error",
                "timed out",
                Some(ReleaseOutcome::Failed),
            ),
            ("Progressing", "info", "Running 'upgrade' action", None),
        ];
        for (reason, severity, message, expected) in cases {
            assert_eq!(
                event(reason, severity, message).outcome(),
                expected,
                "{reason}"
            );
        }
        let mut kustomization = event("ReconciliationSucceeded", "error", "");
        kustomization.involved_object.kind = "Kustomization".into();
        assert_eq!(kustomization.outcome(), None);
    }

    /// A refusal with the documented kind (401), not just any error.
    fn assert_unauthorized(result: tekflux_common::Result<()>) {
        match result {
            Err(error) => assert_eq!(error.kind(), "unauthorized", "{error}"),
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn signatures_are_checked_against_the_flux_secret() {
        let settings = ProviderSettings {
            secret: Some(tekflux_common::config::Secret::literal(
                "test",
                "flux-token",
            )),
            ..ProviderSettings::default()
        };
        let body = br#"{"involvedObject":{}}"#;
        let good = format!(
            "sha256={}",
            tekflux_common::webhook_auth::hmac_sha256_hex(b"flux-token", body)
        );
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, good.parse().unwrap());
        assert!(verify(Some(&settings), &headers, body).is_ok());
        assert_unauthorized(verify(Some(&settings), &headers, b"{}"));
        assert_unauthorized(verify(None, &headers, body));
        headers.insert(
            SIGNATURE_HEADER,
            good.replace("sha256", "sha512").parse().unwrap(),
        );
        assert_unauthorized(verify(Some(&settings), &headers, body));
        assert_unauthorized(verify(Some(&settings), &HeaderMap::new(), body));
        let insecure = ProviderSettings {
            insecure: true,
            ..ProviderSettings::default()
        };
        assert!(verify(Some(&insecure), &HeaderMap::new(), body).is_ok());
    }
}
