//! The one normalized `Push` every provider's webhook or CloudEvent is turned into.

use serde::{Deserialize, Serialize};

/// Where a push came from: the provider whose webhook secret (or Knative source) vouched for
/// it, or the one a `dev.tekflux.git.pushed.v1` event names. The config's own type, so that a
/// rule's `provider:` and a push's provider are one vocabulary.
pub use tekflux_common::config::GitProvider as Provider;

/// What kind of ref was pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum RefKind {
    /// `refs/heads/<name>`.
    Branch(String),
    /// `refs/tags/<name>`.
    Tag(String),
    /// Any other ref (notes, pull refs, …), kept whole.
    Other(String),
}

/// One pushed ref, normalized across providers. A Bitbucket push with several changes becomes
/// several `Push` values sharing one delivery id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Push {
    /// Who sent it.
    pub provider: Provider,
    /// Canonical repository URL: `https://host/owner/name`, lowercase host, no `.git`, no trailing slash.
    pub repo_url: String,
    /// The URL to clone from, as the provider gave it (https form preferred).
    pub clone_url: String,
    /// Full ref name, e.g. `refs/heads/main` or `refs/tags/v1.2.0`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Branch or tag the ref names.
    pub ref_kind: RefKind,
    /// Commit before the push; all zeros (40) when the ref was created.
    pub before: String,
    /// Commit after the push; all zeros (40) when the ref was deleted.
    pub after: String,
    /// The ref did not exist before.
    pub created: bool,
    /// The ref no longer exists.
    pub deleted: bool,
    /// History was rewritten (force push).
    pub forced: bool,
    /// Paths added, modified or removed by the pushed commits, deduplicated and sorted.
    pub changed_paths: Vec<String>,
    /// False when the provider's commit list was truncated or missing, so `changed_paths` may
    /// be incomplete and path rules must not drop the push.
    pub paths_complete: bool,
    /// Who pushed: login or username when known, otherwise the display name.
    pub pusher: String,
    /// Provider delivery id (or CloudEvent `source` + `id`), the idempotency key.
    pub delivery_id: String,
}

/// The all-zero sha providers use for "no commit" (ref created or deleted).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";
