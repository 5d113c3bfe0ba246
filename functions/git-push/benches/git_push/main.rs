//! git-push on loopback, in one run: throughput, latency and CPU of signed GitHub pushes that
//! each create a PipelineRun, against three baselines: a plain axum hello-world and the two
//! floors of [`floors`] (one fixed PipelineRun per request, through kube-rs or through bare
//! bytes); the git-push server's peak memory; and what routing a push costs as the number of
//! configured repositories grows.
//!
//! `cargo bench -p tekflux-git-push --bench git_push` prints Markdown tables (BENCHMARKS.md
//! explains the figures). All servers run as child processes of this binary (it re-executes
//! itself with `--serve-hello`, `--serve-raw-floor`, `--serve-kube-floor` or `--serve-git-push`,
//! the last three with a kubeconfig), so the git-push server's `VmHWM` and CPU time are its own
//! and no server shares a runtime with the load generator. The Kubernetes API is tekflux's
//! in-memory test API server, in this process, without schema validation, and a fresh one per
//! server and concurrency level because it keeps every object it is sent.
//!
//! Every figure is also relative to a baseline measured in the same run, because the machine
//! this runs on may be busy with other work.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use serde_json::{Value, json};
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{
    Config, KubernetesSettings, ProviderSettings, Providers, RepositoryRule, Secret,
    ServerSettings, WorkspaceBinding,
};
use tekflux_common::server::{ServerState, router};
use tekflux_git_push::{AppState, Provider, Push, RoutingTable, app, signature};
use tekflux_testkit::kube_api::TestApiServer;
use tekflux_testkit::load::{
    BenchArgs, ChildServer, Load, LoadPlan, MakeRequest, Round, Rounds, RunKind, measure_rounds,
    run_measured, serve_child,
};
use tekflux_testkit::machine::machine_load;
use tekflux_testkit::push::TestPush;

mod floors;

const SECRET: &[u8] = b"bench-webhook-secret";
pub(crate) const NAMESPACE: &str = "ci";
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Rounds per server and level in a benchmark run (a smoke run measures one).
const ROUNDS: usize = 5;
const ROUTING_SIZES: [usize; 3] = [10, 1_000, 10_000];
const ROUTE_SAMPLE: Duration = Duration::from_millis(250);

const SERVE_HELLO: &str = "--serve-hello";
const SERVE_GIT_PUSH: &str = "--serve-git-push";
const SERVE_KUBE_FLOOR: &str = "--serve-kube-floor";
const SERVE_RAW_FLOOR: &str = "--serve-raw-floor";

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::from_env();
    match args.mode() {
        Some(SERVE_HELLO) => serve(Served::Hello),
        Some(SERVE_KUBE_FLOOR) => serve(Served::KubeFloor(args.kubeconfig()?)),
        Some(SERVE_RAW_FLOOR) => serve(Served::RawFloor(args.kubeconfig()?)),
        Some(SERVE_GIT_PUSH) => serve(Served::GitPush(args.kubeconfig()?)),
        _ => orchestrate(args.run_kind()),
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: the servers under test.

/// What a child process serves; the two with a cluster take its kubeconfig.
enum Served {
    Hello,
    KubeFloor(PathBuf),
    RawFloor(PathBuf),
    GitPush(PathBuf),
}

/// Serves `served` as the parent's [`ChildServer`].
fn serve(served: Served) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let routes = match served {
            Served::Hello => axum::Router::new().route("/", axum::routing::get(|| async { "ok" })),
            Served::KubeFloor(path) => floors::kube_floor_router(&path).await?,
            Served::RawFloor(path) => floors::raw_floor_router(&path).await?,
            Served::GitPush(path) => git_push_router(&path).await?,
        };
        serve_child(routes).await
    })
}

