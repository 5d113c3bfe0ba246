//! `tekflux send` against a real HTTP receiver on loopback: binary mode with the token, the
//! same id for the same event (so a retried step is deduplicated), retries on 503 honouring
//! `Retry-After`, and exit codes a step can act on; the token never appears in the output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

const TOKEN: &str = "send-token-never-printed";

/// One request the receiver saw: its headers (lowercase names) and body.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |value| value.to_str().unwrap())
    }
}

/// A receiver that answers the scripted statuses in order (with `Retry-After: 1` on a 503),
/// then 202 to everything.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answers = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let log = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/broker",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let log = Arc::clone(&log);
                let answers = Arc::clone(&answers);
                async move {
                    log.lock().unwrap().push(Seen { headers, body });
                    let status = answers.lock().unwrap().pop_front().unwrap_or(202);
                    let status = StatusCode::from_u16(status).unwrap();
                    let mut response =
                        (status, format!("{{\"status\":{}}}", status.as_u16())).into_response();
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        response
                            .headers_mut()
                            .insert("retry-after", HeaderValue::from_static("1"));
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/broker", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The binary with an empty environment (no proxies, no config), in `cwd`.
fn tekflux(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .stdin(Stdio::null());
    command
}

/// `tekflux send` to `to` with the usual attributes and `extra` arguments.
fn send(cwd: &Path, to: &str, extra: &[&str]) -> Command {
    let mut command = tekflux(cwd);
    command.args([
        "send",
        "--to",
        to,
        "--type",
        "dev.tekflux.release.changed.v1",
        "--source",
        "https://github.com/acme/apis",
        "--subject",
        "api-launcher",
    ]);
    command.args(extra);
    command
}

/// Runs the command off the async runtime, which serves the receiver meanwhile.
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("tekflux runs"))
        .await
        .unwrap()
}

/// Runs the command with `input` on standard input.
async fn run_with_stdin(mut command: Command, input: &'static [u8]) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn result_line(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {output:?}"))
}

