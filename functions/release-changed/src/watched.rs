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
//! asks the API server to end it before its client's read timeout (a server's watch client
//! waits 295 s, `clients::WATCH_READ_TIMEOUT`) and is renewed from the last
//! `resourceVersion` seen; after an error (410 Gone, a refusal, a dropped connection, a watch
//! that ends long before its timeout) the copy is dropped and the namespace listed again after a
//! backoff (0.5 s doubling to 60 s, started afresh only once a watch has held for 30 s). Only
//! where the process keeps running between requests: a Lambda function is frozen between
//! invocations, its watch would fall behind unseen.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, WatchParams};
use kube::core::Status;
use serde::Deserialize;
use serde_json::Value;
use tekflux_common::config::capture;
use tekflux_common::config::{Config, HelmReleaseApi};

use crate::helm_release;

/// The first wait before listing a namespace again after an error; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How long a watch must have held for its failure to start the backoff afresh.
const HEALTHY_WATCH: Duration = Duration::from_secs(30);
/// The longest watch the API server is asked for (kube refuses 295 s and more).
const LONGEST_WATCH_SECS: u32 = 290;

/// The copies, one per watched API and namespace; empty when nothing is watched.
#[derive(Debug, Default)]
pub(crate) struct WatchedReleases {
    /// By API, then namespace: looked up by `&str`, without a key to build per event.
    namespaces: HashMap<HelmReleaseApi, HashMap<String, Arc<Namespace>>>,
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
            let url = Api::<DynamicObject>::namespaced_with(kube.clone(), &namespace, &resource)
                .resource_url()
                .to_owned();
            let client = Releases {
                kube: kube.clone(),
                url,
            };
            let what = format!("{} in {namespace}", resource.api_version);
            watched.tasks.push(tokio::spawn(keep_copy(
                client,
                Arc::clone(&copy),
                watch_seconds(read_timeout),
                what,
            )));
            watched
                .namespaces
                .entry(api)
                .or_default()
                .insert(namespace, copy);
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
        let copy = self.namespace(api, namespace)?.read();
        copy.listed
            .then(|| copy.releases.get(name).cloned())
            .flatten()
    }

    fn namespace(&self, api: HelmReleaseApi, namespace: &str) -> Option<&Namespace> {
        self.namespaces.get(&api)?.get(namespace).map(Arc::as_ref)
    }

    /// Keeps `applied`, the API server's answer to an apply of one release, as its copy when
    /// its namespace is watched and listed. An answer that does not parse is left to the watch.
    pub(crate) fn remember(&self, api: HelmReleaseApi, namespace: &str, name: &str, applied: &str) {
        let Some(namespace) = self.namespace(api, namespace) else {
            return;
        };
        if !namespace.read().listed {
            return;
        }
        let Some((named, release)) = serde_json::from_str(applied).ok().and_then(named_copy) else {
            return;
        };
        if named == name {
            namespace.put(named, release);
        }
    }

    /// Whether every watched namespace is listed (true when none is watched).
    pub(crate) fn all_listed(&self) -> bool {
        self.namespaces
            .values()
            .flat_map(HashMap::values)
            .all(|namespace| namespace.read().listed)
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
async fn keep_copy(client: Releases, copy: Arc<Namespace>, watch_secs: u32, what: String) {
    let mut retry = FIRST_RETRY;
    loop {
        match client.list().await {
            Ok((releases, version)) => {
                copy.replace(releases);
                tracing::debug!(releases = %what, "listed; watching");
                let watching = Instant::now();
                let ended = client.follow(&copy, version, watch_secs).await;
                // Only a watch that held starts the backoff afresh: a Role with `list` but not
                // `watch`, or a proxy that ends every watch at once, must not be retried twice
                // a second.
                if watching.elapsed() >= HEALTHY_WATCH {
                    retry = FIRST_RETRY;
                }
                match ended {
                    Ok(()) => {
                        tracing::debug!(releases = %what, "the watched version is gone; listing again")
                    }
                    Err(error) if retry == FIRST_RETRY => tracing::warn!(
                        releases = %what,
                        error = %tekflux_common::error::plain_chain(&error),
                        "watch failed; releases are read before each apply until it is listed again"
                    ),
                    Err(error) => tracing::debug!(
                        releases = %what,
                        error = %tekflux_common::error::plain_chain(&error),
                        "watch failed again"
                    ),
                }
            }
            // Said once per run of failures, not every minute while a Role lacks `list`.
            Err(error) if retry == FIRST_RETRY => tracing::warn!(
                releases = %what,
                error = %tekflux_common::error::plain_chain(&error),
                "cannot list; releases are read before each apply (allow list and watch on helmreleases to save that read)"
            ),
            Err(error) => tracing::debug!(
                releases = %what,
                error = %tekflux_common::error::plain_chain(&error),
                "cannot list yet"
            ),
        }
        copy.forget();
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// The HelmReleases of one namespace and API, read as JSON values (not `DynamicObject`s, which
/// would be converted again).
struct Releases {
    kube: kube::Client,
    url: String,
}

impl Releases {
    /// Every release in the namespace, and the version to watch from.
    async fn list(&self) -> kube::Result<(HashMap<String, Arc<Value>>, String)> {
        let mut request = kube::core::Request::new(&self.url)
            .list(&ListParams::default())
            .map_err(kube::Error::BuildRequest)?;
        request.extensions_mut().insert("list");
        let mut list: Value = self.kube.request(request).await?;
        let version = resource_version(&list).unwrap_or_default().to_owned();
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok((items.into_iter().filter_map(named_copy).collect(), version))
    }

    /// Follows the namespace from `version`, renewing the watch whenever the server ends it.
    /// `Ok` when the version is gone (410) and the namespace must be listed again.
    async fn follow(
        &self,
        copy: &Namespace,
        mut version: String,
        watch_secs: u32,
    ) -> kube::Result<()> {
        let params = WatchParams::default().timeout(watch_secs);
        loop {
            let mut request = kube::core::Request::new(&self.url)
                .watch(&params, &version)
                .map_err(kube::Error::BuildRequest)?;
            request.extensions_mut().insert("watch");
            // Read line by line into a value at once: kube's `WatchEvent` would buffer each
            // object before reading it again.
            let lines = self.kube.request_stream(request).await?.lines();
            futures::pin_mut!(lines);
            let started = Instant::now();
            while let Some(line) = lines.try_next().await.map_err(kube::Error::ReadEvents)? {
                if line.trim().is_empty() {
                    continue;
                }
                let event: WatchLine =
                    serde_json::from_str(&line).map_err(kube::Error::SerdeError)?;
                match event.kind.as_str() {
                    "ADDED" | "MODIFIED" => {
                        if let Some((name, release)) = named_copy(event.object) {
                            version = resource_version(&release).map_or(version, str::to_owned);
                            copy.put(name, release);
                        }
                    }
                    "DELETED" => {
                        if let Some((name, release)) = named_copy(event.object) {
                            version = resource_version(&release).map_or(version, str::to_owned);
                            copy.remove(&name, &release);
                        }
                    }
                    "BOOKMARK" => {
                        version = resource_version(&event.object).map_or(version, str::to_owned);
                    }
                    "ERROR" => {
                        let status: Status = serde_json::from_value(event.object)
                            .map_err(kube::Error::SerdeError)?;
                        if status.code == 410 {
                            return Ok(());
                        }
                        return Err(kube::Error::Api(Box::new(status)));
                    }
                    _ => {}
                }
            }
            // The server ends a watch at its timeout; one that ends well before (a proxy that
            // closes streams) is renewed only after the backoff.
            if started.elapsed() < Duration::from_secs(u64::from(watch_secs)) / 2 {
                return Err(kube::Error::ReadEvents(std::io::Error::other(
                    "the watch ended long before its timeout",
                )));
            }
        }
    }
}

/// One line of a watch: `{"type": "ADDED", "object": {…}}`.
#[derive(Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
}

/// `metadata.resourceVersion` of an object or a list.
fn resource_version(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// Whether `incoming` is an older state of the release than `held`. A resourceVersion is
/// opaque; where both are integers (etcd's revisions are) the larger is the newer, so an event
/// the watch brings late does not replace the release an apply answered with. Elsewhere the
/// incoming copy wins. Either way this only saves round trips: an apply decided on an older
/// copy is refused and decided again.
fn is_older(incoming: &Value, held: &Value) -> bool {
    let revision = |release| resource_version(release)?.parse::<u64>().ok();
    matches!((revision(incoming), revision(held)), (Some(incoming), Some(held)) if incoming < held)
}

/// A release as the copy keeps it: without `managedFields`, which nothing here reads and which
/// are often most of the object.
fn named_copy(mut release: Value) -> Option<(String, Arc<Value>)> {
    let name = release.pointer("/metadata/name")?.as_str()?.to_owned();
    if let Some(metadata) = release.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    Some((name, Arc::new(release)))
}

impl Namespace {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.copy.read().unwrap_or_else(|e| e.into_inner())
    }

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
        let mut copy = self.write();
        if copy
            .releases
            .get(&name)
            .is_some_and(|held| is_older(&release, held))
        {
            return;
        }
        copy.releases.insert(name, release);
    }

    /// Forgets the release `deleted` names, unless the copy holds a newer state of it.
    fn remove(&self, name: &str, deleted: &Value) {
        let mut copy = self.write();
        if copy
            .releases
            .get(name)
            .is_some_and(|held| is_older(deleted, held))
        {
            return;
        }
        copy.releases.remove(name);
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
                HelmReleaseApi::Flux,
                HashMap::from([("cicd".to_owned(), Arc::clone(&namespace))]),
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
        // A deletion the watch brings late does not remove the newer release an apply answered.
        let deleted_before =
            serde_json::json!({"metadata": {"name": "api", "resourceVersion": "8"}});
        namespace.remove("api", &deleted_before);
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "api").is_some());
        let deleted = serde_json::json!({"metadata": {"name": "api", "resourceVersion": "10"}});
        namespace.remove("api", &deleted);
        assert!(watched.get(HelmReleaseApi::Flux, "cicd", "api").is_none());
        namespace.forget();
        assert!(!watched.all_listed());
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let object = serde_json::json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {
                "name": "api",
                "resourceVersion": "7",
                "managedFields": [{"manager": "kustomize-controller", "operation": "Apply"}],
            },
            "spec": {"values": {"image": {"tag": "1.0.0"}}},
        });
        let (name, copy) = named_copy(object).unwrap();
        assert_eq!(name, "api");
        assert!(copy.pointer("/metadata/managedFields").is_none());
        assert_eq!(copy.pointer("/metadata/resourceVersion").unwrap(), "7");
        assert_eq!(copy.pointer("/spec/values/image/tag").unwrap(), "1.0.0");
    }

    #[test]
    fn a_late_event_does_not_replace_a_newer_copy() {
        let at = |version: &str| serde_json::json!({"metadata": {"resourceVersion": version}});
        assert!(is_older(&at("9"), &at("10")));
        assert!(!is_older(&at("10"), &at("9")));
        assert!(!is_older(&at("10"), &at("10")));
        // Not integers: nothing can be said, the incoming copy wins.
        assert!(!is_older(&at("a9"), &at("b10")));
        assert!(!is_older(&serde_json::json!({}), &at("10")));

        let namespace = Namespace::default();
        namespace.replace(HashMap::new());
        let release = |version: &str| {
            named_copy(serde_json::json!({"metadata": {"name": "api", "resourceVersion": version}}))
                .unwrap()
                .1
        };
        namespace.put("api".to_owned(), release("10"));
        namespace.put("api".to_owned(), release("9"));
        let held = namespace.read().releases["api"].clone();
        assert_eq!(held.pointer("/metadata/resourceVersion").unwrap(), "10");
        namespace.put("api".to_owned(), release("11"));
        let held = namespace.read().releases["api"].clone();
        assert_eq!(held.pointer("/metadata/resourceVersion").unwrap(), "11");
    }

    /// One Flux release, `api` in `cicd`, named by one rule, on a test API server; watches
    /// last a second (a client read timeout of two).
    struct Cluster {
        api: tekflux_testkit::kube_api::TestApiServer,
        watched: WatchedReleases,
    }

    impl Cluster {
        async fn start() -> Self {
            let api = tekflux_testkit::kube_api::TestApiServer::start().await;
            api.insert(release_object("1.0.0"));
            let config = Config::from_yaml(
                "namespace: cicd\nreleases:\n  - image: registry.example.com/acme/api\n    \
                 helmRelease: api\n    set: image.tag\n    from: any\n",
                "test.yaml",
                &Env::new(),
            )
            .unwrap();
            let watched = WatchedReleases::start(&api.client(), &config, Duration::from_secs(2));
            let cluster = Self { api, watched };
            cluster.until("listed", WatchedReleases::all_listed).await;
            cluster
        }

        /// Waits up to 5 s for `done`.
        async fn until(&self, what: &str, done: impl Fn(&WatchedReleases) -> bool) {
            for _ in 0..500 {
                if done(&self.watched) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("not {what} within 5 s");
        }

        /// The tag of the copy of `api`.
        fn tag(&self) -> Option<String> {
            let copy = self.watched.get(HelmReleaseApi::Flux, "cicd", "api")?;
            Some(copy.pointer("/spec/values/image/tag")?.as_str()?.to_owned())
        }

        /// How many times the releases were listed, and the versions watches started from.
        fn lists_and_watches(&self) -> (usize, Vec<String>) {
            let requests = self.api.requests();
            let releases = requests
                .iter()
                .filter(|request| request.path.ends_with("/namespaces/cicd/helmreleases"));
            let (watches, lists): (Vec<_>, Vec<_>) =
                releases.partition(|request| request.query.contains_key("watch"));
            let versions = watches
                .iter()
                .map(|watch| watch.query["resourceVersion"].clone())
                .collect();
            (lists.len(), versions)
        }
    }

    fn release_object(tag: &str) -> Value {
        serde_json::json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "api", "namespace": "cicd"},
            "spec": {"chart": {"spec": {"chart": "api"}}, "values": {"image": {"tag": tag}}},
        })
    }

    #[tokio::test]
    async fn a_watch_is_renewed_from_its_last_bookmark_without_a_new_list() {
        let cluster = Cluster::start().await;
        // Something else changes in the cluster: the release's own version falls behind.
        let other = cluster.api.insert(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "unrelated", "namespace": "cicd"},
        }));
        let current = resource_version(&other).unwrap().to_owned();
        cluster.api.bookmark();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // History before the bookmark is gone: a watch from the release's version gets 410.
        cluster.api.compact();
        // The watch ends after a second and is renewed from the bookmark's version.
        cluster
            .until("renewed", |_| cluster.lists_and_watches().1.len() >= 2)
            .await;
        let (lists, watches) = cluster.lists_and_watches();
        assert_eq!(lists, 1, "listed again: {watches:?}");
        assert_eq!(watches.last(), Some(&current));
        // The renewed watch is live.
        cluster.api.insert(release_object("1.1.0"));
        cluster
            .until("updated", |_| cluster.tag().as_deref() == Some("1.1.0"))
            .await;
        assert!(cluster.watched.all_listed());
    }

    #[tokio::test]
    async fn a_watch_ended_by_410_or_an_error_drops_the_copy_and_lists_again() {
        let cluster = Cluster::start().await;
        assert_eq!(cluster.tag().as_deref(), Some("1.0.0"));
        for (round, code) in [(2, 410), (3, 500)] {
            cluster.api.end_watches(code);
            cluster
                .until("forgotten", |watched| !watched.all_listed())
                .await;
            assert_eq!(cluster.tag(), None, "after {code}");
            // A change while the copy is down is in the next list.
            let tag = format!("1.{round}.0");
            cluster.api.insert(release_object(&tag));
            cluster
                .until("listed again", WatchedReleases::all_listed)
                .await;
            assert_eq!(cluster.tag(), Some(tag), "after {code}");
            assert_eq!(cluster.lists_and_watches().0, round, "after {code}");
        }
    }
}
