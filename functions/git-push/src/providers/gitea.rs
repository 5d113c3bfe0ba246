//! Gitea, Forgejo and Gogs: `push` (`X-Forgejo-Event`, `X-Gitea-Event` or `X-Gogs-Event`).
//!
//! All three send the same payload. Forgejo sends its own `X-Forgejo-*` headers next to Gitea's;
//! a webhook posted to `/webhooks/forgejo` reads either. The payload has no created/deleted/
//! forced flags (zero shas say the first two). Commits carry file lists since Gitea 1.13, and
//! `total_commits` (since 1.18) tells when the list was cut; older payloads parse, with
//! `paths_complete` false where the list may be incomplete.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    CommitFiles, RefUpdate, Webhook, canonical_repo, delivery_id, event_name, first_non_empty,
    from_json,
};
use crate::error::WebhookError;
use crate::push::{Provider, Push};

/// Gitea's default `[ui] FEED_MAX_COMMIT_NUM`, which cut commit lists before `total_commits`.
const OLD_COMMIT_CAP: usize = 5;

#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    commits: Option<Vec<CommitFiles>>,
    #[serde(default)]
    total_commits: Option<u64>,
    repository: Repository,
    #[serde(default)]
    pusher: Option<User>,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    full_name: Option<String>,
}

/// Parses a Gitea/Forgejo/Gogs webhook as `provider`; events other than `push` are ignored.
pub fn parse(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Webhook, WebhookError> {
    let event = event_name(provider, headers)?;
    if event != "push" {
        return Ok(Webhook::Ignored {
            event: event.to_owned(),
            reason: "only push events start runs".to_owned(),
        });
    }
    let delivery = delivery_id(provider, headers)?;
    Ok(Webhook::Pushes(vec![parse_push(provider, body, delivery)?]))
}

/// Parses a `push` payload.
pub fn parse_push(
    provider: Provider,
    body: &[u8],
    delivery_id: String,
) -> Result<Push, WebhookError> {
    let what = format!("{} push payload", provider.as_str());
    let p: PushPayload = from_json(&what, body)?;
    let r = &p.repository;
    let repo_url = canonical_repo(
        &what,
        [
            r.html_url.as_deref(),
            r.clone_url.as_deref(),
            r.ssh_url.as_deref(),
        ],
    )?;
    let clone_url = r
        .clone_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(crate::repo_url::without_credentials)
        .unwrap_or_else(|| format!("{repo_url}.git"));
    let listed = p.commits.as_ref().map_or(0, Vec::len);
    let list_whole = match p.total_commits {
        Some(total) => total <= listed as u64,
        None => listed < OLD_COMMIT_CAP,
    };
    let user = |u: &Option<User>| -> [Option<String>; 2] {
        match u {
            Some(u) => [u.login.clone(), u.username.clone()],
            None => [None, None],
        }
    };
    let [pusher_login, pusher_username] = user(&p.pusher);
    let [sender_login, sender_username] = user(&p.sender);
    let pusher = first_non_empty([
        pusher_login.as_deref(),
        pusher_username.as_deref(),
        sender_login.as_deref(),
        sender_username.as_deref(),
        p.pusher.as_ref().and_then(|u| u.full_name.as_deref()),
    ]);
    Ok(RefUpdate {
        provider,
        repo_url,
        clone_url,
        git_ref: p.git_ref,
        before: p.before.unwrap_or_default(),
        after: p.after.unwrap_or_default(),
        created: None,
        deleted: None,
        forced: false,
        commits: p.commits,
        list_whole,
        pusher,
        delivery_id,
    }
    .into_push())
}
