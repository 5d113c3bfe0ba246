//! Which events may release what: the checks between "an event names a change" and "a
//! HelmRelease is applied". Pure; the handler does the one read they need (the run, from the API
//! server) and hands its copy in.
//!
//! - **Builds** ([`verify_run`], [`admits`]): an image releases a rule whose `from` is not `any`
//!   only when the event names the Tekton run that built it (`customData.run`, as run-complete
//!   sends it) and the API server's copy of that run has the same uid, succeeded, reports the
//!   same image and digest in its results, was created by git-push (its `tekflux.dev/*` labels
//!   and `tekflux.dev/ref` annotation), and its rule, namespace and branch or tag are ones the
//!   rule's `from` lists. Registry pushes release only rules with `from: { registry: true }`.
//! - **Explicit edits** ([`check_explicit_edit`]): a `dev.tekflux.release.changed.v1` event
//!   naming a release may set only the values paths its rules declare in `values:`; the `set:`
//!   path and the chart version only where `from: any` already lets any event release.
//! - **Time** ([`check_time`]): an event more than [`MAX_CLOCK_SKEW`] in the future is refused,
//!   so its time is never recorded and cannot make later events look stale.
//!
//! Every refusal is final for its input (403 or 422, never retried by Knative), applies nothing
//! and is counted by [`Refusal::kind`].

use chrono::{DateTime, TimeDelta, Utc};
use http::StatusCode;

mod builds;
mod edits;
#[cfg(test)]
mod tests;

pub use builds::{
    Checked, GitRef, Origin, RunFacts, RunIdentity, admits, run_namespaces, verify_run,
};
pub use edits::check_explicit_edit;

/// How far in the future an event's `time` may be: clocks of senders and of this pod differ a
/// little, but a time further ahead would make every later event look stale.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

pub use tekflux_common::run_contract::{
    IMAGE_DIGEST_RESULT, IMAGE_URL_RESULT, MANAGED_BY, MANAGED_BY_LABEL, REF_ANNOTATION,
    REF_KIND_LABEL, RULE_LABEL, RunKind,
};

