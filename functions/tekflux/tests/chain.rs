//! The whole chain through `tekflux up`, as the real binary runs it with the shipped Triggers:
//! a signed GitHub push → a PipelineRun in the test API server → the test plays Tekton (writes
//! the run's workspace, marks it succeeded with `IMAGE_URL`/`IMAGE_DIGEST`, posts Tekton's event
//! to `POST /broker` with the credential in the sink URL, as Tekton's HTTP client sends it) →
//! run-complete archives to S3 → the artifact event is routed to release-changed → the
//! HelmRelease's tag is applied → `release.applied` comes back to the Broker.
//!
//! The commit on GitHub gets `pending` when the run is created and `success` once it is archived
//! (a GitHub status API on loopback, configured as `providers.github.status.api`).
//!
//! Faults: S3 down during the archive (retried by the Broker, archived once), and a HelmRelease
//! that does not exist yet (retried, dead-lettered into the bucket, then `tekflux replay` after
//! it is created: applied once). Every test counts runs, archives and applies, and checks that
//! no event was lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tekflux_testkit::fault_proxy::{FaultProxy, ProxyFault};
use tekflux_testkit::git_status::{GitStatusServer, StatusFlavor};
use tekflux_testkit::kube_api::TestApiServer;
use tekflux_testkit::s3::TestS3;

