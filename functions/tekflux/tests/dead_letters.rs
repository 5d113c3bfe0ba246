//! Nothing lost: an event the Broker gives up on is kept by run-complete's dead-letter route,
//! `tekflux dead-letters` lists it, and `tekflux replay` sends it again (same id and source,
//! without Knative's error extensions) and removes it only once it was accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use tekflux_common::config::{Config, Env};
use tekflux_common::metrics::Metrics;
use tekflux_run_complete::dead_letters::{self, DeadLetterStore};
use tekflux_testkit::s3::TestS3;
use tower::ServiceExt;

mod support;
use support::run;

const TOKEN: &str = "events-token-for-dead-letters";

/// The binary on the test S3 server, with the store in `bucket` under the prefix `runs`.
fn tekflux(s3: &TestS3, bucket: &str, cwd: &Path) -> Command {
    let mut command = support::tekflux(s3, cwd);
    command
        .env("TEKFLUX_S3_BUCKET", bucket)
        .env("TEKFLUX_S3_PREFIX", "runs");
    command
}

/// A dead letter as the Broker delivers it: binary mode, with Knative's error extensions.
fn dead_letter(id: &str, authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/dead-letters")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "dev.tekflux.artifact.published.v1")
        .header("ce-source", "/tekflux/run-complete/cicd")
        .header(
            "ce-knativeerrordest",
            "http://release-changed.cicd.svc.cluster.local/",
        )
        .header("ce-knativeerrorcode", "503")
        .header("ce-knativeerrordata", "eyJlcnJvciI6InVuYXZhaWxhYmxlIn0=")
        .header("content-type", "application/json");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request
        .body(Body::from(format!(r#"{{"artifact":"{id}"}}"#)))
        .unwrap()
}

/// What a receiver saw: each event's id and the extensions it carried.
type Seen = Arc<Mutex<Vec<(String, String, Vec<String>)>>>;

/// A receiver on loopback that accepts event `1` and answers 503 to the rest.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap| {
            let log = Arc::clone(&log);
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let extensions = headers
                    .keys()
                    .map(|name| name.as_str().to_owned())
                    .filter(|name| name.starts_with("ce-knative"))
                    .collect();
                let id = header("ce-id");
                log.lock()
                    .unwrap()
                    .push((id.clone(), header("ce-source"), extensions));
                if id == "1" {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn stored_keys(s3: &TestS3, bucket: &str) -> Vec<String> {
    s3.keys(bucket, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_events_are_kept_listed_and_replayed_once_accepted() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let config = Config::from_yaml(
        &format!("events: {{ token: env:TOKEN }}\nstorage: {{ bucket: {bucket}, prefix: runs }}\n"),
        "test.yaml",
        &Env::new().with("TOKEN", TOKEN),
    )
    .unwrap();
    let store = DeadLetterStore::new(&config, None, Some(s3.client()), &Metrics::new());
    let routes = dead_letters::app(store);
    let bearer = format!("Bearer {TOKEN}");

    // Only the Broker (an authenticated sender) may store dead letters.
    let refused = routes
        .clone()
        .oneshot(dead_letter("1", None))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(stored_keys(&s3, &bucket).await.is_empty());

    for id in ["1", "2", "1"] {
        let answer = routes
            .clone()
            .oneshot(dead_letter(id, Some(&bearer)))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
    // Event 1 delivered twice to the store is kept once.
    let keys = stored_keys(&s3, &bucket).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|key| key.starts_with("runs/_dead-letters/"))
    );

    let work = tempfile::tempdir().unwrap();
    let listed = run({
        let mut command = tekflux(&s3, &bucket, work.path());
        command.arg("dead-letters");
        command
    })
    .await;
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("dev.tekflux.artifact.published.v1")
            && text.contains("failed at http://release-changed.cicd.svc.cluster.local/ with 503"),
        "{text}"
    );

    // The receiver accepts 1 and is still failing for 2: 1 goes, 2 stays, exit 69.
    let (url, seen) = receiver().await;
    let replayed = run({
        let mut command = tekflux(&s3, &bucket, work.path());
        command.args(["replay", "--to", &url]);
        command
    })
    .await;
    assert_eq!(replayed.status.code(), Some(69), "{replayed:?}");
    let seen = seen.lock().unwrap().clone();
    let mut ids: Vec<&str> = seen.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["1", "2"]);
    for (_, source, extensions) in &seen {
        assert_eq!(source, "/tekflux/run-complete/cicd", "the same source");
        assert!(extensions.is_empty(), "no error extensions: {extensions:?}");
    }
    let left = stored_keys(&s3, &bucket).await;
    assert_eq!(left.len(), 1, "{left:?}");
    let json = run({
        let mut command = tekflux(&s3, &bucket, work.path());
        command.args(["dead-letters", "-o", "json"]);
        command
    })
    .await;
    let remaining: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&json.stdout).trim()).unwrap();
    assert_eq!(remaining["id"], "2");
    assert_eq!(remaining["knativeerrorcode"], "503");
}
