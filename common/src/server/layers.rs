//! The shared middleware, outermost first: observe (span, metrics, the one log line), panic
//! catcher, timeout, body limit and load shedding.
//!
//! They run as one layer, [`serve_request`], each step calling the next as a plain future: a
//! layer of its own per step would cost every request a boxed future and a clone of the route's
//! service per step (BENCHMARKS.md, git-push).

use super::TraceParent;
use crate::config::ServerSettings;
use crate::error::{Error, ErrorKind, ResponseError};
use crate::metrics::{self, Metrics};
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument;
use tracing::field::Empty;

/// Marks a 5xx response that is expected (a not-ready `/readyz`), so it is not logged as an error.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected;

/// The panic message of a handler that panicked, kept out of the response body and logged once.
#[derive(Debug, Clone)]
struct PanicMessage(String);

/// What the shared middleware needs, built once by [`super::router`].
#[derive(Debug, Clone)]
pub(super) struct Middleware {
    pub(super) metrics: Metrics,
    pub(super) timeout: Duration,
    pub(super) body_limit: usize,
    pub(super) shedding: Shedding,
}

/// The shared middleware, one step inside the other: observe, catch a panic, limit the time,
/// limit the body, shed load, then the route.
pub(super) async fn serve_request(
    State(middleware): State<Middleware>,
    request: Request,
    next: Next,
) -> Response {
    let Middleware {
        metrics,
        timeout,
        body_limit,
        shedding,
    } = middleware;
    observe(&metrics, request, |request| {
        catch_panic(limit_time(
            timeout,
            limit_body_around(body_limit, request, |request| {
                shed_load(&shedding, request, |request| next.run(request))
            }),
        ))
    })
    .await
}

/// The request's span, its metrics and the one line that logs its outcome, around `inner`.
async fn observe<F, Fut>(metrics: &Metrics, mut request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
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
        provider = Empty,
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
        let response = inner(request).await;
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
    let error = extensions.get::<ResponseError>().map(ResponseError::error);
    let kind = error
        .map(Error::kind)
        .or_else(|| extensions.get::<ErrorKind>().map(|kind| kind.0));
    // The message the sender was given, without the cause: that is logged as a chain of its own.
    let message = error.map(|error| error.context().to_string());
    let cause = error.and_then(Error::cause_text);
    if status.is_server_error() && extensions.get::<Expected>().is_none() {
        let panic = extensions
            .get::<PanicMessage>()
            .map(|panic| panic.0.as_str());
        tracing::error!(
            status = status.as_u16(),
            error = kind.unwrap_or("unknown"),
            detail = message,
            cause,
            panic,
            took_ms,
            "request failed"
        );
    } else if let Some(kind) = kind.filter(|_| status.is_client_error()) {
        tracing::info!(
            status = status.as_u16(),
            error = kind,
            reason = message,
            cause,
            took_ms,
            "request rejected"
        );
    } else {
        tracing::debug!(status = status.as_u16(), took_ms, "request done");
    }
    response
}

/// `handled`, with a panic in it answered 500 with the JSON error body.
async fn catch_panic(handled: impl Future<Output = Response>) -> Response {
    // Unwind safety: the request's state is dropped with the panicking future; shared state is
    // behind Arcs and locks that recover from poisoning.
    match AssertUnwindSafe(handled).catch_unwind().await {
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

/// `handled`, answered 503 with the JSON error body when it takes longer than `limit`.
async fn limit_time(limit: Duration, handled: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limit, handled).await {
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
    limit_body_around(limit, request, |request| next.run(request)).await
}

/// [`limit_body`] around `inner`.
async fn limit_body_around<F, Fut>(limit: usize, request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
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
    let response = inner(request).await;
    let plain_413 = response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ErrorKind>().is_none();
    if exceeded.load(Ordering::Relaxed) || plain_413 {
        return Error::PayloadTooLarge { limit }.into_response();
    }
    response
}

/// Reads a whole body of at most `limit` bytes, for a handler whose senders send less than
/// `server.bodyLimit` and that learns how much less only from the request: a declared
/// `Content-Length` over the limit is refused (413) before a byte is read, a longer body as soon
/// as it passes the limit.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Error> {
    if content_length(headers).is_some_and(|length| length > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge { limit })
        }
        // Past `server.bodyLimit` too: [`limit_body`] answers 413 for it.
        Err(error) => Err(Error::bad_request(
            "the request body could not be read",
            error,
        )),
    }
}

/// How long a shed request is told to wait before it tries again.
const SHED_RETRY_AFTER_SECONDS: u32 = 1;

/// The per-process caps of [`shed_load`]: requests in progress, and body bytes held.
#[derive(Debug, Clone)]
pub(super) struct Shedding {
    requests: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    body_limit: usize,
    shed: crate::metrics::CounterFamily,
}

impl Shedding {
    pub(super) fn new(settings: &ServerSettings, metrics: &Metrics) -> Self {
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
async fn shed_load<F, Fut>(shedding: &Shedding, request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return inner(request).await;
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
    inner(request).await
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::sync::Mutex;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_log_line_has_the_message_and_the_cause_once() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let cause = std::io::Error::other("connection refused");
        let response = Error::unavailable("the store is unreachable", cause).into_response();
        log_outcome(response, Instant::now()).await;
        let response =
            Error::bad_request("the body is not JSON", std::io::Error::other("EOF at 3"))
                .into_response();
        log_outcome(response, Instant::now()).await;

        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[0].contains("request failed"), "{log}");
        assert!(lines[0].contains(r#"error="unavailable""#), "{log}");
        assert!(
            lines[0].contains(r#"detail="the store is unreachable""#),
            "{log}"
        );
        assert!(lines[0].contains(r#"cause="connection refused""#), "{log}");
        assert_eq!(lines[0].matches("connection refused").count(), 1, "{log}");
        assert!(lines[1].contains("request rejected"), "{log}");
        assert!(
            lines[1].contains(r#"reason="the body is not JSON""#),
            "{log}"
        );
        assert!(lines[1].contains(r#"cause="EOF at 3""#), "{log}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn read_limited_refuses_what_passes_the_limit_and_reads_the_rest() {
        let declared = |length: usize| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, length.into());
            headers
        };
        // A body that fails as soon as it is read.
        let unreadable = || Body::new(Limited::new(Full::new(Bytes::from_static(b"x")), 0));
        let status = |result: Result<Bytes, Error>| result.unwrap_err().status();

        let body = read_limited(&declared(5), Body::from("hello"), 5).await;
        assert_eq!(&body.unwrap()[..], b"hello");
        // Declared over the limit: refused unread.
        let refused = read_limited(&declared(6), unreadable(), 5).await;
        assert_eq!(status(refused), StatusCode::PAYLOAD_TOO_LARGE);
        // Not declared: cut off as it passes the limit.
        let cut = read_limited(&HeaderMap::new(), Body::from("hello!"), 5).await;
        assert_eq!(status(cut), StatusCode::PAYLOAD_TOO_LARGE);
        // Any other failure to read is a bad request.
        let failed = read_limited(&HeaderMap::new(), unreadable(), 5).await;
        assert_eq!(status(failed), StatusCode::BAD_REQUEST);
    }
}
