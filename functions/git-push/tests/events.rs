//! git-push end to end over CloudEvents on `POST /`: Knative GitHubSource / GitLabSource events
//! and tekflux's own push event create runs in the test API server, and the reply CloudEvent
//! (CDEvents pipelineRun queued) comes back in the response or goes to `K_SINK`.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tekflux_common::clients::kube_client_from_config;
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env, KubernetesSettings, ServerSettings};
use tekflux_common::server::{self, ServerState};
use tekflux_git_push::{AppState, app};
use tekflux_testkit::cdevents::{CdeventsSpec, Checked};
use tekflux_testkit::kube_api::TestApiServer;
use tekflux_testkit::oidc::TestIssuer;
use tower::ServiceExt;

const CONFIG: &str = r#"
namespace: ci
events:
  oidc:
    gitPush:
      senders: [system:serviceaccount:ci:git-push-github-oidc-eventing.knative.dev-trigger]
repositories:
  - name: payloads
    url: https://github.com/danheberden/payloads
    pipeline: build
    params:
      revision: "{{ sha }}"
  - name: shop
    url: https://github.com/acme/shop
    pipeline: shop-build
  - name: diaspora
    url: https://example.com/mike/diaspora
    provider: gitlab         # a self-hosted GitLab, delivered through the GitLabSource
    task: unit-tests
"#;

/// The Knative Trigger identity the config allows to send to git-push.
const TRIGGER: &str = "system:serviceaccount:ci:git-push-github-oidc-eventing.knative.dev-trigger";
const AUDIENCE: &str = "tekflux/git-push";
const QUEUED: &str = "dev.cdevents.pipelinerun.queued.0.3.0";
const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
const SHA: &str = "263c5253cc1578ed49892d0db8876da4ec26da84";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn corpus(relative: &str) -> Vec<u8> {
    tekflux_testkit::corpus::read_corpus(relative)
}

struct Harness {
    api: TestApiServer,
    app: Router,
    issuer: TestIssuer,
}

impl Harness {
    async fn new(k_sink: Option<String>) -> Self {
        let api = TestApiServer::start().await;
        let issuer = TestIssuer::new();
        issuer.publish(&api);
        let client =
            kube_client_from_config(api.config(), &KubernetesSettings { timeout_seconds: 5 })
                .unwrap();
        let config = Config::from_yaml(CONFIG, "test.yaml", &Env::new()).unwrap();
        let server = ServerState::new(ServerSettings::default());
        let state = AppState::new(
            config,
            Some(client),
            ReplySink::new(k_sink).unwrap(),
            &server.metrics,
        )
        .unwrap();
        Harness {
            api,
            app: server::router(app(state), server),
            issuer,
        }
    }

    /// Sends `request` as the Knative Trigger would, with its sender identity.
    async fn send(&self, mut request: Request<Body>) -> Answer {
        let token = self.issuer.token(AUDIENCE, TRIGGER).sign();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        self.send_as_is(request).await
    }

    /// Sends `request` with whatever credentials it carries.
    async fn send_as_is(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// API requests other than the sender's key lookup (OIDC discovery and JWKS).
    fn tekton_requests(&self) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/openid/") && !r.path.starts_with("/.well-known/"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn runs(&self, plural: &str) -> Vec<Value> {
        self.api.objects("tekton.dev", plural, None)
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn ce(&self, attribute: &str) -> Option<&str> {
        self.headers
            .get(format!("ce-{attribute}"))
            .map(|v| v.to_str().unwrap())
    }

    fn has_ce_headers(&self) -> bool {
        self.headers.keys().any(|k| k.as_str().starts_with("ce-"))
    }
}

/// A binary-mode CloudEvent.
fn binary(attributes: &[(&str, &str)], body: Vec<u8>) -> Request<Body> {
    let mut request = Request::post("/")
        .header("ce-specversion", "1.0")
        .header("content-type", "application/json");
    for (name, value) in attributes {
        request = request.header(format!("ce-{name}"), *value);
    }
    request.body(Body::from(body)).unwrap()
}

/// What a Knative GitHubSource sends for the corpus push.
fn github_source_push(traceparent: Option<&str>) -> Request<Body> {
    let mut attributes = vec![
        ("type", "dev.knative.source.github.push"),
        ("source", "https://github.com/danheberden/payloads"),
        ("id", DELIVERY),
        ("subject", "0ccf1c0b5677...263c5253cc15"),
        ("owner", "danheberden"),
        ("repository", "payloads"),
    ];
    if let Some(traceparent) = traceparent {
        attributes.push(("traceparent", traceparent));
    }
    binary(&attributes, corpus("github/push-3-commits.gith-2012.json"))
}

#[tokio::test]
async fn a_github_source_push_creates_the_run_and_replies_queued() {
    let harness = Harness::new(None).await;
    let answer = harness.send(github_source_push(Some(TRACEPARENT))).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer);

