//! The server scaffolding over real sockets: health, readiness, metrics, body limit, timeout,
//! panics, error logging, and graceful shutdown with a bounded drain.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use axum::body::Bytes;
use axum::extract::Extension;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tekflux_common::config::ServerSettings;
use tekflux_common::metrics::{CounterFamily, Metrics};
use tekflux_common::server::{self, ServerState, TraceParent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits on, so a broken server fails the test instead of
/// hanging it. Never used to assert how fast something happened.
const BOUND: Duration = Duration::from_secs(20);

const LIMIT: usize = 1024;

fn settings() -> ServerSettings {
    ServerSettings {
        port: 0,
        body_limit: LIMIT,
        request_timeout_seconds: 30,
        shutdown_timeout_seconds: 30,
        ..ServerSettings::default()
    }
}

/// Lets a test hold a request inside its handler and know when it got there.
#[derive(Clone, Default)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

fn function_routes(metrics: &Metrics, gate: Gate) -> Router {
    let hooks: CounterFamily =
        metrics.counter_family("tekflux_test_hooks_total", "Hooks seen", &["provider"]);
    let slow_gate = gate.clone();
    Router::new()
        .route(
            "/hooks/{provider}",
            post(
                move |axum::extract::Path(provider): axum::extract::Path<String>| async move {
                    hooks.inc(&[&provider]);
                    axum::http::StatusCode::ACCEPTED
                },
            ),
        )
        .route(
            "/echo",
            post(|body: Bytes| async move { Json(json!({ "len": body.len() })) }),
        )
        .route(
            "/slow",
            get(move || async move {
                slow_gate.entered.notify_one();
                slow_gate.release.notified().await;
                "done"
            }),
        )
        .route(
            "/never",
            get(move || async move {
                gate.entered.notify_one();
                std::future::pending::<()>().await;
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler exploded");
                }
            }),
        )
        .route(
            "/refuse",
            get(|| async {
                Err::<(), _>(tekflux_common::Error::Forbidden(
                    "sender system:serviceaccount:x:y may not send to git-push".to_owned(),
                ))
            }),
        )
        .route(
            "/fail",
            get(|| async {
                Err::<(), _>(tekflux_common::Error::Internal(
                    "database on fire".to_owned(),
                ))
            }),
        )
        .route(
            "/trace",
            get(|traceparent: Option<Extension<TraceParent>>| async move {
                traceparent.map(|Extension(tp)| tp.0).unwrap_or_default()
            }),
        )
}

struct TestServer {
    addr: SocketAddr,
    state: ServerState,
    gate: Gate,
    shutdown: Option<oneshot::Sender<()>>,
    serving: JoinHandle<io::Result<()>>,
}

impl TestServer {
    async fn start(settings: ServerSettings) -> Self {
        let state = ServerState::new(settings.clone());
        let gate = Gate::default();
        let app = server::router(function_routes(&state.metrics, gate.clone()), state.clone());
        let bound = server::bind(app, &settings).await.unwrap();
        let port = bound.local_addr().unwrap().port();
        let (tx, rx) = oneshot::channel::<()>();
        let serving = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            state,
            gate,
            shutdown: Some(tx),
            serving,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).unwrap();
        }
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A raw HTTP/1.1 exchange: writes `request` as is, reads one response (status, headers, body).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    tokio::time::timeout(BOUND, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| value.parse().unwrap())
            .expect("responses here carry a Content-Length");
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            body.extend_from_slice(&chunk[..n]);
        }
        (status, headers, body)
    })
    .await
    .expect("no response within the bound")
}

fn chunked_post(path: &str, chunks: usize, chunk_size: usize) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..chunks {
        request.extend_from_slice(format!("{chunk_size:x}\r\n").as_bytes());
        request.extend(std::iter::repeat_n(b'x', chunk_size));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test]
