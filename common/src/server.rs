//! Server scaffolding every function runs on: health, readiness, metrics, request tracing, body
//! limit, request timeout, panic safety, graceful shutdown, and the AWS Lambda front door.
//!
//! A function's `main` builds its own routes and hands them to [`router`], which adds `/healthz`,
//! `/readyz` and `/metrics` and wraps everything in the shared middleware; [`run`] then serves the
//! result over HTTP on `$PORT`, or through the Lambda Runtime API when it runs on AWS Lambda.
//!
//! Middleware, outermost first:
//! 1. observe: a tracing span per request (method, route template, `traceparent`, and empty
//!    CloudEvent fields for the handler to fill), request metrics, and the one log line for a
//!    server error;
//! 2. panic catcher: a panicking handler is answered 500 with the JSON error body;
//! 3. timeout: answered 503 with the JSON error body (see [`router`] for why 503);
//! 4. body limit: enforced before any extractor runs, answered 413 with the JSON error body
//!    (`server.bodyLimit` here; routes whose senders send less add their own, see [`limit_body`]);
//! 5. load shedding: a cap on requests in progress and on body bytes held, answered 503 with
//!    `Retry-After` (Knative and the git providers retry) rather than running out of memory.

use crate::config::ServerSettings;
use crate::error::{Error, ErrorKind, ErrorMessage};
use crate::metrics::{self, Metrics};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::FutureExt;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;
use tracing::field::Empty;

#[cfg(feature = "lambda")]
pub mod lambda;

/// Environment variable that AWS Lambda sets to the Runtime API's `host:port`.
pub const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// Header that asks for a dry run, like `?dryRun=true`.
pub const DRY_RUN_HEADER: &str = "x-tekflux-dry-run";

/// `?dryRun=true` (or `1`, `all`), the query extractor of every route that changes the
/// cluster; [`DryRunQuery::wanted`] also honours [`DRY_RUN_HEADER`].
#[derive(Debug, Default, serde::Deserialize)]
pub struct DryRunQuery {
    /// The raw `dryRun` value.
    #[serde(rename = "dryRun", default)]
    pub dry_run: Option<String>,
    /// Every other query parameter, kept to catch a misspelt `dryRun`.
    #[serde(flatten)]
    others: std::collections::BTreeMap<String, String>,
}

impl DryRunQuery {
    /// Whether the query or the header asks for a dry run.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a value that is neither yes (`true`, `1`, `all`) nor no
    /// (`false`, `0`, `none`), and for a misspelt parameter or header (`dryrun`, `dry_run`,
    /// `X-Dry-Run`, …): a person who meant to preview must never make a real delivery because
    /// the request was not understood.
    pub fn wanted(&self, headers: &HeaderMap) -> Result<bool, Error> {
        if let Some(key) = self.others.keys().find(|key| names_dry_run(key)) {
            return Err(Error::BadRequest(format!(
                "unknown query parameter {key:?}: a dry run is asked for with dryRun=true"
            )));
        }
        if let Some(name) = headers
            .keys()
            .map(http::HeaderName::as_str)
            .find(|name| *name != DRY_RUN_HEADER && names_dry_run(name))
        {
            return Err(Error::BadRequest(format!(
                "unknown header {name:?}: a dry run is asked for with X-Tekflux-Dry-Run: true"
            )));
        }
        let query = match &self.dry_run {
            Some(value) => dry_run_flag(value, "the query parameter dryRun")?,
            None => false,
        };
        let header = match headers.get(DRY_RUN_HEADER) {
            Some(value) => dry_run_flag(
                value.to_str().unwrap_or("(not ASCII)"),
                "the header X-Tekflux-Dry-Run",
            )?,
            None => false,
        };
        Ok(query || header)
    }
}

/// Whether a query parameter or header name looks like a way of asking for a dry run.
/// Runs on every header of every request, so it compares from the end without allocating.
fn names_dry_run(name: &str) -> bool {
    let mut letters = name
        .bytes()
        .rev()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase());
    b"dryrun"
        .iter()
        .rev()
        .all(|wanted| letters.next() == Some(*wanted))
}