    let runs = harness.runs("pipelineruns");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    let name = run["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("payloads-"), "{name}");
    assert_eq!(run["metadata"]["namespace"], "ci");
    assert_eq!(
        run["spec"]["params"],
        json!([{"name": "revision", "value": SHA}])
    );
    // The GitHubSource copies X-GitHub-Delivery into the event id: the same delivery id, hence
    // the same run, whether the push arrives as a webhook or as an event.
    assert_eq!(
        run["metadata"]["annotations"]["tekflux.dev/delivery-id"],
        DELIVERY
    );

    // The reply, in binary mode.
    assert_eq!(answer.ce("specversion"), Some("1.0"));
    assert_eq!(answer.ce("type"), Some(QUEUED));
    assert_eq!(
        answer.ce("source"),
        Some("https://github.com/danheberden/payloads")
    );
    assert_eq!(answer.ce("subject"), Some(name));
    assert_eq!(answer.ce("tekfluxdelivery"), Some(DELIVERY));
    assert_eq!(answer.ce("tekfluxsha"), Some(SHA));
    assert_eq!(
        answer.ce("tekfluxrepo"),
        Some("https://github.com/danheberden/payloads")
    );
    assert_eq!(answer.ce("tekfluxnamespace"), Some("ci"));
    assert_eq!(answer.ce("traceparent"), Some(TRACEPARENT));
    assert!(answer.ce("id").is_some_and(|id| !id.is_empty()));
    assert_ne!(answer.ce("id"), Some(DELIVERY));
    // The CDEvent in the data names the run.
    assert_eq!(answer.body["context"]["type"], QUEUED);
    assert_eq!(answer.body["subject"]["id"], name);
    assert_eq!(answer.body["subject"]["content"]["pipelineName"], "build");
    assert_eq!(answer.body["customData"]["runs"][0]["name"], name);
}

#[tokio::test]
async fn a_redelivered_event_gets_the_same_reply_id_and_no_second_run() {
    let harness = Harness::new(None).await;
    let first = harness.send(github_source_push(None)).await;
    let second = harness.send(github_source_push(None)).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(first.ce("id"), second.ce("id"));
    assert_eq!(first.ce("subject"), second.ce("subject"));
    assert_eq!(harness.runs("pipelineruns").len(), 1);
    // Without a traceparent in, none out.
    assert_eq!(first.ce("traceparent"), None);
}

#[tokio::test]
async fn the_http_traceparent_is_used_when_the_event_has_none() {
    let harness = Harness::new(None).await;
    let mut request = github_source_push(None);
    request
        .headers_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let answer = harness.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.ce("traceparent"), Some(TRACEPARENT));
}

fn gitlab_source_push() -> Request<Body> {
    binary(
        &[
            ("type", "dev.knative.sources.gitlab.push"),
            ("source", "https://example.com/mike/diaspora"),
            ("id", "1b3e6a52-6c1d-4e08-8a7f-0c2d4b5e6f70"),
            ("comgitlabevent", "Push Hook"),
        ],
        corpus("gitlab/push.go-gitlab.json"),
    )
}

#[tokio::test]
async fn a_gitlab_source_push_creates_the_task_run() {
    let harness = Harness::new(None).await;
    let answer = harness.send(gitlab_source_push()).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let runs = harness.runs("taskruns");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["spec"]["taskRef"]["name"], "unit-tests");
    assert_eq!(answer.ce("subject"), runs[0]["metadata"]["name"].as_str());
    // The GitLabSource's ids are only unique per source.
    assert_eq!(
        answer.ce("tekfluxdelivery"),
        Some("https://example.com/mike/diaspora#1b3e6a52-6c1d-4e08-8a7f-0c2d4b5e6f70")
    );
    assert_eq!(
        answer.ce("tekfluxsha"),
        Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
}

