//! The Kubernetes requests a test suite made, kept on disk, and the RBAC access each one needs.
//!
//! When [`ENV`] names a directory, every [`TestApiServer`](crate::kube_api::TestApiServer) appends
//! one line per request it answers to `<dir>/<package>.log`, where `<package>` is the package
//! whose tests are running (`CARGO_PKG_NAME`, which cargo sets for test binaries at run time). A
//! run of the whole suite so leaves one log per crate, and `tests/tests/rbac.rs` compares what each
//! function's tests asked for with the Role the function ships with (`knative/base/rbac.yaml`).
//! Requests of [`TestApiServer::setup_client`](crate::kube_api::TestApiServer::setup_client), a
//! test's own set-up, are not logged, nor requests made as another user (`Impersonate-User`,
//! a kubeconfig's `as:`), which RBAC authorizes as that user: `tekflux trace` runs with a
//! person's rights, not a function's.
//!
//! A line is `METHOD<TAB>PATH<TAB>QUERY<TAB>CONTENT-TYPE<TAB>STATUS`, with the query as it came
//! (URL-encoded, possibly empty) and `-` for a missing content type. The status matters for one
//! case: a server-side apply that creates its object (201) needs `create` as well as `patch`.
//!
//! [`access`] derives the verb as the API server's RBAC authorizer does (Kubernetes'
//! `RequestInfoFactory`): `GET`/`HEAD` of an item is `get`, of a collection `list`, with
//! `watch=true` `watch`; `POST` `create`; `PUT` `update`; `PATCH` `patch`; `DELETE` of an item
//! `delete`, of a collection `deletecollection`. A subresource is its own resource
//! (`pods/log`). Paths outside `/api` and `/apis` are non-resource URLs, whose verb is the
//! lower-case method.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment variable naming the directory the request logs go to.
pub const ENV: &str = "TEKFLUX_KUBE_REQUEST_LOG";

/// The file name extension of a request log.
const EXTENSION: &str = "log";

/// One request as written to and read from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// URL path, e.g. `/apis/tekton.dev/v1/namespaces/ci/pipelineruns/x`.
    pub path: String,
    /// The query string as sent (URL-encoded), empty when there was none.
    pub query: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The HTTP code answered.
    pub status: u16,
}

impl LoggedRequest {
    /// The request as one log line, without the newline.
    pub fn to_line(&self) -> String {
        // Paths and queries cannot hold tabs or newlines unencoded; a header value could.
        let content_type = self
            .content_type
            .as_deref()
            .map(|c| c.replace(['\t', '\n', '\r'], " "))
            .unwrap_or_else(|| "-".to_owned());
        format!(
            "{}\t{}\t{}\t{content_type}\t{}",
            self.method, self.path, self.query, self.status
        )
    }

    /// Parses a line written by [`to_line`](Self::to_line).
    ///
    /// # Errors
    /// A message naming what is wrong with the line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [method, path, query, content_type, status] = fields.as_slice() else {
            return Err(format!("expected 5 tab-separated fields: {line:?}"));
        };
        let status = status
            .parse()
            .map_err(|_| format!("the status is not a number: {line:?}"))?;
        Ok(Self {
            method: (*method).to_owned(),
            path: (*path).to_owned(),
            query: (*query).to_owned(),
            content_type: (*content_type != "-").then(|| (*content_type).to_owned()),
            status,
        })
    }

    /// The decoded query parameters.
    pub fn query_params(&self) -> BTreeMap<String, String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// What RBAC must allow for a request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// A verb on a resource of an API group (`""` for the core group), as a Role rule names it.
    Resource {
        /// API group, `""` for the core group.
        group: String,
        /// Plural, with the subresource after a slash (`pods/log`).
        resource: String,
        /// RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
        /// `deletecollection`).
        verb: String,
    },
    /// A verb on a URL outside the resource API (`/openid/v1/jwks`).
    NonResource {
        /// URL path.
        path: String,
        /// The lower-case HTTP method.
        verb: String,
    },
}

impl Access {
    /// A resource access.
    pub fn resource(group: &str, resource: &str, verb: &str) -> Self {
        Self::Resource {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb: verb.to_owned(),
        }
    }

