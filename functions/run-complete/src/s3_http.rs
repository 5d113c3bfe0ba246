//! The HTTP client the S3 SDK sends through: reqwest, which tekflux already carries for commit
//! statuses, instead of the SDK's own hyper client.
//!
//! The SDK's client always compiles in HTTP/2 (the `h2` crate, 0.9 MB of the binary) and a
//! connection pool of its own; S3 and every S3-compatible store speak HTTP/1.1, and reqwest is
//! in the binary anyway (BENCHMARKS.md, "The container image"). What the SDK's default client
//! does and this one keeps:
//! - TLS is rustls on ring, trusting the system's certificate store (`SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` are honoured), so a MinIO behind a private CA works as before;
//! - proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`;
//! - the SDK's connect and read timeouts apply (one reqwest client per pair of timeouts);
//! - redirects are the SDK's business (S3 answers 301/307 for a bucket in another region), so
//!   reqwest follows none;
//! - failures are classified the way the SDK's retry strategy expects: timeouts as timeouts,
//!   failed connections and broken transfers as I/O errors (both retried), hyper's user errors
//!   as the caller's, the rest as other;
//! - the host goes out as SigV4 signed it, and a path reqwest's URL parser would rewrite (`.`
//!   and `..` segments, which S3 keeps in keys) is refused rather than sent elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle connection is kept for the next request (the SDK's default client's 90 s).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The S3 SDK's HTTP client: see the module's documentation.
pub fn reqwest_http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient {
        roots: Arc::default(),
        clients: Arc::default(),
    })
}

/// The connect and read timeouts a reqwest client was built with.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Clone)]
struct ReqwestHttpClient {
    /// The system's trusted certificates, read at the first request (a process that never
    /// reaches S3 does not pay for reading the bundle at start).
    roots: Arc<OnceLock<Vec<reqwest::Certificate>>>,
    /// One client (and connection pool) per pair of timeouts: the SDK asks for a connector on
    /// every attempt. `Err` holds why the client could not be built (its TLS backend).
    clients: Arc<Mutex<HashMap<Timeouts, Result<reqwest::Client, String>>>>,
}

impl std::fmt::Debug for ReqwestHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqwestHttpClient")
            .field("roots", &self.roots.get().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        // Read before the lock: reading the bundle is file I/O.
        let roots = self.roots.get_or_init(system_roots);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let client = clients
            .entry(timeouts)
            .or_insert_with(|| build_client(roots, timeouts))
            .clone();
        SharedHttpConnector::new(ReqwestConnector { client })
    }
}

fn build_client(
    roots: &[reqwest::Certificate],
    (connect, read): Timeouts,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        // Bodies reach the SDK as stored: an object saved with `Content-Encoding: gzip` is not
        // unpacked on the way (should a reqwest feature for it ever be switched on).
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true);
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    if let Some(connect) = connect {
        builder = builder.connect_timeout(connect);
    }
    if let Some(read) = read {
        builder = builder.read_timeout(read);
    }
    // Only a TLS backend that cannot start fails here; each request then fails with the reason.
    builder
        .build()
        .map_err(|error| format!("cannot build the S3 HTTP client: {error}"))
}

/// The system's trusted certificates (rustls-native-certs: the distribution's bundle, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`). Certificates rustls cannot use as roots are skipped, as the
/// SDK's client does: reqwest would otherwise refuse to build the client over one of them (system
/// stores often hold old or malformed certificates).
fn system_roots() -> Vec<reqwest::Certificate> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(error) = found.errors.first() {
        tracing::warn!(error = %error, "some system certificates could not be read");
    }
    let total = found.certs.len();
    let usable: Vec<reqwest::Certificate> = found
        .certs
        .into_iter()
        .filter(|der| rustls::RootCertStore::empty().add(der.clone()).is_ok())
        .filter_map(|der| reqwest::Certificate::from_der(&der).ok())
        .collect();
    if usable.len() < total {
        tracing::warn!(
            skipped = total - usable.len(),
            "system certificates that cannot serve as roots were skipped"
        );
    }
    if usable.is_empty() {
        tracing::warn!(
            "no trusted certificates found in the system store: https:// S3 endpoints will fail \
             (set SSL_CERT_FILE to a CA bundle)"
        );
    }
    usable
}

#[derive(Debug)]
struct ReqwestConnector {
    client: Result<reqwest::Client, String>,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let refuse = |error: BoxError| HttpConnectorFuture::ready(Err(ConnectorError::user(error)));
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(error) => return refuse(error.into()),
        };
        // SigV4 signed the host as the URI spells it; reqwest would send its own normalised
        // (lowercased) host, so the signed one is sent explicitly.
        if !request.headers().contains_key(http::header::HOST) {
            match signed_host(request.uri()) {
                Some(host) => {
                    request.headers_mut().insert(http::header::HOST, host);
                }
                None => return refuse("the S3 request has no host to send it to".into()),
            }
        }
        let path_and_query = request.uri().path_and_query().map(ToString::to_string);
        let request = match reqwest::Request::try_from(request.map(reqwest::Body::wrap)) {
            Ok(request) => request,
            Err(error) => return refuse(error.into()),
        };
        // reqwest's URL parser resolves `.` and `..` segments, which S3 keeps as part of a key:
        // the request would reach another object than the one signed. Refused instead.
        let url = request.url();
        let sent = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        if path_and_query.as_deref().unwrap_or("/") != sent {
            let asked = path_and_query.unwrap_or_default();
            return refuse(
                format!(
                    "the S3 request for {asked:?} would be sent as {sent:?}: object keys with \
                     `.` or `..` path segments cannot be reached through this client"
                )
                .into(),
            );
        }
        let client = match &self.client {
            Ok(client) => client,
            Err(reason) => {
                let error = ConnectorError::other(reason.clone().into(), None);
                return HttpConnectorFuture::ready(Err(error));
            }
        };
        let sent = client.execute(request);
        HttpConnectorFuture::new(async move {
            let response = sent.await.map_err(classify)?;
            let response = http::Response::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response)
                .map_err(|error| ConnectorError::other(error.into(), None))
        })
    }
}

/// The `host` header SigV4 signed for `uri`: the host as written, with the port unless it is
/// the scheme's default (as aws-sigv4 computes it).
fn signed_host(uri: &http::Uri) -> Option<http::HeaderValue> {
    let authority = uri.authority()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let host = match uri.port_u16() {
        Some(port) if port != default_port => authority.as_str(),
        _ => authority.host(),
    };
    http::HeaderValue::from_str(host).ok()
}

/// A reqwest failure as the SDK's retry strategy reads it.
fn classify(error: reqwest::Error) -> ConnectorError {
    // hyper's own "user" errors (a request body that failed, a request it cannot send) are the
    // caller's, not the network's: not retried, as the SDK's client classifies them.
    if is_hyper_user_error(&error) {
        ConnectorError::user(error.into())
    } else if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

/// Whether the first hyper error among `error`'s causes is one of hyper's "user" errors.
fn is_hyper_user_error(error: &reqwest::Error) -> bool {
    std::iter::successors(std::error::Error::source(error), |cause| cause.source())
        .find_map(|cause| cause.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_user)
}