async fn healthz_is_ok_and_readyz_follows_the_readiness_flag() {
    let server = TestServer::start(settings()).await;
    assert_eq!(get_json(&server.url("/healthz")).await.0, 200);

    let (status, body) = get_json(&server.url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "not_ready");

    server.state.readiness.set_ready();
    let (status, body) = get_json(&server.url("/readyz")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    assert_eq!(get_json(&server.url("/healthz")).await.0, 200);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_function_counters() {
    let server = TestServer::start(settings()).await;
    let client = reqwest::Client::new();
    for provider in ["github", "github", "gitlab"] {
        let status = client
            .post(server.url(&format!("/hooks/{provider}")))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 202);
    }
    assert_eq!(
        client
            .get(server.url("/no/such/path"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"tekflux_http_requests_total{route="/hooks/{provider}",method="POST",status="202"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"tekflux_http_requests_total{route="unmatched",method="GET",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tekflux_http_request_duration_seconds_count{route="/hooks/{provider}",method="POST",status="202"} 3"#),
        "{text}"
    );
    assert!(!text.contains("/hooks/github"), "raw paths leak: {text}");
    assert!(!text.contains("/no/such/path"), "raw paths leak: {text}");
    assert!(
        text.contains(r#"tekflux_test_hooks_total{provider="github"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tekflux_test_hooks_total{provider="gitlab"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_content_length_is_refused_without_reading_the_body() {
    let server = TestServer::start(settings()).await;
    // Headers only: the body is never sent, so an answer proves the server did not wait for it.
    let (status, headers, body) = raw(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        headers
            .iter()
            .any(|(name, value)| name == "content-type" && value.starts_with("application/json")),
        "{headers:?}"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");
}

#[tokio::test]
async fn chunked_body_crossing_the_limit_is_refused() {
    let server = TestServer::start(settings()).await;
    let (status, _, body) = raw(server.addr, &chunked_post("/echo", 4, 512)).await;
    assert_eq!(status, 413);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "payload_too_large");

    // The same framing under the limit goes through, so the refusal above is about size.
    let (status, _, body) = raw(server.addr, &chunked_post("/echo", 2, 500)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["len"], 1000);
}

#[tokio::test]
async fn bodies_above_axums_default_limit_pass_when_the_configured_limit_allows() {
    let mut settings = settings();
    settings.body_limit = 4 * 1024 * 1024;
    let server = TestServer::start(settings).await;
    let response = reqwest::Client::new()
        .post(server.url("/echo"))
        .body(vec![b'x'; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["len"], 3 * 1024 * 1024);
}

#[tokio::test]
async fn slow_requests_time_out_with_503_and_a_json_body() {
    let mut settings = settings();
    settings.request_timeout_seconds = 1;
    let server = TestServer::start(settings).await;
    let (status, body) = tokio::time::timeout(BOUND, get_json(&server.url("/never")))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"], "unavailable");
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_the_server_keeps_serving() {
    let server = TestServer::start(settings()).await;
    let (status, body) = get_json(&server.url("/panic")).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "internal");
    assert!(
        !body["message"].as_str().unwrap().contains("exploded"),
        "panic details stay out of the response: {body}"
    );
    assert_eq!(get_json(&server.url("/healthz")).await.0, 200);
}

#[tokio::test]
async fn valid_traceparent_reaches_the_handler_and_invalid_is_dropped() {
    let server = TestServer::start(settings()).await;
    let client = reqwest::Client::new();
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = client
        .get(server.url("/trace"))
        .header("traceparent", valid)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, valid);
    let seen = client
        .get(server.url("/trace"))
        .header("traceparent", "garbage")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, "");
}

/// Collects what the subscriber writes, to count log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the server's tasks run on this thread, where the scoped subscriber is.
#[tokio::test(flavor = "current_thread")]
async fn server_errors_are_logged_exactly_once_and_refusals_with_their_reason() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start(settings()).await;
    let (status, body) = get_json(&server.url("/fail")).await;
    assert_eq!(status, 500);
    assert_eq!(body["message"], "database on fire");
    let (status, _) = get_json(&server.url("/panic")).await;
    assert_eq!(status, 500);
    // Healthy and expected-503 requests do not log errors.
    assert_eq!(get_json(&server.url("/readyz")).await.0, 503);
    assert_eq!(get_json(&server.url("/healthz")).await.0, 200);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
    assert_eq!(errors.len(), 2, "{log}");
    assert!(errors[0].contains("route=/fail"), "{log}");
    assert!(errors[0].contains("database on fire"), "{log}");
    assert!(errors[0].contains(r#"error="internal""#), "{log}");
    assert!(errors[1].contains("route=/panic"), "{log}");
    assert!(errors[1].contains("handler exploded"), "{log}");

    // A refusal is logged at info with the reason the sender was given.
    assert_eq!(get_json(&server.url("/refuse")).await.0, 403);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request rejected"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains(r#"error="forbidden""#), "{log}");
    assert!(
        refused[0].contains("sender system:serviceaccount:x:y may not send to git-push"),
        "{log}"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let mut server = TestServer::start(settings()).await;
    let in_flight = tokio::spawn(reqwest::get(server.url("/slow")));
    tokio::time::timeout(BOUND, server.gate.entered.notified())
        .await
        .unwrap();

    server.shut_down();
    // The listener closes soon after the signal; connections made before that moment may still
    // be accepted by the kernel's backlog, so retry until refused.
    tokio::time::timeout(BOUND, async {
        loop {
            match TcpStream::connect(server.addr).await {
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => break,
                // Reset: the attempt raced the listener closing; try again.
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
                Err(err) => panic!("unexpected connect error: {err}"),
                Ok(_) => {}
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("new connections still accepted after shutdown");
    assert!(
        !server.serving.is_finished(),
        "serve returned before draining"
    );

    server.gate.release.notify_one();
    let response = tokio::time::timeout(BOUND, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(BOUND, &mut server.serving)
        .await
        .expect("serve did not return after draining")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn drain_is_bounded_by_the_shutdown_timeout() {
    let mut settings = settings();
    settings.shutdown_timeout_seconds = 1;
    let mut server = TestServer::start(settings).await;
    let stuck = tokio::spawn(reqwest::get(server.url("/never")));
    tokio::time::timeout(BOUND, server.gate.entered.notified())
        .await
        .unwrap();

    server.shut_down();
    tokio::time::timeout(BOUND, &mut server.serving)
        .await
        .expect("serve kept waiting for a request that never finishes")
        .unwrap()
        .unwrap();
    assert!(!stuck.is_finished());
    stuck.abort();
}

fn shed_total(state: &ServerState, reason: &str) -> bool {
    state.metrics.encode().contains(&format!(
        r#"tekflux_http_shed_total{{reason="{reason}"}} 1"#
    ))
}

#[tokio::test]
async fn requests_over_the_concurrency_cap_are_shed_with_retry_after_but_probes_are_not() {
    let server = TestServer::start(ServerSettings {
        max_concurrent_requests: 1,
        ..settings()
    })
    .await;
    let held = tokio::spawn(reqwest::get(server.url("/slow")));
    tokio::time::timeout(BOUND, server.gate.entered.notified())
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let shed = client
        .post(server.url("/echo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert!(shed_total(&server.state, "requests"));
    // A saturated pod still answers its probes and metrics.
    assert_eq!(get_json(&server.url("/healthz")).await.0, 200);
    assert_eq!(
        reqwest::get(server.url("/metrics")).await.unwrap().status(),
        200
    );

    server.gate.release.notify_one();
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    let retried = client
        .post(server.url("/echo"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
}

#[tokio::test]
async fn bodies_over_the_bytes_in_flight_cap_are_shed_before_they_are_read() {
    let server = TestServer::start(ServerSettings {
        max_body_bytes_in_flight: LIMIT,
        ..settings()
    })
    .await;
    // A request that announces a body of the whole budget and has not sent it yet holds it all.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {LIMIT}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Give the server the moment it needs to route the head; bounded polling, no timing assert.
    let client = reqwest::Client::new();
    let mut shed = None;
    for _ in 0..200 {
        let answer = client
            .post(server.url("/echo"))
            .body("tiny")
            .send()
            .await
            .unwrap();
        if answer.status() == 503 {
            shed = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = shed.expect("the second body is shed while the first holds the budget");
    assert_eq!(shed.headers()["retry-after"], "1");
    assert!(shed_total(&server.state, "body_bytes"));
    // A bodiless request reserves nothing.
    assert_eq!(
        reqwest::get(server.url("/trace")).await.unwrap().status(),
        200
    );

    // Once the first body arrives and is answered, the budget is free again.
    slow.write_all(&vec![b'a'; LIMIT]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, slow.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let retried = client
        .post(server.url("/echo"))
        .body("tiny")
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
}
