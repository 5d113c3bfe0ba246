//! release-changed on loopback, in one run: throughput, latency and peak memory of `POST /` with
//! a CDEvents artifact published event as run-complete sends it (one image, one matching
//! `releases` rule, one Flux HelmRelease server-side-applied), against a "round-trip floor"
//! server that only reads the body and sends the same apply PATCH through the same
//! `kube::Client` to the same kind of test API server, so that release-changed's own cost is
//! the difference.
//!
//! `cargo bench -p tekflux-release-changed --bench release` prints a Markdown table
//! (BENCHMARKS.md explains the figures). Both servers run as child processes of this binary (it
//! re-executes itself with `--serve-floor <kubeconfig>` or `--serve-release-changed
//! <kubeconfig>`), so each one's `VmHWM` is its own and no server shares a runtime with the load
//! generator. The Kubernetes API is tekflux's in-memory test API server, in this process,
//! without schema validation, and a fresh one per concurrency level and server.
//!
//! Each connection has its own HelmRelease (`service-<connection>`, one `releases` rule each,
//! `from: any` so no run is read back) and sends events with increasing tags and times, so
//! every request applies: none is skipped as older than what the release records.
//!
//! Every figure is also relative to the floor measured in the same run, because the machine
//! this runs on may be busy with other work.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use http::{HeaderMap, Method, Request};
use http_body_util::Full;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tekflux_common::cloudevent::ReplySink;
use tekflux_common::config::{Config, Env, HelmReleaseApi, KubernetesSettings, ServerSettings};
use tekflux_common::server::{ServerState, router};
use tekflux_release_changed::helm_release::{
    EVENT_ANNOTATION, RUN_ANNOTATION, TIME_ANNOTATION, VERSION_ANNOTATION, api_resource,
};
use tekflux_release_changed::{AppState, FIELD_MANAGER, app};
use tekflux_run_complete::reply::ImageReference;
use tekflux_testkit::kube_api::TestApiServer;
use tekflux_testkit::load::{
    BenchArgs, ChildServer, Load, LoadPlan, MakeRequest, Round, Rounds, RunKind, measure_rounds,
    run_measured, serve_child,
};
use tekflux_testkit::machine::machine_load;

const NAMESPACE: &str = "cicd";
const EVENTS_TOKEN: &str = "bench-events-token";
const ARTIFACT_PUBLISHED: &str = "dev.cdevents.artifact.published.0.3.0";
const REGISTRY: &str = "registry.example.com/acme";
const SOURCE: &str = "https://github.com/acme/services";
const DIGEST: &str = "sha256:4d2c1e0b9a8f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d";
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// One release (and rule) per connection at the highest level.
const RELEASES: usize = 64;
/// The goal: release-changed's throughput at least this share of the floor's.
const GOAL: f64 = 0.70;
/// Rounds per server and level (a smoke run measures one): a single measurement moved by
/// ±20% between runs on two cores, so each figure is the median over the rounds.
const ROUNDS: usize = 5;

/// Each level's load: the loopback plan, with warm-up failures counted (a wrong answer in the
/// warm-up is still wrong).
fn load_plan(run: RunKind) -> LoadPlan {
    LoadPlan {
        count_warmup_failures: true,
        ..LoadPlan::loopback(run)
    }
}

const SERVE_FLOOR: &str = "--serve-floor";
const SERVE_RELEASE_CHANGED: &str = "--serve-release-changed";

