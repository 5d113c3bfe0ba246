//! CloudEvents from Knative's GitHubSource and GitLabSource.
//!
//! | type                                              | becomes                      |
//! |---------------------------------------------------|------------------------------|
//! | `dev.knative.source.github.push`                  | a GitHub push                |
//! | `dev.knative.source.github.ping`                  | [`Webhook::Ping`]            |
//! | other `dev.knative.source.github.*`               | [`Webhook::Ignored`]         |
//! | `dev.knative.sources.gitlab.push`, `.tag_push`    | a GitLab push                |
//! | `dev.knative.sources.gitlabsource.Push Hook`, `… Tag Push Hook` (before Nov 2020) | a GitLab push |
//! | other `dev.knative.sources.gitlab.*` / `gitlabsource.*` | [`Webhook::Ignored`]   |
//!
//! `data` is not the provider's body but the source's typed struct marshalled again
//! (go-playground webhooks for GitHub, GitLab's client-go for GitLab): same field names, some
//! fields dropped, `null` where Go had a nil slice. The parsers read only fields both keep.
//!
//! Delivery ids: the GitHubSource copies `X-GitHub-Delivery` into the event `id`, so it is used
//! as is and a push seen both as a webhook and as an event gets the same id. The GitLabSource
//! sets no meaningful id, so it is `source` + `#` + `id`, which is stable across the broker's
//! redeliveries.
//!
//! Signatures are not checked again: the source verified the webhook (its secret or token) and
//! the event reaches git-push from the broker inside the cluster.

use cloudevents::{AttributesReader, Event};

use super::{Webhook, event_json, github, gitlab};
use crate::error::WebhookError;

/// Prefix of GitHubSource event types.
pub const GITHUB_PREFIX: &str = "dev.knative.source.github.";
/// Prefix of GitLabSource event types (since November 2020).
pub const GITLAB_PREFIX: &str = "dev.knative.sources.gitlab.";
/// Prefix of GitLabSource event types before November 2020 (followed by the raw event header).
pub const GITLAB_LEGACY_PREFIX: &str = "dev.knative.sources.gitlabsource.";

/// Parses a Knative source event; `None` when the type is not one of theirs.
pub fn parse(event: &Event) -> Result<Option<Webhook>, WebhookError> {
    let ty = event.ty();
    if let Some(name) = ty.strip_prefix(GITHUB_PREFIX) {
        return match name {
            "push" => {
                let body = event_json(event)?;
                let push = github::parse_push(&body, event.id().to_owned())?;
                Ok(Some(Webhook::Pushes(vec![push])))
            }
            "ping" => {
                let body = event_json(event)?;
                github::parse_ping(&body, Some(event.id().to_owned())).map(Some)
            }
            _ => Ok(Some(github::ignored(ty))),
        };
    }
    let gitlab_push = match (
        ty.strip_prefix(GITLAB_PREFIX),
        ty.strip_prefix(GITLAB_LEGACY_PREFIX),
    ) {
        (Some(name), _) => matches!(name, "push" | "tag_push"),
        (None, Some(header)) => matches!(header, "Push Hook" | "Tag Push Hook"),
        (None, None) => return Ok(None),
    };
    if !gitlab_push {
        return Ok(Some(Webhook::Ignored {
            event: ty.to_owned(),
            reason: "only GitLab push and tag_push events start runs".to_owned(),
        }));
    }
    let body = event_json(event)?;
    let delivery = format!("{}#{}", event.source(), event.id());
    let push = gitlab::parse_push(&body, delivery)?;
    Ok(Some(Webhook::Pushes(vec![push])))
}
