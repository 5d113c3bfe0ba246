//! The bucket's part of a trace: archived runs' manifests, also for runs Tekton has pruned.

use tekflux_run_complete::manifest::{StoredManifest, read_stored};

use super::*;

/// A run known only from its manifest. `cluster_read`: the API server was asked and does not
/// have it (pruned); otherwise nobody knows.
pub(super) fn from_manifest(manifest: &Manifest, cluster_read: bool) -> RunTrace {
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
pub(super) struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl Store {
    pub(super) fn describe(&self) -> String {
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

pub(super) async fn bucket(config: &Config, env: &Env) -> Result<Store, String> {
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
pub(super) async fn archived_runs(
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
pub(super) async fn list_manifests(
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
pub(super) async fn read_manifest(store: &Store, key: &str) -> Result<Option<Manifest>, String> {
    match read_stored(&store.client, &store.bucket, key).await {
        Ok(StoredManifest::Found(manifest)) => Ok(Some(*manifest)),
        Ok(StoredManifest::Missing | StoredManifest::Unreadable(_)) => Ok(None),
        Err(failure) => Err(failure.at(&store.endpoint).to_string()),
    }
}

pub(super) fn archive_trace(
    store: &Store,
    manifest_url: &str,
    manifest: &Manifest,
) -> ArchiveTrace {
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
