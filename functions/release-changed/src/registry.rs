//! Container registry push notifications on `POST /webhooks/registry`, so images built outside
//! Tekton release too. Two payloads are understood:
//!
//! - the Docker distribution (CNCF Distribution) notification envelope,
//!   `{"events": [{"action": "push", "target": {"repository", "tag", "digest", "url"}, …}]}`,
//!   which Docker's registry, GitLab's and many others send;
//! - Harbor's webhook, `{"type": "PUSH_ARTIFACT", "event_data": {"resources": [{"resource_url",
//!   "tag", "digest"}]}}`.
//!
//! Both authenticate with a fixed `Authorization` header set in the registry's notification
//! config; `providers.registry.token` holds it (`Bearer ` in front is optional on either side).

use http::HeaderMap;
use serde_json::Value;
use tekflux_common::config::ProviderSettings;
use tekflux_common::webhook_auth::token_matches;
use tekflux_common::{Error, Result};

use crate::change::{Change, ImageVersion};
use crate::helm_release::Stamp;

/// A manifest (or index) pushed under a tag: the only pushes that can release anything.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryPush {
    /// The image, normalised.
    pub image: ImageVersion,
    /// The notification's own id for this push, when it has one.
    pub id: String,
    /// When the registry saw the push (RFC 3339), when it says.
    pub time: Option<String>,
}

impl RegistryPush {
    /// The change this push stands for, and the facts recorded on each release it updates.
    pub fn change(&self, source: &str) -> (Change, Stamp) {
        (
            Change::Image(self.image.clone()),
            Stamp {
                event: format!("{source}#{}", self.id),
                time: self.time.clone(),
                // A registry knows the image, not the build or commit behind it.
                run: None,
                sha: None,
            },
        )
    }
}

/// Checks `Authorization` against `providers.registry.token` (or `insecure: true`). No entry
/// rejects every notification.
///
/// # Errors
/// [`Error::Unauthorized`] naming what is missing or wrong, never the token.
pub fn verify(settings: Option<&ProviderSettings>, headers: &HeaderMap) -> Result<()> {
    let Some(settings) = settings else {
        return Err(Error::Unauthorized(
            "registry notifications are not accepted: configure providers.registry.token"
                .to_owned(),
        ));
    };
    let Some(token) = settings.token.as_ref().filter(|token| token.is_resolved()) else {
        if settings.insecure {
            return Ok(());
        }
        return Err(Error::Unauthorized(
            "providers.registry has no token to check Authorization with".to_owned(),
        ));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| Error::Unauthorized("missing Authorization header".to_owned()))?;
    let strip = |value: &[u8]| -> Vec<u8> {
        let value = value.trim_ascii();
        value
            .strip_prefix(b"Bearer ")
            .unwrap_or(value)
            .trim_ascii()
            .to_vec()
    };
    if token_matches(&strip(given.as_bytes()), &strip(token.expose())) {
        Ok(())
    } else {
        Err(Error::Unauthorized(
            "the Authorization header does not match providers.registry.token".to_owned(),
        ))
    }
}

/// The tagged manifest pushes in a notification body, and the registry it came from
/// (`https://<host>`, the reply's source).
///
/// # Errors
/// [`Error::BadRequest`] for a body that is neither payload.
pub fn parse(body: &[u8]) -> Result<(String, Vec<RegistryPush>)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| Error::bad_request("the notification is not JSON", error))?;
    if let Some(events) = value.get("events").and_then(Value::as_array) {
        Ok(distribution(events))
    } else if value.get("event_data").is_some() {
        Ok(harbor(&value))
    } else {
        Err(Error::BadRequest(
            "not a registry notification: expected Distribution's {\"events\": […]} or \
             Harbor's {\"type\", \"event_data\"}"
                .to_owned(),
        ))
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// The registry host named in a URL (`https://host[:port]/v2/…`).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().filter(|host| !host.is_empty())
}

fn distribution(events: &[Value]) -> (String, Vec<RegistryPush>) {
    let mut source = None;
    let mut pushes = Vec::new();
    for event in events {
        // Blob pushes carry no tag; only a tagged manifest names a version to release.
        if text(event, "/action") != Some("push") {
            continue;
        }
        let (Some(repository), Some(tag)) = (
            text(event, "/target/repository"),
            text(event, "/target/tag"),
        ) else {
            continue;
        };
        // The host the registry calls itself in the manifest URL, else the one the pusher used.
        let Some(host) = text(event, "/target/url")
            .and_then(url_host)
            .or_else(|| text(event, "/request/host"))
        else {
            continue;
        };
        source.get_or_insert_with(|| format!("https://{host}"));
        let reference = format!("{host}/{repository}:{tag}");
        let Ok(mut image) = ImageVersion::parse(&reference) else {
            continue;
        };
        image.digest = text(event, "/target/digest").map(str::to_owned);
        pushes.push(RegistryPush {
            image,
            id: text(event, "/id").unwrap_or(tag).to_owned(),
            time: text(event, "/timestamp").map(str::to_owned),
        });
    }
    (source.unwrap_or_else(|| "registry".to_owned()), pushes)
}

