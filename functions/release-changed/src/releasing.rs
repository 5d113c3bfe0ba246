//! Releasing: which HelmReleases an input's changes name and may release (see
//! [`crate::admission`]), and the server-side apply of each.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tekflux_common::run_contract::{TEKTON_GROUP, TEKTON_VERSION};
use tekflux_common::{Error, Result};

use crate::admission::{self, Checked, Origin, Refusal, RunIdentity};
use crate::app::{AppState, FIELD_MANAGER};
use crate::change::Change;
use crate::helm_release::{self, Stamp};
use crate::target::{self, Target};
use crate::watched::WatchedReleases;

/// What happened to one release.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) target: Target,
    /// The value the release held before, where tekflux writes.
    pub(crate) previous: Option<String>,
    /// Not applied: an event newer than this one already was.
    pub(crate) stale: bool,
}

/// One change to release, with what the input said about it.
#[derive(Debug)]
pub(crate) struct ChangeEvent {
    pub(crate) change: Change,
    pub(crate) stamp: Stamp,
    pub(crate) origin: Origin,
}

/// A release, or a whole input (`release: None`), that may not be released.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) release: Option<String>,
    pub(crate) refusal: Refusal,
}

impl Refused {
    pub(crate) fn json(&self) -> Value {
        json!({
            "release": self.release,
            "reason": self.refusal.kind(),
            "message": self.refusal.to_string(),
        })
    }
}

/// What became of a request's changes.
#[derive(Debug)]
pub(crate) enum Released {
    /// No rule names anything that changed.
    NoRule,
    /// Rules name what changed, but none may be released by this input.
    Refused(Vec<Refused>),
    /// Every admitted release already records a newer event.
    AllStale {
        outcomes: Vec<Outcome>,
        refused: Vec<Refused>,
    },
    /// At least one release was applied; others may have been refused.
    Applied {
        outcomes: Vec<Outcome>,
        refused: Vec<Refused>,
    },
}

/// Applies every release the rules name for `changes` and admit (see [`crate::admission`]),
/// in order; with `dry_run`, the API server validates each apply (`dryRun=All`) and stores
/// nothing. Refusals are counted and logged here.
#[tracing::instrument(skip(state, changes))]
pub(crate) async fn release(
    state: &AppState,
    changes: &[ChangeEvent],
    dry_run: bool,
) -> Result<Released> {
    let config = &state.inner.config;
    let now = Utc::now();
    let mut work = Vec::new();
    let mut refused = Vec::new();
    for event in changes {
        if let Err(refusal) = admission::check_time(event.stamp.time.as_deref(), now) {
            refused.push(Refused {
                release: None,
                refusal,
            });
            continue;
        }
        let targets = target::targets_with(config, &state.inner.rule_images, &event.change)?;
        if let Change::Release {
            chart_version,
            values,
            ..
        } = &event.change
        {
            // Explicit edits are bounded by what their release declares, not by `from`.
            for target in targets {
                let reference = target.reference();
                match admission::check_explicit_edit(
                    config,
                    &reference,
                    chart_version.as_deref(),
                    values.as_ref(),
                ) {
                    Ok(()) => work.push((target, &event.stamp)),
                    Err(refusal) => refused.push(Refused {
                        release: Some(reference),
                        refusal,
                    }),
                }
            }
            continue;
        }
        let checked = check_origin(state, event, &targets).await?;
        for target in targets {
            let reference = target.reference();
            let Some(rule) = config.releases.get(target.rule) else {
                return Err(Error::Internal(format!("no release rule {}", target.rule)));
            };
            match admission::admits(config, rule, &reference, &checked) {
                Ok(()) => work.push((target, &event.stamp)),
                Err(refusal) => refused.push(Refused {
                    release: Some(reference),
                    refusal,
                }),
            }
        }
    }
    for refusal in &refused {
        state.inner.refused.inc(&[refusal.refusal.kind()]);
        tracing::warn!(
            reason = refusal.refusal.kind(),
            release = refusal.release.as_deref().unwrap_or(""),
            "refused: {}",
            refusal.refusal
        );
    }
    if work.is_empty() {
        if !refused.is_empty() {
            return Ok(Released::Refused(refused));
        }
        state.inner.releases.inc(&["ignored"]);
        return Ok(Released::NoRule);
    }
    let kube = state.kube()?;
    let mut outcomes = Vec::with_capacity(work.len());
    for (target, stamp) in work {
        match apply(kube, &state.inner.watched, &target, stamp, dry_run, now).await {
            Ok(outcome) => {
                let result = match (outcome.stale, dry_run) {
                    (true, _) => "stale",
                    (false, true) => "dry_run",
                    (false, false) => "applied",
                };
                state.inner.releases.inc(&[result]);
                outcomes.push(outcome);
            }
            Err(error) => {
                // Releases applied before this one stay applied; the retry re-applies them,
                // which server-side apply makes a no-op.
                state.inner.releases.inc(&["failed"]);
                return Err(error);
            }
        }
    }
    Ok(if outcomes.iter().all(|outcome| outcome.stale) {
        Released::AllStale { outcomes, refused }
    } else {
        Released::Applied { outcomes, refused }
    })
}

