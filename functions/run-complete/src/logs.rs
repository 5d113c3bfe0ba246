//! Copying a finished run's step logs from the pods/log API to the bucket.
//!
//! Each step container's log is streamed to a temporary file (hashed on the way) and uploaded
//! from there, so a large log never sits in memory. At most [`LogTarget::max_bytes`] of a log
//! are kept (the API server is asked for no more, and the copy stops there): a longer log is
//! stored cut and marked `truncated` in the manifest, never a failure. A TaskRun or pod that is already gone (runs
//! get pruned) is recorded in the manifest, not treated as an error: there is nothing a retry
//! could fetch.

use std::collections::BTreeMap;
use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, LogParams};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tekflux_common::Error;

use crate::plan::RunLayout;
use crate::tekton::{FinishedRun, RunKind};
use crate::verify::run_resource;

/// One step log in the manifest: where it went, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// The TaskRun.
    pub task_run: String,
    /// The step, absent when the whole TaskRun is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The pod, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The object key of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// sha256 of the log, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the log could not be collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// The log was longer than `storage.maxLogBytes` and is stored cut there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl LogEntry {
    fn missing(task_run: &str, step: Option<&str>, pod: Option<&str>, why: String) -> Self {
        Self {
            task_run: task_run.to_owned(),
            step: step.map(str::to_owned),
            pod: pod.map(str::to_owned),
            key: None,
            bytes: None,
            sha256: None,
            missing: Some(why),
            truncated: false,
        }
    }
}

/// Where logs are copied to.
#[derive(Debug)]
pub struct LogTarget<'a> {
    /// The S3 client.
    pub s3: &'a aws_sdk_s3::Client,
    /// The bucket.
    pub bucket: &'a str,
    /// The run's keys.
    pub layout: &'a RunLayout,
    /// `x-amz-meta-*` of each log object.
    pub metadata: &'a BTreeMap<String, String>,
    /// Most bytes kept of one step's log (`storage.maxLogBytes`).
    pub max_bytes: u64,
}

/// `storage.maxLogBytes` when unset: 100 MiB, far above a useful build log, far below what
/// fills the pod's disk.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 100 * 1024 * 1024;

/// Copies every step log of `run` (a TaskRun, or each TaskRun of a PipelineRun) to the bucket.
///
/// # Errors
/// [`Error::Unavailable`] (or 429) when the API server or the store fails in a way a retry may
/// fix; gone TaskRuns and pods are entries with `missing` instead.
pub async fn copy_logs(
    kube: &kube::Client,
    run: &FinishedRun,
    target: &LogTarget<'_>,
) -> Result<Vec<LogEntry>, Error> {
    copy_logs_and_failures(kube, run, target)
        .await
        .map(|copied| copied.entries)
}

/// What [`copy_logs_and_failures`] found.
#[derive(Debug, Default)]
pub struct CopiedLogs {
    /// One entry per step log.
    pub entries: Vec<LogEntry>,
    /// The pipeline tasks (else TaskRun names) of a PipelineRun's TaskRuns that failed or timed
    /// out, for the commit status's description.
    pub failed_tasks: Vec<String>,
}

