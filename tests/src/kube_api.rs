//! A small Kubernetes API server over HTTP on loopback, for driving the real `kube::Client` in tests.
//!
//! No real API server (nor k3s, kwok or envtest) can run on our test machines, so this one answers
//! the requests our functions make, with Kubernetes' status codes and `Status` bodies:
//!
//! - objects of any group, version and plural, under `/api/v1/…` and `/apis/{group}/{version}/…`,
//!   namespaced (`…/namespaces/{ns}/{plural}`) or cluster-scoped, kept in memory;
//! - create (201; `generateName`; 409 `AlreadyExists`), get (404 `NotFound`), list with
//!   `labelSelector` and `metadata.name`/`metadata.namespace` field selectors, replace (PUT, with a
//!   resourceVersion check), delete, and `dryRun=All` on every write;
//! - server-side apply (`application/apply-patch+yaml`, JSON or YAML body): `fieldManager` required,
//!   creates when missing, leaf-field ownership per manager, 409 `Conflict` naming the field when
//!   another manager owns it with a different value (unless `force=true`, which moves ownership),
//!   and removal of fields the same manager stops applying when nobody else owns them. Lists are
//!   atomic (no merge keys). `metadata.managedFields` is rendered from the ownership. A
//!   `metadata.resourceVersion` or `metadata.uid` in the applied object is a precondition, as on
//!   a real server: 409 `Conflict` when the object is at another version or is another object;
//!   a uid that matches no object is refused too, while an apply naming only a resourceVersion
//!   creates a missing object.
//! - JSON merge patch (strategic merge patch is treated as merge patch) and JSON patch;
//! - the `status` subresource (GET, PUT, PATCH): for kinds whose loaded CRD declares it, writes to
//!   the main resource leave `.status` alone and status writes change only `.status`;
//! - watch (`watch=true|1`): newline-delimited `{"type":"ADDED","object":…}` events for the current
//!   objects, then MODIFIED/DELETED/ADDED as they happen, until the client hangs up or
//!   `timeoutSeconds` passes, or an ERROR line ends it. No history is kept; a test makes a watch
//!   from an old `resourceVersion` answer 410 Expired with [`TestApiServer::compact`], ends open
//!   watches with an ERROR line of any code with [`TestApiServer::end_watches`], and sends
//!   BOOKMARK lines to the watches that asked for them with [`TestApiServer::bookmark`];
//! - `pods/{name}/log?container=C` answering text seeded with [`TestApiServer::set_pod_log`];
//! - validation of metadata (DNS-1123 names, label syntax) for every object and, for kinds with a
//!   loaded CRD schema ([`crate::crd`]; by default the corpus' Tekton, Flux and Knative CRDs), of
//!   the whole object, strictly: unknown fields are 422 `Invalid` (a real server prunes them with a
//!   warning unless `fieldValidation=Strict`), so builders cannot emit typos;
//! - fault injection ([`TestApiServer::fail_next`]) and a request log ([`TestApiServer::requests`]),
//!   also appended to a file per package when `TEKFLUX_KUBE_REQUEST_LOG` names a directory
//!   ([`crate::request_log`]), from which the RBAC test learns the verbs each function uses.
//!
//! Not emulated: authentication and RBAC, discovery (`/api`, `/apis`), version conversion (objects
//! are stored as sent), defaulting, finalizers and graceful deletion, owner-reference garbage
//! collection, pagination, bookmarks sent on the server's own schedule, and any controller behaviour (nothing ever runs).
//!
//! Facts about kube 5 that this server accommodates: queries start with `&` (`?&fieldManager=x`),
//! `"name":""` is sent beside `generateName`, apply patches are JSON under the YAML content type,
//! and the default client retries 429/503/504 itself (honouring `Retry-After`), so a test that wants
//! to see those answers uses a config with `default_retry = false` ([`TestApiServer::config`]).

// Handlers return early with a ready `Response` as the error; boxing it would buy nothing in a
// test tool and cost readability.
#![allow(clippy::result_large_err)]

mod apply;
mod fields;
mod object;
mod read;
mod request;
mod selector;
mod status;
mod write;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::crd::{CrdSchemas, FieldError, validate_metadata};
use apply::apply;
use fields::FieldPath;
use object::{
    check_identity, fill_server_metadata, generated_name, group_version, invalid, meta_str,
    metadata_mut, next_rv, now, status_subresource, validate,
};
use read::{get, list, pod_log, watch};
use request::{Call, Target, handle};
pub use selector::LabelSelector;
use write::{confine, create, delete, existing, patch, replace, store};

/// The header that marks a request of [`TestApiServer::setup_client`].
const SETUP_HEADER: &str = "x-tekflux-test-setup";