impl AppState {
    /// The Kubernetes client, or 503 (retried, then dead-lettered) without one.
    pub(crate) fn kube(&self) -> Result<&kube::Client> {
        self.inner.kube.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "no Kubernetes cluster is configured; the release will be retried".to_owned(),
            )
        })
    }
}

/// What is known about where `event`'s change came from, as far as the rules of `targets`
/// need it: the run it names is read from the API server only when a rule's `from` is not
/// `any`, and only in a namespace where such a rule's runs are created.
pub(crate) async fn check_origin(
    state: &AppState,
    event: &ChangeEvent,
    targets: &[Target],
) -> Result<Checked> {
    let config = &state.inner.config;
    let guarded: Vec<_> = targets
        .iter()
        .filter_map(|target| config.releases.get(target.rule))
        .filter(|rule| !rule.from_any())
        .collect();
    let identity = match &event.origin {
        Origin::Unverified => return Ok(Checked::Unverified),
        Origin::Registry => return Ok(Checked::Registry),
        Origin::Run(identity) => identity,
    };
    let Change::Image(image) = &event.change else {
        return Ok(Checked::Unverified);
    };
    if guarded.is_empty() {
        return Ok(Checked::Unverified);
    }
    if !admission::run_namespaces(config, guarded).contains(&identity.namespace.as_str()) {
        return Ok(Checked::Failed(Refusal::NamespaceNotAllowed {
            run: identity.describe(),
            namespace: identity.namespace.clone(),
        }));
    }
    let Some(run) = read_run(state.kube()?, identity).await? else {
        return Ok(Checked::Failed(Refusal::RunNotFound {
            run: identity.describe(),
        }));
    };
    Ok(match admission::verify_run(&run, identity, image) {
        Ok(facts) => Checked::Run(facts),
        Err(refusal) => Checked::Failed(refusal),
    })
}

/// The API server's copy of the run `identity` names; `None` when there is none. Failures are
/// 503 or 429, as for every other call.
pub(crate) async fn read_run(kube: &kube::Client, identity: &RunIdentity) -> Result<Option<Value>> {
    let gvk = GroupVersionKind::gvk(TEKTON_GROUP, TEKTON_VERSION, identity.kind.as_str());
    let resource = ApiResource::from_gvk_with_plural(&gvk, identity.kind.plural());
    let api: Api<DynamicObject> =
        Api::namespaced_with(kube.clone(), &identity.namespace, &resource);
    let Some(run) = api.get_opt(&identity.name).await? else {
        return Ok(None);
    };
    serde_json::to_value(run)
        .map(Some)
        .map_err(|error| Error::internal("cannot read the run", error))
}

/// How many times one release is decided: a conflict (the release changed between the read and
/// the apply) has it read and decided again, up to this many times in all; then the event is
/// answered 503 and retried.
const DECISIONS: usize = 3;