/// A work directory with the token and data files.
fn workdir(data: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("data.json"), data).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_one_binary_event_with_the_token_and_the_same_id_each_time() {
    let receiver = Receiver::start(&[]).await;
    let dir = workdir(r#"{"chart": "api-launcher", "version": "1.4.0"}"#);
    let cwd = dir.path();
    let args = [
        "--data",
        "data.json",
        "--token-file",
        "token",
        "--extension",
        "tekfluxsha=3f2a9c1d0e4b5a6978812233445566778899aabb",
    ];

    let first = run(send(cwd, &receiver.url, &args)).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(!text(&first).contains(TOKEN), "{}", text(&first));
    let printed = result_line(&first);
    assert_eq!(printed["status"], 202);
    assert_eq!(printed["attempts"], 1);

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let event = &seen[0];
    assert_eq!(event.header("ce-specversion"), "1.0");
    assert_eq!(event.header("ce-type"), "dev.tekflux.release.changed.v1");
    assert_eq!(event.header("ce-source"), "https://github.com/acme/apis");
    assert_eq!(event.header("ce-subject"), "api-launcher");
    assert_eq!(
        event.header("ce-tekfluxsha"),
        "3f2a9c1d0e4b5a6978812233445566778899aabb"
    );
    assert!(!event.header("ce-time").is_empty());
    assert_eq!(event.header("content-type"), "application/json");
    assert_eq!(event.header("authorization"), format!("Bearer {TOKEN}"));
    let body: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(body, json!({"chart": "api-launcher", "version": "1.4.0"}));
    let id = event.header("ce-id").to_owned();
    assert_eq!(printed["id"], id.as_str());

    // The same event again (a retried step), the data reformatted: the same id.
    std::fs::write(
        cwd.join("data.json"),
        "{\n  \"version\": \"1.4.0\",\n  \"chart\": \"api-launcher\"\n}\n",
    )
    .unwrap();
    let again = run(send(cwd, &receiver.url, &args)).await;
    assert!(again.status.success(), "{}", text(&again));
    // Other data: another id.
    std::fs::write(
        cwd.join("data.json"),
        r#"{"chart": "api-launcher", "version": "1.4.1"}"#,
    )
    .unwrap();
    let other = run(send(cwd, &receiver.url, &args)).await;
    assert!(other.status.success(), "{}", text(&other));
    // An explicit id wins.
    let mut explicit = args.to_vec();
    explicit.extend(["--id", "chart-api-launcher-1.4.1"]);
    let named = run(send(cwd, &receiver.url, &explicit)).await;
    assert!(named.status.success(), "{}", text(&named));

    let ids: Vec<String> = receiver
        .seen()
        .iter()
        .map(|seen| seen.header("ce-id").to_owned())
        .collect();
    assert_eq!(ids[1], id, "the same event keeps its id");
    assert_ne!(ids[2], id, "other data, another id");
    assert_eq!(ids[3], "chart-api-launcher-1.4.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_after_its_retry_after_then_accepted() {
    let receiver = Receiver::start(&[503]).await;
    let dir = workdir(r#"{"release": "cicd/api-launcher", "chartVersion": "1.4.0"}"#);
    let started = std::time::Instant::now();
    let output = run(send(
        dir.path(),
        &receiver.url,
        &["--data", "data.json", "--token-file", "token"],
    ))
    .await;
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result_line(&output)["attempts"], 2);
    // Retry-After: 1 is longer than the first backoff, and was waited for.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("503"), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("ce-id"), seen[1].header("ce-id"));
    assert!(!text(&output).contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_77_without_showing_the_token() {
    let receiver = Receiver::start(&[401, 403]).await;
    let dir = workdir("{}");
    let output = run(send(
        dir.path(),
        &receiver.url,
        &["--data", "data.json", "--token-file", "token"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(77), "{}", text(&output));
    assert!(text(&output).contains("401"), "{}", text(&output));
    assert!(!text(&output).contains(TOKEN), "{}", text(&output));
    // Not retried: other credentials are needed, not time.
    assert_eq!(receiver.seen().len(), 1);

    // A token in the URL's user info (as Tekton's sink URL carries it) is not shown either.
    let with_password = receiver
        .url
        .replace("http://", &format!("http://tekflux:{TOKEN}@"));
    let output = run(send(dir.path(), &with_password, &["--data", "data.json"])).await;
    assert_eq!(output.status.code(), Some(77), "{}", text(&output));
    assert!(!text(&output).contains(TOKEN), "{}", text(&output));
    assert!(text(&output).contains("redacted"), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_receivers_exit_69_after_the_retries() {
    let receiver = Receiver::start(&[500, 503]).await;
    let dir = workdir("{}");
    let output = run(send(
        dir.path(),
        &receiver.url,
        &["--data", "data.json", "--retries", "1"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(69), "{}", text(&output));
    assert_eq!(receiver.seen().len(), 2);
    assert!(
        text(&output).contains("after 2 attempts"),
        "{}",
        text(&output)
    );

    // Nobody listening: a connection error, retried the same way.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/broker", closed.local_addr().unwrap());
    drop(closed);
    let output = run(send(dir.path(), &url, &["--retries", "0"])).await;
    assert_eq!(output.status.code(), Some(69), "{}", text(&output));
    assert!(
        text(&output).contains("cannot be reached"),
        "{}",
        text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_must_be_json_unless_its_type_is_given() {
    let receiver = Receiver::start(&[]).await;
    let dir = workdir("chart api-launcher 1.4.0\n");
    let output = run(send(dir.path(), &receiver.url, &["--data", "data.json"])).await;
    assert_eq!(output.status.code(), Some(65), "{}", text(&output));
    assert!(text(&output).contains("not JSON"), "{}", text(&output));
    assert!(
        text(&output).contains("--data-content-type"),
        "{}",
        text(&output)
    );
    assert!(receiver.seen().is_empty(), "nothing is sent");

    let output = run(send(
        dir.path(),
        &receiver.url,
        &["--data", "data.json", "--data-content-type", "text/plain"],
    ))
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let seen = receiver.seen();
    assert_eq!(seen[0].header("content-type"), "text/plain");
    assert_eq!(&seen[0].body[..], b"chart api-launcher 1.4.0\n");

    // `-` reads standard input.
    let output = run_with_stdin(
        send(dir.path(), &receiver.url, &["--data", "-"]),
        br#"{"chart": "api-launcher", "version": "1.4.0"}"#,
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let body: Value = serde_json::from_slice(&receiver.seen()[1].body).unwrap();
    assert_eq!(body["version"], "1.4.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_64_and_a_missing_data_file_66() {
    let receiver = Receiver::start(&[]).await;
    let dir = workdir("{}");
    // No --type.
    let mut command = tekflux(dir.path());
    command.args(["send", "--to", &receiver.url, "--source", "s"]);
    assert_eq!(run(command).await.status.code(), Some(64));
    // A token file that does not exist.
    let output = run(send(dir.path(), &receiver.url, &["--token-file", "nope"])).await;
    assert_eq!(output.status.code(), Some(64), "{}", text(&output));
    // Not an HTTP URL.
    let output = run(send(dir.path(), "ftp://example.com/", &[])).await;
    assert_eq!(output.status.code(), Some(64), "{}", text(&output));
    // A data file that does not exist.
    let output = run(send(dir.path(), &receiver.url, &["--data", "missing.json"])).await;
    assert_eq!(output.status.code(), Some(66), "{}", text(&output));
    assert!(receiver.seen().is_empty());
}
