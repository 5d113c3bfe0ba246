//! Carrying out a [`Plan`]: each planned run created (or, in a dry run, shown as the API server
//! would create it), the runs it supersedes cancelled, `pending` reported on the commit, and
//! every step counted.
//!
//! Runs are created before anything is answered; a failure after some runs were created is
//! answered with an error, and the retried delivery finds those runs by name (AlreadyExists).

use std::collections::BTreeMap;

use tekflux_common::commit_status::{BuildState, StatusReport, render_target_url};
use tekflux_common::config::Concurrency;
use tracing::Instrument as _;

use crate::app::AppState;
use crate::cluster::{self, RunHead};
use crate::error::DeliveryError;
use crate::plan::{Plan, PlannedRun};
use crate::push::Push;
use crate::summary::Summary;

/// Applies `plan` with `state`'s cluster, counters and commit-status reporter.
pub(crate) async fn apply(
    state: &AppState,
    plan: Plan<'_>,
    dry_run: bool,
) -> Result<Summary, DeliveryError> {
    let inner = &state.inner;
    let metrics = &inner.metrics;
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    for push_plan in plan.pushes {
        let push = push_plan.push;
        push_plan.summarise_into(&mut summary);
        if push_plan.no_rule {
            metrics.ignored.inc(&["no_rule"]);
        }
        for ignored in &push_plan.ignored {
            metrics.ignored.inc(&[ignored.miss.kind()]);
        }
        for run in push_plan.runs {
            let mut run_summary = run.summary();
            if dry_run {
                run_summary.object = Some(match &inner.kube {
                    Some(client) => cluster::create_run(client, &run, true).await?.object()?,
                    None => run.object.to_json(),
                });
            } else {
                let client = inner.kube.as_ref().ok_or(DeliveryError::NoCluster)?;
                let created = cluster::create_run(client, &run, false).await?;
                if created.existed {
                    // Its pending status was reported by the delivery that created it.
                    metrics.duplicates.inc(&[push.provider.as_str()]);
                } else {
                    metrics
                        .runs_created
                        .inc(&[push.provider.as_str(), run.kind.as_str()]);
                    if let Some(context) = &run.status_context {
                        // Reporting never fails the request, not even on an unreadable answer.
                        match created.head() {
                            Ok(head) => report_pending(state, push, &run, context, &head),
                            Err(error) => tracing::warn!(
                                error = %error,
                                run = run.name(),
                                "cannot read the created run from the API server's answer; \
                                 pending is not reported"
                            ),
                        }
                    }
                }
                if run.rule.concurrency == Concurrency::Supersede {
                    let new_run = created.object()?;
                    let superseded =
                        cluster::supersede(client, &run, push, &new_run, created.existed).await?;
                    metrics
                        .superseded
                        .inc_by(&[run.kind.as_str()], superseded.patched);
                    run_summary.superseded = superseded.names;
                }
            }
            summary.runs.push(run_summary);
        }
    }
    Ok(summary)
}

/// Posts `pending` for a run just created, in the background: the webhook is answered as soon
/// as the run exists (GitHub gives up on a webhook after 10 s), and reporting never fails it.
fn report_pending(
    state: &AppState,
    push: &Push,
    run: &PlannedRun<'_>,
    context: &str,
    created: &RunHead,
) {
    let metadata = &created.metadata;
    let name = &metadata.name;
    let variables = BTreeMap::from([
        ("namespace", metadata.namespace.as_str()),
        ("name", name.as_str()),
        ("kind", created.kind.as_str()),
        ("uid", metadata.uid.as_str()),
        ("rule", run.rule.name.as_str()),
        ("sha", push.after.as_str()),
    ]);
    let status = &state.inner.status;
    let settings = status.settings(push.provider);
    let report = StatusReport {
        provider: push.provider,
        repo_url: push.repo_url.clone(),
        sha: push.after.clone(),
        git_ref: Some(push.git_ref.clone()),
        context: context.to_owned(),
        state: BuildState::Pending,
        description: format!("{name}: started"),
        target_url: settings
            .and_then(|s| s.target_url.as_deref())
            .map(|template| render_target_url(template, &variables)),
    };
    let status = status.clone();
    // Reported after the answer, under the request's span so its log lines keep the delivery.
    tokio::spawn(
        async move {
            status.report(&report).await;
        }
        .instrument(tracing::Span::current()),
    );
}
