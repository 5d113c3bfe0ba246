//! The one reply event per finished run.
//!
//! A successful run whose results name an image (`IMAGE_URL` and `IMAGE_DIGEST`, the
//! Kaniko/Buildah convention) answers a CDEvents artifact published event with the image as
//! its subject (so the CloudEvent `subject` is the image's package URL, as the CDEvents
//! binding requires; the run is in `customData.run`), which release-changed acts on. Every other
//! run answers `dev.tekflux.run.finished.v1` with the outcome and where the archive is. The reply
//! is built from the manifest alone, so a duplicate event gets the same answer.

use cdevents_sdk::latest::artifact_published;
use cdevents_sdk::{CDEvent, Subject};
use cloudevents::{AttributesReader, Event};
use serde_json::{Value, json};
use tekflux_common::cloudevent::{
    IncomingEvent, build_reply, cdevent_builder, is_image_digest, oci_purl, reply_to,
    split_image_reference,
};
use tekflux_common::{Error, Result};

use crate::manifest::Manifest;

/// Type of the reply for runs that did not publish an image.
pub const RUN_FINISHED_TYPE: &str = "dev.tekflux.run.finished.v1";

/// The result names an image build reports (Tekton catalog kaniko/buildah Tasks).
pub const IMAGE_URL_RESULT: &str = tekflux_common::run_contract::IMAGE_URL_RESULT;
/// The digest result that goes with [`IMAGE_URL_RESULT`].
pub const IMAGE_DIGEST_RESULT: &str = tekflux_common::run_contract::IMAGE_DIGEST_RESULT;

/// Builds the reply to `incoming` for the archived run `manifest` describes.
///
/// # Errors
/// [`Error::Internal`] when the reply cannot be built (a bug), [`Error::Unprocessable`] when
/// the image results cannot form a package URL.
pub fn build_reply_event(
    incoming: &IncomingEvent,
    manifest: &Manifest,
    bucket: &str,
    manifest_key: &str,
    duplicate: bool,
) -> Result<Event> {
    let run = &manifest.run;
    let source = manifest
        .repo
        .clone()
        .unwrap_or_else(|| incoming.event.source().to_string());
    let archive = json!({
        "manifest": format!("s3://{bucket}/{manifest_key}"),
        "workspaces": manifest.workspaces.iter().map(|w| json!({
            "workspace": w.workspace,
            "url": format!("s3://{bucket}/{}", w.key),
            "sha256": w.sha256,
            "bytes": w.bytes,
        })).collect::<Vec<_>>(),
        "logs": manifest.logs.iter().filter(|log| log.key.is_some()).count(),
    });
    let run_json = json!({
        "kind": run.kind,
        "name": run.name,
        "namespace": run.namespace,
        "uid": run.uid,
    });
    let mut data = json!({
        "run": run_json,
        "outcome": run.outcome,
        "archive": archive,
        "duplicate": duplicate,
    });
    if let Some(reason) = &run.reason {
        data["reason"] = json!(reason);
    }
    if manifest.workspaces.is_empty() {
        data["note"] = json!(no_workspace_note(manifest));
    }
    if !manifest.skipped_workspaces.is_empty() {
        data["skippedWorkspaces"] = json!(manifest.skipped_workspaces);
    }

    let builder = match image_of(manifest) {
        Some((url, digest)) if run.outcome == "succeeded" => {
            let cdevent = artifact_published_event(incoming, &source, &url, &digest, data)?;
            // The binding: id, source, type, subject (the image) and time are the CDEvent's.
            incoming
                .correlation
                .stamp_builder(cdevent_builder(&cdevent)?)
        }
        _ => reply_to(incoming, RUN_FINISHED_TYPE, &source)
            .subject(run.name.clone())
            .data("application/json", data),
    };
    let mut reply = build_reply(builder)?;
    let mut correlation = incoming
        .correlation
        .clone()
        .with_namespace(run.namespace.clone());
    if let Some(sha) = &manifest.sha {
        correlation = correlation.with_sha(sha.clone());
    }
    if let Some(delivery) = &manifest.delivery_id {
        correlation = correlation.with_delivery_id(delivery.clone());
    }
    if let Some(repo) = &manifest.repo {
        correlation = correlation.with_repo(repo.clone());
    }
    correlation.stamp(&mut reply);
    Ok(reply)
}

