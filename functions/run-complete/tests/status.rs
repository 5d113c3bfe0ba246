//! Commit statuses from run-complete: the outcome of an archived run on the commit, under the
//! context git-push recorded on the run, against test servers that check requests as GitHub
//! and GitLab do; nothing new on a redelivered event; an outage that leaves archives unaffected.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tekflux_common::clients::kube_client_from_config;
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::commit_status::RetryPolicy;
use tekflux_common::config::{Config, Env, KubernetesSettings};
use tekflux_run_complete::AppState;
use tekflux_testkit::git_status::{CapturedLogs, GitStatusServer, Scripted, StatusFlavor};

use support::*;

const GITHUB_TOKEN: &str = "ghp_runCompleteTOKEN0001";
const GITLAB_TOKEN: &str = "glpat-runCompleteTOKEN02";

const FAST: RetryPolicy = RetryPolicy {
    attempts: 3,
    base_delay: Duration::from_millis(10),
    deadline: Duration::from_secs(3),
    request_timeout: Duration::from_secs(2),
};

fn state(h: &Harness, github: &GitStatusServer, gitlab: &GitStatusServer) -> AppState {
    let yaml = format!(
        r#"namespace: {NS}
events:
  token: env:EVENTS_TOKEN
storage:
  bucket: {}
  prefix: runs
  mounts:
    {CLAIM}: {}
providers:
  github:
    insecure: true
    status:
      api: "{}"
      token: env:GITHUB_STATUS
      targetUrl: "https://console.example/{{namespace}}/{{name}}?sha={{sha}}"
  gitlab:
    insecure: true
    status: {{ api: "{}", token: env:GITLAB_STATUS }}
"#,
        h.bucket,
        h.mount.path().display(),
        github.api(),
        gitlab.api()
    );
    let env = Env::new()
        .with("EVENTS_TOKEN", EVENTS_TOKEN)
        .with("GITHUB_STATUS", GITHUB_TOKEN)
        .with("GITLAB_STATUS", GITLAB_TOKEN);
    let config = Config::from_yaml(&yaml, "test.yaml", &env).unwrap();
    let kube = kube_client_from_config(h.api.config(), &KubernetesSettings::default()).unwrap();
    AppState::with_status_policy(
        &config,
        Some(kube),
        Some(h.s3.client()),
        ReplySink::new(None).unwrap(),
        &h.server.metrics,
        FAST,
    )
}

/// A finished TaskRun git-push created for a rule that reports to `provider`.
fn reported_run(name: &str, provider: &str, repo: &str, succeeded: bool) -> Value {
    let mut annotations = git_push_annotations(name);
    annotations["tekflux.dev/repo-url"] = json!(repo);
    annotations["tekflux.dev/ref"] = json!("refs/heads/main");
    annotations["tekflux.dev/status-context"] = json!("eu-1/shop");
    let mut run = task_run(name, annotations, json!([]));
    run["metadata"]["labels"]["tekflux.dev/provider"] = json!(provider);
    run["metadata"]["labels"]["tekflux.dev/rule"] = json!("shop");
    if !succeeded {
        run["status"]["conditions"] =
            json!([{"type": "Succeeded", "status": "False", "reason": "Failed"}]);
    }
    run
}

async fn servers() -> (GitStatusServer, GitStatusServer) {
    (
        GitStatusServer::start(StatusFlavor::Github, GITHUB_TOKEN, &["acme/shop"]).await,
        GitStatusServer::start(StatusFlavor::Gitlab, GITLAB_TOKEN, &["acme/shop"]).await,
    )
}

#[tokio::test]
async fn success_and_failure_are_reported_once_after_the_archive() {
    let (logs, _guard) = CapturedLogs::start();
    let h = Harness::start().await;
    let (github, gitlab) = servers().await;
    let state = state(&h, &github, &gitlab);

    let ok = "shop-ok-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(ok));
    let stored = h.store(reported_run(ok, "github", REPO, true));
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(h.manifest(ok).await.is_some());
    let statuses = github.statuses();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].state, "success");
    assert_eq!(statuses[0].context, "eu-1/shop");
    assert_eq!(statuses[0].sha, SHA);
    assert_eq!(statuses[0].description, format!("{ok}: succeeded in 3m0s"));
    assert_eq!(
        statuses[0].target_url.as_deref(),
        Some(format!("https://console.example/{NS}/{ok}?sha={SHA}").as_str())
    );

    // The same event again (Knative delivers at least once): the manifest says it is done,
    // nothing is posted.
    let (status, _, _) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(github.received().len(), 1);

    // A failed run on GitLab: `failed`, with the reason, on the project's path.
    let failed = "shop-failed-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(failed));
    let stored = h.store(reported_run(
        failed,
        "gitlab",
        "https://gitlab.example/acme/shop",
        false,
    ));
    let (status, _, body) = h.send(&state, TASKRUN_FAILED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses = gitlab.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, "failed");
    assert!(statuses[0].description.contains("(Failed)"), "{statuses:?}");
    assert!(!logs.text().contains(GITHUB_TOKEN) && !logs.text().contains(GITLAB_TOKEN));
}