/// Headers only the floor reads: which release to apply, with which tag and run (release-changed
/// reads the same facts from the event, and ignores these).
const RELEASE_HEADER: &str = "x-bench-release";
const TAG_HEADER: &str = "x-bench-tag";
const RUN_HEADER: &str = "x-bench-run";

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::from_env();
    match args.mode() {
        Some(SERVE_FLOOR) => serve(Served::Floor(args.kubeconfig()?)),
        Some(SERVE_RELEASE_CHANGED) => serve(Served::ReleaseChanged(args.kubeconfig()?)),
        _ => orchestrate(args.run_kind()),
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: the servers under test.

/// What a child process serves, with its cluster's kubeconfig.
enum Served {
    Floor(PathBuf),
    ReleaseChanged(PathBuf),
}

/// Serves `served` as the parent's [`ChildServer`].
fn serve(served: Served) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let routes = match served {
            Served::Floor(path) => floor_router(&path).await?,
            Served::ReleaseChanged(path) => release_changed_router(&path).await?,
        };
        serve_child(routes).await
    })
}

/// The bench config: one rule per release, each taking one image's tag into `image.tag`, from
/// any producer (so admission reads no run back), and an events token for the sender check.
fn release_config() -> anyhow::Result<Config> {
    let mut yaml =
        format!("namespace: {NAMESPACE}\nevents:\n  token: env:EVENTS_TOKEN\nreleases:\n");
    for release in 0..RELEASES {
        yaml.push_str(&format!(
            "  - image: {REGISTRY}/service-{release}\n    helmRelease: service-{release}\n    \
             set: image.tag\n    from: any\n"
        ));
    }
    let env = Env::new().with("EVENTS_TOKEN", EVENTS_TOKEN);
    Config::from_yaml(&yaml, "bench.yaml", &env)
        .map_err(|error| anyhow::anyhow!("invalid bench config: {error}"))
}

/// release-changed as its `main` builds it, except that the config comes from
/// [`release_config`] and the cluster from `kubeconfig`.
async fn release_changed_router(kubeconfig: &Path) -> anyhow::Result<axum::Router> {
    // As in production: `info` to stdout (the parent sends it to /dev/null). Each apply logs a
    // line at `info`, so that is part of what is measured.
    tekflux_common::telemetry::init(None, None, false);
    let config = release_config()?;
    let kube = tekflux_common::clients::kube_client_from_kubeconfig(kubeconfig, &config.kubernetes)
        .await?;
    let server = ServerState::new(ServerSettings::default());
    let state =
        AppState::watching_releases(&config, Some(kube), ReplySink::new(None)?, &server.metrics);
    // As a server does once its watch is up: every release decided on the watched copy.
    let listing = tokio::time::timeout(Duration::from_secs(10), async {
        while !state.watched_releases_listed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    listing
        .await
        .map_err(|_| anyhow::anyhow!("the bench's HelmReleases were not listed within 10 s"))?;
    server.readiness.set_ready();
    Ok(router(app(state), server))
}

/// The round-trip floor: what any event-to-HelmRelease server has to do per request at least,
/// with the same client and API server as release-changed, so that release-changed's own cost
/// is the difference. It reads the body and sends the apply patch release-changed sends for
/// the event (same fields, same field manager, forced), named by three headers. No sender
/// check, no parsing, no rules, no read of the release, no reply, no middleware, no tracing.
async fn floor_router(kubeconfig: &Path) -> anyhow::Result<axum::Router> {
    let settings = KubernetesSettings::default();
    let kube = tekflux_common::clients::kube_client_from_kubeconfig(kubeconfig, &settings).await?;
    let resource = api_resource(HelmReleaseApi::Flux);
    let floor = Arc::new(Floor {
        api: Api::namespaced_with(kube, NAMESPACE, &resource),
        params: PatchParams::apply(FIELD_MANAGER).force(),
        api_version: resource.api_version,
        kind: resource.kind,
    });
    let handler = move |headers: HeaderMap, body: Bytes| {
        let floor = floor.clone();
        async move { floor.apply(&headers, body).await }
    };
    Ok(axum::Router::new().route("/", axum::routing::post(handler)))
}

struct Floor {
    api: Api<DynamicObject>,
    params: PatchParams,
    api_version: String,
    kind: String,
}

impl Floor {
    async fn apply(&self, headers: &HeaderMap, body: Bytes) -> (http::StatusCode, String) {
        black_box(body);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
        };
        let name = header(RELEASE_HEADER);
        let tag = header(TAG_HEADER);
        let patch = json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "annotations": {
                    VERSION_ANNOTATION: tag,
                    EVENT_ANNOTATION: format!("{}#{}", header("ce-source"), header("ce-id")),
                    TIME_ANNOTATION: header("ce-time"),
                    RUN_ANNOTATION: header(RUN_HEADER),
                },
            },
            "spec": { "values": { "image": { "tag": tag } } },
        });
        match self
            .api
            .patch(name, &self.params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => (http::StatusCode::OK, format!("applied {name} {tag}")),
            Err(error) => (http::StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.

/// The tag of a connection's `sequence`-th request: increasing, and never the seeded `1.0.0`.
fn tag(sequence: u64) -> String {
    format!("1.0.{}", sequence + 1)
}

/// The HelmReleases as Flux's kustomize-controller would have applied them from Git, each
/// field owned by it, on tag `1.0.0`.
async fn seed_releases(api: &TestApiServer) -> anyhow::Result<()> {
    let resource = api_resource(HelmReleaseApi::Flux);
    // Flux's requests, not the server's under test.
    let releases: Api<DynamicObject> =
        Api::namespaced_with(api.setup_client(), NAMESPACE, &resource);
    for release in 0..RELEASES {
        let name = format!("service-{release}");
        let object = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": { "name": name, "namespace": NAMESPACE },
            "spec": {
                "interval": "10m",
                "chart": { "spec": {
                    "chart": name, "version": "0.1.0",
                    "sourceRef": { "kind": "HelmRepository", "name": "acme" },
                } },
                "values": {
                    "image": { "repository": format!("{REGISTRY}/{name}"), "tag": "1.0.0" },
                    "replicaCount": 2,
                },
            },
        });
        releases
            .patch(
                &name,
                &PatchParams::apply("kustomize-controller"),
                &Patch::Apply(&object),
            )
            .await?;
    }
    Ok(())
}

