//! The dead-letter store: events the Broker could not deliver after its retries, kept in the
//! bucket until `tekflux replay` sends them again.
//!
//! The Broker's `delivery.deadLetterSink` points at `POST /dead-letters` of run-complete's
//! Service (run-complete already holds the bucket). Each event is stored whole, as a structured
//! CloudEvent with the extensions Knative adds ([`ERROR_EXTENSIONS`]: where delivery failed,
//! the last status and the start of the answer), at
//! `<storage.prefix>/_dead-letters/<hash>.json`. The hash is of the event's `source`, `id` and
//! failed destination, so a dead letter delivered twice is stored once; `_` cannot begin a
//! namespace, so the store never meets a run's objects.
//!
//! Replaying sends the event without those extensions, with its own `id` and `source`, so the
//! receivers' idempotency holds (a run is not created twice, a release not applied twice), and
//! removes it from the store only once it was accepted.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Event};
use serde_json::json;
use sha2::{Digest, Sha256};
use tekflux_common::cloudevent::{IncomingEvent, no_reply};
use tekflux_common::config::Config;
use tekflux_common::error::plain_chain;
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::sender::{Receiver, SenderAuth, require_sender};
use tekflux_common::{Error, Result};

use crate::archive::S3Failure;

/// The folder under `storage.prefix` that holds dead letters.
pub const FOLDER: &str = "_dead-letters";

/// The extensions Knative adds to a dead letter: the destination that failed, its last HTTP
/// status, and the start of its answer (base64).
pub const ERROR_EXTENSIONS: [&str; 3] =
    ["knativeerrordest", "knativeerrorcode", "knativeerrordata"];

/// What the dead-letter route needs. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetterStore {
    s3: Option<Client>,
    bucket: Option<String>,
    prefix: String,
    senders: SenderAuth,
    stored: CounterFamily,
}

impl std::fmt::Debug for DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl DeadLetterStore {
    /// The store in `config.storage`'s bucket; without a bucket or S3 client every dead letter
    /// is answered 503, so the Broker logs it as undeliverable.
    pub fn new(
        config: &Config,
        kube: Option<kube::Client>,
        s3: Option<Client>,
        metrics: &Metrics,
    ) -> Self {
        Self::with_senders(
            SenderAuth::new(Receiver::DeadLetters, &config.events, kube, metrics),
            config,
            s3,
            metrics,
        )
    }

    fn with_senders(
        senders: SenderAuth,
        config: &Config,
        s3: Option<Client>,
        metrics: &Metrics,
    ) -> Self {
        Self {
            s3,
            bucket: config.storage.bucket.clone(),
            prefix: config.storage.prefix.clone(),
            senders,
            stored: metrics.counter_family(
                "tekflux_dead_letters",
                "Undeliverable events received from the Broker, by outcome",
                &["outcome"],
            ),
        }
    }

    /// Who may send dead letters, for the startup log.
    pub fn senders(&self) -> &SenderAuth {
        &self.senders
    }
}

/// `POST /dead-letters`, from authenticated senders only (the Broker's Triggers).
pub fn app(store: DeadLetterStore) -> Router {
    let senders = middleware::from_fn_with_state(store.senders.clone(), require_sender);
    Router::new()
        .route("/dead-letters", post(receive).layer(senders))
        .with_state(store)
}

#[tracing::instrument(name = "dead_letter", skip_all)]
async fn receive(
    State(store): State<DeadLetterStore>,
    incoming: IncomingEvent,
) -> Result<Response> {
    let (Some(s3), Some(bucket)) = (&store.s3, &store.bucket) else {
        store.stored.inc(&["no_bucket"]);
        return Err(Error::Unavailable(
            "storage.bucket is not set: dead letters cannot be kept".to_owned(),
        ));
    };
    let event = &incoming.event;
    let key = key_for(&store.prefix, event);
    let body = serde_json::to_vec(event)
        .map_err(|error| Error::internal("the event cannot be written as JSON", error))?;
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/cloudevents+json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|error| {
            store.stored.inc(&["s3_error"]);
            // Always 503: the Broker must keep the event until the store takes it. The SDK's
            // own words end in raw response headers, so its failure is said in plain ones.
            Error::unavailable(
                "cannot store the dead letter",
                S3Failure::from_sdk("PutObject", bucket, &key, &error),
            )
        })?;
    store.stored.inc(&["stored"]);
    tracing::warn!(
        key,
        destination = extension(event, ERROR_EXTENSIONS[0])
            .as_deref()
            .unwrap_or(""),
        status = extension(event, ERROR_EXTENSIONS[1])
            .as_deref()
            .unwrap_or(""),
        "dead letter stored"
    );
    Ok(no_reply(StatusCode::OK, json!({ "stored": key })))
}

