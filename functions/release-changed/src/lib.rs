//! release-changed: takes "a new artifact or version exists" events and server-side-applies the
//! Flux HelmRelease (or Helm Operator HelmRelease) that the config's `releases` rules name.
//!
//! - [`change`] reads what changed from the event: an image (CDEvents artifact published, as
//!   run-complete sends it), a chart version, or an explicit release edit.
//! - [`target`] applies the `releases` rules: which HelmReleases, and which field of each.
//! - [`helm_release`] builds the server-side apply patch: only the changed fields and three
//!   `tekflux.dev/release-*` annotations, so every other field keeps its owner.
//! - [`app`] reads each release, refuses edits it cannot take, skips releases that a newer event
//!   already updated (the Broker does not keep order), applies, and answers
//!   `dev.cdevents.service.upgraded.0.3.0`.

pub mod app;
pub mod change;
pub mod flux;
pub mod helm_release;
pub mod target;

pub use app::{ACCEPTED_TYPES, AppState, FIELD_MANAGER, app, routes_from_startup};