const NS: &str = "cicd";
const SECRET: &str = "chain-webhook-secret";
const TOKEN: &str = "chain-events-token";
const STATUS_TOKEN: &str = "ghp_chainStatusToken0001";
const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const IMAGE: &str = "registry.example.com/acme/shop";
const DIGEST: &str = "sha256:9b2a4f1c3e5d7a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b";
const FLUX_GROUP: &str = "helm.toolkit.fluxcd.io";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README's example push, signed with [`SECRET`] as GitHub signs it, posted to `url`.
async fn signed_push(client: &reqwest::Client, url: &str) -> reqwest::Response {
    use hmac::Mac as _;
    let body = std::fs::read(repo_root().join("examples/github-push.json")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let signature = hex::encode(mac.finalize().into_bytes());
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Everything `up` talks to, and `up` itself.
struct Chain {
    api: TestApiServer,
    s3: TestS3,
    /// S3 as `up` reaches it, so a test can take it down.
    proxy: FaultProxy,
    bucket: String,
    dir: tempfile::TempDir,
    mount: tempfile::TempDir,
    base: String,
    child: Option<Child>,
    client: reqwest::Client,
    /// GitHub's commit-status API.
    github: GitStatusServer,
}

impl Chain {
    async fn start() -> Self {
        Self::start_with_backoff("PT0.2S").await
    }

    /// With the shipped Broker's `backoffDelay` replaced by `backoff`.
    async fn start_with_backoff(backoff: &str) -> Self {
        let api = TestApiServer::start().await;
        let s3 = TestS3::in_process().await;
        let bucket = s3.fresh_bucket().await;
        let proxy = FaultProxy::start(&s3.endpoint()).await;
        let dir = tempfile::tempdir().unwrap();
        let mount = tempfile::tempdir().unwrap();
        let github =
            GitStatusServer::start(StatusFlavor::Github, STATUS_TOKEN, &["acme/shop"]).await;
        let config = format!(
            "namespace: {NS}
events:
  token: env:TEKFLUX_EVENTS_TOKEN
providers:
  github:
    secret: env:GITHUB_WEBHOOK_SECRET
    status:
      api: {github_api}
      token: env:GITHUB_STATUS_TOKEN
      targetUrl: 'https://dashboard.example/#/namespaces/{{namespace}}/pipelineruns/{{name}}'
storage:
  bucket: {bucket}
  prefix: runs
  endpoint: {endpoint}
  region: {region}
  forcePathStyle: true
  mounts:
    tekton-workspace: {mount}
repositories:
  - url: https://github.com/acme/shop
    pipeline: build
    params:
      image: {IMAGE}:{{{{ sha }}}}
    workspaces:
      source: {{ claim: tekton-workspace, archive: true }}
releases:
  - image: {IMAGE}
    helmRelease: shop
    set: image.tag
    from: {{ rules: [build], branches: [main] }}
",
            endpoint = proxy.url(),
            region = tekflux_testkit::s3::REGION,
            mount = mount.path().display(),
            github_api = github.api(),
        );
        std::fs::write(dir.path().join("tekflux.yaml"), config).unwrap();
        // The shipped Triggers as they are; the shipped Broker with a test-sized backoff.
        let triggers = dir.path().join("knative");
        std::fs::create_dir(&triggers).unwrap();
        let base = repo_root().join("knative/base");
        std::fs::copy(base.join("triggers.yaml"), triggers.join("triggers.yaml")).unwrap();
        let broker = std::fs::read_to_string(base.join("broker.yaml"))
            .unwrap()
            .replace("retry: 10", "retry: 6")
            .replace("backoffDelay: PT2S", &format!("backoffDelay: {backoff}"));
        assert!(broker.contains("retry: 6") && broker.contains(backoff));
        std::fs::write(triggers.join("broker.yaml"), broker).unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        let mut command = support::tekflux(&s3, dir.path());
        command
            .args(["up", "--triggers"])
            .arg(&triggers)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TEKFLUX_CONFIG", dir.path().join("tekflux.yaml"))
            .env("KUBECONFIG", kubeconfig)
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("TEKFLUX_EVENTS_TOKEN", TOKEN)
            .env("GITHUB_STATUS_TOKEN", STATUS_TOKEN)
            .env_remove("AWS_ENDPOINT_URL_S3")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = command.spawn().unwrap();
        let chain = Chain {
            api,
            s3,
            proxy,
            bucket,
            dir,
            mount,
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            client: reqwest::Client::new(),
            github,
        };
        chain
            .wait_for("up to be ready", || async {
                chain
                    .client
                    .get(format!("{}/readyz", chain.base))
                    .send()
                    .await
                    .is_ok_and(|answer| answer.status().is_success())
            })
            .await;
        chain
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    async fn wait_for<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !done().await {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "timed out waiting for {what}; up's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn seed_helm_release(&self) {
        self.api.insert(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "shop", "namespace": NS},
            "spec": {
                "interval": "10m",
                "chart": {"spec": {"chart": "shop", "sourceRef": {"kind": "HelmRepository", "name": "acme"}}},
                "values": {"image": {"repository": IMAGE, "tag": "1.0.0"}},
            },
        }));
    }

    fn helm_release_tag(&self) -> Option<String> {
        let release = self
            .api
            .get_object(FLUX_GROUP, "helmreleases", Some(NS), "shop")?;
        release["spec"]["values"]["image"]["tag"]
            .as_str()
            .map(str::to_owned)
    }

    /// The `timeoutSeconds` of every HelmRelease watch the API server has seen.
    fn helm_release_watches(&self) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|request| {
                request.path.ends_with("/helmreleases") && request.query.contains_key("watch")
            })
            .map(|request| {
                request
                    .query
                    .get("timeoutSeconds")
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// HelmRelease applies (PATCH) the API server has seen.
    fn applies(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|request| request.method == "PATCH" && request.path.contains("/helmreleases/"))
            .count()
    }

    fn pipeline_runs(&self) -> Vec<Value> {
        self.api.objects("tekton.dev", "pipelineruns", Some(NS))
    }

    /// The provider's delivery: the example push, signed.
    async fn push(&self) -> reqwest::StatusCode {
        signed_push(
            &self.client,
            &format!("{}/git-push/webhooks/github", self.base),
        )
        .await
        .status()
    }

    /// Plays Tekton for the one run: writes its workspace, marks it succeeded with the image
    /// results, and posts the event Tekton sends to its sink, `http://tekflux:<token>@…/broker`
    /// (Go's HTTP client turns the URL's user info into Basic authentication).
    async fn finish_run(&self) -> String {
        let runs = self.pipeline_runs();
        assert_eq!(runs.len(), 1, "one push, one run");
        let mut run = runs[0].clone();
        let name = run["metadata"]["name"].as_str().unwrap().to_owned();
        let sub_path = run["spec"]["workspaces"][0]["subPath"].as_str().unwrap();
        let workspace = self.mount.path().join(sub_path);
        std::fs::create_dir_all(workspace.join("src")).unwrap();
        std::fs::write(workspace.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(workspace.join("image.digest"), DIGEST).unwrap();
        run["status"] = json!({
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
            "startTime": "2026-12-06T10:00:00Z",
            "completionTime": "2026-12-06T10:03:00Z",
            "results": [
                {"name": "IMAGE_URL", "value": format!("{IMAGE}:{SHA}")},
                {"name": "IMAGE_DIGEST", "value": DIGEST},
            ],
        });
        let stored = self.api.insert(run);
        // Tekton sends the run as v1beta1: results under `pipelineResults`.
        let mut sent = stored.clone();
        sent["apiVersion"] = json!("tekton.dev/v1beta1");
        let results = sent["status"]
            .as_object_mut()
            .unwrap()
            .remove("results")
            .unwrap();
        sent["status"]["pipelineResults"] = results;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("tekflux:{TOKEN}"));
        let answer = self
            .client
            .post(format!("{}/broker", self.base))
            .header("authorization", format!("Basic {basic}"))
            .header("ce-specversion", "1.0")
            .header("ce-id", "5f2a0b7c-1d3e-4f5a-9b8c-7d6e5f4a3b2c")
            .header("ce-type", "dev.tekton.event.pipelinerun.successful.v1")
            .header(
                "ce-source",
                format!("/apis/tekton.dev/v1beta1/namespaces/{NS}/pipelineruns/{name}"),
            )
            .header("ce-subject", &name)
            .header("content-type", "application/json")
            .body(json!({"pipelineRun": sent}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
        let routed: Value = answer.json().await.unwrap();
        assert_eq!(routed["triggers"], json!(["run-complete-pipeline-success"]));
        name
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        self.s3.keys(&self.bucket, prefix).await
    }

    /// Workspace archives stored for `run`.
    async fn archives(&self, run: &str) -> usize {
        self.keys(&format!("runs/{NS}/{run}/"))
            .await
            .iter()
            .filter(|key| key.ends_with(".tar.zst"))
            .count()
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of every series of `name` whose labels contain `labels`.
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Nothing was lost: no delivery ended without the dead-letter store taking it.
    async fn assert_nothing_lost(&self) {
        assert_eq!(
            self.metric("tekflux_broker_deliveries_total", "outcome=\"lost\"")
                .await,
            0.0,
            "{}",
            self.log()
        );
        assert!(!self.log().contains("event lost"), "{}", self.log());
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_push_becomes_one_run_one_archive_and_one_release() {
    let mut chain = Chain::start().await;
    chain.seed_helm_release();

    assert!(chain.push().await.is_success(), "{}", chain.log());
    let run = chain.finish_run().await;
    chain
        .wait_for("the HelmRelease to take the new tag", || async {
            chain.helm_release_tag().as_deref() == Some(SHA)
        })
        .await;
    // release-changed's reply comes back to the Broker, which no shipped Trigger routes on.
    chain
        .wait_for("release.applied at the Broker", || async {
            chain.log().contains("no Trigger matches the event")
                && chain.log().contains("dev.tekflux.release.applied.v1")
        })
        .await;

    assert_eq!(chain.pipeline_runs().len(), 1);
    assert_eq!(chain.archives(&run).await, 1);
    assert_eq!(chain.applies(), 1);
    // release-changed watched the release's namespace through its watch client, whose reads
    // may wait minutes: the watch asks for 290 s, not for `kubernetes.timeoutSeconds`.
    let watches = chain.helm_release_watches();
    assert!(
        !watches.is_empty() && watches.iter().all(|timeout| timeout == "290"),
        "{watches:?}"
    );
    assert!(chain.keys("runs/_dead-letters/").await.is_empty());
    let delivered = |trigger: &str| {
        format!("tekflux_broker_deliveries_total{{trigger=\"{trigger}\",outcome=\"delivered\"}} 1")
    };
    let metrics = chain.metrics().await;
    for trigger in ["run-complete-pipeline-success", "release-changed-artifact"] {
        assert!(metrics.contains(&delivered(trigger)), "{metrics}");
    }
    chain.assert_nothing_lost().await;

    // The commit shows the build: pending when the run was created, success once archived,
    // under one context, each linking to the run.
    let statuses = chain.github.wait_for_statuses(2).await;
    let states: Vec<&str> = statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["pending", "success"], "{}", chain.log());
    for status in &statuses {
        assert_eq!(status.sha, SHA);
        assert_eq!(status.context, "tekflux/build");
        assert_eq!(
            status.target_url.as_deref(),
            Some(
                format!("https://dashboard.example/#/namespaces/{NS}/pipelineruns/{run}").as_str()
            )
        );
    }

    // A redelivery of the same push creates nothing new, and posts nothing.
    assert!(chain.push().await.is_success());
    assert_eq!(chain.pipeline_runs().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(chain.github.received().len(), 2);
    assert!(!chain.log().contains(STATUS_TOKEN));
    assert!(chain.stop().success(), "{}", chain.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_down_is_retried_and_a_missing_release_is_dead_lettered_then_replayed() {
    let mut chain = Chain::start().await;
    // No HelmRelease yet, and S3 answers 503 to everything.
    chain
        .proxy
        .fail_when(|_| true, ProxyFault::ServiceUnavailable);

    assert!(chain.push().await.is_success(), "{}", chain.log());
    let run = chain.finish_run().await;
    chain
        .wait_for("a retried archive", || async {
            chain
                .metric(
                    "tekflux_broker_deliveries_total",
                    "trigger=\"run-complete-pipeline-success\",outcome=\"retried\"",
                )
                .await
                >= 1.0
        })
        .await;
    assert!(!chain.proxy.failed().is_empty());
    chain.proxy.heal();

    // The archive succeeds on a retry; release-changed then finds no HelmRelease (503), is
    // retried, and the event is dead-lettered into the bucket.
    chain
        .wait_for("the dead letter", || async {
            !chain.keys("runs/_dead-letters/").await.is_empty()
        })
        .await;
    assert_eq!(chain.archives(&run).await, 1);
    assert_eq!(chain.applies(), 0);
    assert_eq!(chain.helm_release_tag(), None);

    // The operator creates the HelmRelease and replays through the Broker.
    chain.seed_helm_release();
    let token_file = chain.dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut replay = support::tekflux(&chain.s3, chain.dir.path());
    replay
        .args([
            "replay",
            "--to",
            &format!("{}/broker", chain.base),
            "--token-file",
        ])
        .arg(&token_file)
        .args(["-f", "tekflux.yaml"]);
    let output = support::run(replay).await;
    assert!(output.status.success(), "{output:?}\n{}", chain.log());
    chain
        .wait_for("the replayed release", || async {
            chain.helm_release_tag().as_deref() == Some(SHA)
        })
        .await;
    assert!(chain.keys("runs/_dead-letters/").await.is_empty());

    assert_eq!(chain.pipeline_runs().len(), 1);
    assert_eq!(chain.archives(&run).await, 1);
    assert_eq!(chain.applies(), 1);
    chain.assert_nothing_lost().await;
    assert!(chain.stop().success(), "{}", chain.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_takes_no_event_without_the_senders_credential() {
    let mut chain = Chain::start().await;
    let event = |request: reqwest::RequestBuilder| {
        request
            .header("ce-specversion", "1.0")
            .header("ce-id", "forged-1")
            .header("ce-type", "dev.tekflux.git.pushed.v1")
            .header("ce-source", "/forged")
            .header("content-type", "application/json")
            .body("{}")
    };
    let url = format!("{}/broker", chain.base);
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVrZmx1eDp3cm9uZw=="),
    ] {
        let mut request = event(chain.client.post(&url));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(
            answer.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
    }
    assert_eq!(
        chain
            .metric("tekflux_events_refused_total", "function=\"broker\"")
            .await,
        3.0
    );
    assert!(chain.pipeline_runs().is_empty());
    // Not a CloudEvent: 400, with the reason.
    let answer = chain
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(chain.stop().success());
}

/// From an empty directory with no config and no cluster: health answers, a signed dry run is
/// answered, and what is missing for real work is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_from_an_empty_directory_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("up.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tekflux"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("TEKFLUX_GITHUB_SECRET", SECRET)
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    let readiness: Value = loop {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            break answer.json().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "up did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let limited = readiness["limited"].to_string();
    for missing in [
        "no Kubernetes cluster",
        "storage.bucket",
        "POST /broker answers 401",
    ] {
        assert!(limited.contains(missing), "{limited}");
    }
    let answer = signed_push(
        &client,
        &format!("{base}/git-push/webhooks/github?dryRun=true"),
    )
    .await;
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["dryRun"], true);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed.contains("for real work this is missing:")
            && printed.contains("  - broker: neither events.token"),
        "{printed}"
    );
}

/// SIGTERM while a delivery waits for its next retry: the event goes to the dead-letter store at
/// once, and the process stops without waiting out the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_dead_letters_what_waits_for_a_retry() {
    let mut chain = Chain::start_with_backoff("PT60S").await;
    // No HelmRelease: release-changed answers 503, and the next retry is a minute away.
    assert!(chain.push().await.is_success(), "{}", chain.log());
    chain.finish_run().await;
    chain
        .wait_for("release-changed's first refusal", || async {
            chain
                .metric(
                    "tekflux_broker_deliveries_total",
                    "trigger=\"release-changed-artifact\",outcome=\"retried\"",
                )
                .await
                >= 1.0
        })
        .await;
    assert!(chain.keys("runs/_dead-letters/").await.is_empty());
    let stopping = Instant::now();
    assert!(chain.stop().success(), "{}", chain.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "stopping waited out the backoff"
    );
    let letters = chain.keys("runs/_dead-letters/").await;
    assert_eq!(letters.len(), 1, "{}", chain.log());
    let letter: Value = serde_json::from_slice(
        &chain
            .s3
            .client()
            .get_object()
            .bucket(&chain.bucket)
            .key(&letters[0])
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes(),
    )
    .unwrap();
    assert_eq!(letter["type"], "dev.cdevents.artifact.published.0.3.0");
    assert_eq!(letter["knativeerrordest"], "/release-changed");
    assert_eq!(letter["knativeerrorcode"], "503");
    assert!(!chain.log().contains("event lost"), "{}", chain.log());
}