/// A fault to answer instead of (or before) the normal answer, see [`TestApiServer::fail_next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `TooManyRequests` with a `Retry-After` header and a Status body.
    TooManyRequests {
        /// Seconds put in `Retry-After` and `details.retryAfterSeconds`.
        retry_after_secs: u64,
    },
    /// Any HTTP code (500, 503…) with a Status body.
    Status(u16),
    /// Wait this long, then answer normally (for client timeouts).
    Stall(Duration),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// URL path, e.g. `/apis/tekton.dev/v1/namespaces/ci/pipelineruns/x`.
    pub path: String,
    /// Decoded query parameters (empty keys from kube's leading `&` are dropped).
    pub query: BTreeMap<String, String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body parsed as JSON (or YAML), if there was one that parses.
    pub body: Option<Value>,
    /// The HTTP code answered; `None` while the answer is still being produced.
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

type Managers = BTreeMap<(String, Operation), BTreeSet<FieldPath>>;

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    managers: Managers,
}

/// (group, plural) → (namespace or "", name) → object.
type Objects = BTreeMap<(String, String), BTreeMap<(String, String), Stored>>;

#[derive(Debug, Default)]
struct Inner {
    objects: Objects,
    resource_version: u64,
    /// Watches from a version below this one are answered 410 ([`TestApiServer::compact`]).
    compacted: u64,
    faults: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    /// (namespace, pod, container) → log text.
    logs: BTreeMap<(String, String, String), String>,
    /// The service-account issuer's discovery document and keys, when set.
    oidc: Option<(Value, Value)>,
}

#[derive(Debug, Clone)]
struct Event {
    group: String,
    plural: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    schemas: RwLock<Option<Arc<CrdSchemas>>>,
    /// Where every request is appended as well ([`crate::request_log`]), when asked for.
    log_file: Option<PathBuf>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not take every later assertion down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schemas(&self) -> Option<Arc<CrdSchemas>> {
        self.schemas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The test API server; it stops serving when dropped.
#[derive(Debug)]
pub struct TestApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs rustls' `ring` provider as the process default (once; later calls do nothing).
///
/// The same as the functions' `clients::install_crypto_provider`: should a second provider ever
/// be compiled in, rustls could not pick one and building a `kube::Client` would panic. Starting
/// a [`TestApiServer`] calls this, so clients built afterwards (even from a kubeconfig) work.
pub fn install_crypto_provider() {
    // Err only means another provider was installed first, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn corpus_schemas() -> Option<Arc<CrdSchemas>> {
    // Parsing a megabyte of CRD YAML per test would dominate test time.
    static SCHEMAS: OnceLock<Option<Arc<CrdSchemas>>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            crate::corpus::corpus_dir("CRD schema validation in the test API server")
                .map(|_| Arc::new(CrdSchemas::from_corpus()))
        })
        .clone()
}

impl TestApiServer {
    /// Starts a server on `127.0.0.1:0`, validating against the corpus CRD schemas; panics when
    /// the corpus is missing or unreadable, and validates nothing only under an explicit
    /// `TEKFLUX_CORPUS=skip` (which it reports on stderr; see [`crate::corpus`]).
    pub async fn start() -> Self {
        Self::start_inner(corpus_schemas()).await
    }

    /// Starts a server with the given schemas, or without schema validation for `None`.
    pub async fn start_with_schemas(schemas: Option<CrdSchemas>) -> Self {
        Self::start_inner(schemas.map(Arc::new)).await
    }