/// The data of the artifact published event run-complete sends for `run`, which built
/// `image:tag` (its own package URL code), as a CDEvent with its context.
fn artifact_published(image: &str, tag: &str, run: &str, time: &str) -> anyhow::Result<Value> {
    let image_url = format!("{image}:{tag}");
    let reference = ImageReference::parse(&image_url, DIGEST)?;
    Ok(json!({
        "context": {
            "specversion": "0.5.0",
            "id": format!("{run}-artifact"),
            "source": SOURCE,
            "type": ARTIFACT_PUBLISHED,
            "timestamp": time,
        },
        "subject": {
            "id": reference.purl(),
            "source": SOURCE,
            "type": "artifact",
            "content": {},
        },
        "customData": {
            "run": { "kind": "PipelineRun", "name": run, "namespace": NAMESPACE,
                     "uid": format!("{run}-uid") },
            "outcome": "succeeded",
            "archive": {
                "manifest": format!("s3://tekflux-archive/runs/{NAMESPACE}/{run}/manifest.json"),
                "workspaces": [{
                    "workspace": "shared-data",
                    "url": format!("s3://tekflux-archive/runs/{NAMESPACE}/{run}/shared-data.tar.zst"),
                    "sha256": "9f1c1b2e5d0c4a7b8e3f6a2d1c0b9e8f7a6d5c4b3a29180f7e6d5c4b3a291807",
                    "bytes": 18_342_112,
                }],
                "logs": 4,
            },
            "duplicate": false,
            "image": reference.pinned(),
            "imageUrl": image_url,
            "imageDigest": DIGEST,
        },
    }))
}