fn harbor(value: &Value) -> (String, Vec<RegistryPush>) {
    let mut source = None;
    let mut pushes = Vec::new();
    let kind = text(value, "/type").unwrap_or_default();
    if kind != "PUSH_ARTIFACT" && kind != "pushImage" {
        return ("harbor".to_owned(), pushes);
    }
    // Harbor gives seconds since the epoch.
    let time = value
        .get("occur_at")
        .and_then(Value::as_i64)
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .map(|time| time.to_rfc3339());
    let resources = value
        .pointer("/event_data/resources")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for resource in resources {
        let (Some(url), Some(tag)) = (text(resource, "/resource_url"), text(resource, "/tag"))
        else {
            continue;
        };
        let Ok(mut image) = ImageVersion::parse(url) else {
            continue;
        };
        if let Some(host) = url.split('/').next() {
            source.get_or_insert_with(|| format!("https://{host}"));
        }
        image.tag = Some(tag.to_owned());
        image.digest = text(resource, "/digest").map(str::to_owned);
        let id = format!(
            "{}@{}",
            image.reference(),
            time.as_deref().unwrap_or_default()
        );
        pushes.push(RegistryPush {
            image,
            id,
            time: time.clone(),
        });
    }
    (source.unwrap_or_else(|| "harbor".to_owned()), pushes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use tekflux_common::config::Secret;

    #[test]
    fn distribution_envelopes_give_tagged_manifest_pushes() {
        let body = json!({"events": [
            {"id": "e1", "timestamp": "2026-11-24T06:00:00.123456789Z", "action": "push",
             "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": "sha256:ab12", "repository": "acme/api",
                        "url": "https://registry.example.com:5000/v2/acme/api/manifests/sha256:ab12",
                        "tag": "1.2.3"},
             "request": {"host": "registry.internal"}},
            {"id": "e2", "action": "push",
             "target": {"mediaType": "application/octet-stream", "digest": "sha256:cd34",
                        "repository": "acme/api"}},
            {"id": "e3", "action": "pull",
             "target": {"repository": "acme/api", "tag": "1.2.3"}},
        ]});
        let (source, pushes) = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(source, "https://registry.example.com:5000");
        assert_eq!(pushes.len(), 1);
        assert_eq!(
            pushes[0].image.repository,
            "registry.example.com:5000/acme/api"
        );
        assert_eq!(pushes[0].image.tag.as_deref(), Some("1.2.3"));
        assert_eq!(pushes[0].image.digest.as_deref(), Some("sha256:ab12"));
        assert_eq!(pushes[0].id, "e1");
    }

    #[test]
    fn harbor_pushes_are_understood() {
        let body = json!({"type": "PUSH_ARTIFACT", "occur_at": 1_795_500_000, "operator": "ci",
            "event_data": {"resources": [{"digest": "sha256:ef56", "tag": "2.0.0",
                "resource_url": "harbor.example.com/acme/web:2.0.0"}],
                "repository": {"name": "web", "namespace": "acme"}}});
        let (source, pushes) = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(source, "https://harbor.example.com");
        assert_eq!(pushes[0].image.repository, "harbor.example.com/acme/web");
        assert_eq!(pushes[0].image.tag.as_deref(), Some("2.0.0"));
        assert!(pushes[0].time.is_some());
        let (_, none) = parse(br#"{"type": "DELETE_ARTIFACT", "event_data": {}}"#).unwrap();
        assert!(none.is_empty());
        assert_eq!(parse(br#"{"hello": 1}"#).unwrap_err().kind(), "bad_request");
    }

    /// A refusal with the documented kind (401), not just any error.
    fn assert_unauthorized(result: tekflux_common::Result<()>) {
        match result {
            Err(error) => assert_eq!(error.kind(), "unauthorized", "{error}"),
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn the_authorization_header_must_carry_the_token() {
        let settings = ProviderSettings {
            token: Some(Secret::literal("test", "reg-token")),
            ..ProviderSettings::default()
        };
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert!(verify(Some(&settings), &with("Bearer reg-token")).is_ok());
        assert!(verify(Some(&settings), &with("reg-token")).is_ok());
        assert_unauthorized(verify(Some(&settings), &with("Bearer other")));
        assert_unauthorized(verify(Some(&settings), &HeaderMap::new()));
        assert_unauthorized(verify(None, &with("Bearer reg-token")));
    }
}
