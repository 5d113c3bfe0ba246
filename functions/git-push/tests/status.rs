//! Commit statuses from git-push: `pending` on every provider once a run exists, posted to a
//! test server per provider that checks requests as the provider does; nothing new on a
//! redelivery; retries within the budget; a provider outage that leaves webhooks and runs
//! unaffected; no token in any log line.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tekflux_common::clients::kube_client_from_config;
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::commit_status::RetryPolicy;
use tekflux_common::config::{Config, Env, KubernetesSettings, ServerSettings};
use tekflux_common::server::{self, ServerState};
use tekflux_git_push::{AppState, Provider, app};
use tekflux_testkit::git_status::{CapturedLogs, GitStatusServer, Scripted, StatusFlavor};
use tekflux_testkit::kube_api::TestApiServer;
use tower::ServiceExt;

mod support;
use support::{Delivery, GITLAB_WEBHOOK_TOKEN as GITLAB_HOOK, SECRET};

/// Status tokens: distinct per provider, and distinctive enough to find in a log.
const GITHUB_TOKEN: &str = "ghp_statusTOKENgithub0001";
const GITLAB_TOKEN: &str = "glpat-statusTOKENgitlab02";
const GITEA_TOKEN: &str = "gitea-statusTOKEN0003";
const FORGEJO_TOKEN: &str = "forgejo-statusTOKEN0004";
const BITBUCKET_TOKEN: &str = "bb-statusTOKEN0005";

/// Short waits, so the retry tests take milliseconds.
const FAST: RetryPolicy = RetryPolicy {
    attempts: 3,
    base_delay: Duration::from_millis(10),
    deadline: Duration::from_secs(3),
    request_timeout: Duration::from_secs(2),
};

struct Servers {
    github: GitStatusServer,
    gitlab: GitStatusServer,
    gitea: GitStatusServer,
    forgejo: GitStatusServer,
    bitbucket: GitStatusServer,
}

impl Servers {
    async fn start() -> Self {
        Self {
            github: GitStatusServer::start(
                StatusFlavor::GithubEnterprise,
                GITHUB_TOKEN,
                &["danheberden/payloads"],
            )
            .await,
            gitlab: GitStatusServer::start(StatusFlavor::Gitlab, GITLAB_TOKEN, &["mike/diaspora"])
                .await,
            gitea: GitStatusServer::start(StatusFlavor::Gitea, GITEA_TOKEN, &["gitea/webhooks"])
                .await,
            forgejo: GitStatusServer::start(
                StatusFlavor::Gitea,
                FORGEJO_TOKEN,
                &["infra/deploy-tools"],
            )
            .await,
            bitbucket: GitStatusServer::start(
                StatusFlavor::Bitbucket,
                BITBUCKET_TOKEN,
                &["acme-team/shop-api"],
            )
            .await,
        }
    }

    fn of(&self, provider: Provider) -> &GitStatusServer {
        match provider {
            Provider::Github => &self.github,
            Provider::Gitlab => &self.gitlab,
            Provider::Gitea => &self.gitea,
            Provider::Forgejo => &self.forgejo,
            Provider::Bitbucket => &self.bitbucket,
        }
    }

