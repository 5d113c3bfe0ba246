//! A watch-fed copy of the HelmReleases release-changed's rules name, so an event is decided
//! against its release without first reading it from the API server.
//!
//! The copy saves a round trip; it never has the last word. An apply decided on a copy carries
//! the copy's `resourceVersion`, so the API server refuses it (409) when the release changed
//! since, and [`crate::releasing::apply`] then reads the release and decides again. Answers that
//! apply nothing (an event older than the release's, an edit the release cannot take) are only
//! given on a fresh read. A release the copy does not hold is read as before: a namespace not
//! listed yet or whose watch is down (no `list`/`watch` permission, say), a namespace a rule
//! names through a capture (`{api}/api`).
//!
//! One list and watch per namespace and HelmRelease API that a rule names literally. The watch
//! asks the API server to end it before the client's read timeout and is renewed from the last
//! `resourceVersion` seen; after an error (410 Gone, a refusal, a dropped connection) the copy is
//! dropped and the namespace listed again, with a backoff. Only where the process keeps running
//! between requests: a Lambda function is frozen between invocations, its watch would fall
//! behind unseen.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::TryStreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tekflux_common::config::capture;
use tekflux_common::config::{Config, HelmReleaseApi};

use crate::helm_release;

/// The first wait before listing a namespace again after an error; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const LAST_RETRY: Duration = Duration::from_secs(60);
/// The longest watch the API server is asked for (kube refuses 295 s and more).
const LONGEST_WATCH_SECS: u32 = 290;

