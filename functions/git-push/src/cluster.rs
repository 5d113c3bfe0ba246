//! The Kubernetes side of applying a plan: creating a run (or finding the one an earlier
//! attempt of the same delivery created) and cancelling the runs it supersedes.

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tekflux_common::run_contract::{RunKind, TEKTON_GROUP, TEKTON_VERSION};

use crate::error::DeliveryError;
use crate::plan::PlannedRun;
use crate::push::Push;
use crate::run;

/// The field manager tekflux's writes are recorded under.
pub const FIELD_MANAGER: &str = "tekflux-git-push";

type Result<T, E = DeliveryError> = std::result::Result<T, E>;

fn run_resource(kind: RunKind) -> ApiResource {
    let gvk = GroupVersionKind::gvk(TEKTON_GROUP, TEKTON_VERSION, kind.as_str());
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

fn run_api(client: &kube::Client, kind: RunKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &run_resource(kind))
}

/// The run as the API server holds it, and whether it was there before this request.
#[derive(Debug)]
pub(crate) struct CreatedRun {
    /// The API server's answer, unparsed: most requests read nothing of it, and the rest read
    /// [`CreatedRun::head`] or, for a dry run's answer and superseding, [`CreatedRun::object`]
    /// (BENCHMARKS.md, git-push).
    body: String,
    /// It existed already: this is a redelivery (or a retry after a partial failure).
    pub(crate) existed: bool,
}

impl CreatedRun {
    /// What commit-status reporting reads of the run.
    pub(crate) fn head(&self) -> Result<RunHead> {
        self.read()
    }

    /// The whole object as the API server answered it.
    pub(crate) fn object(&self) -> Result<Value> {
        self.read()
    }

    /// The answer read as `T`; a malformed one is an error of the API server (kube's).
    fn read<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(&self.body).map_err(kube::Error::SerdeError)?)
    }
}

/// The fields of a created run that reporting its status reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunHead {
    /// `PipelineRun` or `TaskRun`.
    #[serde(default)]
    pub(crate) kind: String,
    /// Its name, namespace and uid.
    #[serde(default)]
    pub(crate) metadata: RunHeadMetadata,
}

/// The part of a created run's `metadata` that [`RunHead`] keeps.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunHeadMetadata {
    /// Run name.
    #[serde(default)]
    pub(crate) name: String,
    /// Namespace.
    #[serde(default)]
    pub(crate) namespace: String,
    /// The uid the API server gave it.
    #[serde(default)]
    pub(crate) uid: String,
}

/// Creates the run; an existing run of the same name is this delivery's earlier attempt, so it
/// is fetched and answered as if just created. A dry run of a delivery whose run exists shows
/// that run (server-side dry run answers AlreadyExists, which is no failure of the request).
///
/// Its span is at `debug`: nothing inside logs at `info` or above (a failure is returned and
/// logged with the request), and an `info` span costs every request its fields' formatting.
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(kind = run.kind.as_str(), namespace = run.namespace(), name = run.name(), dry_run)
)]
pub(crate) async fn create_run(
    client: &kube::Client,
    run: &PlannedRun<'_>,
    dry_run: bool,
) -> Result<CreatedRun> {
    let params = PostParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    // The planned object is serialized once, straight into the body, and the answer kept as
    // text, without the round trips through `DynamicObject` that `Api::create` takes.
    let body = serde_json::to_vec(&run.object).map_err(DeliveryError::Serialise)?;
    let mut request = kube::core::Request::new(runs_url(run.kind, run.namespace()))
        .create(&params, body)
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("create");
    match client.request_text(request).await {
        Ok(body) => Ok(CreatedRun {
            body,
            existed: false,
        }),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let api = run_api(client, run.kind, run.namespace());
            Ok(CreatedRun {
                body: tekflux_common::clients::get_text(client, &api, run.name()).await?,
                existed: true,
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// The URL of `kind`'s runs in `namespace`, as `Api::resource_url` gives it, without building
/// an `Api` (a client clone and five strings) per request.
fn runs_url(kind: RunKind, namespace: &str) -> String {
    format!(
        "/apis/{TEKTON_GROUP}/{TEKTON_VERSION}/namespaces/{namespace}/{}",
        kind.plural()
    )
}

fn to_json(object: &DynamicObject) -> Result<Value> {
    serde_json::to_value(object).map_err(DeliveryError::Serialise)
}

/// The runs a push supersedes, and how many of them this request cancelled.
#[derive(Debug)]
pub(crate) struct Superseded {
    /// Every run the new one supersedes, cancelled now or by an earlier attempt.
    pub(crate) names: Vec<String>,
    /// How many this request cancelled.
    pub(crate) patched: u64,
}

/// Cancels the older unfinished runs of `run`'s rule (and fan-out value) for the same
/// repository and ref; `new_run` is `run` as the API server holds it.
///
/// On a redelivery (`redelivery`: the new run existed already) the older runs that carry
/// tekflux's cancel status are listed as well, although they are not patched again: the first
/// attempt (or an earlier, partly failed one) cancelled them, and the redelivery must be answered
/// like the first delivery.
#[tracing::instrument(
    skip_all,
    fields(kind = run.kind.as_str(), namespace = run.namespace(), name = run.name(), redelivery)
)]
pub(crate) async fn supersede(
    client: &kube::Client,
    run: &PlannedRun<'_>,
    push: &Push,
    new_run: &Value,
    redelivery: bool,
) -> Result<Superseded> {
    let api = run_api(client, run.kind, run.namespace());
    let selector = run::supersede_selector(run.rule, push, &run.captures);
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    let cancel = run::cancel_patch(run.kind);
    let mut superseded = Superseded {
        names: Vec::new(),
        patched: 0,
    };
    for candidate in listed.items {
        let candidate = to_json(&candidate)?;
        let name = candidate["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if run::is_superseded(&candidate, new_run, push) {
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&cancel))
                .await
            {
                Ok(_) => {
                    superseded.names.push(name);
                    superseded.patched += 1;
                }
                // Deleted in the meantime: nothing left to cancel.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => return Err(error.into()),
            }
        } else if redelivery && was_cancelled_by_us(&candidate, new_run, push, &cancel) {
            superseded.names.push(name);
        }
    }
    Ok(superseded)
}

/// Whether `candidate` carries tekflux's cancel status and, that status (and the outcome of the
/// cancellation) aside, is a run `new_run` supersedes.
fn was_cancelled_by_us(candidate: &Value, new_run: &Value, push: &Push, cancel: &Value) -> bool {
    if candidate["spec"]["status"] != cancel["spec"]["status"] {
        return false;
    }
    let mut before = candidate.clone();
    if let Some(spec) = before.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("status");
    }
    if let Some(object) = before.as_object_mut() {
        object.remove("status");
    }
    run::is_superseded(&before, new_run, push)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource as _;

    #[test]
    fn runs_are_created_where_kube_would_create_them() {
        for kind in [RunKind::PipelineRun, RunKind::TaskRun] {
            assert_eq!(
                runs_url(kind, "cicd"),
                DynamicObject::url_path(&run_resource(kind), Some("cicd"))
            );
        }
    }
}