    fn config(&self, rules_extra: &str) -> String {
        let target =
            "targetUrl: \"https://dash.example/#/namespaces/{namespace}/{kind}/{name}?uid={uid}\"";
        format!(
            r#"
namespace: ci
providers:
  github:
    secret: env:HOOK_SECRET
    status: {{ api: "{}", token: env:GITHUB_STATUS, context: eu-1, {target} }}
  gitlab:
    token: env:GITLAB_HOOK
    status: {{ api: "{}", token: env:GITLAB_STATUS }}
  gitea:
    secret: env:HOOK_SECRET
    status: {{ api: "{}", token: env:GITEA_STATUS }}
  forgejo:
    secret: env:HOOK_SECRET
    status: {{ api: "{}", token: env:FORGEJO_STATUS }}
  bitbucket:
    secret: env:HOOK_SECRET
    status: {{ api: "{}", token: env:BITBUCKET_STATUS }}
repositories:
  - name: payloads
    url: https://github.com/danheberden/payloads
    branches: [master]
    pipeline: build
{rules_extra}
  - name: diaspora
    url: git@example.com:mike/diaspora.git
    provider: gitlab
    branches: [master]
    task: unit-tests
  - name: gitea-webhooks
    url: http://localhost:3000/gitea/webhooks
    provider: gitea
    branches: [develop]
    pipeline: build
  - name: deploy-tools
    url: https://forge.example/infra/deploy-tools
    provider: forgejo
    branches: [main]
    pipeline: deploy
    status: {{ context: "ci/deploy-tools-on-the-long-named-production-cluster" }}
  - name: shop-api
    url: https://bitbucket.org/acme-team/shop-api
    branches: [main]
    tags: ["v*"]
    pipeline: ship
    status: {{ context: "eu-west-1-production-cluster/shop-api-release-pipeline" }}
"#,
            self.github.api(),
            self.gitlab.api(),
            self.gitea.api(),
            self.forgejo.api(),
            self.bitbucket.api(),
        )
    }
}

fn env() -> Env {
    Env::new()
        .with("HOOK_SECRET", SECRET)
        .with("GITLAB_HOOK", GITLAB_HOOK)
        .with("GITHUB_STATUS", GITHUB_TOKEN)
        .with("GITLAB_STATUS", GITLAB_TOKEN)
        .with("GITEA_STATUS", GITEA_TOKEN)
        .with("FORGEJO_STATUS", FORGEJO_TOKEN)
        .with("BITBUCKET_STATUS", BITBUCKET_TOKEN)
}

struct Harness {
    api: TestApiServer,
    app: Router,
}

impl Harness {
    async fn new(yaml: &str) -> Self {
        let api = TestApiServer::start().await;
        let client =
            kube_client_from_config(api.config(), &KubernetesSettings { timeout_seconds: 5 })
                .unwrap();
        let config: Config = match Config::from_yaml(yaml, "test.yaml", &env()) {
            Ok(config) => config,
            Err(error) => panic!("test config: {error} {:?}", error.problems()),
        };
        let server = ServerState::new(ServerSettings::default());
        let state = AppState::with_status_policy(
            config,
            Some(client),
            ReplySink::new(None).unwrap(),
            &server.metrics,
            FAST,
        )
        .unwrap();
        Harness {
            api,
            app: server::router(app(state), server),
        }
    }

