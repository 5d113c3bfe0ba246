//! `tekflux up`'s Broker: `POST /broker` takes CloudEvents as Knative's Broker ingress does, and
//! delivers each to every matching Trigger's function, in-process, with the Broker's retry and
//! backoff policy; replies go back through the Triggers; what cannot be delivered goes to the
//! dead-letter sink (run-complete's store), as Knative does.
//!
//! No side door: the ingress authenticates its sender like any function's `POST /` (the static
//! `events.token`, as `Bearer` or as a `Basic` password, or `events.insecure`), and every
//! delivery carries that same `Authorization` header into the function, which checks it again
//! exactly as it would a request from the network. Replies carry the credential of the request
//! that produced them. Only the dead-letter store is reached with what the event brought, as
//! the Broker's sink is with the failing Trigger's identity: it stores, it never acts.
//!
//! Held events are bounded in bytes (the ingress answers 503 with `Retry-After` when full).
//! They live in memory: on SIGTERM, deliveries still waiting for a retry are dead-lettered at
//! once rather than lost; a crash loses what was held, as Knative's in-memory channel does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cloudevents::{AttributesReader, Event};
use serde_json::json;
use tekflux_common::cloudevent::{IncomingEvent, to_binary};
use tekflux_common::metrics::{CounterFamily, Metrics};
use tower::ServiceExt;

use super::filter::Attributes;
use super::wiring::{Delivery, Subscriber, Trigger, Wiring};

/// Bytes of events the Broker holds at once (received and not yet delivered everywhere).
const HELD_BYTES: usize = 64 * 1024 * 1024;
/// The largest answer read from a function (a reply event, or an error for the dead letter).
const ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// How much of a failed answer a dead letter keeps in `knativeerrordata`.
const ERROR_DATA_BYTES: usize = 1024;

/// The Broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("broker", &self.inner.wiring.broker)
            .finish_non_exhaustive()
    }
}

struct Inner {
    wiring: Wiring,
    /// The whole served router, set once it exists: deliveries go through it, scaffolding
    /// (limits, timeouts, metrics) included, as a request from the network would.
    app: OnceLock<Router>,
    held: Arc<tokio::sync::Semaphore>,
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
    stopping: tokio::sync::watch::Sender<bool>,
    events: CounterFamily,
    deliveries: CounterFamily,
}

/// One event on its way to one subscriber.
struct Delivering {
    event: Arc<Event>,
    authorization: Option<HeaderValue>,
    /// The Trigger's name, or `dead-letter-sink`.
    route: String,
    subscriber: Subscriber,
    delivery: Delivery,
    /// Keeps the event's bytes counted against [`HELD_BYTES`] until every delivery is done.
    held: Arc<tokio::sync::OwnedSemaphorePermit>,
}

