//! GitLab (gitlab.com and self-managed): `Push Hook`, `Tag Push Hook`, and `System Hook`
//! deliveries whose `object_kind`/`event_name` is `push` or `tag_push` (`X-Gitlab-Event`).
//!
//! GitLab sends no `created`/`deleted`/`forced` flags; creation and deletion come from the
//! all-zero shas, and a force push cannot be told from a normal one. `checkout_sha` is the
//! commit to build (for annotated tags `after` is the tag object) and is null when the ref was
//! deleted. Payloads without `project` (before GitLab 8.5) are read from `repository`.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    CommitFiles, RefUpdate, Webhook, canonical_repo, delivery_id, event_name, first_non_empty,
    from_json,
};
use crate::error::WebhookError;
use crate::push::{Provider, Push};

/// GitLab keeps the newest 20 commits in `commits`.
const COMMIT_CAP: usize = 20;

#[derive(Debug, Deserialize)]
struct Kind {
    #[serde(default)]
    object_kind: Option<String>,
    #[serde(default)]
    event_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    checkout_sha: Option<String>,
    #[serde(default)]
    user_username: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    project: Option<Project>,
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    commits: Option<Vec<CommitFiles>>,
    #[serde(default)]
    total_commits_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Project {
    #[serde(default)]
    web_url: Option<String>,
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    http_url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    #[serde(default)]
    homepage: Option<String>,
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
}

/// Parses a GitLab webhook; events other than pushes and tag pushes are ignored.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError> {
    let event = event_name(Provider::Gitlab, headers)?;
    let is_push = match event {
        "Push Hook" | "Tag Push Hook" => true,
        "System Hook" => {
            let kind: Kind = from_json("gitlab system hook payload", body)?;
            let kind = kind.object_kind.or(kind.event_name).unwrap_or_default();
            if !matches!(kind.as_str(), "push" | "tag_push") {
                return Ok(Webhook::Ignored {
                    event: format!("System Hook {kind}"),
                    reason: "only push and tag_push system hooks start runs".to_owned(),
                });
            }
            true
        }
        _ => false,
    };
    if !is_push {
        return Ok(Webhook::Ignored {
            event: event.to_owned(),
            reason: "only Push Hook and Tag Push Hook events start runs".to_owned(),
        });
    }
    let delivery = delivery_id(Provider::Gitlab, headers)?;
    Ok(Webhook::Pushes(vec![parse_push(body, delivery)?]))
}

/// Parses a push or tag push payload.
pub fn parse_push(body: &[u8], delivery_id: String) -> Result<Push, WebhookError> {
    const WHAT: &str = "gitlab push payload";
    let p: PushPayload = from_json(WHAT, body)?;
    let project = p.project.as_ref();
    let repository = p.repository.as_ref();
    let repo_url = canonical_repo(
        WHAT,
        [
            project.and_then(|p| p.web_url.as_deref()),
            project.and_then(|p| p.git_http_url.as_deref()),
            project.and_then(|p| p.http_url.as_deref()),
            repository.and_then(|r| r.homepage.as_deref()),
            repository.and_then(|r| r.git_http_url.as_deref()),
            repository.and_then(|r| r.url.as_deref()),
            project.and_then(|p| p.git_ssh_url.as_deref()),
            repository.and_then(|r| r.git_ssh_url.as_deref()),
        ],
    )?;
    let clone_url = [
        project.and_then(|p| p.git_http_url.as_deref()),
        project.and_then(|p| p.http_url.as_deref()),
        repository.and_then(|r| r.git_http_url.as_deref()),
    ]
    .into_iter()
    .flatten()
    .find(|u| u.starts_with("https://") || u.starts_with("http://"))
    .map(crate::repo_url::without_credentials)
    .unwrap_or_else(|| format!("{repo_url}.git"));
    let listed = p.commits.as_ref().map_or(0, Vec::len);
    let list_whole = match p.total_commits_count {
        Some(total) => total <= listed as u64,
        None => listed < COMMIT_CAP,
    };
    let after = p.after.unwrap_or_default();
    let after = match p.checkout_sha {
        Some(commit) if !commit.trim().is_empty() && !super::is_zero_sha(&after) => commit,
        _ => after,
    };
    Ok(RefUpdate {
        provider: Provider::Gitlab,
        repo_url,
        clone_url,
        git_ref: p.git_ref,
        before: p.before.unwrap_or_default(),
        after,
        created: None,
        deleted: None,
        forced: false,
        commits: p.commits,
        list_whole,
        pusher: first_non_empty([p.user_username.as_deref(), p.user_name.as_deref()]),
        delivery_id,
    }
    .into_push())
}
