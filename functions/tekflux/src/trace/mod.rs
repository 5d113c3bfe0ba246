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
use tekflux_run_complete::s3_client::S3Setup;

use crate::transfer::{EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE};

/// Tekton's label on a PipelineRun's TaskRuns, naming the PipelineRun.
const PIPELINE_RUN_LABEL: &str = "tekton.dev/pipelineRun";
/// Tekton's label on a PipelineRun's TaskRuns, naming the pipeline task.
const PIPELINE_TASK_LABEL: &str = "tekton.dev/pipelineTask";
/// Manifests read at once while searching the bucket.
const CONCURRENT_READS: usize = 8;
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
    let config = match crate::load_config(env, Sections::INSPECT) {
        Ok(config) => config,
        Err(code) => return code,
    };
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

mod bucket;
mod cluster;
mod releases;
mod render;

use bucket::*;
use cluster::*;
use releases::*;
use render::*;

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