fn dry_run_flag(value: &str, what: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "all" => Ok(true),
        "false" | "0" | "none" => Ok(false),
        _ => Err(Error::BadRequest(format!(
            "{what} is {value:?}: use true (or 1, all) for a dry run, false (or 0, none) for a \
             real delivery"
        ))),
    }
}

/// Names of the span fields that handlers fill with `Span::current().record(…)`.
///
/// They are declared empty on the request span so that recording them later works; a handler
/// that opens its own span (`#[instrument]`) must record them on the request span, not its own.
pub mod fields {
    /// The CloudEvent `id` attribute.
    pub const CE_ID: &str = "ce_id";
    /// The CloudEvent `type` attribute.
    pub const CE_TYPE: &str = "ce_type";
    /// The CloudEvent `source` attribute.
    pub const CE_SOURCE: &str = "ce_source";
    /// The git provider's delivery id (`X-GitHub-Delivery`, …) or the derived one.
    pub const DELIVERY_ID: &str = "delivery_id";
    /// Who sent a CloudEvent: an OIDC subject, `events.token`, or unauthenticated.
    pub const SENDER: &str = "sender";
}

/// Whether the function is ready for traffic; `/readyz` answers 503 until [`Readiness::set_ready`].
///
/// Cheap to clone; clones share the flag.
///
/// Ready means the process has loaded its config and built its clients; `/readyz` does not call
/// the cluster or the bucket, because a probe that did would take every pod out of service during
/// a short outage, leaving the Broker's retries nowhere to go. What the process cannot do with
/// the configuration it has (no cluster, no bucket) is said once at startup and listed in
/// `/readyz`'s `limited`.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    limits: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the function ready, once its Kubernetes and S3 clients are built.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the function not ready again, e.g. while it drains.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// True after [`Readiness::set_ready`].
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records, and logs, something the process cannot do with the configuration it has
    /// (`function` is its name, `what` says what is missing and what is answered instead).
    pub fn limit(&self, function: &str, what: &str) {
        tracing::warn!(function, "{what}");
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{function}: {what}"));
    }

    /// What [`Readiness::limit`] recorded, in order.
    pub fn limits(&self) -> Vec<String> {
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What the scaffolding needs: the metrics registry, the readiness flag and the server settings.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The process-wide metrics registry, also handed to the function for its own counters.
    pub metrics: Metrics,
    /// The readiness flag that `main` sets once the clients are built.
    pub readiness: Readiness,
    /// Body limit, timeouts and port.
    pub settings: ServerSettings,
}

impl ServerState {
    /// Fresh metrics, not ready yet.
    pub fn new(settings: ServerSettings) -> Self {
        Self {
            metrics: Metrics::new(),
            readiness: Readiness::new(),
            settings,
        }
    }
}

/// The W3C `traceparent` of the request, inserted as a request extension when the header is
/// valid, so handlers can propagate it on reply CloudEvents (distributed-tracing extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(pub String);

impl TraceParent {
    /// Parses a `traceparent` header value; `None` when it is not a valid W3C trace context.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            // Version 00 has exactly four fields; later versions may append more.
            && (version != "00" || rest.is_none())
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        valid.then(|| Self(value.to_owned()))
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        self.0.get(3..35).unwrap_or_default()
    }
}

/// Marks a 5xx response that is expected (a not-ready `/readyz`), so it is not logged as an error.
#[derive(Debug, Clone, Copy)]
struct Expected;

/// The panic message of a handler that panicked, kept out of the response body and logged once.
#[derive(Debug, Clone)]
struct PanicMessage(String);