#[tokio::test]
async fn gitlab_s_repeated_state_answer_is_no_error() {
    let h = Harness::start().await;
    let (github, gitlab) = servers().await;
    let state = state(&h, &github, &gitlab);
    let run = "shop-again-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let stored = h.store(reported_run(
        run,
        "gitlab",
        "https://gitlab.example/acme/shop",
        true,
    ));
    // An earlier post of the same state (say, from another replica) is already there.
    let report = tekflux_common::commit_status::StatusReport {
        provider: tekflux_common::config::GitProvider::Gitlab,
        repo_url: "https://gitlab.example/acme/shop".into(),
        sha: SHA.into(),
        git_ref: None,
        context: "eu-1/shop".into(),
        state: tekflux_common::commit_status::BuildState::Success,
        description: "earlier".into(),
        target_url: None,
    };
    let reporter = tekflux_common::commit_status::StatusReporter::with_policy(
        &Config::from_yaml(
            &format!(
                "providers:\n  gitlab:\n    insecure: true\n    status: {{ api: \"{}\", token: env:T }}\n",
                gitlab.api()
            ),
            "t.yaml",
            &Env::new().with("T", GITLAB_TOKEN),
        )
        .unwrap(),
        &tekflux_common::metrics::Metrics::new(),
        FAST,
    );
    assert_eq!(
        reporter.report(&report).await,
        tekflux_common::commit_status::Reported::Posted
    );
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers: Vec<u16> = gitlab.received().iter().map(|r| r.answer).collect();
    assert_eq!(answers, [201, 400], "answered once, not retried");
    assert_eq!(
        h.metric(
            &state,
            r#"tekflux_commit_status_reports_total{provider="gitlab",state="success",outcome="unchanged"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_provider_outage_leaves_the_archive_unaffected() {
    let (logs, _guard) = CapturedLogs::start();
    let h = Harness::start().await;
    let (github, gitlab) = servers().await;
    github.set_down(true);
    let state = state(&h, &github, &gitlab);
    let run = "shop-outage-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let stored = h.store(reported_run(run, "github", REPO, true));
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let manifest = h.manifest(run).await.unwrap();
    assert_eq!(manifest.workspaces.len(), 1);
    assert_eq!(github.received().len(), 3, "bounded retries");
    assert_eq!(
        h.metric(
            &state,
            r#"tekflux_commit_status_reports_total{provider="github",state="success",outcome="unavailable"}"#
        )
        .await,
        Some(1.0)
    );
    assert!(logs.text().contains("commit status"));
    assert!(!logs.text().contains(GITHUB_TOKEN));
}

#[tokio::test]
async fn throttled_reports_are_retried_after_the_reset() {
    let h = Harness::start().await;
    let (github, gitlab) = servers().await;
    // GitLab's RateLimit-Reset one second ahead: waited for (within the deadline), then posted.
    gitlab.fail_next([Scripted::ResetIn(1)]);
    let state = state(&h, &github, &gitlab);
    let run = "shop-throttled-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let stored = h.store(reported_run(
        run,
        "gitlab",
        "https://gitlab.example/acme/shop",
        true,
    ));
    let started = std::time::Instant::now();
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers: Vec<u16> = gitlab.received().iter().map(|r| r.answer).collect();
    assert_eq!(answers, [429, 201]);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn runs_without_a_status_context_are_not_reported() {
    let h = Harness::start().await;
    let (github, gitlab) = servers().await;
    let state = state(&h, &github, &gitlab);
    let run = "shop-quiet-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let mut quiet = reported_run(run, "github", REPO, true);
    quiet["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("tekflux.dev/status-context");
    let stored = h.store(quiet);
    let (status, _, _) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(github.received().is_empty());
}

#[tokio::test]
async fn a_github_app_completes_its_check_run() {
    let h = Harness::start().await;
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/github-app");
    let public = std::fs::read_to_string(keys.join("test-app.public-key.pem")).unwrap();
    let github = GitStatusServer::start_github_app(false, 4242, 77, &public, &["acme/shop"]).await;
    let yaml = format!(
        r#"namespace: {NS}
events:
  token: env:EVENTS_TOKEN
storage:
  bucket: {}
  prefix: runs
  mounts:
    {CLAIM}: {}
providers:
  github:
    insecure: true
    status:
      api: "{}"
      app: {{ id: 4242, installationId: 77, privateKey: "file:{}" }}
"#,
        h.bucket,
        h.mount.path().display(),
        github.api(),
        keys.join("test-app.private-key.pem").display()
    );
    let env = Env::new().with("EVENTS_TOKEN", EVENTS_TOKEN);
    let config = Config::from_yaml(&yaml, "test.yaml", &env).unwrap();
    let kube = kube_client_from_config(h.api.config(), &KubernetesSettings::default()).unwrap();
    let state = AppState::with_status_policy(
        &config,
        Some(kube),
        Some(h.s3.client()),
        ReplySink::new(None).unwrap(),
        &h.server.metrics,
        FAST,
    );
    let run = "shop-app-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let stored = h.store(reported_run(run, "github", REPO, false));
    let (status, _, body) = h.send(&state, TASKRUN_FAILED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let checks = github.statuses();
    assert_eq!(checks.len(), 1, "{:?}", github.received());
    assert_eq!(checks[0].state, "failure");
    assert_eq!(checks[0].context, "eu-1/shop");
    assert_eq!(github.tokens_issued(), 1);
}

#[tokio::test]
async fn a_failed_pipeline_run_names_its_failed_task() {
    let h = Harness::start().await;
    let (github, gitlab) = servers().await;
    let state = state(&h, &github, &gitlab);
    let run = "shop-ci-7b1e2d3c4a5f";
    write_tree(&h.workspace_dir(run));
    let child = |name: &str, task: &str, reason: &str| {
        json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {"name": name, "namespace": NS, "labels": {
                "tekton.dev/pipelineRun": run, "tekton.dev/pipelineTask": task}},
            "spec": {"taskRef": {"name": task}},
            "status": {
                "conditions": [{"type": "Succeeded", "status": if reason == "Succeeded" { "True" } else { "False" }, "reason": reason}],
                "podName": format!("{name}-pod"),
                "steps": [{"name": "main", "container": "step-main"}],
            }
        })
    };
    let (fetch, test) = (format!("{run}-fetch"), format!("{run}-test"));
    h.api.insert(child(&fetch, "fetch", "Succeeded"));
    h.api.insert(child(&test, "unit-tests", "Failed"));
    let mut annotations = git_push_annotations(run);
    annotations["tekflux.dev/status-context"] = json!("eu-1/shop");
    let pipeline_run = json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": run, "namespace": NS, "annotations": annotations,
            "labels": {"tekflux.dev/provider": "github", "tekflux.dev/rule": "shop"}},
        "spec": {"pipelineRef": {"name": "ci"}, "workspaces": [
            {"name": "source", "persistentVolumeClaim": {"claimName": CLAIM}, "subPath": run}]},
        "status": {
            "conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed"}],
            "startTime": "2026-11-24T10:00:00Z",
            "completionTime": "2026-11-24T10:04:12Z",
            "childReferences": [
                {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": fetch, "pipelineTaskName": "fetch"},
                {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": test, "pipelineTaskName": "unit-tests"},
            ],
        }
    });
    let stored = h.store(pipeline_run);
    let (status, _, body) = h
        .send(
            &state,
            "dev.tekton.event.pipelinerun.failed.v1",
            &event_of(&stored),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses = github.statuses();
    assert_eq!(statuses.len(), 1, "{:?}", github.received());
    assert_eq!(statuses[0].state, "failure");
    assert_eq!(
        statuses[0].description,
        format!("{run}: failed in 4m12s (Failed: unit-tests)")
    );
}

