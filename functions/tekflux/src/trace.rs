//! `tekflux trace <sha | delivery id | run name>`: what happened to a push, end to end.
//!
//! Three places hold a part of the answer, each read when it can be:
//!
//! - the API server: the runs git-push created (found by their `tekflux.dev/*` labels and
//!   annotations, or by name), their `Succeeded` condition and times, a PipelineRun's TaskRuns;
//! - the bucket: each archived run's `manifest.json` (its archives and log keys), also for
//!   runs Tekton has pruned, which are then found by reading the newest manifests and matching
//!   the sha or delivery id they record;
//! - the HelmReleases: release-changed annotates each with the run and sha its version came
//!   from.
//!
//! Log keys are listed, never log contents. Nothing is written anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Serialize;
use serde_json::Value;
use tekflux_common::clients::kube_connection;
use tekflux_run_complete::s3_client::S3Setup;
use tekflux_common::config::{self, Config, Env, HelmReleaseApi, Sections, is_dns1123_label};
use tekflux_common::error::plain_chain;
use tekflux_common::run_contract::{
    DELIVERY_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, PATHS_ANNOTATION, REF_ANNOTATION,
    REPO_URL_ANNOTATION, RULE_LABEL, RunKind, SHA_KEY, TEKTON_GROUP, TEKTON_VERSION,
};
use tekflux_release_changed::helm_release::{
    EVENT_ANNOTATION, RUN_ANNOTATION, SHA_ANNOTATION, TIME_ANNOTATION, VERSION_ANNOTATION,
    api_resource,
};
use tekflux_run_complete::archive::S3Failure;
use tekflux_run_complete::manifest::Manifest;
use tekflux_run_complete::plan::RunLayout;

use crate::transfer::{EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE};

/// Tekton's label on a PipelineRun's TaskRuns, naming the PipelineRun.
const PIPELINE_RUN_LABEL: &str = "tekton.dev/pipelineRun";
/// Tekton's label on a PipelineRun's TaskRuns, naming the pipeline task.
const PIPELINE_TASK_LABEL: &str = "tekton.dev/pipelineTask";
/// Manifests read at once while searching the bucket.
const CONCURRENT_READS: usize = 8;
/// A manifest bigger than this is not read (they are a few KiB; this bounds memory).
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The shortest sha prefix matched, as `git` abbreviates.
const MIN_SHA_PREFIX: usize = 7;

/// Arguments of `tekflux trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// A commit sha (7 or more hex digits, a prefix matches), a delivery id, or a run's name.
    pub what: String,
    /// `text` for a terminal, `json` for scripts.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// A namespace to look for runs and releases in (repeatable). Default: the config's
    /// `namespace`, every repository rule's and every release's; in the bucket, every one.
    #[arg(short, long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// The most manifests read when searching the bucket for runs by sha or delivery id,
    /// newest first.
    #[arg(long, default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_manifests: u64,
}

/// How `trace` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