/// The copies, one per watched namespace and API; empty when nothing is watched.
#[derive(Debug, Default)]
pub(crate) struct WatchedReleases {
    namespaces: HashMap<(HelmReleaseApi, String), Arc<Namespace>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WatchedReleases {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One namespace's copy.
#[derive(Debug, Default)]
struct Namespace {
    copy: RwLock<Snapshot>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Whether `releases` holds every release of the namespace (listed, and watched since).
    listed: bool,
    releases: HashMap<String, Arc<Value>>,
}

impl WatchedReleases {
    /// Starts listing and watching every namespace and API that `config`'s rules name
    /// literally, through `kube`. Each watch is renewed before `read_timeout` (the client's)
    /// ends it. Must be called inside a Tokio runtime; the watches stop when this is dropped.
    pub(crate) fn start(kube: &kube::Client, config: &Config, read_timeout: Duration) -> Self {
        let mut watched = Self::default();
        for (api, namespace) in literal_namespaces(config) {
            let copy = Arc::new(Namespace::default());
            let resource = helm_release::api_resource(api);
            let client: Api<DynamicObject> =
                Api::namespaced_with(kube.clone(), &namespace, &resource);
            let what = format!("{} in {namespace}", resource.api_version);
            watched.tasks.push(tokio::spawn(keep_copy(
                client,
                Arc::clone(&copy),
                watch_seconds(read_timeout),
                what,
            )));
            watched.namespaces.insert((api, namespace), copy);
        }
        watched
    }

    /// The copy of one release, when its namespace is listed and it holds the release.
    pub(crate) fn get(
        &self,
        api: HelmReleaseApi,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        let namespace = self.namespaces.get(&(api, namespace.to_owned()))?;
        let copy = namespace.copy.read().unwrap_or_else(|e| e.into_inner());
        copy.listed
            .then(|| copy.releases.get(name).cloned())
            .flatten()
    }

    /// Keeps `applied`, the API server's answer to an apply of one release, as its copy when
    /// its namespace is watched and listed. An answer that does not parse is left to the watch.
    pub(crate) fn remember(&self, api: HelmReleaseApi, namespace: &str, name: &str, applied: &str) {
        let Some(namespace) = self.namespaces.get(&(api, namespace.to_owned())) else {
            return;
        };
        if !namespace
            .copy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .listed
        {
            return;
        }
        let Ok(release) = serde_json::from_str::<Value>(applied) else {
            return;
        };
        if release.pointer("/metadata/name").and_then(Value::as_str) == Some(name) {
            namespace.put(name.to_owned(), without_managed_fields(release));
        }
    }

    /// Whether every watched namespace is listed (true when none is watched).
    pub(crate) fn all_listed(&self) -> bool {
        self.namespaces.values().all(|namespace| {
            namespace
                .copy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .listed
        })
    }
}

/// The namespaces (and APIs) the rules name without a capture, each once.
fn literal_namespaces(config: &Config) -> BTreeSet<(HelmReleaseApi, String)> {
    config
        .releases
        .iter()
        .filter_map(|rule| {
            let (namespace, _) = rule.helm_release_ref(&config.namespace);
            // A part is either literal or a whole capture (`{team}`); config validation
            // refuses anything else.
            capture::capture_name(namespace)
                .is_none()
                .then(|| (rule.api, namespace.to_owned()))
        })
        .collect()
}

/// How long each watch may last: a second under the client's read timeout, which would
/// otherwise end a quiet watch as an error.
fn watch_seconds(read_timeout: Duration) -> u32 {
    let seconds = u32::try_from(read_timeout.as_secs()).unwrap_or(u32::MAX);
    seconds.saturating_sub(1).clamp(1, LONGEST_WATCH_SECS)
}

/// Lists and watches one namespace for as long as the task runs.
async fn keep_copy(
    client: Api<DynamicObject>,
    copy: Arc<Namespace>,
    watch_secs: u32,
    what: String,
) {
    let mut retry = FIRST_RETRY;
    loop {
        match list(&client).await {
            Ok((releases, version)) => {
                copy.replace(releases);
                retry = FIRST_RETRY;
                tracing::debug!(releases = %what, "listed; watching");
                match follow(&client, &copy, version, watch_secs).await {
                    // The version is too old to watch from: list again at once.
                    Ok(()) => {
                        copy.forget();
                        continue;
                    }
                    Err(error) => tracing::warn!(
                        releases = %what,
                        error = %tekflux_common::error::plain_chain(&error),
                        "watch failed; releases are read before each apply until it is listed again"
                    ),
                }
            }
            Err(error) => tracing::warn!(
                releases = %what,
                error = %tekflux_common::error::plain_chain(&error),
                "cannot list; releases are read before each apply (allow list and watch on helmreleases to save that read)"
            ),
        }
        copy.forget();
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// Every release in the namespace, and the version to watch from.
async fn list(client: &Api<DynamicObject>) -> kube::Result<(HashMap<String, Arc<Value>>, String)> {
    let list = client.list(&ListParams::default()).await?;
    let version = list.metadata.resource_version.clone().unwrap_or_default();
    let releases = list.items.into_iter().filter_map(named_copy).collect();
    Ok((releases, version))
}

/// Follows the namespace from `version`, renewing the watch whenever the server ends it.
/// `Ok` when the version is gone (410) and the namespace must be listed again.
async fn follow(
    client: &Api<DynamicObject>,
    copy: &Namespace,
    mut version: String,
    watch_secs: u32,
) -> kube::Result<()> {
    let params = WatchParams::default().timeout(watch_secs);
    loop {
        let events = client.watch(&params, &version).await?;
        futures::pin_mut!(events);
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    version = object.metadata.resource_version.clone().unwrap_or(version);
                    if let Some((name, release)) = named_copy(object) {
                        copy.put(name, release);
                    }
                }
                WatchEvent::Deleted(object) => {
                    version = object.metadata.resource_version.clone().unwrap_or(version);
                    if let Some(name) = &object.metadata.name {
                        copy.remove(name);
                    }
                }
                WatchEvent::Bookmark(bookmark) => version = bookmark.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => return Ok(()),
                WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
            }
        }
    }
}

/// A release as the copy keeps it: without `managedFields`, which nothing here reads and which
/// are often most of the object.
fn named_copy(object: DynamicObject) -> Option<(String, Arc<Value>)> {
    let name = object.metadata.name.clone()?;
    let value = serde_json::to_value(object).ok()?;
    Some((name, without_managed_fields(value)))
}

fn without_managed_fields(mut release: Value) -> Arc<Value> {
    if let Some(metadata) = release.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    Arc::new(release)
}

impl Namespace {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.copy.write().unwrap_or_else(|e| e.into_inner())
    }

    fn replace(&self, releases: HashMap<String, Arc<Value>>) {
        *self.write() = Snapshot {
            listed: true,
            releases,
        };
    }