/// Where `event` is kept: the same place each time it is dead-lettered for the same
/// destination.
pub fn key_for(prefix: &str, event: &Event) -> String {
    let mut hash = Sha256::new();
    for part in [
        event.source().as_str(),
        event.id(),
        extension(event, ERROR_EXTENSIONS[0])
            .as_deref()
            .unwrap_or(""),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let name = format!("{FOLDER}/{}.json", &hex::encode(hash.finalize())[..32]);
    match prefix.trim_matches('/') {
        "" => name,
        prefix => format!("{prefix}/{name}"),
    }
}

/// The folder of the store under `prefix`, with its trailing slash.
pub fn folder(prefix: &str) -> String {
    match prefix.trim_matches('/') {
        "" => format!("{FOLDER}/"),
        prefix => format!("{prefix}/{FOLDER}/"),
    }
}

/// The value of a string extension.
pub fn extension(event: &Event, name: &str) -> Option<String> {
    event.extension(name).map(ToString::to_string)
}

/// One stored dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its key in the bucket.
    pub key: String,
    /// When it was stored.
    pub stored_at: Option<DateTime<Utc>>,
    /// The event, with Knative's error extensions.
    pub event: Event,
}

impl DeadLetter {
    /// The event as it was first sent: without Knative's error extensions.
    pub fn original(&self) -> Event {
        let mut event = self.event.clone();
        for name in ERROR_EXTENSIONS {
            event.remove_extension(name);
        }
        event
    }
}

/// Why the store could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// S3 refused or failed.
    #[error("{what} failed: {detail}")]
    S3 {
        /// What was being done, naming the bucket and key.
        what: String,
        /// The cause, in plain words.
        detail: String,
    },
    /// A stored object is not a CloudEvent.
    #[error("s3://{bucket}/{key} is not a stored CloudEvent: {detail}")]
    NotAnEvent {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

/// Every dead letter in `bucket` under `prefix`, oldest first.
///
/// # Errors
/// [`StoreError`] when listing or reading fails.
pub async fn list(s3: &Client, bucket: &str, prefix: &str) -> Result<Vec<DeadLetter>, StoreError> {
    let folder = folder(prefix);
    let mut letters = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(&folder)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|error| StoreError::S3 {
            what: format!("listing s3://{bucket}/{folder}"),
            detail: plain_chain(&error),
        })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let stored_at = object
                .last_modified()
                .and_then(|time| DateTime::from_timestamp(time.secs(), time.subsec_nanos()));
            letters.push(DeadLetter {
                key: key.to_owned(),
                stored_at,
                event: read(s3, bucket, key).await?,
            });
        }
    }
    letters.sort_by_key(|letter| letter.stored_at);
    Ok(letters)
}

async fn read(s3: &Client, bucket: &str, key: &str) -> Result<Event, StoreError> {
    let s3_error = |detail: String| StoreError::S3 {
        what: format!("reading s3://{bucket}/{key}"),
        detail,
    };
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|error| s3_error(plain_chain(&error)))?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|error| s3_error(plain_chain(&error)))?
        .into_bytes();
    serde_json::from_slice(&bytes).map_err(|error| StoreError::NotAnEvent {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        detail: error.to_string(),
    })
}

/// Removes a dead letter once it was replayed.
///
/// # Errors
/// [`StoreError::S3`] when S3 refuses.
pub async fn remove(s3: &Client, bucket: &str, key: &str) -> Result<(), StoreError> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|error| StoreError::S3 {
            what: format!("removing s3://{bucket}/{key}"),
            detail: plain_chain(&error),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event(id: &str, destination: &str) -> Event {
        let mut event = EventBuilderV10::new()
            .id(id)
            .source("/apis/tekton.dev/v1/namespaces/cicd/taskruns/t")
            .ty("dev.tekton.event.taskrun.successful.v1")
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        event.set_extension("knativeerrordest", destination);
        event
    }

    #[test]
    fn the_same_letter_for_the_same_destination_has_one_key() {
        let a = key_for("runs", &event("1", "http://run-complete"));
        assert_eq!(a, key_for("/runs/", &event("1", "http://run-complete")));
        assert!(
            a.starts_with("runs/_dead-letters/") && a.ends_with(".json"),
            "{a}"
        );
        assert_ne!(a, key_for("runs", &event("2", "http://run-complete")));
        assert_ne!(a, key_for("runs", &event("1", "http://release-changed")));
        assert!(key_for("", &event("1", "x")).starts_with("_dead-letters/"));
    }

    #[test]
    fn the_original_has_no_error_extensions() {
        let mut letter = event("1", "http://x");
        letter.set_extension("knativeerrorcode", "503");
        letter.set_extension(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let original = DeadLetter {
            key: String::new(),
            stored_at: None,
            event: letter,
        }
        .original();
        let names: Vec<&str> = original.iter_extensions().map(|(name, _)| name).collect();
        assert_eq!(names, ["traceparent"]);
    }
}