/// Everything found, as `--output json` prints it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    query: String,
    runs: Vec<RunTrace>,
    releases: Vec<ReleaseTrace>,
    sources: Sources,
    /// What could not be read, and why; the rest of the answer stands without it.
    missing: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sources {
    /// The API server read, and where its configuration came from.
    cluster: Option<String>,
    /// `s3://bucket/prefix` and the endpoint.
    bucket: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunTrace {
    kind: String,
    namespace: String,
    name: String,
    uid: Option<String>,
    /// Whether the API server still has the run; `None` when it could not be asked.
    in_cluster: Option<bool>,
    rule: Option<String>,
    repo: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// What a fan-out rule's `paths` captured (`{"api": "api-launcher"}`).
    paths: BTreeMap<String, String>,
    sha: Option<String>,
    delivery_id: Option<String>,
    /// `succeeded`, `failed`, `running` or `pending`.
    outcome: String,
    reason: Option<String>,
    message: Option<String>,
    created: Option<String>,
    start_time: Option<String>,
    completion_time: Option<String>,
    /// A PipelineRun's TaskRuns the API server still has.
    tasks: Vec<TaskTrace>,
    results: BTreeMap<String, String>,
    archive: Option<ArchiveTrace>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskTrace {
    name: String,
    pipeline_task: Option<String>,
    outcome: String,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveTrace {
    manifest: String,
    archived_at: String,
    workspaces: Vec<WorkspaceTrace>,
    skipped_workspaces: Vec<Value>,
    logs: Vec<LogTrace>,
    cleanup_failures: Vec<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkspaceTrace {
    workspace: String,
    url: String,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogTrace {
    task_run: String,
    step: Option<String>,
    url: Option<String>,
    bytes: Option<u64>,
    truncated: bool,
    missing: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReleaseTrace {
    api_version: String,
    namespace: String,
    name: String,
    version: Option<String>,
    event: Option<String>,
    time: Option<String>,
    /// `namespace/name` of the run the version came from.
    run: Option<String>,
    sha: Option<String>,
    /// Flux's `Ready` condition: `True`, `False` or `Unknown`, with its reason.
    ready: Option<String>,
    ready_message: Option<String>,
}

/// What the argument may be.
#[derive(Debug)]
struct Query {
    text: String,
    /// Lowercase, when it can be a sha or its prefix.
    sha: Option<String>,
}

impl Query {
    fn new(text: &str) -> Self {
        let text = text.trim().to_owned();
        let sha = (text.len() >= MIN_SHA_PREFIX && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| text.to_ascii_lowercase());
        Self { text, sha }
    }

    /// Whether it can be a run's name (a DNS-1123 subdomain).
    fn may_be_name(&self) -> bool {
        config::is_dns1123_subdomain(&self.text)
    }

    /// A full sha-1, which the sha label holds as it is.
    fn full_sha(&self) -> Option<&str> {
        self.sha.as_deref().filter(|sha| sha.len() == 40)
    }

    fn matches_sha(&self, sha: Option<&str>) -> bool {
        match (&self.sha, sha) {
            (Some(prefix), Some(sha)) => sha.to_ascii_lowercase().starts_with(prefix),
            _ => false,
        }
    }

    fn matches(&self, name: &str, sha: Option<&str>, delivery: Option<&str>) -> bool {
        name == self.text || delivery == Some(self.text.as_str()) || self.matches_sha(sha)
    }
}

/// Runs `tekflux trace`. Exit codes: 0 something found (`missing` says what could not be
/// read), 66 nothing found in what was read, 69 nothing found and a source could not be read,
/// 64 neither a cluster nor a bucket is configured.
pub fn trace(env: &Env, args: &TraceArgs) -> ExitCode {
    // No secrets: a person tracing a push needs the cluster and the bucket, not webhook keys.
    let config = config::load_or_exit(env, Sections::INSPECT);
    let query = Query::new(&args.what);
    if query.text.is_empty() {
        eprintln!("tekflux trace: name a sha, a delivery id or a run");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(bad) = args.namespaces.iter().find(|ns| !is_dns1123_label(ns)) {
        eprintln!("tekflux trace: --namespace {bad:?} is not a namespace name");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tekflux trace: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (trace, reachable) = runtime.block_on(collect(&config, env, args, query));
    match args.output {
        Format::Json => match serde_json::to_string_pretty(&trace) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("tekflux trace: cannot print as JSON: {error}");
                return ExitCode::FAILURE;
            }
        },
        Format::Text => print!("{}", render_text(&trace)),
    }
    if !trace.runs.is_empty() || !trace.releases.is_empty() {
        ExitCode::SUCCESS
    } else if !reachable.cluster && !reachable.bucket && !reachable.tried {
        ExitCode::from(EXIT_USAGE)
    } else if trace.missing.is_empty() {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::from(EXIT_UNAVAILABLE)
    }
}

/// Which sources were usable.
#[derive(Debug, Default)]
struct Reachable {
    cluster: bool,
    bucket: bool,
    /// A source was configured but failed.
    tried: bool,
}

async fn collect(config: &Config, env: &Env, args: &TraceArgs, query: Query) -> (Trace, Reachable) {
    let mut trace = Trace {
        query: query.text.clone(),
        ..Trace::default()
    };
    let mut reachable = Reachable::default();
    let (run_namespaces, release_namespaces) = namespaces(config, &args.namespaces);

    // The cluster: runs and, later, releases.
    let kube = match kube_connection(&config.kubernetes).await {
        Ok(connection) => {
            trace.sources.cluster = Some(format!("{} ({})", connection.server, connection.origin));
            Some(connection.client)
        }
        Err(error) => {
            trace.missing.push(format!(
                "cluster: {}; runs still in the cluster and releases are not shown",
                plain_chain(&error)
            ));
            None
        }
    };
    let mut runs: BTreeMap<(String, String), RunTrace> = BTreeMap::new();
    let mut kube = kube;
    if let Some(client) = &kube {
        match cluster_runs(client, &run_namespaces, &query, &mut trace.missing).await {
            Ok(found) => {
                reachable.cluster = true;
                for run in found {
                    runs.insert((run.namespace.clone(), run.name.clone()), run);
                }
            }
            Err(message) => {
                reachable.tried = true;
                trace.missing.push(format!(
                    "cluster: {message}; runs still in the cluster and releases are not shown"
                ));
                kube = None;
            }
        }
    }

    // The bucket: archives of the runs found, and runs the cluster no longer has.
    match bucket(config, env).await {
        Err(message) => {
            reachable.tried |= config.storage.bucket.is_some();
            trace.missing.push(message);
        }
        Ok(store) => {
            trace.sources.bucket = Some(store.describe());
            match archived_runs(&store, &query, &runs, args, &mut trace.missing).await {
                Ok(archived) => {
                    reachable.bucket = true;
                    for (manifest_url, manifest) in archived {
                        let key = (manifest.run.namespace.clone(), manifest.run.name.clone());
                        // Pruned only if the cluster was read where the run was.
                        let asked =
                            kube.is_some() && run_namespaces.contains(&manifest.run.namespace);
                        let entry = runs
                            .entry(key)
                            .or_insert_with(|| from_manifest(&manifest, asked));
                        if entry.uid.is_some() && entry.uid.as_deref() != Some(&*manifest.run.uid) {
                            // Same name, another run: its archive is not this run's.
                            continue;
                        }
                        entry.archive = Some(archive_trace(&store, &manifest_url, &manifest));
                    }
                }
                Err(message) => {
                    reachable.tried = true;
                    trace.missing.push(message);
                }
            }
        }
    }

    // Releases: those whose version came from one of the runs, or from the sha.
    if let Some(client) = &kube {
        let names: BTreeSet<String> = runs
            .values()
            .map(|run| format!("{}/{}", run.namespace, run.name))
            .collect();
        let shas: BTreeSet<String> = runs.values().filter_map(|run| run.sha.clone()).collect();
        trace.releases = releases(
            client,
            &release_namespaces,
            config,
            &query,
            &names,
            &shas,
            &mut trace.missing,
        )
        .await;
    }
    trace.runs = runs.into_values().collect();
    // Oldest first, the order things happened in (a pruned run has no creation time).
    trace.runs.sort_by(|a, b| {
        let when = |run: &RunTrace| run.start_time.clone().or_else(|| run.created.clone());
        (when(a), &a.name).cmp(&(when(b), &b.name))
    });
    (trace, reachable)
}

/// The namespaces runs and releases are looked for in: `--namespace`, else the config's.
fn namespaces(config: &Config, given: &[String]) -> (Vec<String>, Vec<String>) {
    if !given.is_empty() {
        let set: BTreeSet<String> = given.iter().cloned().collect();
        let list: Vec<String> = set.into_iter().collect();
        return (list.clone(), list);
    }
    let mut runs = BTreeSet::from([config.namespace.clone()]);
    for rule in &config.repositories {
        runs.insert(rule.run_namespace(&config.namespace).to_owned());
    }
    let mut releases = BTreeSet::from([config.namespace.clone()]);
    for rule in &config.releases {
        releases.insert(rule.helm_release_ref(&config.namespace).0.to_owned());
    }
    let valid = |set: BTreeSet<String>| -> Vec<String> {
        set.into_iter().filter(|ns| is_dns1123_label(ns)).collect()
    };
    (valid(runs), valid(releases))
}

fn tekton_resource(kind: RunKind) -> ApiResource {
    let gvk = GroupVersionKind::gvk(TEKTON_GROUP, TEKTON_VERSION, kind.as_str());
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

/// Whether a Kubernetes error is about one namespace or kind (forbidden there, no such API)
/// rather than the cluster as a whole.
fn is_local(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) if matches!(status.code, 403 | 404) => Some(status.code),
        _ => None,
    }
}

/// The runs of `query` the API server has. `Err` when the cluster cannot be read at all.
async fn cluster_runs(
    client: &kube::Client,
    namespaces: &[String],
    query: &Query,
    missing: &mut Vec<String>,
) -> Result<Vec<RunTrace>, String> {
    let mut selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    if let Some(sha) = query.full_sha() {
        let _ = write!(selector, ",{SHA_KEY}={sha}");
    }
    let mut found: BTreeMap<(String, String), Value> = BTreeMap::new();
    for namespace in namespaces {
        for kind in [RunKind::PipelineRun, RunKind::TaskRun] {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &tekton_resource(kind));
            let mut objects = Vec::new();
            if query.may_be_name() {
                match api.get_opt(&query.text).await {
                    Ok(Some(object)) => objects.push(object),
                    Ok(None) => {}
                    Err(error) => {
                        local_or_fail(&error, kind, namespace, missing)?;
                        continue;
                    }
                }
            }
            match api.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => objects.extend(list.items),
                Err(error) => {
                    local_or_fail(&error, kind, namespace, missing)?;
                    continue;
                }
            }
            for object in objects {
                let Ok(mut value) = serde_json::to_value(&object) else {
                    continue;
                };
                // Lists leave kind and apiVersion off their items.
                value["kind"] = Value::from(kind.as_str());
                let metadata = &value["metadata"];
                let name = metadata["name"].as_str().unwrap_or_default();
                let annotations = &metadata["annotations"];
                let child = metadata["labels"][PIPELINE_RUN_LABEL].is_string();
                let matches = query.matches(
                    name,
                    annotations[SHA_KEY].as_str(),
                    annotations[DELIVERY_ANNOTATION].as_str(),
                );
                // A PipelineRun's TaskRuns carry its labels and annotations; they are shown
                // under it, not as runs of their own (unless named).
                if matches && (!child || name == query.text) {
                    found.insert((namespace.clone(), name.to_owned()), value);
                }
            }
        }
    }
    let mut runs = Vec::new();
    for ((namespace, name), object) in found {
        let mut run = from_object(&object);
        run.in_cluster = Some(true);
        if run.kind == RunKind::PipelineRun.as_str() {
            run.tasks = task_runs(client, &namespace, &name, missing).await?;
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Records a forbidden namespace or a missing API in `missing`; any other error fails the
/// whole cluster part (unreachable, unauthenticated).
fn local_or_fail(
    error: &kube::Error,
    kind: RunKind,
    namespace: &str,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    match is_local(error) {
        Some(403) => {
            missing.push(format!(
                "{}s in {namespace}: forbidden ({})",
                kind.as_str(),
                plain_chain(error)
            ));
            Ok(())
        }
        Some(_) => {
            missing.push(format!(
                "{}s in {namespace}: the API server has no {TEKTON_GROUP}/{TEKTON_VERSION} {} \
                 (is Tekton installed?)",
                kind.as_str(),
                kind.as_str()
            ));
            Ok(())
        }
        None => Err(plain_chain(error)),
    }
}

/// The TaskRuns of the PipelineRun `namespace/name`, by Tekton's label.
async fn task_runs(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    missing: &mut Vec<String>,
) -> Result<Vec<TaskTrace>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &tekton_resource(RunKind::TaskRun),
    );
    let list = match api
        .list(&ListParams::default().labels(&format!("{PIPELINE_RUN_LABEL}={name}")))
        .await
    {
        Ok(list) => list,
        Err(error) => {
            local_or_fail(&error, RunKind::TaskRun, namespace, missing)?;
            return Ok(Vec::new());
        }
    };
    let mut tasks: Vec<(Option<String>, TaskTrace)> = list
        .items
        .iter()
        .filter_map(|object| serde_json::to_value(object).ok())
        .map(|value| {
            let (outcome, reason, _) = succeeded(&value);
            let metadata = &value["metadata"];
            let started = value["status"]["startTime"].as_str().map(str::to_owned);
            (
                started,
                TaskTrace {
                    name: metadata["name"].as_str().unwrap_or_default().to_owned(),
                    pipeline_task: metadata["labels"][PIPELINE_TASK_LABEL]
                        .as_str()
                        .map(str::to_owned),
                    outcome,
                    reason,
                },
            )
        })
        .collect();
    tasks.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
    Ok(tasks.into_iter().map(|(_, task)| task).collect())
}

/// The `Succeeded` condition as an outcome word, its reason and message.
fn succeeded(object: &Value) -> (String, Option<String>, Option<String>) {
    let condition = object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Succeeded");
    let text = |value: &Value| value.as_str().map(str::to_owned);
    match condition {
        None => ("pending".to_owned(), None, None),
        Some(condition) => {
            let outcome = match condition["status"].as_str() {
                Some("True") => "succeeded",
                Some("False") => "failed",
                _ => "running",
            };
            (
                outcome.to_owned(),
                text(&condition["reason"]),
                text(&condition["message"]),
            )
        }
    }
}

/// A run as the API server has it.
fn from_object(object: &Value) -> RunTrace {
    let metadata = &object["metadata"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let annotations = &metadata["annotations"];
    let (outcome, reason, message) = succeeded(object);
    // v1 runs hold `results` (TaskRun) or `results` (PipelineRun) as name/value pairs.
    let results = object["status"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|result| {
            let name = result["name"].as_str()?;
            let value = match &result["value"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            Some((name.to_owned(), value))
        })
        .collect();
    RunTrace {
        kind: text(&object["kind"]).unwrap_or_default(),
        namespace: text(&metadata["namespace"]).unwrap_or_default(),
        name: text(&metadata["name"]).unwrap_or_default(),
        uid: text(&metadata["uid"]),
        in_cluster: Some(true),
        rule: text(&metadata["labels"][RULE_LABEL]),
        repo: text(&annotations[REPO_URL_ANNOTATION]),
        git_ref: text(&annotations[REF_ANNOTATION]),
        paths: annotations[PATHS_ANNOTATION]
            .as_str()
            .and_then(|paths| serde_json::from_str(paths).ok())
            .unwrap_or_default(),
        sha: text(&annotations[SHA_KEY]),
        delivery_id: text(&annotations[DELIVERY_ANNOTATION]),
        outcome,
        reason,
        message,
        created: text(&metadata["creationTimestamp"]),
        start_time: text(&object["status"]["startTime"]),
        completion_time: text(&object["status"]["completionTime"]),
        tasks: Vec::new(),
        results,
        archive: None,
    }
}

/// A run known only from its manifest. `cluster_read`: the API server was asked and does not
/// have it (pruned); otherwise nobody knows.
fn from_manifest(manifest: &Manifest, cluster_read: bool) -> RunTrace {
    let run = &manifest.run;
    RunTrace {
        kind: run.kind.clone(),
        namespace: run.namespace.clone(),
        name: run.name.clone(),
        uid: Some(run.uid.clone()),
        in_cluster: cluster_read.then_some(false),
        rule: manifest.rule.clone(),
        repo: manifest.repo.clone(),
        git_ref: manifest.git_ref.clone(),
        paths: manifest.paths.clone(),
        sha: manifest.sha.clone(),
        delivery_id: manifest.delivery_id.clone(),
        outcome: run.outcome.clone(),
        reason: run.reason.clone(),
        message: None,
        created: None,
        start_time: run.start_time.clone(),
        completion_time: run.completion_time.clone(),
        tasks: Vec::new(),
        results: manifest.results.clone(),
        archive: None,
    }
}

/// The bucket, once its settings check out.
struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl Store {
    fn describe(&self) -> String {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        format!("s3://{}/{prefix} at {}", self.bucket, self.endpoint)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

async fn bucket(config: &Config, env: &Env) -> Result<Store, String> {
    let Some(bucket) = config.storage.bucket.clone() else {
        return Err(
            "bucket: storage.bucket is not set (TEKFLUX_S3_BUCKET); archives, logs and \
                    runs Tekton pruned are not shown"
                .to_owned(),
        );
    };
    let setup = S3Setup::load(&config.storage, env).await;
    let endpoint = setup.describe_endpoint();
    if let Err(error) = setup.check() {
        return Err(format!(
            "bucket: cannot read s3://{bucket} at {endpoint}: {error}; archives, logs and runs \
             Tekton pruned are not shown"
        ));
    }
    Ok(Store {
        client: setup.client(),
        bucket,
        prefix: config.storage.prefix.trim_matches('/').to_owned(),
        endpoint,
    })
}

/// The manifests of the runs found in the cluster, and of the runs of `query` the bucket has
/// that the cluster does not (found by name from the keys, else by reading the newest
/// `--max-manifests` manifests). `Err` when the bucket cannot be listed.
async fn archived_runs(
    store: &Store,
    query: &Query,
    known: &BTreeMap<(String, String), RunTrace>,
    args: &TraceArgs,
    missing: &mut Vec<String>,
) -> Result<Vec<(String, Manifest)>, String> {
    let mut keys: BTreeSet<String> = known
        .keys()
        .map(|(namespace, name)| RunLayout::new(&store.prefix, namespace, name).manifest())
        .collect();
    let listed = list_manifests(store, &args.namespaces).await?;
    // A run's name is found from the keys alone; only a sha or delivery id needs the
    // manifests read.
    let named = known.keys().any(|(_, name)| *name == query.text)
        || listed.iter().any(|(_, name, _)| *name == query.text);
    let mut search = Vec::new();
    for (key, name, modified) in listed {
        if keys.contains(&key) {
            continue;
        }
        if name == query.text {
            keys.insert(key);
        } else if !named {
            search.push((modified, key));
        }
    }
    // Newest first: a push being traced is usually recent.
    search.sort_by_key(|candidate| std::cmp::Reverse(candidate.0));
    let limit = usize::try_from(args.max_manifests).unwrap_or(usize::MAX);
    if search.len() > limit {
        missing.push(format!(
            "bucket: searched the newest {limit} of {} run manifests; older runs of this push \
             are not shown (--max-manifests)",
            search.len()
        ));
        search.truncate(limit);
    }
    let direct = keys.len();
    let reads = keys
        .into_iter()
        .chain(search.into_iter().map(|(_, key)| key))
        .enumerate();
    let mut results: Vec<(usize, String, Result<Option<Manifest>, String>)> =
        futures::stream::iter(reads)
            .map(|(index, key)| async move {
                let manifest = read_manifest(store, &key).await;
                (index, key, manifest)
            })
            .buffer_unordered(CONCURRENT_READS)
            .collect()
            .await;
    results.sort_by_key(|(index, _, _)| *index);
    let mut found = Vec::new();
    let mut failed = 0;
    for (index, key, manifest) in results {
        match manifest {
            Ok(Some(manifest)) => {
                // Read for a known run or by name, or matched by what it records.
                let matched = index < direct
                    || query.matches(
                        &manifest.run.name,
                        manifest.sha.as_deref(),
                        manifest.delivery_id.as_deref(),
                    );
                if matched {
                    found.push((store.url(&key), manifest));
                }
            }
            Ok(None) => {}
            Err(message) => {
                failed += 1;
                if failed <= 3 {
                    missing.push(format!("bucket: {message}"));
                }
            }
        }
    }
    if failed > 3 {
        missing.push(format!(
            "bucket: {} more manifests could not be read",
            failed - 3
        ));
    }
    Ok(found)
}

/// Every `<prefix>/<namespace>/<run>/manifest.json` in the bucket (in `namespaces` when some
/// are given), with its run's name and last-modified time (seconds).
async fn list_manifests(
    store: &Store,
    namespaces: &[String],
) -> Result<Vec<(String, String, i64)>, String> {
    let folder = if store.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", store.prefix)
    };
    let folders: Vec<String> = if namespaces.is_empty() {
        vec![folder.clone()]
    } else {
        namespaces
            .iter()
            .map(|ns| format!("{folder}{ns}/"))
            .collect()
    };
    let mut manifests = Vec::new();
    for listed in folders {
        let mut pages = store
            .client
            .list_objects_v2()
            .bucket(&store.bucket)
            .prefix(&listed)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| {
                format!(
                    "bucket: {}; archives, logs and runs Tekton pruned are not shown",
                    S3Failure::from_sdk("ListObjectsV2", &store.bucket, &listed, &error)
                        .at(&store.endpoint)
                )
            })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(rest) = key.strip_prefix(&folder) else {
                    continue;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                // Dead letters and other folders start with `_`; namespaces never do.
                if let [namespace, name, "manifest.json"] = parts.as_slice()
                    && !namespace.starts_with('_')
                {
                    let modified = object.last_modified().map_or(0, |time| time.secs());
                    manifests.push((key.to_owned(), (*name).to_owned(), modified));
                }
            }
        }
    }
    Ok(manifests)
}

/// One manifest; `None` when it is gone or not a manifest of this kind.
async fn read_manifest(store: &Store, key: &str) -> Result<Option<Manifest>, String> {
    let object = match store
        .client
        .get_object()
        .bucket(&store.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(object) => object,
        Err(error)
            if error
                .as_service_error()
                .is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key) =>
        {
            return Ok(None);
        }
        Err(error) => {
            return Err(S3Failure::from_sdk("GetObject", &store.bucket, key, &error)
                .at(&store.endpoint)
                .to_string());
        }
    };
    if object
        .content_length()
        .is_some_and(|length| usize::try_from(length).map_or(true, |n| n > MAX_MANIFEST_BYTES))
    {
        return Err(format!(
            "{} is over {} MiB: not a run manifest",
            store.url(key),
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ));
    }
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|error| format!("reading {} failed: {error}", store.url(key)))?
        .into_bytes();
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(manifest) if manifest.kind == tekflux_run_complete::manifest::MANIFEST_KIND => {
            Ok(Some(manifest))
        }
        _ => Ok(None),
    }
}

fn archive_trace(store: &Store, manifest_url: &str, manifest: &Manifest) -> ArchiveTrace {
    ArchiveTrace {
        manifest: manifest_url.to_owned(),
        archived_at: manifest.archived_at.clone(),
        workspaces: manifest
            .workspaces
            .iter()
            .map(|workspace| WorkspaceTrace {
                workspace: workspace.workspace.clone(),
                url: store.url(&workspace.key),
                bytes: workspace.bytes,
                sha256: workspace.sha256.clone(),
            })
            .collect(),
        skipped_workspaces: manifest
            .skipped_workspaces
            .iter()
            .filter_map(|skipped| serde_json::to_value(skipped).ok())
            .collect(),
        logs: manifest
            .logs
            .iter()
            .map(|log| LogTrace {
                task_run: log.task_run.clone(),
                step: log.step.clone(),
                url: log.key.as_deref().map(|key| store.url(key)),
                bytes: log.bytes,
                truncated: log.truncated,
                missing: log.missing.clone(),
            })
            .collect(),
        cleanup_failures: manifest
            .cleanup_failures
            .iter()
            .filter_map(|failure| serde_json::to_value(failure).ok())
            .collect(),
    }
}

/// The HelmReleases (of both APIs) in `namespaces` whose current version came from one of
/// `runs`, or from the sha of one of them or the query.
async fn releases(
    client: &kube::Client,
    namespaces: &[String],
    config: &Config,
    query: &Query,
    runs: &BTreeSet<String>,
    shas: &BTreeSet<String>,
    missing: &mut Vec<String>,
) -> Vec<ReleaseTrace> {
    let mut apis = vec![HelmReleaseApi::Flux, HelmReleaseApi::HelmOperator];
    // The APIs the release rules use first; the other is still looked at (a rule may be gone).
    apis.sort_by_key(|api| !config.releases.iter().any(|rule| rule.api == *api));
    let mut found = Vec::new();
    for api in apis {
        let resource = api_resource(api);
        for namespace in namespaces {
            let list: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let items = match list.list(&ListParams::default()).await {
                Ok(list) => list.items,
                // That API is not installed: nothing of it to show.
                Err(kube::Error::Api(status)) if status.code == 404 => break,
                Err(error) => {
                    missing.push(format!(
                        "HelmReleases ({}) in {namespace}: {}",
                        resource.api_version,
                        plain_chain(&error)
                    ));
                    continue;
                }
            };
            for object in items {
                let Ok(value) = serde_json::to_value(&object) else {
                    continue;
                };
                let annotations = &value["metadata"]["annotations"];
                let text = |name: &str| annotations[name].as_str().map(str::to_owned);
                let run = text(RUN_ANNOTATION);
                let sha = text(SHA_ANNOTATION);
                let from_run = run.as_ref().is_some_and(|run| runs.contains(run));
                let from_sha = sha
                    .as_ref()
                    .is_some_and(|sha| shas.contains(sha) || query.matches_sha(Some(sha.as_str())));
                if !(from_run || from_sha) {
                    continue;
                }
                let ready = value["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|condition| condition["type"] == "Ready");
                found.push(ReleaseTrace {
                    api_version: resource.api_version.clone(),
                    namespace: namespace.clone(),
                    name: value["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    version: text(VERSION_ANNOTATION),
                    event: text(EVENT_ANNOTATION),
                    time: text(TIME_ANNOTATION),
                    run,
                    sha,
                    ready: ready.map(|condition| {
                        let status = condition["status"].as_str().unwrap_or("Unknown");
                        match condition["reason"].as_str() {
                            Some(reason) => format!("{status} ({reason})"),
                            None => status.to_owned(),
                        }
                    }),
                    ready_message: ready
                        .and_then(|condition| condition["message"].as_str())
                        .map(str::to_owned),
                });
            }
        }
    }
    found
}

/// The human-readable report.
fn render_text(trace: &Trace) -> String {
    let mut out = String::new();
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "{}: {}, {}",
        trace.query,
        count(trace.runs.len(), "run"),
        count(trace.releases.len(), "release")
    );
    for run in &trace.runs {
        let _ = writeln!(out);
        let place = match run.in_cluster {
            Some(true) => "",
            Some(false) => "  (pruned from the cluster; from its manifest)",
            None => "  (from its manifest; the cluster was not read)",
        };
        let reason = run
            .reason
            .as_deref()
            .filter(|reason| !reason.eq_ignore_ascii_case(&run.outcome))
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {}/{}  {}{reason}{place}",
            run.kind, run.namespace, run.name, run.outcome
        );
        let mut facts = Vec::new();
        for (label, value) in [
            ("rule", &run.rule),
            ("repo", &run.repo),
            ("ref", &run.git_ref),
            ("sha", &run.sha),
            ("delivery", &run.delivery_id),
        ] {
            if let Some(value) = value {
                facts.push(format!("{label} {value}"));
            }
        }
        for (name, value) in &run.paths {
            facts.push(format!("paths.{name} {value}"));
        }
        if !facts.is_empty() {
            let _ = writeln!(out, "  {}", facts.join("  "));
        }
        if let Some(message) = &run.message
            && run.outcome == "failed"
        {
            let _ = writeln!(out, "  message: {message}");
        }
        let mut times = Vec::new();
        if let Some(start) = &run.start_time {
            times.push(format!("started {start}"));
        }
        if let Some(end) = &run.completion_time {
            let took = took(run.start_time.as_deref(), end)
                .map(|took| format!(" ({took})"))
                .unwrap_or_default();
            times.push(format!("finished {end}{took}"));
        }
        if !times.is_empty() {
            let _ = writeln!(out, "  {}", times.join("  "));
        }
        if !run.tasks.is_empty() {
            let tasks: Vec<String> = run
                .tasks
                .iter()
                .map(|task| {
                    let name = task.pipeline_task.as_deref().unwrap_or(&task.name);
                    match &task.reason {
                        Some(reason) if task.outcome != "succeeded" => {
                            format!("{name} {} ({reason})", task.outcome)
                        }
                        _ => format!("{name} {}", task.outcome),
                    }
                })
                .collect();
            let _ = writeln!(out, "  tasks: {}", tasks.join(", "));
        }
        for (name, value) in &run.results {
            let _ = writeln!(out, "  result {name} = {value}");
        }
        match &run.archive {
            None => {
                let _ = writeln!(out, "  archive: none found");
            }
            Some(archive) => {
                let _ = writeln!(
                    out,
                    "  archive: {} (archived {})",
                    archive.manifest, archive.archived_at
                );
                for workspace in &archive.workspaces {
                    let _ = writeln!(
                        out,
                        "    workspace {}  {}  {}  sha256 {}",
                        workspace.workspace,
                        workspace.url,
                        size(workspace.bytes),
                        workspace.sha256
                    );
                }
                for skipped in &archive.skipped_workspaces {
                    let _ = writeln!(
                        out,
                        "    workspace {} not archived: {}",
                        skipped["workspace"].as_str().unwrap_or("?"),
                        skipped["reason"].as_str().unwrap_or("?")
                    );
                }
                for log in &archive.logs {
                    let step = log
                        .step
                        .as_deref()
                        .map(|step| format!("{}/{step}", log.task_run))
                        .unwrap_or_else(|| log.task_run.clone());
                    match (&log.url, &log.missing) {
                        (Some(url), _) => {
                            let _ = writeln!(
                                out,
                                "    log {step}  {url}  {}{}",
                                log.bytes.map(size).unwrap_or_default(),
                                if log.truncated { "  (truncated)" } else { "" }
                            );
                        }
                        (None, missing) => {
                            let _ = writeln!(
                                out,
                                "    log {step} missing: {}",
                                missing.as_deref().unwrap_or("not collected")
                            );
                        }
                    }
                }
                for failure in &archive.cleanup_failures {
                    let _ = writeln!(
                        out,
                        "    not freed on the claim: {} ({})",
                        failure["dir"].as_str().unwrap_or("?"),
                        failure["error"].as_str().unwrap_or("?")
                    );
                }
            }
        }
    }
    if !trace.releases.is_empty() {
        let _ = writeln!(out, "\nReleases");
        for release in &trace.releases {
            let _ = writeln!(
                out,
                "  HelmRelease {}/{} ({})  version {}",
                release.namespace,
                release.name,
                release.api_version,
                release.version.as_deref().unwrap_or("?")
            );
            let mut facts = Vec::new();
            if let Some(run) = &release.run {
                facts.push(format!("from run {run}"));
            }
            if let Some(sha) = &release.sha {
                facts.push(format!("sha {sha}"));
            }
            if let Some(time) = &release.time {
                facts.push(format!("at {time}"));
            }
            if let Some(event) = &release.event {
                facts.push(format!("event {event}"));
            }
            if let Some(ready) = &release.ready {
                facts.push(format!("Ready {ready}"));
            }
            if !facts.is_empty() {
                let _ = writeln!(out, "    {}", facts.join("  "));
            }
        }
    }
    let _ = writeln!(out);
    let source = |what: &str, value: &Option<String>| match value {
        Some(value) => format!("{what}: {value}"),
        None => format!("{what}: not read"),
    };
    let _ = writeln!(out, "{}", source("cluster", &trace.sources.cluster));
    let _ = writeln!(out, "{}", source("bucket", &trace.sources.bucket));
    for missing in &trace.missing {
        let _ = writeln!(out, "missing: {missing}");
    }
    out
}

/// `1m 12s` between two RFC 3339 times.
fn took(start: Option<&str>, end: &str) -> Option<String> {
    let start = chrono::DateTime::parse_from_rfc3339(start?).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    let seconds = (end - start).num_seconds();
    (seconds >= 0).then(|| match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, (seconds % 3600) / 60),
    })
}

fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let bytes_f = bytes as f64;
    if bytes_f < KIB {
        format!("{bytes} B")
    } else if bytes_f < KIB * KIB {
        format!("{:.1} KiB", bytes_f / KIB)
    } else if bytes_f < KIB * KIB * KIB {
        format!("{:.1} MiB", bytes_f / (KIB * KIB))
    } else {
        format!("{:.1} GiB", bytes_f / (KIB * KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_match_names_delivery_ids_and_sha_prefixes() {
        let sha = "3f2a9c1d0e4b5a6978812233445566778899aabb";
        let query = Query::new("3F2A9C1");
        assert!(query.matches("other", Some(sha), None));
        assert!(query.full_sha().is_none());
        let query = Query::new("3f2a9c");
        assert!(
            !query.matches("other", Some(sha), None),
            "too short for a sha"
        );
        let query = Query::new("72d3c0a8-delivery");
        assert!(query.matches("other", Some(sha), Some("72d3c0a8-delivery")));
        assert!(!query.matches("other", Some(sha), Some("another")));
        assert!(Query::new("api-build-1").matches("api-build-1", None, None));
        assert_eq!(Query::new(sha).full_sha(), Some(sha));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(
            took(Some("2026-12-06T10:00:00Z"), "2026-12-06T10:04:12Z").as_deref(),
            Some("4m 12s")
        );
        assert_eq!(took(None, "2026-12-06T10:04:12Z"), None);
        assert_eq!(size(2048), "2.0 KiB");
    }
}