#[tokio::test]
async fn a_rule_s_own_token_reports_its_outcome() {
    let h = Harness::start().await;
    let gitlab = GitStatusServer::start(StatusFlavor::Gitlab, GITLAB_TOKEN, &["acme/shop"]).await;
    let yaml = format!(
        r#"namespace: {NS}
events:
  token: env:EVENTS_TOKEN
storage:
  bucket: {}
  prefix: runs
  mounts:
    {CLAIM}: {}
providers:
  gitlab:
    insecure: true
    status: {{ api: "{}" }}
repositories:
  - name: shop
    url: https://gitlab.example/acme/shop
    provider: gitlab
    pipeline: build
    status: {{ context: eu-1/shop, token: env:GITLAB_STATUS }}
"#,
        h.bucket,
        h.mount.path().display(),
        gitlab.api()
    );
    let env = Env::new()
        .with("EVENTS_TOKEN", EVENTS_TOKEN)
        .with("GITLAB_STATUS", GITLAB_TOKEN);
    let config = Config::from_yaml(&yaml, "test.yaml", &env).unwrap();
    let kube = kube_client_from_config(h.api.config(), &KubernetesSettings::default()).unwrap();
    let state = AppState::with_status_policy(
        &config,
        Some(kube),
        Some(h.s3.client()),
        ReplySink::new(None).unwrap(),
        &h.server.metrics,
        FAST,
    );
    let run = "shop-own-3f2a9c1d0e4b";
    write_tree(&h.workspace_dir(run));
    let stored = h.store(reported_run(
        run,
        "gitlab",
        "https://gitlab.example/acme/shop",
        true,
    ));
    let (status, _, body) = h.send(&state, TASKRUN_SUCCEEDED, &event_of(&stored)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses = gitlab.statuses();
    assert_eq!(statuses.len(), 1, "{:?}", gitlab.received());
    assert_eq!(statuses[0].state, "success");
}