/// Why a run has no workspace archive: the reason of the first skipped workspace, or none
/// configured.
fn no_workspace_note(manifest: &Manifest) -> String {
    match manifest.skipped_workspaces.first() {
        Some(skipped) => format!(
            "no workspace archived: {} ({})",
            skipped.reason, skipped.workspace
        ),
        None => "no archivable workspace: the run has no claim workspace mounted in \
                 run-complete (storage.mounts) or marked archive: true; its logs are archived"
            .to_owned(),
    }
}

fn image_of(manifest: &Manifest) -> Option<(String, String)> {
    let url = manifest.results.get(IMAGE_URL_RESULT)?.trim();
    let digest = manifest.results.get(IMAGE_DIGEST_RESULT)?.trim();
    (!url.is_empty() && !digest.is_empty()).then(|| (url.to_owned(), digest.to_owned()))
}

fn artifact_published_event(
    incoming: &IncomingEvent,
    source: &str,
    image_url: &str,
    digest: &str,
    mut data: Value,
) -> Result<CDEvent> {
    let reference = ImageReference::parse(image_url, digest)?;
    let internal =
        |what: &'static str| move |error: cdevents_sdk::Error| Error::internal(what, error);
    let subject = Subject::from(artifact_published::Content {
        sbom: None,
        user: None,
    })
    .with_id(
        reference
            .purl()
            .as_str()
            .try_into()
            .map_err(internal("the image is not a CDEvents id"))?,
    )
    .with_source(
        source
            .try_into()
            .map_err(internal("the reply source is not a URI reference"))?,
    );
    data["image"] = json!(reference.pinned());
    data["imageUrl"] = json!(image_url);
    data["imageDigest"] = json!(digest);
    let cdevent = CDEvent::from(subject)
        .with_source(
            source
                .try_into()
                .map_err(internal("the reply source is not a URI reference"))?,
        )
        .with_custom_data(data);
    // The id a duplicate Tekton event gets again, so that consumers can deduplicate.
    let id = tekflux_common::cloudevent::reply_id(&incoming.event, cdevent.ty());
    Ok(cdevent.with_id(id.as_str().try_into().map_err(internal("bad CDEvent id"))?))
}

/// An image named by `IMAGE_URL` (`registry/path/name[:tag]`, maybe already `@digest`) and
/// `IMAGE_DIGEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `registry/path/name`.
    pub repository: String,
    /// The tag, when the URL had one.
    pub tag: Option<String>,
    /// `sha256:…`.
    pub digest: String,
}

impl ImageReference {
    /// Splits the results into repository, tag and digest.
    ///
    /// # Errors
    /// [`Error::Unprocessable`] for a digest that is not `algorithm:hex` or an empty name.
    pub fn parse(image_url: &str, digest: &str) -> Result<Self> {
        // A digest in the URL itself is ignored: IMAGE_DIGEST is the one the build reports.
        let (repository, tag, _) = split_image_reference(image_url);
        let tag = tag.map(str::to_owned);
        let valid_digest = is_image_digest(digest);
        if repository.is_empty() || !valid_digest {
            return Err(Error::Unprocessable(format!(
                "the run's results do not name an image: IMAGE_URL {image_url:?}, IMAGE_DIGEST \
                 {digest:?}"
            )));
        }
        Ok(Self {
            repository: repository.to_owned(),
            tag,
            digest: digest.to_owned(),
        })
    }

    /// `repository@digest`, the reference a deployment should pin.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }

    /// The package URL (`pkg:oci/name@digest?repository_url=…&tag=…`) CDEvents uses as an
    /// artifact id.
    pub fn purl(&self) -> String {
        oci_purl(&self.repository, &self.digest, self.tag.as_deref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn image_references_split_tag_port_and_digest() {
        let digest = "sha256:0123abcd";
        let image = ImageReference::parse("registry.example.com:5000/org/app:v1", digest).unwrap();
        assert_eq!(image.repository, "registry.example.com:5000/org/app");
        assert_eq!(image.tag.as_deref(), Some("v1"));
        assert_eq!(
            image.pinned(),
            "registry.example.com:5000/org/app@sha256:0123abcd"
        );
        assert_eq!(
            image.purl(),
            "pkg:oci/app@sha256%3A0123abcd?repository_url=registry.example.com:5000/org/app&tag=v1"
        );
        let image = ImageReference::parse("localhost:5000/app@sha256:ff", "sha256:ff").unwrap();
        assert_eq!(image.repository, "localhost:5000/app");
        assert_eq!(image.tag, None);
        assert!(ImageReference::parse("r/app", "latest").is_err());
        assert!(ImageReference::parse("", "sha256:ff").is_err());
    }
}
