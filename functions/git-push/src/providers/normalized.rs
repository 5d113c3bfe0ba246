//! tekflux's own push CloudEvent, for systems that are not one of the supported providers (a
//! mirror, a script, `tekflux send`) and for replaying a push.
//!
//! Attributes:
//!
//! | attribute         | value                                                     |
//! |-------------------|-----------------------------------------------------------|
//! | `type`            | `dev.tekflux.git.pushed.v1`                               |
//! | `source`          | the repository URL (used when `data.repoUrl` is absent)   |
//! | `subject`         | the full ref (used when `data.ref` is absent)             |
//! | `id`              | unique per push; `source` + `#` + `id` is the delivery id when `data.deliveryId` is absent |
//! | `datacontenttype` | `application/json`                                        |
//!
//! `data`, the [`crate::Push`] JSON (camelCase):
//!
//! | field           | type                | required | default / meaning                                  |
//! |-----------------|---------------------|----------|----------------------------------------------------|
//! | `provider`      | `github`, `gitlab`, `gitea`, `forgejo`, `bitbucket` | yes | only rules bound to it match |
//! | `repoUrl`       | string              | no       | `source`; made canonical either way                |
//! | `cloneUrl`      | string              | no       | `repoUrl` + `.git`; credentials are removed; must be on the rule's host |
//! | `ref`           | string              | no       | `subject`; one of the two is required              |
//! | `refKind`       | `{kind, name}`      | no       | always recomputed from `ref`                       |
//! | `before`        | sha                 | no       | all zeros                                          |
//! | `after`         | sha                 | yes      | commit to build; all zeros when deleted            |
//! | `created`       | bool                | no       | `before` is all zeros                              |
//! | `deleted`       | bool                | no       | `after` is all zeros                               |
//! | `forced`        | bool                | no       | false                                              |
//! | `changedPaths`  | string[]            | no       | empty; sorted and deduplicated on arrival          |
//! | `pathsComplete` | bool                | no       | false (so path rules match when paths are unknown) |
//! | `pusher`        | string              | no       | empty                                              |
//! | `deliveryId`    | string              | no       | `source` + `#` + `id`                              |
//!
//! The event binds like a webhook of the provider it names: it matches only rules bound to
//! `data.provider`, and only when `cloneUrl` is on the rule's host. Its sender is authenticated
//! as a CloudEvent sender (not by a provider's secret), so it is trusted to name the provider;
//! it cannot name one a rule is not bound to, nor fetch from another host.
//!
//! Example:
//!
//! ```json
//! {
//!   "specversion": "1.0",
//!   "type": "dev.tekflux.git.pushed.v1",
//!   "source": "https://github.com/acme/shop",
//!   "subject": "refs/heads/main",
//!   "id": "b7a1c1f2-1d3e-4e0b-9d61-2f4f2f0e7c11",
//!   "datacontenttype": "application/json",
//!   "data": {
//!     "provider": "github",
//!     "ref": "refs/heads/main",
//!     "before": "9c1b5a4e2f0d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
//!     "after": "3f786850e387550fdab836ed7e6dc881de23001b",
//!     "changedPaths": ["api/main.go"],
//!     "pathsComplete": true,
//!     "pusher": "octocat"
//!   }
//! }
//! ```

use cloudevents::{AttributesReader, Event};
use serde::Deserialize;

use super::{RefUpdate, Webhook, event_json, from_json};
use crate::error::WebhookError;
use crate::push::Provider;

/// The CloudEvent type of a normalized push.
pub const EVENT_TYPE: &str = "dev.tekflux.git.pushed.v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    provider: Provider,
    #[serde(default)]
    repo_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(rename = "ref", default)]
    git_ref: Option<String>,
    #[serde(default)]
    before: Option<String>,
    after: String,
    #[serde(default)]
    created: Option<bool>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    forced: Option<bool>,
    #[serde(default)]
    changed_paths: Option<Vec<String>>,
    #[serde(default)]
    paths_complete: Option<bool>,
    #[serde(default)]
    pusher: Option<String>,
    #[serde(default)]
    delivery_id: Option<String>,
}

/// Parses a `dev.tekflux.git.pushed.v1` event.
pub fn parse(event: &Event) -> Result<Webhook, WebhookError> {
    const WHAT: &str = "dev.tekflux.git.pushed.v1 data";
    let body = event_json(event)?;
    let d: Data = from_json(WHAT, &body)?;
    let repo_url = super::canonical_repo(WHAT, [d.repo_url.as_deref(), Some(event.source())])?;
    let clone_url = d
        .clone_url
        .as_deref()
        .map(crate::repo_url::without_credentials)
        .unwrap_or_else(|| format!("{repo_url}.git"));
    let git_ref = d
        .git_ref
        .or_else(|| event.subject().map(str::to_owned))
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| WebhookError::malformed(WHAT, "ref: missing (and no subject attribute)"))?;
    let delivery_id = d
        .delivery_id
        .filter(|id| !id.trim().is_empty())
        .unwrap_or_else(|| format!("{}#{}", event.source(), event.id()));
    let mut push = RefUpdate {
        provider: d.provider,
        repo_url,
        clone_url,
        git_ref,
        before: d.before.unwrap_or_default(),
        after: d.after,
        created: d.created,
        deleted: d.deleted,
        forced: d.forced.unwrap_or(false),
        commits: Some(Vec::new()),
        list_whole: true,
        pusher: d.pusher.unwrap_or_default(),
        delivery_id,
    }
    .into_push();
    if !push.deleted {
        let mut paths = d.changed_paths.unwrap_or_default();
        paths.sort();
        paths.dedup();
        push.changed_paths = paths;
        // The sender vouches for completeness; created and forced flags do not override it.
        push.paths_complete = d.paths_complete.unwrap_or(false);
    }
    Ok(Webhook::Pushes(vec![push]))
}
