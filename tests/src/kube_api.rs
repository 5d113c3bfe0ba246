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
//!   atomic (no merge keys). `metadata.managedFields` is rendered from the ownership.
//! - JSON merge patch (strategic merge patch is treated as merge patch) and JSON patch;
//! - the `status` subresource (GET, PUT, PATCH): for kinds whose loaded CRD declares it, writes to
//!   the main resource leave `.status` alone and status writes change only `.status`;
//! - watch (`watch=true|1`): newline-delimited `{"type":"ADDED","object":…}` events for the current
//!   objects, then MODIFIED/DELETED/ADDED as they happen, until the client hangs up or
//!   `timeoutSeconds` passes. No history is kept: an old `resourceVersion` never answers 410;
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
//! collection, pagination, watch bookmarks, and any controller behaviour (nothing ever runs).
//!
//! Facts about kube 5 that this server accommodates: queries start with `&` (`?&fieldManager=x`),
//! `"name":""` is sent beside `generateName`, apply patches are JSON under the YAML content type,
//! and the default client retries 429/503/504 itself (honouring `Retry-After`), so a test that wants
//! to see those answers uses a config with `default_retry = false` ([`TestApiServer::config`]).

// Handlers return early with a ready `Response` as the error; boxing it would buy nothing in a
// test tool and cost readability.
#![allow(clippy::result_large_err)]

mod fields;
mod selector;
mod status;

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
use fields::FieldPath;
pub use selector::LabelSelector;

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
/// kube enables rustls with `ring` and aws-sdk-s3 with `aws-lc-rs`, so rustls cannot pick one on
/// its own and building a `kube::Client` panics until a provider is installed. Starting a
/// [`TestApiServer`] calls this, so clients built afterwards (even from a kubeconfig) work.
pub fn install_crypto_provider() {
    // Err only means another provider was installed first, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn corpus_schemas() -> Option<Arc<CrdSchemas>> {
    // Parsing a megabyte of CRD YAML per test would dominate test time.
    static SCHEMAS: OnceLock<Option<Arc<CrdSchemas>>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| crate::corpus::corpus_dir().map(|_| Arc::new(CrdSchemas::from_corpus())))
        .clone()
}

impl TestApiServer {
    /// Starts a server on `127.0.0.1:0`, validating against the corpus CRD schemas when the corpus
    /// is available (panics when `TEKFLUX_CORPUS` is set but unreadable).
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
        let mut config = self.config();
        config.headers.push((
            header::HeaderName::from_static(SETUP_HEADER),
            HeaderValue::from_static("1"),
        ));
        match kube::Client::try_from(config) {
            Ok(c) => c,
            Err(e) => panic!("cannot build a kube client for the test API server: {e}"),
        }
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

fn group_version(object: &Value) -> (String, String) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    }
}

