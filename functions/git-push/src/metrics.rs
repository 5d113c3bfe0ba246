//! The counters git-push keeps, on the process-wide registry.

use tekflux_common::metrics::{CounterFamily, Metrics};

/// Counters git-push keeps, on the process-wide registry.
#[derive(Debug, Clone)]
pub(crate) struct GitPushMetrics {
    pub(crate) received: CounterFamily,
    pub(crate) verified: CounterFamily,
    pub(crate) rejected: CounterFamily,
    pub(crate) runs_created: CounterFamily,
    pub(crate) duplicates: CounterFamily,
    pub(crate) ignored: CounterFamily,
    pub(crate) superseded: CounterFamily,
}

impl GitPushMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        GitPushMetrics {
            received: metrics.counter_family(
                "tekflux_git_push_received",
                "Webhooks and push CloudEvents received",
                &["provider"],
            ),
            verified: metrics.counter_family(
                "tekflux_git_push_verified",
                "Webhooks whose signature or token checked out",
                &["provider"],
            ),
            rejected: metrics.counter_family(
                "tekflux_git_push_rejected",
                "Webhooks and events refused, by reason",
                &["provider", "reason"],
            ),
            runs_created: metrics.counter_family(
                "tekflux_git_push_runs_created",
                "Tekton runs created",
                &["provider", "kind"],
            ),
            duplicates: metrics.counter_family(
                "tekflux_git_push_duplicates",
                "Redeliveries whose run already existed",
                &["provider"],
            ),
            ignored: metrics.counter_family(
                "tekflux_git_push_ignored",
                "Events, pushes and rules that started nothing, by reason (no_rule, \
                 rule_not_matched, provider_mismatch, clone_host_mismatch, event)",
                &["reason"],
            ),
            superseded: metrics.counter_family(
                "tekflux_git_push_superseded",
                "Older runs cancelled by concurrency: supersede",
                &["kind"],
            ),
        }
    }
}