/// Adds `/healthz`, `/readyz` and `/metrics` to the function's routes and wraps all of them in
/// the shared middleware (see the module docs for the order).
///
/// The request timeout is answered `503 Service Unavailable` with the JSON error body, not 408:
/// Knative retries both, but 408 says the *client* was too slow to send its request and invites
/// proxies to close the connection, while our timeout means a dependency (Kubernetes, S3) was
/// slow, which is what 503 ("try again later") says. Keep `request_timeout_seconds` below the
/// pod's termination grace period and Knative's own revision timeout.
///
/// Panics like [`Router::merge`] when `function_routes` already has one of the three paths.
pub fn router(function_routes: Router, state: ServerState) -> Router {
    let body_limit = state.settings.body_limit;
    let timeout = Duration::from_secs(state.settings.request_timeout_seconds);
    let shedding = Shedding::new(&state.settings, &state.metrics);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state.clone())
        .merge(function_routes)
        // `Router::layer` wraps every route and the fallback after routing, which is what puts
        // `MatchedPath` in reach of the metrics. Each call wraps the previous ones, so the last
        // layer listed is the outermost.
        .layer(middleware::from_fn_with_state(shedding, shed_load))
        .layer(middleware::from_fn_with_state(body_limit, limit_body))
        // Our limit replaces axum's 2 MB default, which would otherwise reject bodies that the
        // configured limit allows.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(timeout, limit_time))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(state.metrics, observe))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ServerState>) -> Response {
    if state.readiness.is_ready() {
        let limited = state.readiness.limits();
        let body = if limited.is_empty() {
            serde_json::json!({ "status": "ready" })
        } else {
            serde_json::json!({ "status": "ready", "limited": limited })
        };
        axum::Json(body).into_response()
    } else {
        let body = serde_json::json!({
            "error": "not_ready",
            "message": "the function is still building its clients",
        });
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        response.extensions_mut().insert(Expected);
        response
    }
}

async fn metrics_text(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

async fn observe(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| metrics::UNMATCHED_ROUTE.to_owned());
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        trace_id = Empty,
        traceparent = Empty,
        ce_id = Empty,
        ce_type = Empty,
        ce_source = Empty,
        delivery_id = Empty,
        sender = Empty,
    );
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse);
    if let Some(traceparent) = traceparent {
        span.record("trace_id", traceparent.trace_id());
        span.record("traceparent", traceparent.0.as_str());
        request.extensions_mut().insert(traceparent);
    }

    async move {
        let response = next.run(request).await;
        let status = response.status();
        metrics.observe_request(&route, &method, status.as_u16(), started.elapsed());
        log_outcome(response, started).await
    }
    .instrument(span)
    .await
}

/// The one log line per request outcome: server errors at `error` (once, here, never where the
/// error is built), our own client errors at `info` with the reason the sender was given,
/// everything else at `debug` so that probes and scrapes do not flood the log.
async fn log_outcome(response: Response, started: Instant) -> Response {
    let status = response.status();
    let took_ms = started.elapsed().as_millis() as u64;
    let extensions = response.extensions();
    let kind = extensions.get::<ErrorKind>().map(|kind| kind.0);
    let message = extensions.get::<ErrorMessage>().map(|m| &*m.0);
    if status.is_server_error() && extensions.get::<Expected>().is_none() {
        let panic = extensions
            .get::<PanicMessage>()
            .map(|panic| panic.0.as_str());
        tracing::error!(
            status = status.as_u16(),
            error = kind.unwrap_or("unknown"),
            detail = message,
            panic,
            took_ms,
            "request failed"
        );
    } else if let Some(kind) = kind.filter(|_| status.is_client_error()) {
        tracing::info!(
            status = status.as_u16(),
            error = kind,
            reason = message,
            took_ms,
            "request rejected"
        );
    } else {
        tracing::debug!(status = status.as_u16(), took_ms, "request done");
    }
    response
}

async fn catch_panic(request: Request, next: Next) -> Response {
    // Unwind safety: the request's state is dropped with the panicking future; shared state is
    // behind Arcs and locks that recover from poisoning.
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_owned());
            let mut response =
                Error::Internal("the request handler failed unexpectedly".to_owned())
                    .into_response();
            response.extensions_mut().insert(PanicMessage(message));
            response
        }
    }
}

async fn limit_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Unavailable(format!(
            "the request did not finish within {} s",
            limit.as_secs()
        ))
        .into_response(),
    }
}