/// The example of the normalized event's docs, in structured mode.
fn normalized_push() -> Request<Body> {
    normalized_push_with(&json!({}))
}

/// The docs' example with `changes` merged into its `data`.
fn normalized_push_with(changes: &Value) -> Request<Body> {
    let mut event = json!({
        "specversion": "1.0",
        "type": "dev.tekflux.git.pushed.v1",
        "source": "https://github.com/acme/shop",
        "subject": "refs/heads/main",
        "id": "b7a1c1f2-1d3e-4e0b-9d61-2f4f2f0e7c11",
        "datacontenttype": "application/json",
        "data": {
            "provider": "github",
            "ref": "refs/heads/main",
            "before": "9c1b5a4e2f0d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
            "after": "3f786850e387550fdab836ed7e6dc881de23001b",
            "changedPaths": ["api/main.go"],
            "pathsComplete": true,
            "pusher": "octocat"
        }
    });
    for (key, value) in changes.as_object().unwrap() {
        event["data"][key] = value.clone();
    }
    Request::post("/")
        .header("content-type", "application/cloudevents+json")
        .body(Body::from(serde_json::to_vec(&event).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn a_normalized_push_event_creates_the_run() {
    let harness = Harness::new(None).await;
    let answer = harness.send(normalized_push()).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let runs = harness.runs("pipelineruns");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run["spec"]["pipelineRef"]["name"], "shop-build");
    assert_eq!(
        run["metadata"]["labels"]["tekflux.dev/sha"],
        "3f786850e387550fdab836ed7e6dc881de23001b"
    );
    assert_eq!(answer.ce("type"), Some(QUEUED));
    assert_eq!(answer.ce("source"), Some("https://github.com/acme/shop"));
    assert_eq!(answer.ce("subject"), run["metadata"]["name"].as_str());
    assert_eq!(
        answer.ce("tekfluxdelivery"),
        Some("https://github.com/acme/shop#b7a1c1f2-1d3e-4e0b-9d61-2f4f2f0e7c11")
    );
    // Redelivered by the broker: same reply id, no second run.
    let again = harness.send(normalized_push()).await;
    assert_eq!(again.ce("id"), answer.ce("id"));
    assert_eq!(harness.runs("pipelineruns").len(), 1);
}

/// Every push event that queues a run (a PipelineRun or a TaskRun, from each kind of input)
/// answers a CDEvent other CDEvents tools can consume: the binding of the spec release it claims
/// and that release's schema.
#[tokio::test]
async fn queued_replies_follow_the_cdevents_binding_and_schema() {
    let spec = CdeventsSpec::from_corpus();
    let harness = Harness::new(None).await;
    for request in [
        github_source_push(Some(TRACEPARENT)),
        gitlab_source_push(),
        normalized_push(),
    ] {
        let answer = harness.send(request).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(
            spec.assert_binary(&answer.headers, &answer.body),
            Checked::CdEvent(QUEUED.to_owned())
        );
    }
}

/// `tekflux_git_push_ignored_total{reason}` from the app's `/metrics`.
async fn ignored_total(app: &Router, reason: &str) -> f64 {
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let wanted = format!("tekflux_git_push_ignored_total{{reason=\"{reason}\"}} ");
    std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn a_normalized_push_binds_like_the_provider_it_names() {
    let harness = Harness::new(None).await;
    // The github.com rule is GitHub's: an event naming another provider does not start it.
    let answer = harness
        .send(normalized_push_with(&json!({"provider": "gitlab"})))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(!answer.has_ce_headers(), "{answer:?}");
    assert_eq!(answer.body["runs"], json!([]));
    assert_eq!(
        answer.body["ignored"],
        json!([{
            "rule": "shop",
            "ref": "refs/heads/main",
            "reason": "rule is bound to provider github, push came from gitlab",
        }])
    );
    // Naming the right provider does not let it fetch from elsewhere.
    let answer = harness
        .send(normalized_push_with(
            &json!({"cloneUrl": "https://evil.example/acme/shop.git"}),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["runs"], json!([]));
    assert_eq!(
        answer.body["ignored"][0]["reason"],
        "clone URL host evil.example is not the rule's host github.com"
    );
    // A GitLabSource event is a GitLab push, whatever repository its payload names.
    let claimed = String::from_utf8(corpus("gitlab/push.go-gitlab.json"))
        .unwrap()
        .replace(
            "example.com/mike/diaspora",
            "github.com/danheberden/payloads",
        )
        .replace(
            "example.com:mike/diaspora",
            "github.com:danheberden/payloads",
        );
    let answer = harness
        .send(binary(
            &[
                ("type", "dev.knative.sources.gitlab.push"),
                ("source", "https://github.com/danheberden/payloads"),
                ("id", "5d0c8f1e-2b7a-4c3d-9e6f-1a2b3c4d5e6f"),
            ],
            claimed.into_bytes(),
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body["runs"], json!([]));
    assert_eq!(
        answer.body["ignored"][0]["reason"],
        "rule is bound to provider github, push came from gitlab"
    );

    assert!(harness.tekton_requests().is_empty());
    assert_eq!(ignored_total(&harness.app, "provider_mismatch").await, 2.0);
    assert_eq!(
        ignored_total(&harness.app, "clone_host_mismatch").await,
        1.0
    );
}

#[tokio::test]
async fn unrelated_events_are_acknowledged_without_a_reply() {
    let harness = Harness::new(None).await;
    for ty in [
        "com.example.build.finished",
        "dev.knative.source.github.issues",
    ] {
        let request = binary(
            &[
                ("type", ty),
                ("source", "https://github.com/danheberden/payloads"),
                ("id", "e-1"),
            ],
            b"{}".to_vec(),
        );
        let answer = harness.send(request).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert!(!answer.has_ce_headers(), "{ty}: {:?}", answer.headers);
        assert_eq!(answer.body["ignored"], ty);
    }
    // Only the sender's key lookup reached the API server.
    assert!(harness.tekton_requests().is_empty());
}

#[tokio::test]
async fn a_dry_run_event_creates_nothing_and_replies_nothing() {
    let harness = Harness::new(None).await;
    let mut request = github_source_push(None);
    request
        .headers_mut()
        .insert("x-tekflux-dry-run", "true".parse().unwrap());
    let answer = harness.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(!answer.has_ce_headers());
    assert_eq!(answer.body["dryRun"], true);
    assert_eq!(answer.body["runs"][0]["object"]["kind"], "PipelineRun");
    assert!(harness.runs("pipelineruns").is_empty());
}

/// What a loopback sink received.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A sink on loopback that records what it receives and answers `status`.
async fn start_sink(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let sink = Router::new()
        .route(
            "/",
            post(
                |State((received, status)): State<(Received, StatusCode)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    received.lock().unwrap().push((headers, body));
                    status
                },
            ),
        )
        .with_state((received.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sink).await });
    (format!("http://{addr}/"), received)
}

#[tokio::test]
async fn with_a_k_sink_the_reply_is_posted_there_and_the_answer_is_202() {
    let (url, received) = start_sink(StatusCode::ACCEPTED).await;
    let harness = Harness::new(Some(url)).await;
    let answer = harness.send(github_source_push(Some(TRACEPARENT))).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert!(!answer.has_ce_headers());
    assert_eq!(answer.body["delivered"], "sink");
    assert_eq!(answer.body["reply"]["type"], QUEUED);

    let runs = harness.runs("pipelineruns");
    assert_eq!(runs.len(), 1);
    let name = runs[0]["metadata"]["name"].as_str().unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (headers, body) = &received[0];
    let ce = |name: &str| {
        headers
            .get(format!("ce-{name}"))
            .map(|v| v.to_str().unwrap())
    };
    assert_eq!(ce("type"), Some(QUEUED));
    assert_eq!(ce("subject"), Some(name));
    assert_eq!(ce("tekfluxdelivery"), Some(DELIVERY));
    assert_eq!(ce("traceparent"), Some(TRACEPARENT));
    assert_eq!(ce("id"), answer.body["reply"]["id"].as_str());
    let data: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(data["subject"]["id"], name);
}

#[tokio::test]
async fn a_failing_k_sink_is_503_so_the_event_is_redelivered() {
    let (url, received) = start_sink(StatusCode::INTERNAL_SERVER_ERROR).await;
    let harness = Harness::new(Some(url)).await;
    let answer = harness.send(github_source_push(None)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(received.lock().unwrap().len(), 1);
    // The run exists; the redelivery finds it and tries the sink again.
    let again = harness.send(github_source_push(None)).await;
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(received.lock().unwrap().len(), 2);
    assert_eq!(harness.runs("pipelineruns").len(), 1);
}

/// The tekflux push event a forger would send: any repository the config knows, any clone URL.
fn forged_push() -> Request<Body> {
    let body = json!({
        "provider": "github",
        "repoUrl": "https://github.com/acme/shop",
        "cloneUrl": "https://evil.example.com/acme/shop.git",
        "ref": "refs/heads/main",
        "after": SHA,
    });
    binary(
        &[
            ("type", "dev.tekflux.git.pushed.v1"),
            ("source", "https://evil.example.com"),
            ("id", "forged-1"),
        ],
        serde_json::to_vec(&body).unwrap(),
    )
}

async fn refused_total(harness: &Harness, reason: &str) -> String {
    let response = harness
        .app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let prefix =
        format!(r#"tekflux_events_refused_total{{function="git-push",reason="{reason}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| format!("no {prefix} in\n{text}"))
}

#[tokio::test]
async fn an_unsigned_forged_push_is_refused_and_creates_nothing() {
    let harness = Harness::new(None).await;
    let answer = harness.send_as_is(forged_push()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "unauthorized");
    assert!(harness.runs("pipelineruns").is_empty());
    assert!(harness.runs("taskruns").is_empty());
    assert!(
        harness.api.requests().iter().all(|r| r.method == "GET"),
        "nothing written"
    );
    assert_eq!(refused_total(&harness, "missing_credentials").await, "1");
}

#[tokio::test]
async fn an_unsigned_dry_run_discloses_nothing() {
    let harness = Harness::new(None).await;
    let mut request = forged_push();
    *request.uri_mut() = "/?dryRun=true".parse().unwrap();
    let answer = harness.send_as_is(request).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let text = answer.body.to_string();
    assert!(
        !text.contains("shop-build"),
        "no rule or pipeline disclosed: {text}"
    );
    assert!(!text.contains("runs"), "{text}");
}

#[tokio::test]
async fn a_build_pods_own_identity_may_not_push() {
    let harness = Harness::new(None).await;
    // A PipelineRun pod can mint a token for git-push's audience with its own service account;
    // that identity is not a Trigger the config lists.
    let token = harness
        .issuer
        .token(AUDIENCE, "system:serviceaccount:ci:pipeline-runner")
        .sign();
    let mut request = forged_push();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let answer = harness.send_as_is(request).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    assert!(harness.runs("pipelineruns").is_empty());
    assert_eq!(refused_total(&harness, "sender_not_allowed").await, "1");
}

#[tokio::test]
async fn forged_pushes_over_a_real_socket_are_refused_and_a_trigger_is_accepted() {
    let harness = Harness::new(None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = harness.app.clone();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let post = |request: Request<Body>| async move {
        tekflux_testkit::answer::over_tcp(addr, request).await.0
    };

    // No credentials, a guessed token, a build pod's own identity, a dry run: all refused.
    let pod = harness
        .issuer
        .token(AUDIENCE, "system:serviceaccount:ci:pipeline-runner")
        .sign();
    for (authorization, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer guessed".to_owned()), StatusCode::UNAUTHORIZED),
        (Some(format!("Bearer {pod}")), StatusCode::FORBIDDEN),
    ] {
        for uri in ["/", "/?dryRun=true"] {
            let mut request = forged_push();
            *request.uri_mut() = uri.parse().unwrap();
            if let Some(authorization) = &authorization {
                request
                    .headers_mut()
                    .insert("authorization", authorization.parse().unwrap());
            }
            assert_eq!(post(request).await, expected, "{uri} {authorization:?}");
        }
    }
    assert!(harness.runs("pipelineruns").is_empty());

    // The Trigger's identity is accepted, and the push then goes through the rules as any other.
    let token = harness.issuer.token(AUDIENCE, TRIGGER).sign();
    let mut request = github_source_push(None);
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(post(request).await, StatusCode::OK);
    assert_eq!(harness.runs("pipelineruns").len(), 1);
    serving.abort();
}