/// git-push as its `main` builds it, except that the config comes from [`git_push_config`] and the
/// cluster from `kubeconfig`.
async fn git_push_router(kubeconfig: &Path) -> anyhow::Result<axum::Router> {
    // As in production: `info` to stdout (the parent sends it to /dev/null). Successful
    // requests log at `debug`, so this costs a filter check per request, not a line.
    tekflux_common::telemetry::init(None, None, false);
    let config = git_push_config();
    let kube = tekflux_common::clients::kube_client_from_kubeconfig(kubeconfig, &config.kubernetes)
        .await?;
    let server = ServerState::new(ServerSettings::default());
    let state = AppState::new(config, Some(kube), ReplySink::new(None)?, &server.metrics)
        .map_err(|errors| anyhow::anyhow!("invalid bench config: {errors:?}"))?;
    server.readiness.set_ready();
    Ok(router(app(state), server))
}

// ---------------------------------------------------------------------------------------------
// The git-push workload.

pub(crate) const REPO: &str = "https://github.com/acme/payments-api";

/// The throughput run's config: ten onboarded repositories; the pushes match exactly one rule.
fn git_push_config() -> Config {
    let mut repositories: Vec<RepositoryRule> = (0..9)
        .map(|i| RepositoryRule {
            url: format!("https://github.com/acme/service-{i}"),
            pipeline: Some("build".to_owned()),
            params: [("revision".to_owned(), "{{ sha }}".to_owned())].into(),
            ..Default::default()
        })
        .collect();
    repositories.push(RepositoryRule {
        url: format!("{REPO}.git"),
        branches: vec!["main".to_owned(), "release/*".to_owned()],
        paths: vec!["services/payments/**".to_owned(), "libs/**".to_owned()],
        pipeline: Some("build-and-push".to_owned()),
        params: [
            ("revision", "{{ sha }}"),
            ("url", "{{ repo_url }}"),
            ("image", "registry.example.com/payments:{{ short_sha }}"),
            ("context", "services/payments/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        workspaces: [(
            "shared-data".to_owned(),
            WorkspaceBinding {
                claim: Some("tekton-workspace".to_owned()),
                archive: true,
                ..Default::default()
            },
        )]
        .into(),
        service_account: Some("pipeline".to_owned()),
        timeout: Some("30m".to_owned()),
        ..Default::default()
    });
    Config {
        namespace: NAMESPACE.to_owned(),
        providers: Providers {
            github: Some(ProviderSettings {
                secret: Some(Secret::literal("bench", SECRET)),
                ..Default::default()
            }),
            ..Default::default()
        },
        kubernetes: KubernetesSettings::default(),
        repositories,
        ..Default::default()
    }
}