fn meta_str<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn next_rv(inner: &mut Inner) -> u64 {
    inner.resource_version += 1;
    inner.resource_version
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let Value::Object(map) = object else {
        unreachable!("made an object above")
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// Sets uid, creationTimestamp (kept from `old`), resourceVersion and generation.
fn fill_server_metadata(object: &mut Value, old: Option<&Value>, rv: u64, generation: u64) {
    let old_meta = old.and_then(|o| o.get("metadata"));
    let keep = |k: &str| old_meta.and_then(|m| m.get(k)).cloned();
    let uid = keep("uid").unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
    let created = keep("creationTimestamp").unwrap_or_else(|| json!(now()));
    let meta = metadata_mut(object);
    meta.insert("uid".into(), uid);
    meta.insert("creationTimestamp".into(), created);
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    meta.insert("generation".into(), json!(generation));
}

/// What a request addresses.
#[derive(Debug, Clone)]
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, tail @ ..]
                if !(tail.is_empty() && matches!(*plural, "status" | "finalize")) =>
            {
                (Some((*ns).to_owned()), {
                    let mut r = vec![*plural];
                    r.extend_from_slice(tail);
                    r
                })
            }
            other => (None, other.to_vec()),
        };
        let (plural, name, subresource) = match rest.as_slice() {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(*name), None),
            [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
            _ => return None,
        };
        if plural.is_empty() || name.is_some_and(str::is_empty) {
            return None;
        }
        Some(Self {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace,
            plural: plural.to_owned(),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    fn ns(&self) -> String {
        self.namespace.clone().unwrap_or_default()
    }

    /// `pipelineruns.tekton.dev` / `configmaps`, as in the real server's messages.
    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn details(&self, name: &str) -> Value {
        status::details(name, &self.group, &self.plural)
    }

    fn not_found(&self, name: &str) -> Response {
        status::failure(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", self.resource()),
            Some(self.details(name)),
        )
    }
}

/// The parts of a request every operation needs.
struct Call {
    target: Target,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Option<Value>,
    body_error: Option<String>,
    user_agent: String,
}

impl Call {
    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    fn flag(&self, key: &str) -> bool {
        self.query.get(key).is_some_and(|v| v == "true" || v == "1")
    }

    /// The manager of a non-apply write: `fieldManager`, else the User-Agent's product name, as the
    /// real server derives it.
    fn update_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            return m.clone();
        }
        let product = self.user_agent.split('/').next().unwrap_or("");
        if product.is_empty() {
            "unknown".into()
        } else {
            product.into()
        }
    }

    fn object_body(&self) -> Result<Value, Response> {
        if let Some(e) = &self.body_error {
            return Err(status::failure(400, "BadRequest", e.clone(), None));
        }
        match &self.body {
            Some(v @ Value::Object(_)) => Ok(v.clone()),
            Some(_) => Err(status::failure(
                400,
                "BadRequest",
                "the body must be a JSON object",
                None,
            )),
            None => Err(status::failure(
                400,
                "BadRequest",
                "the request has no body",
                None,
            )),
        }
    }
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn parse_body(bytes: &[u8]) -> Result<Option<Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(Some(v)),
        // kubectl sends YAML apply patches; kube sends JSON under the same content type.
        Err(json_err) => serde_norway::from_slice(bytes)
            .map(Some)
            .map_err(|_| format!("the body is neither JSON nor YAML: {json_err}")),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return status::failure(413, "RequestEntityTooLarge", e.to_string(), None),
    };
    let query = parse_query(parts.uri.query());
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_str(header::CONTENT_TYPE);
    let (body, body_error) = match parse_body(&bytes) {
        Ok(b) => (b, None),
        Err(e) => (None, Some(e)),
    };
    let (index, fault) = {
        let mut inner = shared.lock();
        inner.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
            status: None,
        });
        (inner.requests.len() - 1, inner.faults.pop_front())
    };
    let response = match fault {
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = status::failure(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
                Some(json!({ "retryAfterSeconds": retry_after_secs })),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Some(Fault::Status(code)) => status::failure(
            code,
            status::reason_for(code),
            format!("injected fault: HTTP {code}"),
            None,
        ),
        stall => {
            if let Some(Fault::Stall(d)) = stall {
                tokio::time::sleep(d).await;
            }
            route(
                &shared,
                &parts.method,
                parts.uri.path(),
                Call {
                    target: Target {
                        group: String::new(),
                        version: String::new(),
                        namespace: None,
                        plural: String::new(),
                        name: None,
                        subresource: None,
                    },
                    query,
                    content_type: content_type.clone().unwrap_or_default(),
                    body,
                    body_error,
                    user_agent: header_str(header::USER_AGENT).unwrap_or_default(),
                },
            )
        }
    };
    if let Some(r) = shared.lock().requests.get_mut(index) {
        r.status = Some(response.status().as_u16());
    }
    let is_setup = parts.headers.contains_key(SETUP_HEADER);
    // A request made as another user (a kubeconfig's `as:`, e.g. a person running `tekflux
    // trace`) is authorized as that user, never by a function's Role: not the Roles' business.
    let as_another_user = parts.headers.contains_key("impersonate-user");
    if let Some(file) = shared
        .log_file
        .as_ref()
        .filter(|_| !is_setup && !as_another_user)
    {
        crate::request_log::append(
            file,
            &crate::request_log::LoggedRequest {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type,
                status: response.status().as_u16(),
            },
        );
    }
    response
}