    /// Replaces the schemas used for validation.
    pub fn with_schemas(self, schemas: CrdSchemas) -> Self {
        *self
            .shared
            .schemas
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(schemas));
        self
    }

    async fn start_inner(schemas: Option<Arc<CrdSchemas>>) -> Self {
        install_crypto_provider();
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind the test API server on 127.0.0.1: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("no local address for the test API server: {e}"),
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            events: broadcast::channel(4096).0,
            schemas: RwLock::new(schemas),
            log_file: crate::request_log::file_from_env(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("test API server stopped: {e}");
            }
        });
        Self { addr, shared, task }
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Config` for this server (default namespace `default`, kube's defaults otherwise,
    /// including its retry of 429/503/504); adjust it and build a client with
    /// `kube::Client::try_from(config)`.
    pub fn config(&self) -> kube::Config {
        let uri = match self.url().parse() {
            Ok(u) => u,
            Err(e) => panic!("invalid test API server URL: {e}"),
        };
        kube::Config::new(uri)
    }

    /// A real `kube::Client` talking to this server. Must be called inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        match kube::Client::try_from(self.config()) {
            Ok(c) => c,
            Err(e) => panic!("cannot build a kube client for the test API server: {e}"),
        }
    }

    /// A client for a test's own set-up and checks (seeding objects the way a controller would,
    /// deleting one behind the code's back), as opposed to the client handed to the code under
    /// test. Its requests are served and recorded in [`requests`](Self::requests) like any
    /// other, but left out of the `TEKFLUX_KUBE_REQUEST_LOG` file ([`crate::request_log`]): they
    /// are not calls the function makes, so its Role need not allow them.
    pub fn setup_client(&self) -> kube::Client {
        match kube::Client::try_from(self.setup_config()) {
            Ok(c) => c,
            Err(e) => panic!("cannot build a kube client for the test API server: {e}"),
        }
    }

    /// The configuration of [`setup_client`](Self::setup_client), for a test that builds its
    /// own client of a set-up's kind (a test of the client constructors, say).
    pub fn setup_config(&self) -> kube::Config {
        let mut config = self.config();
        config.headers.push((
            header::HeaderName::from_static(SETUP_HEADER),
            HeaderValue::from_static("1"),
        ));
        config
    }

    /// Writes `dir/kubeconfig` pointing at this server (context `tekflux-test`, namespace
    /// `default`) and returns its path, for `KUBECONFIG` or `Config::from_custom_kubeconfig`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tekflux-test\n  cluster:\n    \
             server: {}\ncontexts:\n- name: tekflux-test\n  context:\n    cluster: tekflux-test\n    \
             user: tekflux-test\n    namespace: default\ncurrent-context: tekflux-test\nusers:\n\
             - name: tekflux-test\n  user: {{}}\n",
            self.url()
        );
        let path = dir.join("kubeconfig");
        if let Err(e) = std::fs::write(&path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
        path
    }

    /// Makes the next `n` requests answer with `fault` (faults queue up in call order).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut inner = self.shared.lock();
        inner.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Serves `/.well-known/openid-configuration` naming `issuer` and `/openid/v1/jwks` with
    /// `jwks`, as a cluster's API server does for its service-account issuer (both 404 until
    /// this is called). Calling it again rotates the keys.
    pub fn set_oidc(&self, issuer: &str, jwks: Value) {
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.url()),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        self.shared.lock().oidc = Some((discovery, jwks));
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Stored objects of `group` (`""` for core) and `plural`, in one namespace or (for `None`) in
    /// all namespaces and cluster scope, sorted by namespace and name.
    pub fn objects(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .objects
            .get(&(group.to_owned(), plural.to_owned()))
            .map(|objs| {
                objs.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                    .map(|(_, s)| s.object.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One stored object (`namespace` `None` for cluster-scoped ones).
    pub fn get_object(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let inner = self.shared.lock();
        inner
            .objects
            .get(&(group.to_owned(), plural.to_owned()))
            .and_then(|objs| objs.get(&(namespace.unwrap_or("").to_owned(), name.to_owned())))
            .map(|s| s.object.clone())
    }

    /// Seeds an object as is (status included, no validation), filling the server-side metadata;
    /// the plural comes from the loaded schemas or [`plural_for_kind`]. Watchers see ADDED or
    /// MODIFIED. Returns the stored object.
    pub fn insert(&self, object: Value) -> Value {
        let (group, _) = group_version(&object);
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let plural = self
            .shared
            .schemas()
            .and_then(|s| {
                s.resources()
                    .iter()
                    .find(|r| r.group == group && r.kind == kind)
                    .map(|r| r.plural.clone())
            })
            .unwrap_or_else(|| plural_for_kind(&kind));
        self.insert_as(&plural, object)
    }

    /// Like [`insert`](Self::insert) with the plural given explicitly.
    pub fn insert_as(&self, plural: &str, mut object: Value) -> Value {
        let (group, _) = group_version(&object);
        let namespace = meta_str(&object, "namespace").to_owned();
        let name = meta_str(&object, "name").to_owned();
        let mut inner = self.shared.lock();
        let key = (group.clone(), plural.to_owned());
        let existing = inner
            .objects
            .get(&key)
            .and_then(|o| o.get(&(namespace.clone(), name.clone())))
            .cloned();
        let rv = next_rv(&mut inner);
        fill_server_metadata(&mut object, existing.as_ref().map(|s| &s.object), rv, 1);
        inner.objects.entry(key).or_default().insert(
            (namespace.clone(), name),
            Stored {
                object: object.clone(),
                managers: Managers::new(),
            },
        );
        let _ = self.shared.events.send(Event {
            group,
            plural: plural.to_owned(),
            namespace,
            kind: if existing.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
            object: object.clone(),
        });
        object
    }

    /// Deletes one stored object at once, behind the code's back (a person's `kubectl delete`
    /// between two calls of the code under test); watchers see DELETED. Returns the object.
    pub fn remove(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let mut inner = self.shared.lock();
        write::remove_stored(
            &self.shared,
            &mut inner,
            (group.to_owned(), plural.to_owned()),
            namespace.unwrap_or("").to_owned(),
            name.to_owned(),
        )
        .map(|removed| removed.object)
    }

    /// Compacts the history, as etcd does: a watch from a version older than the current one
    /// is answered with one ERROR line, 410 Expired, as a real server answers it. Open
    /// watches go on.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.compacted = inner.resource_version;
    }

    /// Ends every open watch with an ERROR line carrying a Status of `code` (410 Expired,
    /// or 500 for a server that fails a watch), as a real server ends a watch that fell
    /// behind its cache or failed.
    pub fn end_watches(&self, code: u16) {
        let (reason, message) = match code {
            410 => ("Expired", "the watched resource version is too old"),
            _ => ("InternalError", "the watch failed"),
        };
        self.broadcast("ERROR", status::body(code, reason, message, None));
    }

    /// Sends every open watch that asked for bookmarks (`allowWatchBookmarks=true`) a
    /// BOOKMARK line with the current resource version, as a real server does now and then.
    pub fn bookmark(&self) {
        let version = self.shared.lock().resource_version;
        let object = json!({"metadata": {"resourceVersion": version.to_string()}});
        self.broadcast("BOOKMARK", object);
    }

    /// Tells every open watch of an event that is no object's (ERROR, BOOKMARK).
    fn broadcast(&self, kind: &'static str, object: Value) {
        let _ = self.shared.events.send(Event {
            group: String::new(),
            plural: String::new(),
            namespace: String::new(),
            kind,
            object,
        });
    }

    /// Seeds the log text of one container of a pod, answered by `pods/{pod}/log`.
    pub fn set_pod_log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.shared.lock().logs.insert(
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
            text.to_owned(),
        );
    }

    /// Leaf field paths (`.spec.params`) owned by each field manager of an object, keyed
    /// `"manager/Apply"` or `"manager/Update"`.
    pub fn field_owners(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> BTreeMap<String, Vec<String>> {
        let inner = self.shared.lock();
        inner
            .objects
            .get(&(group.to_owned(), plural.to_owned()))
            .and_then(|objs| objs.get(&(namespace.unwrap_or("").to_owned(), name.to_owned())))
            .map(|s| {
                s.managers
                    .iter()
                    .map(|((m, op), paths)| {
                        (
                            format!("{m}/{}", op.as_str()),
                            paths.iter().map(|p| fields::dotted(p)).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The plural resource name Kubernetes uses for a kind: lowercase plus `s`, `es` after s/x/z/ch/sh,
/// `ies` after a consonant and `y`, and `endpoints` unchanged.
pub fn plural_for_kind(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower == "endpoints" {
        return lower;
    }
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        return format!("{lower}es");
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{lower}s")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::request::parse_query;
    use super::*;

    #[test]
    fn paths_parse() {
        let t = Target::parse("/apis/tekton.dev/v1/namespaces/ci/pipelineruns/x/status").unwrap();
        assert_eq!(
            (
                t.group.as_str(),
                t.version.as_str(),
                t.namespace.as_deref(),
                t.plural.as_str()
            ),
            ("tekton.dev", "v1", Some("ci"), "pipelineruns")
        );
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref()),
            (Some("x"), Some("status"))
        );
        let t = Target::parse("/api/v1/namespaces/ci").unwrap();
        assert_eq!(
            (t.plural.as_str(), t.name.as_deref(), t.namespace),
            ("namespaces", Some("ci"), None)
        );
        let t = Target::parse("/api/v1/namespaces/ci/status").unwrap();
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = Target::parse("/apis/example.com/v1/widgets").unwrap();
        assert_eq!(
            (t.plural.as_str(), t.namespace, t.name),
            ("widgets", None, None)
        );
        assert!(Target::parse("/healthz").is_none());
    }

    #[test]
    fn tolerant_query() {
        let q = parse_query(Some("&fieldManager=a%2Fb&&force=true"));
        assert_eq!(q.get("fieldManager").map(String::as_str), Some("a/b"));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn plurals() {
        for (k, p) in [
            ("PipelineRun", "pipelineruns"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Endpoints", "endpoints"),
            ("Gateway", "gateways"),
            ("ConfigMap", "configmaps"),
        ] {
            assert_eq!(plural_for_kind(k), p);
        }
    }
}