/// Largest body, in bytes, of a CloudEvent that carries a Kubernetes object (Tekton's run
/// events): etcd stores objects of at most 1.5 MiB (`--max-request-bytes`), and the Kubernetes
/// API server refuses larger requests at 3 MiB; 4 MiB leaves room for the envelope.
pub const KUBERNETES_OBJECT_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Largest body, in bytes, of the small notifications tekflux takes (release events, Flux
/// events, registry pushes): each names one artifact or a few, in kilobytes.
pub const NOTIFICATION_BYTES: usize = 1024 * 1024;

/// Refuses a body over `limit` bytes (413): a declared `Content-Length` before the body is
/// read, a chunked body as soon as it passes the limit. [`router`] applies it with
/// `server.bodyLimit` to every route; a route whose senders send less adds its own, smaller
/// limit as a route layer:
///
/// ```text
/// .route("/", post(receive).layer(middleware::from_fn_with_state(NOTIFICATION_BYTES, limit_body)))
/// ```
pub async fn limit_body(State(limit): State<usize>, request: Request, next: Next) -> Response {
    // Refuse a declared oversize body before anything reads it: no byte of it is received.
    if content_length(request.headers()).is_some_and(|length| length > limit as u64) {
        return Error::PayloadTooLarge { limit }.into_response();
    }
    // A chunked (or lying) body is cut off at the limit while it is read. The flag records that
    // the cut happened, whatever the extractor made of the read error (axum's answer 413 in plain
    // text, the CloudEvents extractor 400), so the answer is our 413 either way.
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&exceeded);
    let request = request.map(|body| {
        Body::new(Limited::new(body, limit).map_err(move |err| {
            if err.downcast_ref::<LengthLimitError>().is_some() {
                flag.store(true, Ordering::Relaxed);
            }
            err
        }))
    });
    let response = next.run(request).await;
    let plain_413 = response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ErrorKind>().is_none();
    if exceeded.load(Ordering::Relaxed) || plain_413 {
        return Error::PayloadTooLarge { limit }.into_response();
    }
    response
}

/// How long a shed request is told to wait before it tries again.
const SHED_RETRY_AFTER_SECONDS: u32 = 1;

/// The per-process caps of [`shed_load`]: requests in progress, and body bytes held.
#[derive(Debug, Clone)]
struct Shedding {
    requests: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    body_limit: usize,
    shed: crate::metrics::CounterFamily,
}

impl Shedding {
    fn new(settings: &ServerSettings, metrics: &Metrics) -> Self {
        Self {
            requests: Arc::new(Semaphore::new(
                settings.max_concurrent_requests.min(Semaphore::MAX_PERMITS),
            )),
            // A Semaphore holds at most `Semaphore::MAX_PERMITS`; config values above are
            // "unbounded" in practice.
            body_bytes: Arc::new(Semaphore::new(
                settings
                    .max_body_bytes_in_flight
                    .min(Semaphore::MAX_PERMITS),
            )),
            body_limit: settings.body_limit,
            shed: metrics.counter_family(
                "tekflux_http_shed",
                "Requests answered 503 before their body was read, because the process was at \
                 its cap of requests in progress or of body bytes held",
                &["reason"],
            ),
        }
    }
}

/// Answers 503 with `Retry-After` when the process is at `server.maxConcurrentRequests`, or
/// when the body (its `Content-Length`, or without one `server.bodyLimit`) does not fit in what
/// is left of `server.maxBodyBytesInFlight`. The reservation is held until the response is made,
/// when the body has been dropped. Probes and metrics are never shed, so a busy pod is not
/// restarted for it.
async fn shed_load(State(shedding): State<Shedding>, request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    let Ok(_request_permit) = Arc::clone(&shedding.requests).try_acquire_owned() else {
        shedding.shed.inc(&["requests"]);
        return shed_response("the function is at its cap of requests in progress");
    };
    // HTTP/1.1: a body has a Content-Length or is chunked; a request with neither has none.
    let reserve = match content_length(request.headers()) {
        Some(length) => usize::try_from(length).unwrap_or(usize::MAX),
        None if request.headers().contains_key(header::TRANSFER_ENCODING) => shedding.body_limit,
        None => 0,
    }
    .min(shedding.body_limit);
    let permits = u32::try_from(reserve).unwrap_or(u32::MAX);
    let Ok(_bytes_permit) = Arc::clone(&shedding.body_bytes).try_acquire_many_owned(permits) else {
        shedding.shed.inc(&["body_bytes"]);
        return shed_response("the function holds as many request bodies as it may");
    };
    next.run(request).await
}

