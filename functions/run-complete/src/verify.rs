//! A terminal event is a notification, not a run: Tekton cannot sign its CloudEvents, and any
//! pod that reaches the Broker can send one. So the event only names a run (kind, namespace,
//! name, uid), and the run itself is read from the API server, which must hold a run of that
//! uid with a finished `Succeeded` condition. Everything archived, deleted or replied comes from
//! that copy.
//!
//! - [`RunReference::from_event`] reads and checks the name before any I/O (a hostile
//!   namespace or name never reaches the API server, a key or a path).
//! - [`verify_run`] asks the API server and answers the verified [`FinishedRun`] or a
//!   [`Refusal`].

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;
use tekflux_common::Error;
use tekflux_common::config::{is_dns1123_label, is_dns1123_subdomain};
use tekflux_common::run_contract::{TEKTON_GROUP, TEKTON_VERSION};

use crate::tekton::{FinishedRun, Outcome, RunKind};

/// Longest object name Kubernetes accepts (a DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest uid accepted from an event; the API server's uids are 36-character UUIDs.
pub const MAX_UID_LEN: usize = 128;

/// The run a terminal event names. Nothing else of the event's run is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReference {
    /// TaskRun or PipelineRun, from the event type.
    pub kind: RunKind,
    /// `metadata.namespace`, a DNS-1123 label.
    pub namespace: String,
    /// `metadata.name`, a DNS-1123 subdomain.
    pub name: String,
    /// `metadata.uid`, which the stored run must carry.
    pub uid: String,
}

impl RunReference {
    /// Reads the run's namespace, name and uid out of a terminal event's body
    /// (`{"taskRun": …}` / `{"pipelineRun": …}`) and checks them.
    ///
    /// # Errors
    /// [`Refusal::InvalidEvent`] when the body does not carry the run the type announces, or
    /// its namespace, name or uid is missing or could not be a Kubernetes one.
    pub fn from_event(kind: RunKind, data: &Value) -> Result<Self, Refusal> {
        let key = crate::tekton::body_key(kind);
        let metadata = data
            .get(key)
            .filter(|run| run.is_object())
            .map(|run| &run["metadata"])
            .ok_or_else(|| {
                Refusal::InvalidEvent(format!(
                    "the event data has no {key:?} object, which a {} event carries",
                    kind.as_str()
                ))
            })?;
        let field = |name: &str| {
            metadata[name]
                .as_str()
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Refusal::InvalidEvent(format!(
                        "the {} in the event has no metadata.{name}",
                        kind.as_str()
                    ))
                })
        };
        let reference = Self {
            kind,
            namespace: field("namespace")?,
            name: field("name")?,
            uid: field("uid")?,
        };
        // Debug-quoted and cut, so that a hostile value is shown as data and stays short.
        let shown = |value: &str| format!("{:?}", value.chars().take(80).collect::<String>());
        if !is_dns1123_label(&reference.namespace) {
            return Err(Refusal::InvalidEvent(format!(
                "metadata.namespace {} is not a DNS-1123 label (at most 63 lowercase letters, \
                 digits and '-')",
                shown(&reference.namespace)
            )));
        }
        if !is_dns1123_subdomain(&reference.name) {
            return Err(Refusal::InvalidEvent(format!(
                "metadata.name {} is not a DNS-1123 subdomain (at most {MAX_NAME_LEN} lowercase \
                 letters, digits, '-' and '.')",
                shown(&reference.name)
            )));
        }
        if reference.uid.len() > MAX_UID_LEN
            || !reference
                .uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Refusal::InvalidEvent(format!(
                "metadata.uid {} is not a Kubernetes uid",
                shown(&reference.uid)
            )));
        }
        Ok(reference)
    }
}

/// Why an event's run is not archived. Each is answered 4xx, so the Broker does not retry it:
/// it could never succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The event does not name a run that could exist: missing fields, or a namespace, name or
    /// uid Kubernetes would not accept (400, before any I/O).
    #[error("{0}")]
    InvalidEvent(String),
    /// The API server has no such run (422).
    #[error(
        "the API server has no {kind} {namespace}/{name}: the event does not describe a run \
         that exists, so nothing is archived"
    )]
    NotFound {
        /// `TaskRun` or `PipelineRun`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The API server's run of that name has another uid (422). The stored uid is not told.
    #[error(
        "{kind} {namespace}/{name} on the API server has another uid than the event says: the \
         event does not describe that run, so nothing is archived"
    )]
    UidMismatch {
        /// `TaskRun` or `PipelineRun`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The API server's run has no finished `Succeeded` condition (503, retried: Tekton may
    /// send the event before the finished status is stored; a forged event only costs retries,
    /// and a retry archives only what the API server then holds).
    #[error(
        "{kind} {namespace}/{name} has not finished on the API server (Succeeded is \
         {condition}): nothing is archived now; the event is retried in case the finished \
         status is not stored yet"
    )]
    NotFinished {
        /// `TaskRun` or `PipelineRun`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The condition's status, or `absent`.
        condition: String,
    },
}

impl Refusal {
    /// The `reason` label of `tekflux_run_complete_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::InvalidEvent(_) => "invalid_event",
            Refusal::NotFound { .. } => "not_found",
            Refusal::UidMismatch { .. } => "uid_mismatch",
            Refusal::NotFinished { .. } => "not_finished",
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidEvent(message) => Error::BadRequest(message),
            Refusal::NotFinished { .. } => Error::Unavailable(refusal.to_string()),
            other => Error::Unprocessable(other.to_string()),
        }
    }
}

