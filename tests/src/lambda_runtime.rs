//! A small AWS Lambda Runtime API emulator on loopback, to run a function's Lambda front door for
//! real in tests.
//!
//! It speaks the part of the [Runtime API] a runtime client uses: the function long-polls
//! `GET /2018-06-01/runtime/invocation/next` for events and posts each result to
//! `…/invocation/{id}/response` or `…/invocation/{id}/error`; start-up failures go to
//! `…/runtime/init/error`. Tests queue events with [`LambdaRuntimeEmulator::invoke`] and get the
//! function's answer back. Start the function with `AWS_LAMBDA_RUNTIME_API` set to
//! [`LambdaRuntimeEmulator::address`] (on a child process's environment, never with `set_var`).
//!
//! [Runtime API]: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long [`LambdaRuntimeEmulator::invoke`] waits for the function's answer.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// ARN handed to the function in `Lambda-Runtime-Invoked-Function-Arn`.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:tekflux-test";

/// Why an invocation did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The function reported an invocation error (`…/invocation/{id}/error`).
    #[error("function error {error_type}: {error_message}")]
    Function {
        /// `errorType` of the error body (or the `Lambda-Runtime-Function-Error-Type` header).
        error_type: String,
        /// `errorMessage` of the error body.
        error_message: String,
    },
    /// The function did not answer within the wait.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The function posted a response body that is not JSON.
    #[error("response is not JSON: {0}")]
    NotJson(String),
    /// The emulator stopped before the function answered.
    #[error("the emulator stopped")]
    Stopped,
}

/// A start-up failure reported to `…/runtime/init/error`.
#[derive(Debug, Clone, PartialEq)]
pub struct InitError {
    /// The `Lambda-Runtime-Function-Error-Type` header, when sent.
    pub error_type: Option<String>,
    /// The body as sent (usually `{"errorType": …, "errorMessage": …}`).
    pub body: Value,
}

type Outcome = Result<Value, InvokeError>;

struct Invocation {
    id: String,
    event: Bytes,
    deadline: Duration,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    init_errors: Arc<Mutex<Vec<InitError>>>,
}

/// The emulator; serves until dropped.
#[derive(Debug)]
pub struct LambdaRuntimeEmulator {
    addr: SocketAddr,
    sender: mpsc::UnboundedSender<Invocation>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    init_errors: Arc<Mutex<Vec<InitError>>>,
    server: JoinHandle<()>,
}

impl Drop for LambdaRuntimeEmulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LambdaRuntimeEmulator {
    /// Starts the emulator on `127.0.0.1` with a free port.
    pub async fn start() -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            queue: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: Arc::default(),
            init_errors: Arc::default(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "Lambda Runtime API emulator stopped");
            }
        });
        Ok(Self {
            addr,
            sender,
            waiting: shared.waiting,
            init_errors: shared.init_errors,
            server,
        })
    }

    /// `host:port`, the value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues `event` for the function and waits up to [`DEFAULT_INVOKE_TIMEOUT`] for its answer.
    pub async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        self.invoke_with_timeout(event, DEFAULT_INVOKE_TIMEOUT)
            .await
    }

    /// Queues `event` and waits up to `wait` for the function's answer; `wait` is also the
    /// deadline the function is told.
    pub async fn invoke_with_timeout(
        &self,
        event: Value,
        wait: Duration,
    ) -> Result<Value, InvokeError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), tx);
        let invocation = Invocation {
            id: id.clone(),
            event: Bytes::from(event.to_string()),
            deadline: wait,
        };
        if self.sender.send(invocation).is_err() {
            return Err(InvokeError::Stopped);
        }
        let outcome = tokio::time::timeout(wait, rx).await;
        lock(&self.waiting).remove(&id);
        match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(InvokeError::Stopped),
            Err(_) => Err(InvokeError::Timeout(wait)),
        }
    }

    /// Start-up failures the function reported so far.
    pub fn init_errors(&self) -> Vec<InitError> {
        lock(&self.init_errors).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn next(State(shared): State<Shared>) -> Response {
    // One poller at a time holds the receiver; others queue on the lock, like runtimes that
    // poll from several workers.
    let invocation = shared.queue.lock().await.recv().await;
    let Some(invocation) = invocation else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(invocation.deadline)
        .as_millis();
    let trace = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=1",
        deadline / 1000,
        &uuid::Uuid::new_v4().simple().to_string()[..24],
        &uuid::Uuid::new_v4().simple().to_string()[..16],
    );
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("lambda-runtime-aws-request-id", &invocation.id);
    put("lambda-runtime-deadline-ms", &deadline.to_string());
    put("lambda-runtime-invoked-function-arn", FUNCTION_ARN);
    put("lambda-runtime-trace-id", &trace);
    put("content-type", "application/json");
    (StatusCode::OK, headers, invocation.event).into_response()
}

