//! Releasing: which HelmReleases an input's changes name and may release (see
//! [`crate::admission`]), and the server-side apply of each.

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
        let targets = target::targets(config, &event.change)?;
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
        match apply(kube, &target, stamp, dry_run, now).await {
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

/// Reads the release, checks it can take the edit and is not newer, and applies the edit.
#[tracing::instrument(skip_all, fields(release = %target.reference(), dry_run))]
pub(crate) async fn apply(
    kube: &kube::Client,
    target: &Target,
    stamp: &Stamp,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let resource = helm_release::api_resource(target.api);
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &target.namespace, &resource);
    let current = match read_release(kube, &api, &target.name).await? {
        Some(current) => current,
        // Applying would create a HelmRelease with nothing but our fields. Flux (or a person)
        // creates it; until then the event is retried and finally dead-lettered.
        None => {
            return Err(Error::Unavailable(format!(
                "HelmRelease {} ({}) does not exist; it is retried until it does",
                target.reference(),
                resource.api_version
            )));
        }
    };
    helm_release::check_editable(target, &current)?;
    let previous = helm_release::current_version(target, &current);
    if helm_release::is_stale(&current, stamp, now) {
        tracing::info!(release = %target.reference(), "skipped: a newer event was applied");
        return Ok(Outcome {
            target: target.clone(),
            previous,
            stale: true,
        });
    }
    let patch = helm_release::apply_patch(target, stamp);
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
    // The answer is the whole release, which nothing here reads: a refusal is an error status.
    kube.request_text(request).await?;
    tracing::info!(
        release = %target.reference(),
        version = %target.version,
        previous = previous.as_deref().unwrap_or(""),
        dry_run,
        "applied"
    );
    Ok(Outcome {
        target: target.clone(),
        previous,
        stale: false,
    })
}

/// The API server's copy of a HelmRelease, read straight into JSON (`Api::get_opt` would take it
/// through `DynamicObject` first); `None` when there is none.
async fn read_release(
    kube: &kube::Client,
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<Option<Value>> {
    match tekflux_common::clients::get_text(kube, api, name).await {
        Ok(body) => serde_json::from_str(&body)
            .map(Some)
            .map_err(|error| Error::internal("cannot read the HelmRelease", error)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(error) => Err(error.into()),
    }
}
