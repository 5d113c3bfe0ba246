//! release-changed: takes "a new artifact or version exists" events and server-side-applies the
//! Flux HelmRelease (or Helm Operator HelmRelease) that the config's `releases` rules name.
//!
//! - [`change`] reads what changed from the event: an image (CDEvents artifact published, as
//!   run-complete sends it), a chart version, or an explicit release edit.
//! - [`target`] applies the `releases` rules: which HelmReleases, and which field of each.
//! - [`admission`] decides which of them the input may release: the run that built an image is
//!   read back from the API server and must match the rule's `from`; explicit edits may set only
//!   the values their release declares; events from the future are refused.
//! - [`helm_release`] builds the server-side apply patch: only the changed fields and three
//!   `tekflux.dev/release-*` annotations, so every other field keeps its owner.
//! - [`app`] is the HTTP face; [`releasing`] decides each release on its watched copy
//!   (`watched`) or a read of it, refuses edits it cannot take, skips releases that a newer event
//!   already updated (the Broker does not keep order) and applies on condition that the release
//!   is still the one decided on; [`answer`] builds the answers and the
//!   `dev.tekflux.release.applied.v1` reply.

pub mod admission;
pub mod answer;
pub mod app;
pub mod change;
pub mod flux;
pub mod helm_release;
pub mod registry;
pub mod releasing;
pub mod target;
mod watched;

pub use app::{ACCEPTED_TYPES, AppState, FIELD_MANAGER, app, routes_from_startup};

/// Namespace of reply ids derived from inputs that are not CloudEvents (Flux events, registry
/// notifications), so they cannot collide with v5 ids made for other purposes.
const DERIVED_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2f8e_51a0_7c3d_4b6e_8a19_d4c0_3e7f_9b25);

/// A reply id that is the same whenever the sender retries the same input: a v5 UUID of `kind`
/// and `parts`, length-prefixed so that the parts cannot run into each other.
pub(crate) fn derived_id(kind: &str, parts: &[&str]) -> String {
    let name: String = std::iter::once(kind)
        .chain(parts.iter().copied())
        .map(|part| format!("{}:{part}", part.len()))
        .collect();
    uuid::Uuid::new_v5(&DERIVED_ID_NAMESPACE, name.as_bytes()).to_string()
}