fn finish(shared: &Shared, id: &str, outcome: Outcome) -> Response {
    match lock(&shared.waiting).remove(id) {
        Some(waiter) => {
            let _ = waiter.send(outcome);
            (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "errorType": "InvalidRequestID",
                "errorMessage": format!("no pending invocation {id}"),
            })),
        )
            .into_response(),
    }
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let outcome = serde_json::from_slice::<Value>(&body)
        .map_err(|_| InvokeError::NotJson(String::from_utf8_lossy(&body).into_owned()));
    finish(&shared, &id, outcome)
}

async fn error(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let field = |name: &str| parsed.get(name).and_then(Value::as_str).map(str::to_owned);
    let error_type = field("errorType")
        .or_else(|| header(&headers, "lambda-runtime-function-error-type"))
        .unwrap_or_default();
    let error_message =
        field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    finish(
        &shared,
        &id,
        Err(InvokeError::Function {
            error_type,
            error_message,
        }),
    )
}

async fn init_error(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    lock(&shared.init_errors).push(InitError {
        error_type: header(&headers, "lambda-runtime-function-error-type"),
        body,
    });
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Plays the runtime client's side with plain HTTP, so the emulator is checked on its own.
    #[tokio::test]
    async fn hands_out_events_and_returns_responses_and_errors() {
        let emulator = LambdaRuntimeEmulator::start().await.unwrap();
        let base = format!("http://{}/2018-06-01/runtime", emulator.address());
        let client = reqwest::Client::new();

        let runtime = {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for answer_with_error in [false, true] {
                    let next = client
                        .get(format!("{base}/invocation/next"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(next.status(), 200);
                    let header = |name: &str| {
                        next.headers()
                            .get(name)
                            .unwrap()
                            .to_str()
                            .unwrap()
                            .to_owned()
                    };
                    let id = header("lambda-runtime-aws-request-id");
                    let deadline: u128 = header("lambda-runtime-deadline-ms").parse().unwrap();
                    assert!(deadline > 0);
                    assert_eq!(header("lambda-runtime-invoked-function-arn"), FUNCTION_ARN);
                    assert!(header("lambda-runtime-trace-id").starts_with("Root=1-"));
                    let event: Value = next.json().await.unwrap();
                    seen.push(event.clone());
                    let posted = if answer_with_error {
                        client
                            .post(format!("{base}/invocation/{id}/error"))
                            .header("lambda-runtime-function-error-type", "Unhandled")
                            .body(r#"{"errorType":"Boom","errorMessage":"it broke"}"#)
                            .send()
                            .await
                            .unwrap()
                    } else {
                        client
                            .post(format!("{base}/invocation/{id}/response"))
                            .body(json!({ "echo": event }).to_string())
                            .send()
                            .await
                            .unwrap()
                    };
                    assert_eq!(posted.status(), 202);
                }
                seen
            })
        };

        let answer = emulator.invoke(json!({ "n": 1 })).await.unwrap();
        assert_eq!(answer, json!({ "echo": { "n": 1 } }));
        match emulator.invoke(json!({ "n": 2 })).await {
            Err(InvokeError::Function {
                error_type,
                error_message,
            }) => {
                assert_eq!(error_type, "Boom");
                assert_eq!(error_message, "it broke");
            }
            other => panic!("expected a function error, got {other:?}"),
        }
        assert_eq!(
            runtime.await.unwrap(),
            vec![json!({ "n": 1 }), json!({ "n": 2 })]
        );

        let unknown = client
            .post(format!("{base}/invocation/nope/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);

        let init = client
            .post(format!("{base}/init/error"))
            .header("lambda-runtime-function-error-type", "Runtime.Init")
            .body(r#"{"errorType":"Config","errorMessage":"bad"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(init.status(), 202);
        assert_eq!(
            emulator.init_errors(),
            vec![InitError {
                error_type: Some("Runtime.Init".to_owned()),
                body: json!({ "errorType": "Config", "errorMessage": "bad" }),
            }]
        );
    }

    #[tokio::test]
    async fn invoke_without_a_runtime_times_out() {
        let emulator = LambdaRuntimeEmulator::start().await.unwrap();
        let outcome = emulator
            .invoke_with_timeout(json!({}), Duration::from_millis(50))
            .await;
        assert!(
            matches!(outcome, Err(InvokeError::Timeout(_))),
            "{outcome:?}"
        );
    }
}