/// Artifact published events, in binary mode with the sender's token: connection `c` releases
/// `service-c`, each request a newer tag and time than the one before. `last` records the
/// sequence number each connection sent last, to check the releases afterwards.
fn release_request(level: usize, started: DateTime<Utc>, last: Arc<Vec<AtomicU64>>) -> MakeRequest {
    let authorization = format!("Bearer {EVENTS_TOKEN}");
    Arc::new(move |connection, sequence| {
        if let Some(slot) = last.get(connection) {
            slot.store(sequence, Ordering::Relaxed);
        }
        let release = format!("service-{connection}");
        let tag = tag(sequence);
        let run = format!("build-{level}-{connection}-{sequence}");
        // In the past (the future is refused), a millisecond apart on each connection.
        let time = (started + TimeDelta::milliseconds(sequence as i64 + 1))
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let body = artifact_published(&format!("{REGISTRY}/{release}"), &tag, &run, &time)
            .map(|data| Bytes::from(data.to_string()));
        let body = match body {
            Ok(body) => body,
            Err(error) => unreachable!("the bench's image references are valid: {error}"),
        };
        let builder = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::AUTHORIZATION, authorization.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("{run}-artifact"))
            .header("ce-type", ARTIFACT_PUBLISHED)
            .header("ce-source", SOURCE)
            .header("ce-subject", format!("{REGISTRY}/{release}:{tag}"))
            .header("ce-time", time)
            .header(RELEASE_HEADER, release)
            .header(TAG_HEADER, tag)
            .header(RUN_HEADER, format!("{NAMESPACE}/{run}"));
        match builder.body(Full::new(body)) {
            Ok(request) => request,
            Err(error) => unreachable!("the bench's request parts are valid: {error}"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The run.

/// One server at one concurrency level.
struct ServerRun {
    load: Load,
    peak_kib: u64,
    /// Applies by [`FIELD_MANAGER`] the API server answered 2xx.
    applies: usize,
    /// What the releases show that they should not, if anything.
    wrong: Vec<String>,
}

struct LevelFigures {
    concurrency: usize,
    floor: Rounds<ServerRun>,
    release_changed: Rounds<ServerRun>,
}

/// Applies answered 2xx over every round.
fn applies(server: &Rounds<ServerRun>) -> usize {
    server.runs.iter().map(|run| run.applies).sum()
}

impl Round for ServerRun {
    fn load(&self) -> &Load {
        &self.load
    }

    fn peak_kib(&self) -> u64 {
        self.peak_kib
    }
}

fn orchestrate(run: RunKind) -> anyhow::Result<()> {
    let machine_before = machine_load();
    let plan = load_plan(run);
    let runtime = tokio::runtime::Runtime::new()?;
    let rounds = if run.is_smoke() { 1 } else { ROUNDS };
    let levels = runtime.block_on(measure_servers(&plan, rounds))?;
    let machine_after = machine_load();
    report(&levels, &plan, rounds, &machine_before, &machine_after);
    // A smoke run stands in for a test, so a wrong result fails it; a benchmark run reports it
    // with its figures (above).
    if run.is_smoke()
        && let Some(problem) = wrong_results(&levels)
    {
        bail!("smoke run of the release-changed benchmark: {problem}");
    }
    Ok(())
}

async fn measure_servers(plan: &LoadPlan, rounds: usize) -> anyhow::Result<Vec<LevelFigures>> {
    // An hour back, so that no event is from the future however long the run takes.
    let started = Utc::now() - TimeDelta::hours(1);
    let modes = [SERVE_FLOOR, SERVE_RELEASE_CHANGED];
    let mut levels = Vec::new();
    for concurrency in CONCURRENCY {
        let [floor, release_changed] = measure_rounds(modes, concurrency, rounds, |mode| {
            measure_with_cluster(mode, concurrency, started, plan)
        })
        .await?;
        levels.push(LevelFigures {
            concurrency,
            floor,
            release_changed,
        });
    }
    Ok(levels)
}

/// Runs the events at `concurrency` against a fresh `mode` child process and a fresh test API
/// server holding the seeded releases, then checks what the releases hold.
async fn measure_with_cluster(
    mode: &str,
    concurrency: usize,
    started: DateTime<Utc>,
    plan: &LoadPlan,
) -> anyhow::Result<ServerRun> {
    let api = TestApiServer::start_with_schemas(None).await;
    seed_releases(&api).await?;
    let server = ChildServer::spawn_with_cluster(mode, &api).await?;
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..concurrency).map(|_| AtomicU64::new(0)).collect());
    let make = release_request(concurrency, started, last.clone());
    let load = run_measured(&server, concurrency, make, plan).await?;
    let peak_kib = server.peak_rss_kib()?;
    server.stop().await?;

    let applies = api
        .requests()
        .iter()
        .filter(|request| {
            request.method == "PATCH"
                && request.query.get("fieldManager").map(String::as_str) == Some(FIELD_MANAGER)
                && request
                    .status
                    .is_some_and(|status| (200..300).contains(&status))
        })
        .count();
    // How often release-changed read a release (no watched copy, or a refused apply) and how
    // often an apply decided on the copy was refused as outdated: both zero with a warm copy.
    let release_calls = |method: &str, status: u16| {
        api.requests()
            .iter()
            .filter(|request| {
                request.method == method
                    && request.path.contains("/helmreleases/")
                    && request.status == Some(status)
            })
            .count()
    };
    eprintln!(
        "  {mode} c={concurrency}: {} release reads, {} applies refused as outdated",
        release_calls("GET", 200),
        release_calls("PATCH", 409)
    );
    let mut wrong = Vec::new();
    let mut wrong_releases = 0;
    if applies != load.answered {
        wrong.push(format!(
            "{applies} applies for {} answered events",
            load.answered
        ));
    }
    for (connection, last) in last.iter().enumerate() {
        let name = format!("service-{connection}");
        let expected = tag(last.load(Ordering::Relaxed));
        let release = api
            .get_object(
                "helm.toolkit.fluxcd.io",
                "helmreleases",
                Some(NAMESPACE),
                &name,
            )
            .with_context(|| format!("HelmRelease {name} is gone"))?;
        let found = &release["spec"]["values"]["image"]["tag"];
        let recorded = &release["metadata"]["annotations"][VERSION_ANNOTATION];
        if found.as_str() != Some(expected.as_str()) || recorded.as_str() != Some(&expected) {
            wrong_releases += 1;
            // The first few say what went wrong; the count says how often.
            if wrong_releases <= 3 {
                wrong.push(format!(
                    "{name} holds tag {found} (annotation {recorded}), not the last one sent, \
                     {expected}"
                ));
            }
        }
        // Every other field stays Flux's.
        if release["spec"]["values"]["replicaCount"] != json!(2)
            || release["spec"]["interval"] != json!("10m")
        {
            wrong.push(format!("{name} lost fields it did not change"));
        }
    }
    if wrong_releases > 3 {
        wrong.push(format!(
            "{} more releases not on their last tag",
            wrong_releases - 3
        ));
    }
    Ok(ServerRun {
        load,
        peak_kib,
        applies,
        wrong,
    })
}

fn report(levels: &[LevelFigures], plan: &LoadPlan, rounds: usize, before: &str, after: &str) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let body = artifact_published(
        &format!("{REGISTRY}/service-0"),
        &tag(0),
        "build-1-0-0",
        "2026-12-06T12:00:00.001Z",
    )
    .map_or(0, |data| data.to_string().len());
    let mib = |kib: u64| kib as f64 / 1024.0;
    let percent = |ours: f64, floor: f64| 100.0 * ours / floor;
    println!("## release-changed benchmark\n");
    println!(
        "{cores} cores; at start: {before}; at end: {after}. Event body {body} bytes; \
         {plan}; each server is measured in {rounds} rounds per level, round-robin, and each \
         figure is the median over the rounds (peak RSS the highest; applies and failures \
         summed).\n"
    );

    println!("### Throughput and latency (loopback, keep-alive HTTP/1.1)\n");
    println!(
        "| concurrency | floor req/s | floor p50 / p99 ms | release-changed req/s | release-changed p50 / p99 ms | req/s ÷ floor | p50 ÷ floor | p99 ÷ floor | applies (floor / release-changed) | failures |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for level in levels {
        let (floor, ours) = (&level.floor, &level.release_changed);
        println!(
            "| {} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.0}% | {:.2}× | {:.2}× | {} / {} | {} |",
            level.concurrency,
            floor.per_second(),
            floor.percentile_ms(50.0),
            floor.percentile_ms(99.0),
            ours.per_second(),
            ours.percentile_ms(50.0),
            ours.percentile_ms(99.0),
            percent(ours.per_second(), floor.per_second()),
            ours.percentile_ms(50.0) / floor.percentile_ms(50.0),
            ours.percentile_ms(99.0) / floor.percentile_ms(99.0),
            applies(floor),
            applies(ours),
            floor.failures() + ours.failures(),
        );
    }
    for level in levels {
        for failure in [
            level.floor.first_failure(),
            level.release_changed.first_failure(),
        ]
        .into_iter()
        .flatten()
        {
            println!(
                "\nfirst failure at concurrency {}: {failure}",
                level.concurrency
            );
        }
    }

    println!("\n### CPU time per request (µs, user + system, warm-up included)\n");
    println!(
        "| concurrency | floor server | its load generator + test API server | release-changed server | its load generator + test API server | release-changed − floor | release-changed ÷ floor |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for level in levels {
        let (floor, ours) = (&level.floor, &level.release_changed);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× |",
            level.concurrency,
            floor.server_cpu_us(),
            floor.client_cpu_us(),
            ours.server_cpu_us(),
            ours.client_cpu_us(),
            ours.server_cpu_us() - floor.server_cpu_us(),
            ours.server_cpu_us() / floor.server_cpu_us(),
        );
    }

    println!("\n### Peak RSS (VmHWM of the server process, a fresh one per level)\n");
    println!("| concurrency | floor MiB | release-changed MiB | release-changed ÷ floor |");
    println!("|---:|---:|---:|---:|");
    for level in levels {
        println!(
            "| {} | {:.1} | {:.1} | {:.2}× |",
            level.concurrency,
            mib(level.floor.peak_kib()),
            mib(level.release_changed.peak_kib()),
            level.release_changed.peak_kib() as f64 / level.floor.peak_kib() as f64,
        );
    }

    println!("\n### Goal\n");
    println!("| goal | concurrency | measured | met |");
    println!("|---|---:|---:|:---:|");
    for level in levels {
        let share = level.release_changed.per_second() / level.floor.per_second();
        println!(
            "| throughput ≥ {:.0}% of the floor | {} | {:.0}% | {} |",
            GOAL * 100.0,
            level.concurrency,
            share * 100.0,
            if share >= GOAL { "yes" } else { "no" },
        );
    }
    if let Some(problem) = wrong_results(levels) {
        println!("\nWARNING: {problem}");
    }
}

/// Failed requests, or releases that do not hold what was sent, if any.
fn wrong_results(levels: &[LevelFigures]) -> Option<String> {
    let mut problems = Vec::new();
    for level in levels {
        for (server, rounds) in [
            ("floor", &level.floor),
            ("release-changed", &level.release_changed),
        ] {
            for run in &rounds.runs {
                if run.load.failures > 0 {
                    problems.push(format!(
                        "{server} at concurrency {}: {} failed requests, the first {}",
                        level.concurrency,
                        run.load.failures,
                        run.load.first_failure.as_deref().unwrap_or("?"),
                    ));
                }
                if run.load.answered == 0 {
                    problems.push(format!(
                        "{server} at concurrency {}: no request answered",
                        level.concurrency
                    ));
                }
                problems.extend(run.wrong.iter().map(|wrong| {
                    format!("{server} at concurrency {}: {wrong}", level.concurrency)
                }));
            }
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}