/// A typical GitHub push body: two commits adding and modifying files, with the repository,
/// owner, pusher and sender objects GitHub sends.
fn push_body() -> Vec<u8> {
    let user = |login: &str, id: u64| {
        let api = format!("https://api.github.com/users/{login}");
        json!({
            "login": login, "id": id, "node_id": "MDQ6VXNlcjE0MzI1Njc=",
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
            "gravatar_id": "", "url": api, "html_url": format!("https://github.com/{login}"),
            "followers_url": format!("{api}/followers"),
            "following_url": format!("{api}/following{{/other_user}}"),
            "gists_url": format!("{api}/gists{{/gist_id}}"),
            "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{api}/subscriptions"),
            "organizations_url": format!("{api}/orgs"), "repos_url": format!("{api}/repos"),
            "events_url": format!("{api}/events{{/privacy}}"),
            "received_events_url": format!("{api}/received_events"),
            "type": "User", "site_admin": false,
        })
    };
    let api = "https://api.github.com/repos/acme/payments-api";
    let mut repository = json!({
        "id": 583_920_114u64, "node_id": "R_kgDOItSz8g", "name": "payments-api",
        "full_name": "acme/payments-api", "private": true, "owner": user("acme", 7_342_118),
        "html_url": REPO, "description": "Payments API and its workers", "fork": false,
        "url": REPO, "created_at": 1_672_531_200u64, "updated_at": "2024-05-02T09:12:44Z",
    });
    let more = json!({
        "pushed_at": 1_714_641_164u64, "git_url": "git://github.com/acme/payments-api.git",
        "ssh_url": "git@github.com:acme/payments-api.git",
        "clone_url": format!("{REPO}.git"), "svn_url": REPO, "homepage": null,
        "size": 18_342, "stargazers_count": 4, "watchers_count": 4, "language": "Rust",
        "has_issues": true, "has_projects": false, "has_downloads": true, "has_wiki": false,
        "has_pages": false, "has_discussions": false, "forks_count": 0, "mirror_url": null,
        "archived": false, "disabled": false, "open_issues_count": 3, "license": null,
        "allow_forking": false, "is_template": false, "web_commit_signoff_required": false,
        "topics": ["payments", "rust"], "visibility": "private", "forks": 0,
        "open_issues": 3, "watchers": 4, "default_branch": "main", "stargazers": 4,
        "master_branch": "main", "organization": "acme",
    });
    if let (Some(repository), Value::Object(more)) = (repository.as_object_mut(), more) {
        repository.extend(more);
    }
    for (key, path) in [
        ("forks_url", "/forks"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("hooks_url", "/hooks"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
    ] {
        repository[key] = json!(format!("{api}{path}"));
    }
    let commit = |id: &str, message: &str, added: &[&str], modified: &[&str]| {
        let person = json!({
            "name": "Dana Okafor", "email": "dana.okafor@acme.example", "username": "dokafor",
        });
        json!({
            "id": id, "tree_id": "9f1c1b2e5d0c4a7b8e3f6a2d1c0b9e8f7a6d5c4b", "distinct": true,
            "message": message, "timestamp": "2024-05-02T11:12:40+02:00",
            "url": format!("{REPO}/commit/{id}"), "author": person, "committer": person,
            "added": added, "removed": [], "modified": modified,
        })
    };
    let first = commit(
        "3f2a9c1d8b7e6f5a4c3b2a1908f7e6d5c4b3a291",
        "payments: add refund webhook handler\n\nRefunds arrive from the PSP as webhooks; \
         verify and enqueue them like captures.",
        &[
            "services/payments/src/refunds/mod.rs",
            "services/payments/src/refunds/webhook.rs",
            "services/payments/tests/refunds.rs",
        ],
        &[
            "services/payments/src/lib.rs",
            "services/payments/Cargo.toml",
        ],
    );
    let second = commit(
        "a81be0c47d5e2f3b6c9d0e1f2a3b4c5d6e7f8091",
        "libs/money: round half to even in currency conversion",
        &[],
        &["libs/money/src/convert.rs", "libs/money/CHANGELOG.md"],
    );
    let body = json!({
        "ref": "refs/heads/main",
        "before": "1c9e4b7a2d5f8e0c3b6a9d2f5e8b1c4a7d0e3f62",
        "after": "a81be0c47d5e2f3b6c9d0e1f2a3b4c5d6e7f8091",
        "repository": repository,
        "pusher": { "name": "dokafor", "email": "dana.okafor@acme.example" },
        "organization": { "login": "acme", "id": 7_342_118, "url": "https://api.github.com/orgs/acme" },
        "sender": user("dokafor", 1_432_567),
        "created": false, "deleted": false, "forced": false, "base_ref": null,
        "compare": format!("{REPO}/compare/1c9e4b7a2d5f...a81be0c47d5e"),
        "commits": [first, second.clone()],
        "head_commit": second,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Load generator: N keep-alive HTTP/1.1 connections, each sending requests back to back.

fn hello_request() -> MakeRequest {
    Arc::new(|_, _| {
        let mut request = Request::new(Full::new(Bytes::new()));
        request
            .headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("127.0.0.1"));
        request
    })
}

/// Signed pushes, each with its own delivery id so that each creates a PipelineRun.
fn push_request(level: usize) -> MakeRequest {
    let body = Bytes::from(push_body());
    let signature = format!("sha256={}", signature::sign(SECRET, &body));
    Arc::new(move |connection, sequence| {
        let delivery = format!("{level:08x}-{connection:04x}-4000-8000-{sequence:012x}");
        let builder = Request::builder()
            .method(Method::POST)
            .uri("/webhooks/github")
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "GitHub-Hookshot/bench")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery)
            .header("X-GitHub-Hook-ID", "480211736")
            .header("X-Hub-Signature-256", signature.as_str());
        match builder.body(Full::new(body.clone())) {
            Ok(request) => request,
            Err(error) => unreachable!("static request parts are valid: {error}"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Routing cost.

fn routing_config(repositories: usize) -> Config {
    let mut rules: Vec<RepositoryRule> = (0..repositories)
        .map(|i| RepositoryRule {
            name: Some(format!("service-{i}")),
            url: format!("https://github.com/org-{}/service-{i}", i % 100),
            branches: if i % 3 == 0 {
                vec!["main".to_owned(), "release/*".to_owned()]
            } else {
                Vec::new()
            },
            paths: if i % 4 == 0 {
                vec![format!("services/service-{i}/**"), "libs/**".to_owned()]
            } else {
                Vec::new()
            },
            pipeline: Some("build".to_owned()),
            params: [
                ("revision".to_owned(), "{{ sha }}".to_owned()),
                ("url".to_owned(), "{{ repo_url }}".to_owned()),
            ]
            .into(),
            ..Default::default()
        })
        .collect();
    for url in [
        "https://github.com/platform/*",
        "https://gitlab.com/group/**",
    ] {
        rules.push(RepositoryRule {
            url: url.to_owned(),
            branches: vec!["main".to_owned()],
            pipeline: Some("org-build".to_owned()),
            ..Default::default()
        });
    }
    Config {
        namespace: NAMESPACE.to_owned(),
        repositories: rules,
        ..Default::default()
    }
}

fn routing_push(repo_url: &str, service: usize) -> Push {
    TestPush::new(Provider::Github, repo_url)
        .before("1c9e4b7a2d5f8e0c3b6a9d2f5e8b1c4a7d0e3f62")
        .after("a81be0c47d5e2f3b6c9d0e1f2a3b4c5d6e7f8091")
        .paths([
            "README.md".to_owned(),
            "libs/money/src/convert.rs".to_owned(),
            format!("services/service-{service}/Cargo.toml"),
            format!("services/service-{service}/src/lib.rs"),
            format!("services/service-{service}/src/refunds.rs"),
        ])
        .pusher("dokafor")
        .delivery("3c2b6e00-0000-4000-8000-000000000001")
        .build()
}

/// Nanoseconds per `route` call over one [`ROUTE_SAMPLE`].
fn time_route(table: &RoutingTable, push: &Push, run: RunKind) -> f64 {
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < run.scaled(ROUTE_SAMPLE, Duration::from_millis(5)) {
        for _ in 0..256 {
            black_box(table.route(black_box(push)));
        }
        calls += 256;
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

struct RoutingFigures {
    repositories: usize,
    compile: Duration,
    known_ns: f64,
    unknown_ns: f64,
}

fn measure_routing(run: RunKind) -> anyhow::Result<Vec<RoutingFigures>> {
    let mut cases = Vec::new();
    for repositories in ROUTING_SIZES {
        let config = routing_config(repositories);
        let started = Instant::now();
        let table = RoutingTable::compile(&config)
            .map_err(|errors| anyhow::anyhow!("routing config invalid: {errors:?}"))?;
        let compile = started.elapsed();
        // A repository with both a branch and a path filter, in the middle of the config.
        let service = repositories / 2 / 12 * 12;
        let known = routing_push(
            &format!("https://github.com/org-{}/service-{service}", service % 100),
            service,
        );
        let unknown = routing_push("https://github.com/elsewhere/unknown", service);
        let routed = table.route(&known);
        if routed.matched().count() != 1 || !table.route(&unknown).decisions.is_empty() {
            bail!("routing bench pushes do not route as intended: {routed:?}");
        }
        cases.push((repositories, table, known, unknown, compile));
    }
    let mut figures: Vec<RoutingFigures> = cases
        .iter()
        .map(|(repositories, _, _, _, compile)| RoutingFigures {
            repositories: *repositories,
            compile: *compile,
            known_ns: f64::INFINITY,
            unknown_ns: f64::INFINITY,
        })
        .collect();
    // Round-robin over the sizes, keeping each one's best sample, so that a burst of other work
    // on the machine (or the CPU clocking up) does not land on one size only. The first round
    // warms caches and is dropped.
    for round in 0..4 {
        for ((_, table, known, unknown, _), figures) in cases.iter().zip(&mut figures) {
            let known_ns = time_route(table, known, run);
            let unknown_ns = time_route(table, unknown, run);
            if round > 0 {
                figures.known_ns = figures.known_ns.min(known_ns);
                figures.unknown_ns = figures.unknown_ns.min(unknown_ns);
            }
        }
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// The run.

struct LevelFigures {
    concurrency: usize,
    hello: Load,
    raw_floor: ClusterRun,
    kube_floor: ClusterRun,
    git_push: ClusterRun,
}

impl LevelFigures {
    /// The servers that create runs, as the tables list them.
    fn cluster_runs(&self) -> [(&'static str, &ClusterRun); 3] {
        [
            ("raw floor", &self.raw_floor),
            ("kube-rs floor", &self.kube_floor),
            ("git-push", &self.git_push),
        ]
    }
}

fn orchestrate(run: RunKind) -> anyhow::Result<()> {
    let machine_before = machine_load();
    eprintln!("routing cost …");
    let routing = measure_routing(run)?;
    let plan = LoadPlan::loopback(run);
    let runtime = tokio::runtime::Runtime::new()?;
    let rounds = if run.is_smoke() { 1 } else { ROUNDS };
    let (levels, hello_peak_kib) = runtime.block_on(measure_servers(&plan, rounds))?;
    let machine_after = machine_load();
    report(
        &routing,
        &levels,
        hello_peak_kib,
        &plan,
        rounds,
        &machine_before,
        &machine_after,
    );
    // A smoke run stands in for a test, so a wrong result fails it; a benchmark run reports it
    // with its figures (above).
    if run.is_smoke()
        && let Some(problem) = wrong_results(&levels)
    {
        panic!("smoke run of the git-push benchmark: {problem}");
    }
    Ok(())
}

async fn measure_servers(
    plan: &LoadPlan,
    rounds: usize,
) -> anyhow::Result<(Vec<LevelFigures>, u64)> {
    let mut hello_loads = Vec::new();
    let hello = ChildServer::spawn(&[SERVE_HELLO]).await?;
    for concurrency in CONCURRENCY {
        eprintln!("hello-world, {concurrency} connections …");
        hello_loads.push(run_measured(&hello, concurrency, hello_request(), plan).await?);
    }
    let hello_peak_kib = hello.peak_rss_kib()?;
    hello.stop().await?;

    let modes = [SERVE_RAW_FLOOR, SERVE_KUBE_FLOOR, SERVE_GIT_PUSH];
    let mut levels = Vec::new();
    for (concurrency, hello) in CONCURRENCY.into_iter().zip(hello_loads) {
        let [raw_floor, kube_floor, git_push] =
            measure_rounds(modes, concurrency, rounds, |mode| {
                measure_with_cluster(mode, concurrency, plan)
            })
            .await?;
        levels.push(LevelFigures {
            concurrency,
            hello,
            raw_floor,
            kube_floor,
            git_push,
        });
    }
    Ok((levels, hello_peak_kib))
}

/// One level of a server that creates PipelineRuns, measured in one or more rounds.
type ClusterRun = Rounds<ClusterRound>;

/// PipelineRuns created over every round.
fn pipeline_runs(server: &ClusterRun) -> usize {
    server.runs.iter().map(|r| r.pipeline_runs).sum()
}

/// Whether a round's test API server holds fewer PipelineRuns than its successful measured
/// requests.
fn runs_missing(server: &ClusterRun) -> bool {
    server
        .runs
        .iter()
        .any(|r| r.pipeline_runs < r.load.latencies.len())
}

impl Round for ClusterRound {
    fn load(&self) -> &Load {
        &self.load
    }

    fn peak_kib(&self) -> u64 {
        self.peak_kib
    }
}

/// One round of one level of a server that creates PipelineRuns.
struct ClusterRound {
    load: Load,
    peak_kib: u64,
    pipeline_runs: usize,
}

/// Runs the pushes at `concurrency` against a fresh `mode` child process and a fresh test API
/// server.
async fn measure_with_cluster(
    mode: &str,
    concurrency: usize,
    plan: &LoadPlan,
) -> anyhow::Result<ClusterRound> {
    let api = TestApiServer::start_with_schemas(None).await;
    let server = ChildServer::spawn_with_cluster(mode, &api).await?;
    let load = run_measured(&server, concurrency, push_request(concurrency), plan).await?;
    let peak_kib = server.peak_rss_kib()?;
    server.stop().await?;
    let pipeline_runs = api
        .objects("tekton.dev", "pipelineruns", Some(NAMESPACE))
        .len();
    Ok(ClusterRound {
        load,
        peak_kib,
        pipeline_runs,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(
    routing: &[RoutingFigures],
    levels: &[LevelFigures],
    hello_peak_kib: u64,
    plan: &LoadPlan,
    rounds: usize,
    before: &str,
    after: &str,
) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let body = push_body().len();
    println!("## git-push benchmark\n");
    println!(
        "{cores} cores; at start: {before}; at end: {after}. Push body {body} bytes; \
         {plan}; the servers that create runs are measured in {rounds} rounds, round-robin, \
         and each of their figures is the median over the rounds.\n"
    );

    println!("### Each server (loopback, keep-alive HTTP/1.1)\n");
    println!(
        "CPU is the server process's user + system time per request, warm-up included; peak \
         RSS is its VmHWM (hello-world: one process for every level).\n"
    );
    println!(
        "| concurrency | server | req/s | p50 ms | p99 ms | CPU µs/request | peak RSS MiB | PipelineRuns created | failures |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for level in levels {
        let hello = &level.hello;
        println!(
            "| {} | hello-world | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} | – | {} |",
            level.concurrency,
            hello.per_second(),
            hello.percentile_ms(50.0),
            hello.percentile_ms(99.0),
            hello.server_cpu_us,
            mib(hello_peak_kib),
            hello.failures,
        );
        for (name, server) in level.cluster_runs() {
            println!(
                "| {} | {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} | {} | {} |",
                level.concurrency,
                server.per_second(),
                server.percentile_ms(50.0),
                server.percentile_ms(99.0),
                server.server_cpu_us(),
                mib(server.peak_kib()),
                pipeline_runs(server),
                server.failures(),
            );
        }
    }
    for level in levels {
        let servers = level
            .cluster_runs()
            .map(|(_, server)| server.first_failure());
        for failure in std::iter::once(level.hello.first_failure.as_ref())
            .chain(servers)
            .flatten()
        {
            println!(
                "\nfirst failure at concurrency {}: {failure}",
                level.concurrency
            );
        }
    }

    println!("\n### git-push against the floors\n");
    println!(
        "| concurrency | git-push / kube-rs floor req/s | kube-rs floor / raw floor req/s | git-push − kube-rs floor CPU µs | kube-rs floor − raw floor CPU µs | git-push / hello req/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for level in levels {
        let (raw, kube, push) = (&level.raw_floor, &level.kube_floor, &level.git_push);
        println!(
            "| {} | {:.0}% | {:.0}% | {:.0} | {:.0} | {:.0}% |",
            level.concurrency,
            100.0 * push.per_second() / kube.per_second(),
            100.0 * kube.per_second() / raw.per_second(),
            push.server_cpu_us() - kube.server_cpu_us(),
            kube.server_cpu_us() - raw.server_cpu_us(),
            100.0 * push.per_second() / level.hello.per_second(),
        );
    }

    println!("\n### Routing cost (`RoutingTable::route`, one push)\n");
    println!("| repositories | compile ms | known repo ns/route | unknown repo ns/route |");
    println!("|---:|---:|---:|---:|");
    for figures in routing {
        println!(
            "| {} (+2 org globs) | {:.1} | {:.0} | {:.0} |",
            figures.repositories,
            figures.compile.as_secs_f64() * 1e3,
            figures.known_ns,
            figures.unknown_ns,
        );
    }

    report_goals(routing, levels);
    if let Some(problem) = wrong_results(levels) {
        println!("\nWARNING: {problem}");
    }
}

/// Issue 16's goals, each against a baseline of the same run.
fn report_goals(routing: &[RoutingFigures], levels: &[LevelFigures]) {
    println!("\n### Goals\n");
    println!("| goal | measured | met |");
    println!("|---|---:|:---:|");
    let yes = |met: bool| if met { "yes" } else { "no" };
    for level in levels.iter().filter(|l| l.concurrency >= 16) {
        let (kube, push) = (&level.kube_floor, &level.git_push);
        let above = push.server_cpu_us() - kube.server_cpu_us();
        println!(
            "| CPU ≤ 30 µs/request above the kube-rs floor (c={}) | {above:.0} µs | {} |",
            level.concurrency,
            yes(above <= 30.0)
        );
        let share = push.per_second() / kube.per_second();
        println!(
            "| throughput ≥ 85% of the kube-rs floor (c={}) | {:.0}% | {} |",
            level.concurrency,
            share * 100.0,
            yes(share >= 0.85)
        );
    }
    if let Some(single) = levels.iter().find(|l| l.concurrency == 1) {
        let p99 = single.git_push.percentile_ms(99.0);
        println!("| p99 < 1 ms (c=1) | {p99:.2} ms | {} |", yes(p99 < 1.0));
    }
    if let Some(level) = levels.iter().find(|l| l.concurrency == 16) {
        let push = level.git_push.percentile_ms(99.0);
        let floor = level.kube_floor.percentile_ms(99.0);
        println!(
            "| p99 no worse than the kube-rs floor's (c=16) | {push:.2} ms vs {floor:.2} ms | {} |",
            yes(push <= floor)
        );
    }
    let peak = levels
        .iter()
        .map(|l| l.git_push.peak_kib())
        .max()
        .unwrap_or(0);
    println!(
        "| peak RSS < 40 MiB | {:.1} MiB | {} |",
        mib(peak),
        yes(mib(peak) < 40.0)
    );
    if let (Some(small), Some(large)) = (routing.first(), routing.last()) {
        let ratio = large.known_ns / small.known_ns;
        let unknown = large.unknown_ns / small.unknown_ns;
        println!(
            "| routing at {} within 2× of {} | {ratio:.2}× (unknown repo {unknown:.2}×) | {} |",
            large.repositories,
            small.repositories,
            yes(ratio <= 2.0 && unknown <= 2.0)
        );
    }
}

/// Failed requests or PipelineRuns missing for answered pushes, if any.
fn wrong_results(levels: &[LevelFigures]) -> Option<String> {
    let failures: usize = levels
        .iter()
        .map(|l| {
            l.hello.failures
                + l.cluster_runs()
                    .iter()
                    .map(|(_, server)| server.failures())
                    .sum::<usize>()
        })
        .sum();
    let missing = levels.iter().any(|l| {
        l.cluster_runs()
            .iter()
            .any(|(_, server)| runs_missing(server))
    });
    (failures > 0 || missing)
        .then(|| format!("{failures} failed requests; PipelineRuns missing: {missing}"))
}