/// Why [`verify_run`] gave no run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The API server's copy does not back the event (4xx, not retried).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The API server could not be asked (503 or 429, retried by the Broker).
    #[error(transparent)]
    Api(Error),
}

/// Reads the run `reference` names from the API server (`tekton.dev/v1`) and returns it if it
/// has the event's uid and has finished; its outcome comes from its `Succeeded` condition.
///
/// # Errors
/// [`VerifyError::Refused`] when there is no such run, it has another uid or has not finished;
/// [`VerifyError::Api`] when the API server fails, throttles or cannot be reached.
pub async fn verify_run(
    kube: &kube::Client,
    reference: &RunReference,
) -> Result<FinishedRun, VerifyError> {
    let kind = reference.kind.as_str();
    let api: Api<DynamicObject> = Api::namespaced_with(
        kube.clone(),
        &reference.namespace,
        &run_resource(reference.kind),
    );
    let object = api
        .get_opt(&reference.name)
        .await
        .map_err(|error| VerifyError::Api(error.into()))?
        .ok_or_else(|| Refusal::NotFound {
            kind,
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
        })?;
    let stored = serde_json::to_value(&object)
        .map_err(|error| VerifyError::Api(Error::internal(format!("cannot read {kind}"), error)))?;
    if stored["metadata"]["uid"].as_str() != Some(reference.uid.as_str()) {
        return Err(Refusal::UidMismatch {
            kind,
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
        }
        .into());
    }
    let condition = succeeded_status(&stored["status"]);
    let outcome = match condition {
        Some("True") => Outcome::Succeeded,
        Some("False") => Outcome::Failed,
        other => {
            return Err(Refusal::NotFinished {
                kind,
                namespace: reference.namespace.clone(),
                name: reference.name.clone(),
                condition: other.unwrap_or("absent").chars().take(20).collect(),
            }
            .into());
        }
    };
    FinishedRun::from_object(reference.kind, outcome, &stored).map_err(VerifyError::Api)
}

/// `tekton.dev/v1` PipelineRuns or TaskRuns.
pub fn run_resource(kind: RunKind) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        TEKTON_GROUP,
        TEKTON_VERSION,
        kind.as_str(),
    ))
}

/// The `Succeeded` condition's status (`True`, `False`, `Unknown`), if the run has one.
fn succeeded_status(status: &Value) -> Option<&str> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == "Succeeded")
        .and_then(|condition| condition["status"].as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn reference(namespace: &str, name: &str, uid: &str) -> Result<RunReference, Refusal> {
        RunReference::from_event(
            RunKind::TaskRun,
            &json!({"taskRun": {"metadata": {"namespace": namespace, "name": name, "uid": uid},
                "status": {"podName": "ignored"}}}),
        )
    }

    #[test]
    fn subdomains_follow_kubernetes() {
        for ok in [
            "a",
            "build-1",
            "a.b-c.d",
            &"a".repeat(100),
            &"a".repeat(253),
        ] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "Build",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a_b",
            "a b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn a_valid_reference_is_read_and_nothing_else() {
        let read = reference(
            "cicd",
            "shop-build.1",
            "4ccb4f01-3ecc-4eb4-87e1-76f04efeee5c",
        );
        assert_eq!(
            read.unwrap(),
            RunReference {
                kind: RunKind::TaskRun,
                namespace: "cicd".to_owned(),
                name: "shop-build.1".to_owned(),
                uid: "4ccb4f01-3ecc-4eb4-87e1-76f04efeee5c".to_owned(),
            }
        );
    }

    #[test]
    fn hostile_or_missing_names_are_refused() {
        for (namespace, name, uid, field) in [
            ("..", "r", "u", "namespace"),
            ("CICD", "r", "u", "namespace"),
            (&"n".repeat(64) as &str, "r", "u", "namespace"),
            ("cicd", "../other/manifest", "u", "name"),
            ("cicd", "Run", "u", "name"),
            ("cicd", &"r".repeat(254), "u", "name"),
            ("cicd", "r", "u/../x", "uid"),
            ("cicd", "r", &"u".repeat(129), "uid"),
            ("", "r", "u", "namespace"),
        ] {
            let refusal = reference(namespace, name, uid).unwrap_err();
            assert_eq!(refusal.reason(), "invalid_event");
            assert!(
                refusal.to_string().contains(&format!("metadata.{field}")),
                "{refusal}"
            );
            assert_eq!(
                Error::from(refusal).status(),
                axum::http::StatusCode::BAD_REQUEST
            );
        }
        let refusal = RunReference::from_event(
            RunKind::PipelineRun,
            &json!({"taskRun": {"metadata": {"namespace": "n", "name": "r", "uid": "u"}}}),
        )
        .unwrap_err();
        assert!(refusal.to_string().contains("pipelineRun"), "{refusal}");
    }

    #[test]
    fn refusals_after_the_api_server_are_422() {
        let refusal = Refusal::UidMismatch {
            kind: "TaskRun",
            namespace: "n".to_owned(),
            name: "r".to_owned(),
        };
        assert_eq!(refusal.reason(), "uid_mismatch");
        assert_eq!(
            Error::from(refusal).status(),
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