/// [`copy_logs`], also naming the TaskRuns of a PipelineRun that failed: they are read anyway.
pub async fn copy_logs_and_failures(
    kube: &kube::Client,
    run: &FinishedRun,
    target: &LogTarget<'_>,
) -> Result<CopiedLogs, Error> {
    let mut task_runs = Vec::new();
    let mut entries = Vec::new();
    let mut failed_tasks = Vec::new();
    match run.kind {
        RunKind::TaskRun => task_runs.push(run.clone()),
        RunKind::PipelineRun => {
            let api: Api<DynamicObject> = Api::namespaced_with(
                kube.clone(),
                &run.namespace,
                &run_resource(RunKind::TaskRun),
            );
            for name in &run.child_task_runs {
                match api.get_opt(name).await? {
                    Some(object) => {
                        let value = serde_json::to_value(&object).map_err(|error| {
                            Error::internal(format!("cannot read TaskRun {name}"), error)
                        })?;
                        let child =
                            FinishedRun::from_object(RunKind::TaskRun, run.outcome, &value)?;
                        if child
                            .reason
                            .as_deref()
                            .is_some_and(|reason| reason == "Failed" || reason.contains("Timeout"))
                        {
                            failed_tasks.push(
                                child
                                    .labels
                                    .get("tekton.dev/pipelineTask")
                                    .unwrap_or(&child.name)
                                    .clone(),
                            );
                        }
                        task_runs.push(child);
                    }
                    None => entries.push(LogEntry::missing(
                        name,
                        None,
                        None,
                        "the TaskRun no longer exists".to_owned(),
                    )),
                }
            }
        }
    }

    let pods: Api<Pod> = Api::namespaced(kube.clone(), &run.namespace);
    for task_run in &task_runs {
        let Some(pod) = &task_run.pod_name else {
            entries.push(LogEntry::missing(
                &task_run.name,
                None,
                None,
                "the TaskRun never got a pod".to_owned(),
            ));
            continue;
        };
        for step in &task_run.steps {
            entries.push(copy_step_log(&pods, task_run, pod, step, target).await?);
        }
    }
    Ok(CopiedLogs {
        entries,
        failed_tasks,
    })
}

async fn copy_step_log(
    pods: &Api<Pod>,
    task_run: &FinishedRun,
    pod: &str,
    step: &crate::tekton::Step,
    target: &LogTarget<'_>,
) -> Result<LogEntry, Error> {
    // One byte more than is kept, to tell a log of exactly the bound from a longer one.
    let params = LogParams {
        container: Some(step.container.clone()),
        limit_bytes: i64::try_from(target.max_bytes.saturating_add(1)).ok(),
        ..LogParams::default()
    };
    let mut stream = match pods.log_stream(pod, &params).await {
        Ok(stream) => stream,
        // 404: the pod was deleted; 400: the container never ran (or the pod is gone in a
        // way the kubelet reports as a bad request). Neither comes back on a retry.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 400 => {
            return Ok(LogEntry::missing(
                &task_run.name,
                Some(&step.name),
                Some(pod),
                format!("the log is not available: {}", status.message),
            ));
        }
        Err(error) => return Err(error.into()),
    };

    let file = tempfile::NamedTempFile::new()
        .map_err(|error| Error::internal("cannot create a temporary file", error))?;
    let mut writer = std::io::BufWriter::new(file.as_file());
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut truncated = false;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer).await.map_err(|error| {
            Error::unavailable(
                format!("reading the log of {pod}/{} failed", step.container),
                error,
            )
        })?;
        if read == 0 {
            break;
        }
        let room = target.max_bytes - bytes;
        let keep = read.min(usize::try_from(room).unwrap_or(usize::MAX));
        let chunk = &buffer[..keep];
        hasher.update(chunk);
        bytes += keep as u64;
        writer
            .write_all(chunk)
            .map_err(|error| Error::internal("cannot buffer a log", error))?;
        if keep < read {
            truncated = true;
            break;
        }
    }
    writer
        .flush()
        .map_err(|error| Error::internal("cannot buffer a log", error))?;
    drop(writer);

    let key = target.layout.log(&task_run.name, &step.name);
    let body = ByteStream::from_path(file.path())
        .await
        .map_err(|error| Error::internal("cannot read a buffered log", error))?;
    target
        .s3
        .put_object()
        .bucket(target.bucket)
        .key(&key)
        .content_type("text/plain; charset=utf-8")
        .set_metadata(Some(target.metadata.clone().into_iter().collect()))
        .body(body)
        .send()
        .await
        .map_err(|error| {
            tekflux_common::Error::from(crate::archive::S3Failure::from_sdk(
                "PutObject",
                target.bucket,
                &key,
                &error,
            ))
        })?;
    Ok(LogEntry {
        task_run: task_run.name.clone(),
        step: Some(step.name.clone()),
        pod: Some(pod.to_owned()),
        key: Some(key),
        bytes: Some(bytes),
        sha256: Some(hex::encode(hasher.finalize())),
        missing: None,
        truncated,
    })
}