/// Decides the release on the watched copy (when there is one) or a read of it, checks it can
/// take the edit and is not newer, and applies the edit, on condition that the release is still
/// the one decided on (its `uid` and `resourceVersion`).
///
/// Only an apply is decided on the copy, since the API server refuses one based on a copy that
/// fell behind (409); that, and every answer that would apply nothing, is decided again on a
/// fresh read (which counts as one of the [`DECISIONS`]).
#[tracing::instrument(skip_all, fields(release = %target.reference(), dry_run))]
pub(crate) async fn apply(
    kube: &kube::Client,
    watched: &WatchedReleases,
    target: &Target,
    stamp: &Stamp,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let resource = helm_release::api_resource(target.api);
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &target.namespace, &resource);
    let (mut current, mut fresh) = match watched.get(target.api, &target.namespace, &target.name) {
        Some(copy) => (copy, false),
        None => (Arc::new(read_existing(kube, &api, target).await?), true),
    };
    for decision in 1..=DECISIONS {
        let decided = decide(target, &current, stamp, now);
        if !fresh && !matches!(decided, Ok(Decision::Apply)) {
            current = Arc::new(read_existing(kube, &api, target).await?);
            fresh = true;
            continue;
        }
        let previous = helm_release::current_version(target, &current);
        if decided? == Decision::Stale {
            tracing::info!(release = %target.reference(), "skipped: a newer event was applied");
            return Ok(Outcome {
                target: target.clone(),
                previous,
                stale: true,
            });
        }
        match send_apply(kube, &api, target, stamp, &current, dry_run).await {
            Ok(applied) => {
                // The watch brings the same release a moment later; an event for the same
                // release arriving before it would otherwise be decided on the older copy.
                if !dry_run {
                    watched.remember(target.api, &target.namespace, &target.name, &applied);
                }
                tracing::info!(
                    release = %target.reference(),
                    version = %target.version,
                    previous = previous.as_deref().unwrap_or(""),
                    dry_run,
                    "applied"
                );
                return Ok(Outcome {
                    target: target.clone(),
                    previous,
                    stale: false,
                });
            }
            // Forced applies have no field conflicts: a 409 is the uid or resourceVersion
            // condition.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                if decision == DECISIONS {
                    break;
                }
                tracing::debug!(
                    release = %target.reference(),
                    from_copy = !fresh,
                    "the release changed since it was read; reading it again"
                );
                current = Arc::new(read_existing(kube, &api, target).await?);
                fresh = true;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(Error::Unavailable(format!(
        "HelmRelease {} kept changing while it was being released; the event is retried",
        target.reference()
    )))
}

/// What to do with one release.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Apply,
    /// It records a newer event than this one: skip.
    Stale,
}

fn decide(target: &Target, current: &Value, stamp: &Stamp, now: DateTime<Utc>) -> Result<Decision> {
    helm_release::check_editable(target, current)?;
    Ok(if helm_release::is_stale(current, stamp, now) {
        Decision::Stale
    } else {
        Decision::Apply
    })
}

/// Applies the edit, on condition that the release is still `decided_on`: the same object (its
/// `uid`) at the same version (its `resourceVersion`). The resourceVersion alone would not do:
/// an apply to an object that no longer exists creates it, whatever resourceVersion it names,
/// while a uid that matches nothing is refused (409). Returns the release as applied, as the
/// API server answered it.
async fn send_apply(
    kube: &kube::Client,
    api: &Api<DynamicObject>,
    target: &Target,
    stamp: &Stamp,
    decided_on: &Value,
    dry_run: bool,
) -> kube::Result<String> {
    let mut patch = helm_release::apply_patch(target, stamp);
    if let Some(metadata) = patch.get_mut("metadata") {
        for field in ["uid", "resourceVersion"] {
            if let Some(value) = decided_on.pointer(&format!("/metadata/{field}")) {
                metadata[field] = value.clone();
            }
        }
    }
    // Forced: the release-changed owns exactly the fields it sets; another manager holding
    // `image.tag` (a `kubectl apply` of the same value, say) must not block every release.
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    let mut request = kube::core::Request::new(api.resource_url())
        .patch(&target.name, &params, &Patch::Apply(&patch))
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("patch");
    kube.request_text(request).await
}

/// The release read from the API server, straight into JSON (`Api::get_opt` would take it
/// through `DynamicObject` first); 503 (retried until it exists) when there is none.
async fn read_existing(
    kube: &kube::Client,
    api: &Api<DynamicObject>,
    target: &Target,
) -> Result<Value> {
    match tekflux_common::clients::get_text(kube, api, &target.name).await {
        Ok(body) => serde_json::from_str(&body)
            .map_err(|error| Error::internal("cannot read the HelmRelease", error)),
        // Applying would create a HelmRelease with nothing but our fields. Flux (or a person)
        // creates it; until then the event is retried and finally dead-lettered.
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(Error::Unavailable(format!(
            "HelmRelease {} ({}) does not exist; it is retried until it does",
            target.reference(),
            helm_release::api_resource(target.api).api_version
        ))),
        Err(error) => Err(error.into()),
    }
}