    async fn send(&self, delivery: &Delivery) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(delivery.request()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn runs(&self) -> Vec<Value> {
        let mut runs = self.api.objects("tekton.dev", "pipelineruns", None);
        runs.extend(self.api.objects("tekton.dev", "taskruns", None));
        runs
    }

    async fn metrics(&self) -> String {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

fn assert_no_token(logs: &CapturedLogs) {
    let text = logs.text();
    assert!(
        text.contains("commit status"),
        "nothing was captured:\n{text}"
    );
    for token in [
        GITHUB_TOKEN,
        GITLAB_TOKEN,
        GITEA_TOKEN,
        FORGEJO_TOKEN,
        BITBUCKET_TOKEN,
    ] {
        assert!(!text.contains(token), "a token was logged:\n{text}");
    }
}

#[tokio::test]
async fn pending_is_reported_once_per_created_run_on_every_provider() {
    let (logs, _guard) = CapturedLogs::start();
    let servers = Servers::start().await;
    let harness = Harness::new(&servers.config("")).await;
    for delivery in Delivery::all_pushes() {
        let (status, body) = harness.send(&delivery).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Bitbucket's push starts two runs (main and a tag): two statuses of one key, two commits.
    let expected = [
        (Provider::Github, 1, "pending", "eu-1/payloads"),
        (Provider::Gitlab, 1, "running", "tekflux/diaspora"),
        (Provider::Gitea, 1, "pending", "tekflux/gitea-webhooks"),
        (
            Provider::Forgejo,
            1,
            "pending",
            "ci/deploy-tools-on-the-long-named-production-cluster",
        ),
        (Provider::Bitbucket, 2, "INPROGRESS", ""),
    ];
    let runs = harness.runs();
    for (provider, count, state, context) in expected {
        let statuses = servers.of(provider).wait_for_statuses(count).await;
        assert_eq!(statuses.len(), count, "{provider}: {statuses:?}");
        for status in &statuses {
            assert_eq!(status.state, state, "{provider}");
            if provider == Provider::Bitbucket {
                assert_eq!(status.context.chars().count(), 40, "{status:?}");
                assert!(
                    status
                        .context
                        .starts_with("eu-west-1-production-cluster/sh")
                );
            } else {
                assert_eq!(status.context, context, "{provider}");
            }
            // The status names a run that exists, and its commit.
            let run = runs
                .iter()
                .find(|run| {
                    run["metadata"]["annotations"]["tekflux.dev/sha"] == status.sha.as_str()
                        && run["metadata"]["labels"]["tekflux.dev/provider"] == provider.as_str()
                })
                .unwrap_or_else(|| panic!("no run for {status:?}"));
            let name = run["metadata"]["name"].as_str().unwrap();
            assert!(status.description.contains(name), "{status:?}");
            let annotated = run["metadata"]["annotations"]["tekflux.dev/status-context"]
                .as_str()
                .unwrap();
            if provider != Provider::Bitbucket {
                assert_eq!(annotated, context);
            }
        }
    }
    let github = &servers.github.statuses()[0];
    let runs = harness.runs();
    let github_run = &runs
        .iter()
        .find(|run| run["metadata"]["labels"]["tekflux.dev/provider"] == "github")
        .unwrap()["metadata"];
    // Name, kind and uid come from the API server's answer to the create.
    let (run_name, uid) = (
        github_run["name"].as_str().unwrap(),
        github_run["uid"].as_str().unwrap(),
    );
    assert!(!uid.is_empty());
    assert_eq!(
        github.target_url.as_deref(),
        Some(
            format!("https://dash.example/#/namespaces/ci/PipelineRun/{run_name}?uid={uid}")
                .as_str()
        )
    );

    // Redeliveries find their runs and post nothing new.
    let before: Vec<usize> = Provider::ALL
        .iter()
        .map(|p| servers.of(*p).received().len())
        .collect();
    for delivery in Delivery::all_pushes() {
        let (status, _) = harness.send(&delivery).await;
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: Vec<usize> = Provider::ALL
        .iter()
        .map(|p| servers.of(*p).received().len())
        .collect();
    assert_eq!(before, after, "a redelivery posted again");
    let metrics = harness.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tekflux_commit_status_reports_total{provider="bitbucket",state="pending",outcome="posted"}"#
        ),
        2.0,
        "{metrics}"
    );
    assert_no_token(&logs);
}

#[tokio::test]
async fn a_rule_with_status_false_posts_nothing() {
    let servers = Servers::start().await;
    let harness = Harness::new(&servers.config("    status: false")).await;
    let (status, body) = harness.send(&Delivery::github_push().signed()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(harness.runs().len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(servers.github.received().is_empty());
    assert!(
        harness.runs()[0]["metadata"]["annotations"]
            .get("tekflux.dev/status-context")
            .is_none()
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_within_the_budget() {
    let (logs, _guard) = CapturedLogs::start();
    let servers = Servers::start().await;
    let harness = Harness::new(&servers.config("")).await;
    // 429 with Retry-After: 0, then a 502: the third request is accepted.
    servers
        .github
        .fail_next([Scripted::RetryAfter(0), Scripted::Status(502)]);
    let (status, _) = harness.send(&Delivery::github_push().signed()).await;
    assert_eq!(status, StatusCode::OK);
    let statuses = servers.github.wait_for_statuses(1).await;
    assert_eq!(statuses.len(), 1);
    let answers: Vec<u16> = servers.github.received().iter().map(|r| r.answer).collect();
    assert_eq!(answers, [429, 502, 201]);
    let metrics = harness.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tekflux_commit_status_retries_total{provider="github"}"#
        ),
        2.0
    );
    assert_no_token(&logs);
}

#[tokio::test]
async fn a_reset_past_the_deadline_is_given_up_at_once_and_held_until_the_reset() {
    let servers = Servers::start().await;
    let harness = Harness::new(&servers.config("")).await;
    // GitHub's primary limit: 403 with X-RateLimit-Remaining: 0 and a reset an hour away.
    servers.github.fail_next([Scripted::ResetIn(3600)]);
    harness.send(&Delivery::github_push().signed()).await;
    for _ in 0..200 {
        let metrics = harness.metrics().await;
        if metric(
            &metrics,
            r#"tekflux_commit_status_reports_total{provider="github",state="pending",outcome="rate_limited"}"#,
        ) == 1.0
        {
            assert_eq!(servers.github.received().len(), 1);
            // Until the reset, this process asks nothing more of the limited account.
            let again = Delivery::github_push()
                .redelivered_as("0d8c3a55-1f0e-4b8e-9a55-3c2f1e0d9b77")
                .signed();
            let (status, _) = harness.send(&again).await;
            assert_eq!(status, StatusCode::OK);
            for _ in 0..200 {
                if metric(
                    &harness.metrics().await,
                    r#"tekflux_commit_status_reports_total{provider="github",state="pending",outcome="rate_limited"}"#,
                ) == 2.0
                {
                    assert_eq!(servers.github.received().len(), 1);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the second status was not held back");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not counted as rate_limited: {}", harness.metrics().await);
}

#[tokio::test]
async fn refusals_are_counted_and_never_retried() {
    for (code, outcome) in [
        (401, "unauthorized"),
        (403, "unauthorized"),
        (404, "not_found"),
        (409, "rejected"),
        (422, "rejected"),
    ] {
        let servers = Servers::start().await;
        let harness = Harness::new(&servers.config("")).await;
        servers.github.fail_next([Scripted::Status(code)]);
        let (status, _) = harness.send(&Delivery::github_push().signed()).await;
        assert_eq!(status, StatusCode::OK, "{code}");
        let series = format!(
            r#"tekflux_commit_status_reports_total{{provider="github",state="pending",outcome="{outcome}"}}"#
        );
        let mut counted = false;
        for _ in 0..200 {
            if metric(&harness.metrics().await, &series) == 1.0 {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(counted, "{code}: {}", harness.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(servers.github.received().len(), 1, "{code} was retried");
    }
}

#[tokio::test]
async fn a_provider_outage_leaves_webhooks_and_runs_unaffected() {
    let (logs, _guard) = CapturedLogs::start();
    let servers = Servers::start().await;
    for provider in Provider::ALL {
        servers.of(provider).set_down(true);
    }
    let harness = Harness::new(&servers.config("")).await;
    for delivery in Delivery::all_pushes() {
        let (status, body) = harness.send(&delivery).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(harness.runs().len(), 6);
    let series = r#"tekflux_commit_status_reports_total{provider="github",state="pending",outcome="unavailable"}"#;
    for _ in 0..300 {
        if metric(&harness.metrics().await, series) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&harness.metrics().await, series), 1.0);
    // Bounded: at most `attempts` requests per status.
    assert_eq!(servers.github.received().len(), 3);
    assert_no_token(&logs);
}

/// The test GitHub App's key pair (`tests/data/github-app`, made for these tests only).
fn app_key(which: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/github-app")
        .join(format!("test-app.{which}-key.pem"))
}

#[tokio::test]
async fn a_github_app_reports_check_runs_with_a_minted_installation_token() {
    let (logs, _guard) = CapturedLogs::start();
    let public = std::fs::read_to_string(app_key("public")).unwrap();
    let github =
        GitStatusServer::start_github_app(true, 4242, 77, &public, &["danheberden/payloads"]).await;
    let yaml = format!(
        r#"
namespace: ci
providers:
  github:
    secret: env:HOOK_SECRET
    status:
      api: "{}"
      app: {{ id: 4242, installationId: 77, privateKey: "file:{}" }}
repositories:
  - name: payloads
    url: https://github.com/danheberden/payloads
    branches: [master]
    pipeline: build
"#,
        github.api(),
        app_key("private").display()
    );
    let harness = Harness::new(&yaml).await;
    let (status, body) = harness.send(&Delivery::github_push().signed()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let checks = github.wait_for_statuses(1).await;
    assert_eq!(checks.len(), 1, "{:?}", github.received());
    assert_eq!(checks[0].state, "in_progress");
    assert_eq!(checks[0].context, "tekflux/payloads");
    assert_eq!(checks[0].sha, "263c5253cc1578ed49892d0db8876da4ec26da84");

    // Another delivery of the commit: a second run, and the token minted for the first reused.
    let again = Delivery::github_push()
        .redelivered_as("0d8c3a55-1f0e-4b8e-9a55-3c2f1e0d9b77")
        .signed();
    let (status, _) = harness.send(&again).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(github.wait_for_statuses(2).await.len(), 2);
    assert_eq!(github.tokens_issued(), 1);
    let text = logs.text();
    assert!(text.contains("commit status reported"), "{text}");
    assert!(
        !text.contains("ghs_"),
        "an installation token was logged:\n{text}"
    );
}

/// Why `GithubApp::new` refuses the App whose private key file holds `pem`.
fn app_refusal(pem: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, pem).unwrap();
    let yaml = format!(
        "providers:\n  github:\n    secret: env:HOOK_SECRET\n    status: {{ app: {{ id: 1, installationId: 2, privateKey: \"file:{}\" }} }}\n",
        key.display()
    );
    let config = Config::from_yaml(&yaml, "t.yaml", &env()).unwrap();
    let settings = config
        .providers
        .github
        .unwrap()
        .status
        .unwrap()
        .app
        .unwrap();
    tekflux_common::commit_status::github_app::GithubApp::new(&settings).unwrap_err()
}

#[test]
fn a_github_app_with_a_pkcs8_key_says_how_to_convert_it() {
    let error = app_refusal("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert!(error.contains("openssl rsa -traditional"), "{error}");
    assert!(!error.contains("AAAA"), "{error}");
}

/// A key in the right PEM block that is no usable RSA key fails when the App is set up, not at
/// the first check run, and the message does not repeat it.
#[test]
fn an_app_key_that_cannot_sign_is_refused_at_start() {
    let error = app_refusal(
        "-----BEGIN RSA PRIVATE KEY-----\nQUJDREVGR0g=\n-----END RSA PRIVATE KEY-----\n",
    );
    assert!(
        error.contains("not an RSA key tekflux can sign with"),
        "{error}"
    );
    assert!(!error.contains("QUJD"), "{error}");
}

#[tokio::test]
async fn a_rule_may_report_with_its_own_token() {
    let (logs, _guard) = CapturedLogs::start();
    let gitlab =
        GitStatusServer::start(StatusFlavor::Gitlab, GITLAB_TOKEN, &["mike/diaspora"]).await;
    // The provider has no token: a GitLab project access token reaches one project only.
    let yaml = format!(
        r#"
namespace: ci
providers:
  gitlab:
    token: env:GITLAB_HOOK
    status: {{ api: "{}" }}
repositories:
  - name: diaspora
    url: git@example.com:mike/diaspora.git
    provider: gitlab
    branches: [master]
    task: unit-tests
    status: {{ token: env:GITLAB_STATUS }}
"#,
        gitlab.api()
    );
    let harness = Harness::new(&yaml).await;
    let delivery = Delivery::all_pushes()
        .into_iter()
        .find(|d| d.provider == Provider::Gitlab)
        .unwrap();
    let (status, body) = harness.send(&delivery).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses = gitlab.wait_for_statuses(1).await;
    assert_eq!(statuses.len(), 1, "{:?}", gitlab.received());
    assert_eq!(statuses[0].state, "running");
    assert_eq!(statuses[0].context, "tekflux/diaspora");
    assert_no_token(&logs);
}