fn shed_response(why: &str) -> Response {
    let mut response =
        Error::Unavailable(format!("{why}; retry after {SHED_RETRY_AFTER_SECONDS} s"))
            .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, SHED_RETRY_AFTER_SECONDS.into());
    // Counted; not logged as a server error, since shedding is the cap working as meant.
    response.extensions_mut().insert(Expected);
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be listened on (in use, not this machine's, not allowed).
    #[error(
        "cannot listen on {address}: {}; stop what uses it, or choose another address with \
         --listen (or the port with PORT)",
        crate::error::plain_chain(source)
    )]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("the HTTP server stopped: {}", crate::error::plain_chain(.0))]
    Io(#[from] std::io::Error),
    /// The Lambda environment lacks a variable the runtime needs, or has an invalid one.
    #[error("Lambda environment variable {0} is missing or invalid")]
    LambdaEnvironment(&'static str),
    /// The Lambda runtime loop stopped (Runtime API unreachable or answering errors).
    #[error("Lambda runtime failed")]
    Lambda(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A listening socket with the router attached, not yet serving.
///
/// Binding first lets callers (and tests with port 0) learn the address before serving.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    router: Router,
    drain: Duration,
}

/// Binds `settings.address:settings.port` (port 0 picks a free port).
pub async fn bind(router: Router, settings: &ServerSettings) -> Result<BoundServer, ServeError> {
    let address = SocketAddr::new(settings.address, settings.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    Ok(BoundServer {
        listener,
        router,
        drain: Duration::from_secs(settings.shutdown_timeout_seconds),
    })
}

impl BoundServer {
    /// The address the socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// for at most `shutdown_timeout_seconds`, and returns.
    ///
    /// Requests still running when the drain time is up are abandoned; the caller is expected to
    /// exit, which ends them. Kubernetes kills the pod at the end of its grace period anyway, so
    /// returning first lets `main` exit cleanly instead of being killed mid-write.
    pub async fn run<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = signalled_tx.send(());
            })
            .into_future();
        tokio::pin!(serving);
        tokio::select! {
            result = &mut serving => return result,
            Ok(()) = signalled_rx => {}
        }
        tracing::info!(
            drain_seconds = self.drain.as_secs(),
            "shutting down: no new connections, draining in-flight requests"
        );
        match tokio::time::timeout(self.drain, serving).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    drain_seconds = self.drain.as_secs(),
                    "in-flight requests did not finish in time; abandoning them"
                );
                Ok(())
            }
        }
    }
}

/// Binds and serves until `shutdown` resolves, with the bounded drain of [`BoundServer::run`].
pub async fn serve<F>(
    router: Router,
    settings: &ServerSettings,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    Ok(bind(router, settings).await?.run(shutdown).await?)
}

/// Resolves on SIGTERM (what Kubernetes sends) or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// The one call a function's `main` makes to serve its router.
///
/// `env` looks up environment variables (`|name| std::env::var(name).ok()` in `main`). When
/// [`LAMBDA_RUNTIME_API`] is set and the crate is built with the `lambda` feature, the router is
/// served through the Lambda Runtime API; otherwise over HTTP on `settings.port` until SIGTERM or
/// ctrl-c.
pub async fn run(
    router: Router,
    settings: &ServerSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), ServeError> {
    if env(LAMBDA_RUNTIME_API).is_some_and(|api| !api.trim().is_empty()) {
        #[cfg(feature = "lambda")]
        {
            return lambda::run(router, &env).await;
        }
        #[cfg(not(feature = "lambda"))]
        tracing::warn!(
            "{LAMBDA_RUNTIME_API} is set but this build lacks the `lambda` feature; serving HTTP"
        );
    }
    let server = bind(router, settings).await?;
    tracing::info!(address = %server.local_addr()?, "listening");
    server.run(shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::TraceParent;

    #[test]
    fn traceparent_accepts_w3c_examples_and_rejects_garbage() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(valid).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid}");
        }
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
    }
}