    /// A non-resource access.
    pub fn non_resource(path: &str, verb: &str) -> Self {
        Self::NonResource {
            path: path.to_owned(),
            verb: verb.to_owned(),
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Resource {
                group,
                resource,
                verb,
            } if group.is_empty() => write!(f, "{verb} {resource}"),
            Self::Resource {
                group,
                resource,
                verb,
            } => write!(f, "{verb} {resource}.{group}"),
            Self::NonResource { path, verb } => write!(f, "{verb} {path}"),
        }
    }
}

/// Whether a query value is true the way Kubernetes reads a boolean parameter (Go's
/// `strconv.ParseBool`).
fn is_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// The accesses RBAC checks for `request`: one, or for a server-side apply that created its
/// object, `patch` and `create`.
pub fn access(request: &LoggedRequest) -> Vec<Access> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => {
            return vec![Access::non_resource(
                &request.path,
                &request.method.to_ascii_lowercase(),
            )];
        }
    };
    let (group, mut rest) = rest;
    // The deprecated `/watch/` prefix: a watch of what follows.
    let mut watch = false;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    // `namespaces/{ns}/{resource}…` is a namespaced resource; `namespaces`, `namespaces/{ns}`
    // and its subresources `status` and `finalize` are the Namespace object itself.
    if let ["namespaces", _ns, resource, ..] = rest
        && !(rest.len() == 3 && matches!(*resource, "status" | "finalize"))
    {
        rest = &rest[2..];
    }
    let (resource, name) = match rest {
        [plural] => ((*plural).to_owned(), None),
        [plural, name] => ((*plural).to_owned(), Some(*name)),
        [plural, name, sub, ..] => (format!("{plural}/{sub}"), Some(*name)),
        // `/api/v1/watch`: nothing to watch, so not a resource request.
        [] => {
            return vec![Access::non_resource(
                &request.path,
                &request.method.to_ascii_lowercase(),
            )];
        }
    };
    let params = request.query_params();
    watch = watch || params.get("watch").is_some_and(|w| is_true(w));
    let verb = match (request.method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return vec![Access::resource(group, &resource, &other.to_lowercase())],
    };
    let mut accesses = vec![Access::resource(group, &resource, verb)];
    // The API server authorizes `create` as well when an apply patch finds nothing to patch.
    let is_apply = request
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/apply-patch"));
    if verb == "patch" && is_apply && request.status == 201 {
        accesses.push(Access::resource(group, &resource, "create"));
    }
    accesses
}

/// Every request log in `dir`, by package name, in the order the requests were logged.
///
/// # Errors
/// A message naming the file that cannot be read or the line that does not parse.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<LoggedRequest>>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut logs = BTreeMap::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Some(package) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let requests = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(LoggedRequest::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        logs.insert(package.to_owned(), requests);
    }
    Ok(logs)
}

/// The distinct accesses `requests` need.
pub fn accesses<'a>(requests: impl IntoIterator<Item = &'a LoggedRequest>) -> BTreeSet<Access> {
    requests.into_iter().flat_map(access).collect()
}

/// Where this process' requests are logged: `<$TEKFLUX_KUBE_REQUEST_LOG>/<package>.log`, or
/// `None` when the variable is unset or empty. The directory is created if missing.
///
/// # Panics
/// When the directory cannot be created: a run that asked for logs must not pass without them.
pub(crate) fn file_from_env() -> Option<PathBuf> {
    let dir = std::env::var_os(ENV).filter(|d| !d.is_empty())?;
    let dir = PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{ENV}={}: cannot create the directory: {e}", dir.display());
    }
    // A test binary run by hand, outside cargo, has no package name.
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "unknown".to_owned());
    Some(dir.join(format!("{package}.{EXTENSION}")))
}

/// Appends `request` to `file`, one line in one write, so that the test threads of one process
/// and the test binaries of one package (which cargo runs one after the other) never interleave
/// within a line.
///
/// # Panics
/// When the file cannot be written: a run that asked for logs must not pass without them.
pub(crate) fn append(file: &Path, request: &LoggedRequest) {
    static WRITING: Mutex<()> = Mutex::new(());
    let _guard = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let mut line = request.to_line();
    line.push('\n');
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot append to the request log {}: {e}", file.display());
    }
}