/// Why an input may not release (a release, or at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The event names no Tekton run, so nothing can be checked.
    #[error(
        "the event names no Tekton run (customData.run with kind, name, namespace and uid), so \
         it releases only rules with `from: any`"
    )]
    NoRun,
    /// The run the event names is in a namespace none of the allowed rules creates runs in; it
    /// is not even read.
    #[error("{run} is in namespace {namespace:?}, where no rule named in `from` creates runs")]
    NamespaceNotAllowed {
        /// `Kind namespace/name`.
        run: String,
        /// Its namespace.
        namespace: String,
    },
    /// The run does not exist (any more).
    #[error("{run} does not exist")]
    RunNotFound {
        /// `Kind namespace/name`.
        run: String,
    },
    /// The run exists under another uid: the event names another (perhaps deleted) run.
    #[error("{run} has uid {actual:?}, not the event's {claimed:?}")]
    RunUidMismatch {
        /// `Kind namespace/name`.
        run: String,
        /// The event's uid.
        claimed: String,
        /// The API server's.
        actual: String,
    },
    /// The run did not succeed (or has not finished).
    #[error("{run} has not succeeded (its Succeeded condition is {status:?})")]
    RunNotSucceeded {
        /// `Kind namespace/name`.
        run: String,
        /// The condition's status, or `missing`.
        status: String,
    },
    /// The run's results name another image, tag or digest than the event.
    #[error("{run} did not build {image}: {detail}")]
    ImageMismatch {
        /// `Kind namespace/name`.
        run: String,
        /// What the event names.
        image: String,
        /// What differs.
        detail: String,
    },
    /// The run lacks the labels and annotations git-push gives every run.
    #[error("{run} was not created by tekflux's git-push: {detail}")]
    NotTekfluxRun {
        /// `Kind namespace/name`.
        run: String,
        /// What is missing or inconsistent.
        detail: String,
    },
    /// The run's rule is not in the release rule's `from.rules`.
    #[error("{run} was created by rule {rule:?}, which the `from.rules` of {release} do not list")]
    RuleNotAllowed {
        /// `Kind namespace/name`.
        run: String,
        /// Its `tekflux.dev/rule`.
        rule: String,
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
    /// The run's rule creates runs in another namespace than the run's.
    #[error(
        "{run} is in namespace {namespace:?}, but rule {rule:?} creates its runs in {expected:?}"
    )]
    WrongNamespace {
        /// `Kind namespace/name`.
        run: String,
        /// The run's namespace.
        namespace: String,
        /// Its `tekflux.dev/rule`.
        rule: String,
        /// Where that rule's runs are.
        expected: String,
    },
    /// The run's branch or tag is not one the release rule's `from` allows.
    #[error("{run} was built from {git_ref}, which the `from` of {release} does not allow")]
    RefNotAllowed {
        /// `Kind namespace/name`.
        run: String,
        /// The run's full ref.
        git_ref: String,
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
    /// A registry push for a rule whose `from` does not say `registry: true`.
    #[error("registry pushes do not release {release}: its rule's `from` has no `registry: true`")]
    RegistryNotAllowed {
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
    /// The event's `time` is too far in the future.
    #[error(
        "the event's time {time} is more than {} minutes in the future; it is refused so that \
         it cannot make later events look stale",
        MAX_CLOCK_SKEW.num_minutes()
    )]
    FutureTime {
        /// The time, as sent.
        time: String,
    },
    /// An explicit edit sets a value its release does not declare.
    #[error(
        "`values.{path}` may not be set on {release} by an explicit event; its release rules \
         allow {allowed}"
    )]
    ValueNotAllowed {
        /// `namespace/name` of the HelmRelease.
        release: String,
        /// The dotted path.
        path: String,
        /// The paths that are allowed, for the message.
        allowed: String,
    },
    /// An explicit edit sets a chart version its release does not let events set.
    #[error(
        "`chartVersion` may not be set on {release} by an explicit event: only a rule with \
         `from: any` and no `set:` (one that releases chart versions) allows it"
    )]
    ChartVersionNotAllowed {
        /// `namespace/name` of the HelmRelease.
        release: String,
    },
}

impl Refusal {
    /// The `reason` label of `tekflux_release_changed_refused_total` and of the JSON answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoRun => "no_run",
            Refusal::NamespaceNotAllowed { .. } | Refusal::WrongNamespace { .. } => {
                "namespace_not_allowed"
            }
            Refusal::RunNotFound { .. } => "run_not_found",
            Refusal::RunUidMismatch { .. } => "run_uid_mismatch",
            Refusal::RunNotSucceeded { .. } => "run_not_succeeded",
            Refusal::ImageMismatch { .. } => "image_mismatch",
            Refusal::NotTekfluxRun { .. } => "not_tekflux_run",
            Refusal::RuleNotAllowed { .. } => "rule_not_allowed",
            Refusal::RefNotAllowed { .. } => "ref_not_allowed",
            Refusal::RegistryNotAllowed { .. } => "registry_not_allowed",
            Refusal::FutureTime { .. } => "future_time",
            Refusal::ValueNotAllowed { .. } => "value_not_allowed",
            Refusal::ChartVersionNotAllowed { .. } => "chart_version_not_allowed",
        }
    }

    /// 403 when the build (or sender) may not release, 422 when the event itself can never be
    /// applied as sent. Knative retries neither.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::FutureTime { .. }
            | Refusal::ValueNotAllowed { .. }
            | Refusal::ChartVersionNotAllowed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// Refuses an event whose `time` is more than [`MAX_CLOCK_SKEW`] after `now`.
///
/// # Errors
/// [`Refusal::FutureTime`].
pub fn check_time(time: Option<&str>, now: DateTime<Utc>) -> Result<(), Refusal> {
    match time.and_then(parse_time) {
        Some(at) if at > now + MAX_CLOCK_SKEW => Err(Refusal::FutureTime {
            time: time.unwrap_or_default().to_owned(),
        }),
        _ => Ok(()),
    }
}

/// An RFC 3339 time, in UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}