fn route(shared: &Arc<Shared>, method: &Method, path: &str, mut call: Call) -> Response {
    if let ("GET", "/.well-known/openid-configuration" | "/openid/v1/jwks") =
        (method.as_str(), path)
    {
        let oidc = shared.lock().oidc.clone();
        return match oidc {
            Some((discovery, _)) if path.starts_with("/.well-known") => {
                status::json_response(200, &discovery)
            }
            Some((_, jwks)) => status::json_response(200, &jwks),
            None => status::failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        };
    }
    if path == "/version" {
        return status::json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-tekflux-test",
                "platform": "linux/amd64"}),
        );
    }
    let Some(target) = Target::parse(path) else {
        return status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    call.target = target;
    let t = &call.target;
    match (method.as_str(), t.name.as_deref(), t.subresource.as_deref()) {
        ("GET", None, _) if call.flag("watch") => watch(shared, &call),
        ("GET", None, _) => list(shared, &call),
        ("POST", None, _) => create(shared, &call),
        ("GET", Some(_), None | Some("status")) => get(shared, &call),
        ("GET", Some(_), Some("log")) if t.plural == "pods" && t.group.is_empty() => {
            pod_log(shared, &call)
        }
        ("PUT", Some(_), None | Some("status")) => replace(shared, &call),
        ("PATCH", Some(_), None | Some("status")) => patch(shared, &call),
        ("DELETE", Some(_), None) => delete(shared, &call),
        _ => status::failure(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource: {method} {path}"
            ),
            None,
        ),
    }
}

fn get(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let name = t.name.clone().unwrap_or_default();
    let inner = shared.lock();
    match inner
        .objects
        .get(&t.key())
        .and_then(|o| o.get(&(t.ns(), name.clone())))
    {
        Some(s) => status::json_response(200, &s.object),
        None => t.not_found(&name),
    }
}

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    name: Option<String>,
}

impl Filter {
    fn from_call(call: &Call) -> Result<Self, Response> {
        let labels =
            LabelSelector::parse(call.query.get("labelSelector").map_or("", String::as_str))
                .map_err(|e| status::failure(400, "BadRequest", e, None))?;
        let mut namespace = call.target.namespace.clone();
        let mut name = None;
        if let Some(fs) = call.query.get("fieldSelector") {
            for part in fs.split(',').filter(|p| !p.is_empty()) {
                match part.split_once("==").or_else(|| part.split_once('=')) {
                    Some(("metadata.name", v)) => name = Some(v.to_owned()),
                    Some(("metadata.namespace", v)) => namespace = Some(v.to_owned()),
                    _ => {
                        return Err(status::failure(
                            400,
                            "BadRequest",
                            format!("field label not supported: {part}"),
                            None,
                        ));
                    }
                }
            }
        }
        Ok(Self {
            namespace,
            labels,
            name,
        })
    }

    fn matches(&self, namespace: &str, name: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.labels.matches(object)
    }
}

