//! The commit status a finished run reports: its outcome, duration and failed tasks, under the
//! context git-push reported `pending` with.

use std::collections::BTreeMap;

use tekflux_common::commit_status::{
    BuildState, StatusReport, StatusReporter, render_target_url, short_duration,
};
use tekflux_common::run_contract;

use crate::app::{REPO_URL_ANNOTATION, SHA_ANNOTATION};
use crate::tekton::FinishedRun;

/// The commit status of a finished run: under the context git-push reported `pending` with
/// (its annotation), when the run's provider reports statuses in this config.
/// `failed_tasks` (a PipelineRun's failed or timed-out tasks) are named in the description.
pub fn outcome_report(
    status: &StatusReporter,
    run: &FinishedRun,
    failed_tasks: &[String],
) -> Option<StatusReport> {
    let context = run
        .annotations
        .get(run_contract::STATUS_CONTEXT_ANNOTATION)?;
    let provider = run.labels.get(run_contract::PROVIDER_LABEL)?;
    let provider = tekflux_common::config::GitProvider::from_path_segment(provider)?;
    let settings = status.settings(provider)?;
    let repo_url = run.annotations.get(REPO_URL_ANNOTATION)?;
    let sha = run.annotations.get(SHA_ANNOTATION)?;
    let state = build_state(run);
    let rule = run
        .labels
        .get(run_contract::RULE_LABEL)
        .map_or("", String::as_str);
    let variables = BTreeMap::from([
        ("namespace", run.namespace.as_str()),
        ("name", run.name.as_str()),
        ("kind", run.kind.as_str()),
        ("uid", run.uid.as_str()),
        ("rule", rule),
        ("sha", sha.as_str()),
    ]);
    let mut description = format!("{}: {}", run.name, run.outcome.as_str());
    if let Some(duration) = run_duration(run) {
        description.push_str(&format!(" in {}", short_duration(duration)));
    }
    if state != BuildState::Success
        && let Some(reason) = &run.reason
    {
        if failed_tasks.is_empty() {
            description.push_str(&format!(" ({reason})"));
        } else {
            description.push_str(&format!(" ({reason}: {})", failed_tasks.join(", ")));
        }
    }
    Some(StatusReport {
        provider,
        repo_url: repo_url.clone(),
        sha: sha.clone(),
        git_ref: run.annotations.get(run_contract::REF_ANNOTATION).cloned(),
        context: context.clone(),
        state,
        description,
        target_url: settings
            .target_url
            .as_deref()
            .map(|template| render_target_url(template, &variables)),
    })
}

/// Tekton's `Succeeded` reasons for cancelled and timed-out runs (`Cancelled`,
/// `PipelineRunCancelled`, `StoppedRunFinally`, `PipelineRunTimeout`, `TaskRunTimeout`) as the
/// closest build state.
fn build_state(run: &FinishedRun) -> BuildState {
    let reason = run.reason.as_deref().unwrap_or_default();
    match run.outcome {
        crate::tekton::Outcome::Succeeded => BuildState::Success,
        _ if reason.contains("Timeout") || reason.contains("TimedOut") => BuildState::TimedOut,
        _ if reason.contains("Cancel") || reason.contains("Stopped") => BuildState::Cancelled,
        _ => BuildState::Failure,
    }
}

fn run_duration(run: &FinishedRun) -> Option<std::time::Duration> {
    let parse = |time: &Option<String>| chrono::DateTime::parse_from_rfc3339(time.as_deref()?).ok();
    let (start, end) = (parse(&run.start_time)?, parse(&run.completion_time)?);
    (end - start).to_std().ok()
}

pub(crate) async fn report_outcome(
    status: &StatusReporter,
    run: &FinishedRun,
    failed_tasks: &[String],
) {
    if let Some(report) = outcome_report(status, run, failed_tasks) {
        status.report(&report).await;
    }
}