/// How one attempt ended.
enum Attempt {
    /// Accepted, with the reply event when there is one (boxed: an event is large).
    Delivered(Option<Box<Event>>),
    Retry {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    Failed {
        status: StatusCode,
        body: Bytes,
    },
}

impl Broker {
    /// A Broker applying `wiring`, counting in `metrics`.
    pub fn new(wiring: Wiring, metrics: &Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                wiring,
                app: OnceLock::new(),
                held: Arc::new(tokio::sync::Semaphore::new(HELD_BYTES / 1024)),
                in_flight: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                stopping: tokio::sync::watch::Sender::new(false),
                events: metrics.counter_family(
                    "tekflux_broker_events",
                    "CloudEvents taken by `tekflux up`'s POST /broker and replies routed \
                     onward, by outcome",
                    &["outcome"],
                ),
                deliveries: metrics.counter_family(
                    "tekflux_broker_deliveries",
                    "Deliveries of `tekflux up`'s Broker, by Trigger and outcome (delivered, \
                     retried, dead_lettered, lost)",
                    &["trigger", "outcome"],
                ),
            }),
        }
    }

    /// Hands the Broker the whole served router; deliveries start going through it.
    pub fn attach(&self, app: Router) {
        let _ = self.inner.app.set(app);
    }

    /// `POST /broker`: a CloudEvent, answered 202 once held, 400 when it is not a valid
    /// CloudEvent, 503 when the Broker holds too much already. The sender was authenticated by
    /// the route's middleware.
    pub async fn ingress(
        State(broker): State<Broker>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let event = match IncomingEvent::from_parts(&headers, &body) {
            Ok(incoming) => incoming.event,
            Err(error) => return error.into_response(),
        };
        let Ok(permit) = broker
            .inner
            .held
            .clone()
            .try_acquire_many_owned(kib(body.len()))
        else {
            broker.inner.events.inc(&["refused_full"]);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                axum::Json(json!({
                    "error": "unavailable",
                    "message": "the Broker holds as many events as it may; retry shortly",
                })),
            )
                .into_response();
        };
        let authorization = headers.get(header::AUTHORIZATION).cloned();
        let triggers = broker.route(event, authorization, Arc::new(permit), "accepted");
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "broker": broker.inner.wiring.broker, "triggers": triggers })),
        )
            .into_response()
    }

    /// Starts a delivery to every Trigger `event` passes; returns their names.
    fn route(
        &self,
        event: Event,
        authorization: Option<HeaderValue>,
        held: Arc<tokio::sync::OwnedSemaphorePermit>,
        outcome: &str,
    ) -> Vec<String> {
        let attributes = attributes_of(&event);
        let event = Arc::new(event);
        let matched: Vec<&Trigger> = self
            .inner
            .wiring
            .triggers
            .iter()
            .filter(|trigger| trigger.filter.matches(&attributes))
            .collect();
        if matched.is_empty() {
            // Knative's Broker drops an event no Trigger wants; say so, at least.
            tracing::info!(
                ce_id = %event.id(),
                ce_type = %event.ty(),
                ce_source = %event.source(),
                "no Trigger matches the event: nothing to deliver"
            );
            self.inner.events.inc(&["no_trigger"]);
        } else {
            self.inner.events.inc(&[outcome]);
        }
        matched
            .into_iter()
            .map(|trigger| {
                self.spawn(Delivering {
                    event: Arc::clone(&event),
                    authorization: authorization.clone(),
                    route: trigger.name.clone(),
                    subscriber: trigger.subscriber.clone(),
                    delivery: trigger
                        .delivery
                        .clone()
                        .unwrap_or_else(|| self.inner.wiring.delivery.clone()),
                    held: Arc::clone(&held),
                });
                trigger.name.clone()
            })
            .collect()
    }

    fn spawn(&self, delivering: Delivering) {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        let broker = self.clone();
        tokio::spawn(async move {
            broker.deliver(delivering).await;
            if broker.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                broker.inner.idle.notify_waiters();
            }
        });
    }

    /// Delivers with retries; a reply is routed onward, a failure dead-lettered.
    async fn deliver(&self, delivering: Delivering) {
        let mut stopping = self.inner.stopping.subscribe();
        let mut retry = 0;
        let (status, body) = loop {
            match self.attempt(&delivering).await {
                Attempt::Delivered(reply) => {
                    self.inner.deliveries.inc(&[&delivering.route, "delivered"]);
                    if let Some(reply) = reply {
                        let held = Arc::clone(&delivering.held);
                        self.route(*reply, delivering.authorization.clone(), held, "reply");
                    }
                    return;
                }
                Attempt::Failed { status, body } => break (status, body),
                Attempt::Retry {
                    status,
                    body,
                    retry_after,
                } => {
                    if retry >= delivering.delivery.retry || *stopping.borrow() {
                        break (status, body);
                    }
                    self.inner.deliveries.inc(&[&delivering.route, "retried"]);
                    let wait = delivering.delivery.wait(retry, retry_after);
                    tracing::info!(
                        trigger = %delivering.route,
                        ce_id = %delivering.event.id(),
                        status = status.as_u16(),
                        retry = retry + 1,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "delivery failed; retrying"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // Stopping: dead-letter now rather than lose the event with the process.
                        _ = stopping.wait_for(|stopping| *stopping) => break (status, body),
                    }
                    retry += 1;
                }
            }
        };
        self.dead_letter(&delivering, status, &body).await;
    }

    /// One attempt, through the served router.
    async fn attempt(&self, delivering: &Delivering) -> Attempt {
        let Some(app) = self.inner.app.get().cloned() else {
            return Attempt::Retry {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: Bytes::from_static(b"the functions are not serving yet"),
                retry_after: None,
            };
        };
        let request = match request_for(delivering) {
            Ok(request) => request,
            Err(message) => {
                return Attempt::Failed {
                    status: StatusCode::BAD_REQUEST,
                    body: Bytes::from(message),
                };
            }
        };
        let response = match app.oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match axum::body::to_bytes(response.into_body(), ANSWER_BYTES).await {
            Ok(body) => body,
            Err(_) => Bytes::from_static(b"the answer could not be read or is too large"),
        };
        if status.is_success() {
            // A reply is an answer in binary or structured mode; anything else is a summary.
            let is_event = headers.contains_key("ce-specversion")
                || headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|value| value.starts_with("application/cloudevents+"));
            let reply = if is_event {
                match IncomingEvent::from_parts(&headers, &body) {
                    Ok(incoming) => Some(Box::new(incoming.event)),
                    Err(error) => {
                        tracing::warn!(trigger = %delivering.route, %error, "the reply is not a valid CloudEvent; dropped");
                        None
                    }
                }
            } else {
                None
            };
            return Attempt::Delivered(reply);
        }
        if is_retried(status) {
            let retry_after = headers
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Attempt::Retry {
                status,
                body,
                retry_after,
            }
        } else {
            Attempt::Failed { status, body }
        }
    }

    /// Sends the event, with Knative's error extensions, to the dead-letter sink (retried by the
    /// Broker's policy); if even that fails, the loss is logged and counted, never silent.
    async fn dead_letter(&self, delivering: &Delivering, status: StatusCode, body: &[u8]) {
        let route = &delivering.route;
        let Some(sink) = self.inner.wiring.dead_letter_sink.clone() else {
            self.lost(delivering, status, "the Broker has no deadLetterSink");
            return;
        };
        if delivering.subscriber == sink {
            self.lost(delivering, status, "the dead-letter sink itself refused it");
            return;
        }
        let mut letter = (*delivering.event).clone();
        letter.set_extension("knativeerrordest", delivering.subscriber.path());
        letter.set_extension("knativeerrorcode", status.as_u16().to_string());
        letter.set_extension(
            "knativeerrordata",
            base64::engine::general_purpose::STANDARD
                .encode(&body[..body.len().min(ERROR_DATA_BYTES)]),
        );
        tracing::warn!(
            trigger = %route,
            ce_id = %delivering.event.id(),
            ce_type = %delivering.event.ty(),
            status = status.as_u16(),
            "not delivered; sending it to the dead-letter sink"
        );
        self.inner.deliveries.inc(&[route, "dead_lettered"]);
        let sink_delivery = Delivering {
            event: Arc::new(letter),
            authorization: delivering.authorization.clone(),
            route: "dead-letter-sink".to_owned(),
            subscriber: sink,
            delivery: self.inner.wiring.delivery.clone(),
            held: Arc::clone(&delivering.held),
        };
        Box::pin(self.deliver(sink_delivery)).await;
    }

    fn lost(&self, delivering: &Delivering, status: StatusCode, why: &str) {
        self.inner.deliveries.inc(&[&delivering.route, "lost"]);
        tracing::error!(
            trigger = %delivering.route,
            ce_id = %delivering.event.id(),
            ce_type = %delivering.event.ty(),
            ce_source = %delivering.event.source(),
            status = status.as_u16(),
            "event lost: {why}"
        );
    }

    /// After the server stopped: deliveries waiting for a retry are dead-lettered now, and this
    /// waits (up to `timeout`) for every delivery to finish.
    pub async fn drain(&self, timeout: Duration) {
        self.inner.stopping.send_replace(true);
        let finished = tokio::time::timeout(timeout, async {
            loop {
                let idle = self.inner.idle.notified();
                if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
        let left = self.inner.in_flight.load(Ordering::Acquire);
        if finished.is_err() && left > 0 {
            tracing::error!(
                deliveries = left,
                "stopped with deliveries still running: those events may be lost"
            );
        }
    }
}

/// Knative retries these answers; every other failure goes to the dead-letter sink at once.
fn is_retried(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::NOT_FOUND
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::CONFLICT
                | StatusCode::TOO_MANY_REQUESTS
        )
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// The event in binary mode, as Knative's Broker delivers, with the sender's credential.
fn request_for(delivering: &Delivering) -> Result<Request<Body>, String> {
    let (headers, body) = to_binary(&delivering.event).map_err(|error| error.to_string())?;
    let mut request = Request::post(delivering.subscriber.path())
        .body(Body::from(body))
        .map_err(|error| error.to_string())?;
    *request.headers_mut() = headers;
    if let Some(authorization) = &delivering.authorization {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization.clone());
    }
    Ok(request)
}

/// Context attributes and extensions as the filters see them.
fn attributes_of(event: &Event) -> Attributes {
    let mut attributes: Attributes = event
        .iter_attributes()
        .map(|(name, value)| (name.to_owned(), value.to_string()))
        .collect();
    attributes.extend(
        event
            .iter_extensions()
            .map(|(name, value)| (name.to_owned(), value.to_string())),
    );
    attributes
}