fn matching(inner: &Inner, call: &Call, filter: &Filter) -> Vec<Value> {
    inner
        .objects
        .get(&call.target.key())
        .map(|objs| {
            objs.iter()
                .filter(|((ns, name), s)| filter.matches(ns, name, &s.object))
                .map(|(_, s)| s.object.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn list(shared: &Shared, call: &Call) -> Response {
    let filter = match Filter::from_call(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let inner = shared.lock();
    let items = matching(&inner, call, &filter);
    let t = &call.target;
    let kind = items
        .first()
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            shared.schemas().and_then(|s| {
                s.lookup(&t.group, &t.version, &t.plural)
                    .map(|r| r.kind.clone())
            })
        });
    let list_kind = kind.map_or_else(|| "List".to_owned(), |k| format!("{k}List"));
    status::json_response(
        200,
        &json!({
            "apiVersion": t.api_version(),
            "kind": list_kind,
            "metadata": {"resourceVersion": inner.resource_version.to_string()},
            "items": items,
        }),
    )
}

fn watch(shared: &Shared, call: &Call) -> Response {
    let filter = match Filter::from_call(call) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let since: u64 = call
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = call
        .query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    // Subscribing under the lock that also guards the snapshot means no change falls in between.
    let (initial, receiver) = {
        let inner = shared.lock();
        let receiver = shared.events.subscribe();
        let initial: VecDeque<Value> = matching(&inner, call, &filter)
            .into_iter()
            .filter(|o| {
                since == 0
                    || meta_str(o, "resourceVersion")
                        .parse::<u64>()
                        .is_ok_and(|rv| rv > since)
            })
            .map(|o| json!({"type": "ADDED", "object": o}))
            .collect();
        (initial, receiver)
    };
    let key = call.target.key();
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(
        (initial, receiver, filter, key),
        move |(mut initial, mut receiver, filter, key)| async move {
            if let Some(event) = initial.pop_front() {
                return Some((line(&event), (initial, receiver, filter, key)));
            }
            loop {
                let event = tokio::select! {
                    e = receiver.recv() => e,
                    () = tokio::time::sleep_until(deadline) => return None,
                };
                match event {
                    Ok(e) => {
                        let name = meta_str(&e.object, "name");
                        if (e.group.clone(), e.plural.clone()) == key
                            && filter.matches(&e.namespace, name, &e.object)
                        {
                            let value = json!({"type": e.kind, "object": e.object});
                            return Some((line(&value), (initial, receiver, filter, key)));
                        }
                    }
                    // A test that floods 4096 events has bigger problems than a lost one.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn line(value: &Value) -> Result<String, std::convert::Infallible> {
    Ok(format!("{value}\n"))
}

fn pod_log(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let pod = t.name.clone().unwrap_or_default();
    let ns = t.ns();
    let inner = shared.lock();
    let seeded: Vec<(&String, &String)> = inner
        .logs
        .iter()
        .filter(|((n, p, _), _)| *n == ns && *p == pod)
        .map(|((_, _, c), text)| (c, text))
        .collect();
    let text = match call.query.get("container") {
        Some(c) => seeded.iter().find(|(name, _)| *name == c).map(|(_, t)| *t),
        None if seeded.len() > 1 => {
            return status::failure(
                400,
                "BadRequest",
                format!("a container name must be specified for pod {pod}"),
                None,
            );
        }
        None => seeded.first().map(|(_, t)| *t),
    };
    match text {
        Some(text) => {
            let mut r = text.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        None => t.not_found(&pod),
    }
}

fn status_subresource(shared: &Shared, target: &Target, object: &Value) -> bool {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(&target.plural);
    shared.schemas().is_some_and(|s| {
        s.lookup(&target.group, &target.version, &target.plural)
            .or_else(|| s.lookup(&target.group, &target.version, kind))
            .is_some_and(|r| r.status_subresource)
    })
}

fn validate(shared: &Shared, object: &Value) -> Result<(), Vec<FieldError>> {
    let mut errors = match object.get("metadata") {
        Some(m) => validate_metadata(m),
        None => vec![FieldError {
            path: "metadata".into(),
            message: "Required value".into(),
        }],
    };
    if let Some(schemas) = shared.schemas()
        && let Err(e) = schemas.validate(object)
    {
        for err in e {
            if !errors.contains(&err) {
                errors.push(err);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn invalid(target: &Target, object: &Value, errors: &[FieldError]) -> Response {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(&target.plural);
    let name = meta_str(object, "name");
    let what = if target.group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{}", target.group)
    };
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let joined = if listed.len() == 1 {
        listed.join("")
    } else {
        format!("[{}]", listed.join(", "))
    };
    let mut details = status::details(name, &target.group, kind);
    details["causes"] = errors
        .iter()
        .map(|e| json!({"reason": "FieldValueInvalid", "message": e.to_string(), "field": e.path}))
        .collect();
    status::failure(
        422,
        "Invalid",
        format!("{what} \"{name}\" is invalid: {joined}"),
        Some(details),
    )
}

/// Checks apiVersion/kind/namespace of a body against the URL, filling what the URL implies.
fn check_identity(call: &Call, object: &mut Value) -> Result<(), Response> {
    let t = &call.target;
    for key in ["apiVersion", "kind"] {
        if object
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(status::failure(
                400,
                "BadRequest",
                format!(
                    "Object '{}' is missing in '{object}'",
                    if key == "kind" { "Kind" } else { key }
                ),
                None,
            ));
        }
    }
    let ns = t.ns();
    let meta = metadata_mut(object);
    match meta.get("namespace").and_then(Value::as_str) {
        Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
            return Err(status::failure(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
                None,
            ));
        }
        _ if !ns.is_empty() => {
            meta.insert("namespace".into(), json!(ns));
        }
        _ => {}
    }
    if let Some(name) = &t.name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != name => {
                return Err(status::failure(
                    400,
                    "BadRequest",
                    format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    ),
                    None,
                ));
            }
            _ => {
                meta.insert("name".into(), json!(name));
            }
        }
    }
    Ok(())
}

fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn create(shared: &Shared, call: &Call) -> Response {
    let mut object = match call.object_body() {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = check_identity(call, &mut object) {
        return r;
    }
    let t = &call.target;
    if status_subresource(shared, t, &object)
        && let Value::Object(map) = &mut object
    {
        map.remove("status");
    }
    let mut inner = shared.lock();
    if meta_str(&object, "name").is_empty() {
        let prefix = meta_str(&object, "generateName").to_owned();
        if !prefix.is_empty() {
            let existing = inner.objects.get(&t.key());
            let name = loop {
                let candidate = generated_name(&prefix);
                if existing.is_none_or(|o| !o.contains_key(&(t.ns(), candidate.clone()))) {
                    break candidate;
                }
            };
            metadata_mut(&mut object).insert("name".into(), json!(name));
        }
    }
    if let Err(errors) = validate(shared, &object) {
        return invalid(t, &object, &errors);
    }
    let name = meta_str(&object, "name").to_owned();
    if inner
        .objects
        .get(&t.key())
        .is_some_and(|o| o.contains_key(&(t.ns(), name.clone())))
    {
        return status::failure(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.resource()),
            Some(t.details(&name)),
        );
    }
    let mut managers = Managers::new();
    managers.insert(
        (call.update_manager(), Operation::Update),
        fields::leaf_paths(&object),
    );
    store(shared, &mut inner, call, None, object, managers, 201)
}

/// Stores (unless dry run) the new state of an object and answers with it.
fn store(
    shared: &Shared,
    inner: &mut Inner,
    call: &Call,
    old: Option<&Stored>,
    mut object: Value,
    mut managers: Managers,
    code: u16,
) -> Response {
    let t = &call.target;
    managers.retain(|_, paths| !paths.is_empty());
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Value::Object(map) = &mut o {
            map.remove("metadata");
            map.remove("status");
        }
        o
    };
    let unchanged = old.is_some_and(|old| {
        let mut a = old.object.clone();
        let mut b = object.clone();
        for v in [&mut a, &mut b] {
            let meta = metadata_mut(v);
            for k in [
                "resourceVersion",
                "managedFields",
                "generation",
                "uid",
                "creationTimestamp",
            ] {
                meta.remove(k);
            }
        }
        a == b && old.managers == managers
    });
    if unchanged && let Some(old) = old {
        return status::json_response(code, &old.object);
    }
    let generation = match old {
        None => 1,
        Some(old) => {
            let g = old
                .object
                .pointer("/metadata/generation")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if strip(&old.object) == strip(&object) {
                g
            } else {
                g + 1
            }
        }
    };
    let rv = if call.dry_run() {
        inner.resource_version
    } else {
        next_rv(inner)
    };
    fill_server_metadata(&mut object, old.map(|s| &s.object), rv, generation);
    let api_version = t.api_version();
    let time = now();
    let managed: Vec<Value> = managers
        .iter()
        .map(|((m, op), paths)| {
            json!({"manager": m, "operation": op.as_str(), "apiVersion": api_version, "time": time,
                "fieldsType": "FieldsV1", "fieldsV1": fields::fields_v1(paths)})
        })
        .collect();
    metadata_mut(&mut object).insert("managedFields".into(), Value::Array(managed));
    if !call.dry_run() {
        let name = meta_str(&object, "name").to_owned();
        inner.objects.entry(t.key()).or_default().insert(
            (t.ns(), name),
            Stored {
                object: object.clone(),
                managers,
            },
        );
        let _ = shared.events.send(Event {
            group: t.group.clone(),
            plural: t.plural.clone(),
            namespace: t.ns(),
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object: object.clone(),
        });
    }
    status::json_response(code, &object)
}

/// Keeps the parts of `new` that the addressed endpoint may not change: identity metadata always,
/// `.status` on the main resource of kinds with a status subresource, everything but `.status` on
/// the status subresource.
fn confine(shared: &Shared, call: &Call, old: &Value, mut new: Value) -> Value {
    let t = &call.target;
    if t.subresource.as_deref() == Some("status") {
        let mut confined = old.clone();
        if let (Value::Object(c), Some(status)) = (&mut confined, new.get("status")) {
            c.insert("status".into(), status.clone());
        }
        return confined;
    }
    if status_subresource(shared, t, old)
        && let Value::Object(map) = &mut new
    {
        match old.get("status") {
            Some(s) => map.insert("status".into(), s.clone()),
            None => map.remove("status"),
        };
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let meta = metadata_mut(&mut new);
    for k in [
        "name",
        "namespace",
        "generateName",
        "uid",
        "creationTimestamp",
    ] {
        match old_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    new
}

/// Field ownership after a non-apply write by `manager`: it takes every leaf whose value it
/// changed; leaves that disappeared are owned by nobody.
fn update_ownership(old: &Stored, new: &Value, manager: String) -> Managers {
    let new_leaves = fields::leaf_paths(new);
    let changed: BTreeSet<FieldPath> = new_leaves
        .iter()
        .filter(|p| fields::get(&old.object, p) != fields::get(new, p))
        .cloned()
        .collect();
    let mut managers = old.managers.clone();
    for paths in managers.values_mut() {
        paths.retain(|p| new_leaves.contains(p) && !changed.contains(p));
    }
    managers
        .entry((manager, Operation::Update))
        .or_default()
        .extend(changed);
    managers
}

fn existing(inner: &Inner, t: &Target) -> Option<Stored> {
    inner
        .objects
        .get(&t.key())
        .and_then(|o| o.get(&(t.ns(), t.name.clone().unwrap_or_default())))
        .cloned()
}

fn replace(shared: &Shared, call: &Call) -> Response {
    let mut object = match call.object_body() {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = check_identity(call, &mut object) {
        return r;
    }
    let t = &call.target;
    let mut inner = shared.lock();
    let Some(old) = existing(&inner, t) else {
        return t.not_found(t.name.as_deref().unwrap_or_default());
    };
    let sent_rv = meta_str(&object, "resourceVersion");
    if !sent_rv.is_empty() && sent_rv != meta_str(&old.object, "resourceVersion") {
        let name = t.name.clone().unwrap_or_default();
        return status::failure(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                t.resource()
            ),
            Some(t.details(&name)),
        );
    }
    let object = confine(shared, call, &old.object, object);
    if let Err(errors) = validate(shared, &object) {
        return invalid(t, &object, &errors);
    }
    let managers = update_ownership(&old, &object, call.update_manager());
    store(shared, &mut inner, call, Some(&old), object, managers, 200)
}

fn patch(shared: &Shared, call: &Call) -> Response {
    let media = call
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/apply-patch+yaml" => apply(shared, call),
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => {
            if let Some(e) = &call.body_error {
                return status::failure(400, "BadRequest", e.clone(), None);
            }
            let Some(body) = &call.body else {
                return status::failure(400, "BadRequest", "the patch has no body", None);
            };
            let t = &call.target;
            let mut inner = shared.lock();
            let Some(old) = existing(&inner, t) else {
                return t.not_found(t.name.as_deref().unwrap_or_default());
            };
            let mut object = old.object.clone();
            if media == "application/json-patch+json" {
                if let Err(e) = fields::json_patch(&mut object, body) {
                    return status::failure(
                        422,
                        "Invalid",
                        e,
                        Some(t.details(t.name.as_deref().unwrap_or_default())),
                    );
                }
            } else {
                fields::merge_patch(&mut object, body);
            }
            let object = confine(shared, call, &old.object, object);
            if let Err(errors) = validate(shared, &object) {
                return invalid(t, &object, &errors);
            }
            let managers = update_ownership(&old, &object, call.update_manager());
            store(shared, &mut inner, call, Some(&old), object, managers, 200)
        }
        other => status::failure(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ),
            None,
        ),
    }
}

fn apply(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let Some(manager) = call
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
    else {
        return status::failure(
            400,
            "BadRequest",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            None,
        );
    };
    let mut patch = match call.object_body() {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = check_identity(call, &mut patch) {
        return r;
    }
    let on_status = t.subresource.as_deref() == Some("status");
    let confined_status = status_subresource(shared, t, &patch);
    let applied: BTreeSet<FieldPath> = fields::leaf_paths(&patch)
        .into_iter()
        .filter(|p| {
            let is_status = p.first().is_some_and(|s| s == "status");
            if on_status {
                is_status
            } else {
                !(is_status && confined_status)
            }
        })
        .collect();
    let me = (manager.clone(), Operation::Apply);
    let mut inner = shared.lock();
    let Some(old) = existing(&inner, t) else {
        if on_status {
            return t.not_found(t.name.as_deref().unwrap_or_default());
        }
        let mut object = patch;
        if confined_status && let Value::Object(map) = &mut object {
            map.remove("status");
        }
        if let Err(errors) = validate(shared, &object) {
            return invalid(t, &object, &errors);
        }
        let managers = Managers::from([(me, applied)]);
        return store(shared, &mut inner, call, None, object, managers, 201);
    };
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for (owner, paths) in &old.managers {
        if *owner == me {
            continue;
        }
        for p in paths.intersection(&applied) {
            if fields::get(&old.object, p) != fields::get(&patch, p) {
                conflicts.push((owner.0.clone(), p.clone()));
            }
        }
    }
    let force = call.flag("force");
    if !conflicts.is_empty() && !force {
        let name = t.name.clone().unwrap_or_default();
        let listed: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", fields::dotted(p)))
            .collect();
        let mut details = t.details(&name);
        details["causes"] = conflicts
            .iter()
            .map(|(m, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""),
                    "field": fields::dotted(p)})
            })
            .collect();
        return status::failure(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                listed.join(", ")
            ),
            Some(details),
        );
    }
    let mut object = old.object.clone();
    fields::apply_merge(&mut object, &patch);
    let mut managers = old.managers.clone();
    let previously = managers.remove(&me).unwrap_or_default();
    for dropped in previously.difference(&applied) {
        if !managers.values().any(|paths| paths.contains(dropped)) {
            fields::remove(&mut object, dropped);
        }
    }
    let object = confine(shared, call, &old.object, object);
    let leaves = fields::leaf_paths(&object);
    for (owner, paths) in managers.iter_mut() {
        paths.retain(|p| leaves.contains(p));
        if force {
            paths.retain(|p| !conflicts.iter().any(|(m, c)| *m == owner.0 && c == p));
        }
    }
    managers.insert(me, applied);
    if let Err(errors) = validate(shared, &object) {
        return invalid(t, &object, &errors);
    }
    store(shared, &mut inner, call, Some(&old), object, managers, 200)
}

fn delete(shared: &Shared, call: &Call) -> Response {
    let t = &call.target;
    let name = t.name.clone().unwrap_or_default();
    let mut inner = shared.lock();
    let Some(old) = existing(&inner, t) else {
        return t.not_found(&name);
    };
    // kube sends DeleteOptions in the body (`{"dryRun": ["All"], "preconditions": …}`).
    let options = call.body.clone().unwrap_or_default();
    let dry_run = call.dry_run()
        || options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    for (key, field) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if let Some(wanted) = options
            .pointer(&format!("/preconditions/{key}"))
            .and_then(Value::as_str)
            && wanted != meta_str(&old.object, field)
        {
            return status::failure(
                409,
                "Conflict",
                format!(
                    "Precondition failed: {key}: {wanted}, object {key}: {}",
                    meta_str(&old.object, field)
                ),
                Some(t.details(&name)),
            );
        }
    }
    if !dry_run {
        if let Some(objs) = inner.objects.get_mut(&t.key()) {
            objs.remove(&(t.ns(), name));
        }
        next_rv(&mut inner);
        let _ = shared.events.send(Event {
            group: t.group.clone(),
            plural: t.plural.clone(),
            namespace: t.ns(),
            kind: "DELETED",
            object: old.object.clone(),
        });
    }
    status::json_response(200, &old.object)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
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