    fn forget(&self) {
        *self.write() = Snapshot::default();
    }

    fn put(&self, name: String, release: Arc<Value>) {
        self.write().releases.insert(name, release);
    }

    fn remove(&self, name: &str) {
        self.write().releases.remove(name);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tekflux_common::config::Env;

    #[test]
    fn only_namespaces_a_rule_names_literally_are_watched() {
        let config = Config::from_yaml(
            r#"namespace: cicd
releases:
  - image: registry.example.com/acme/api
    helmRelease: api
    set: image.tag
    from: any
  - image: registry.example.com/acme/web
    helmRelease: apps/web
    set: image.tag
    from: any
  - chart: legacy
    helmRelease: apps/legacy
    api: helmOperator
    from: any
  - image: registry.example.com/teams/{team}/app
    helmRelease: "{team}/app"
    set: image.tag
    from: any
"#,
            "test.yaml",
            &Env::new(),
        )
        .unwrap();
        let watched: Vec<_> = literal_namespaces(&config).into_iter().collect();
        assert_eq!(
            watched,
            [
                (HelmReleaseApi::Flux, "apps".to_owned()),
                (HelmReleaseApi::Flux, "cicd".to_owned()),
                (HelmReleaseApi::HelmOperator, "apps".to_owned()),
            ]
        );
    }

    #[test]
    fn a_watch_ends_before_the_clients_read_timeout() {
        assert_eq!(watch_seconds(Duration::from_secs(10)), 9);
        assert_eq!(watch_seconds(Duration::from_secs(1)), 1);
        assert_eq!(watch_seconds(Duration::from_millis(300)), 1);
        assert_eq!(watch_seconds(Duration::from_secs(3600)), LONGEST_WATCH_SECS);
    }

    #[test]
    fn the_copy_answers_only_once_its_namespace_is_listed() {
        let namespace = Arc::new(Namespace::default());
        let watched = WatchedReleases {
            namespaces: HashMap::from([(
                (HelmReleaseApi::Flux, "cicd".to_owned()),
                Arc::clone(&namespace),
            )]),
            tasks: Vec::new(),
        };
        let release = Arc::new(serde_json::json!({"metadata": {"name": "api"}}));
        namespace.put("api".to_owned(), Arc::clone(&release));
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "api").is_none());
        let applied = r#"{"metadata": {"name": "api", "resourceVersion": "9"}}"#;
        watched.remember(HelmReleaseApi::Flux, "cicd", "api", applied);
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "api").is_none());
        assert!(!watched.all_listed());
        namespace.replace(HashMap::from([("api".to_owned(), release)]));
        assert!(watched.all_listed());
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "api").is_some());
        assert!(
            watched
                .get(HelmReleaseApi::HelmOperator, "cicd", "api")
                .is_none()
        );
        assert!(watched.get(HelmReleaseApi::Flux, "apps", "api").is_none());
        // Once listed, an apply's answer replaces the copy; one naming another release or
        // that does not parse is left to the watch.
        watched.remember(HelmReleaseApi::Flux, "cicd", "api", applied);
        watched.remember(
            HelmReleaseApi::Flux,
            "cicd",
            "api",
            r#"{"metadata": {"name": "web"}}"#,
        );
        watched.remember(HelmReleaseApi::Flux, "cicd", "api", "not json");
        let copy = watched.get(HelmReleaseApi::Flux, "cicd", "api").unwrap();
        assert_eq!(copy.pointer("/metadata/resourceVersion").unwrap(), "9");
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "web").is_none());
        namespace.remove("api");
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "api").is_none());
        namespace.forget();
        assert!(!watched.all_listed());
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {
                "name": "api",
                "resourceVersion": "7",
                "managedFields": [{"manager": "kustomize-controller", "operation": "Apply"}],
            },
            "spec": {"values": {"image": {"tag": "1.0.0"}}},
        }))
        .unwrap();
        let (name, copy) = named_copy(object).unwrap();
        assert_eq!(name, "api");
        assert!(copy.pointer("/metadata/managedFields").is_none());
        assert_eq!(copy.pointer("/metadata/resourceVersion").unwrap(), "7");
        assert_eq!(copy.pointer("/spec/values/image/tag").unwrap(), "1.0.0");
    }
}
