//! GitHub and GitHub Enterprise Server: `push` and `ping` (`X-GitHub-Event`).
//!
//! The same code reads every payload generation: today's, GHES ones (with `enterprise`),
//! GitHub App and organisation deliveries (with `installation`, `organization`), the 2012 shape
//! (no `sender`, no `html_url`/`clone_url`, `repository.url` is the web URL) and the
//! go-playground re-serialisation that Knative's GitHubSource sends. In today's payloads
//! `repository.url` is the web URL for pushes but the API URL for pings, so `html_url` is
//! preferred.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    CommitFiles, Ping, RefUpdate, Webhook, canonical_repo, delivery_id, event_name,
    first_non_empty, from_json,
};
use crate::error::WebhookError;
use crate::push::{Provider, Push};

/// GitHub's documented cap on `commits` (see the module docs of [`super`]).
const COMMIT_CAP: usize = 20;

#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    created: Option<bool>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    forced: Option<bool>,
    #[serde(default)]
    commits: Option<Vec<CommitFiles>>,
    /// Only in timeline-event copies of the payload: the real number of commits.
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    distinct_size: Option<u64>,
    #[serde(default)]
    head_commit: Option<HeadCommit>,
    repository: Repository,
    #[serde(default)]
    pusher: Option<Pusher>,
    #[serde(default)]
    sender: Option<Account>,
}

#[derive(Debug, Deserialize)]
struct HeadCommit {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Repository {
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
}

impl Repository {
    /// (canonical repo URL, https clone URL).
    pub(crate) fn urls(&self, what: &str) -> Result<(String, String), WebhookError> {
        let repo_url = canonical_repo(
            what,
            [
                self.html_url.as_deref(),
                self.clone_url.as_deref(),
                // `url` is the API URL in pings and in today's non-push events.
                self.url
                    .as_deref()
                    .filter(|u| !u.contains("/api/v3/") && !u.contains("://api.")),
                self.ssh_url.as_deref(),
            ],
        )?;
        let clone_url = self
            .clone_url
            .as_deref()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(crate::repo_url::without_credentials)
            .unwrap_or_else(|| format!("{repo_url}.git"));
        Ok((repo_url, clone_url))
    }
}

#[derive(Debug, Deserialize)]
struct Pusher {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Account {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PingPayload {
    #[serde(default)]
    zen: Option<String>,
    #[serde(default)]
    hook_id: Option<u64>,
    #[serde(default)]
    repository: Option<Repository>,
}

/// Parses a GitHub webhook (`X-GitHub-Event` `push` or `ping`; others are ignored).
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError> {
    match event_name(Provider::Github, headers)? {
        "push" => {
            let delivery = delivery_id(Provider::Github, headers)?;
            Ok(Webhook::Pushes(vec![parse_push(body, delivery)?]))
        }
        "ping" => parse_ping(
            body,
            Provider::Github
                .headers()
                .delivery
                .iter()
                .find_map(|header| headers.get(header.name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        other => Ok(ignored(other)),
    }
}

/// The answer for a GitHub event other than `push` and `ping`.
pub(crate) fn ignored(event: &str) -> Webhook {
    Webhook::Ignored {
        event: event.to_owned(),
        reason: "only push events start runs".to_owned(),
    }
}

/// Parses a `push` payload.
pub fn parse_push(body: &[u8], delivery_id: String) -> Result<Push, WebhookError> {
    const WHAT: &str = "github push payload";
    let p: PushPayload = from_json(WHAT, body)?;
    let (repo_url, clone_url) = p.repository.urls(WHAT)?;
    let listed = p.commits.as_ref().map_or(0, Vec::len) as u64;
    let list_whole = (listed as usize) < COMMIT_CAP
        && p.size.is_none_or(|n| n <= listed)
        && p.distinct_size.is_none_or(|n| n <= listed);
    let is_tag = p.git_ref.starts_with("refs/tags/");
    let after = p.after.unwrap_or_default();
    // Annotated tags: `after` is the tag object, `head_commit` the commit it points to.
    let after = match p.head_commit.and_then(|c| c.id) {
        Some(commit) if is_tag && !commit.is_empty() && !super::is_zero_sha(&after) => commit,
        _ => after,
    };
    Ok(RefUpdate {
        provider: Provider::Github,
        repo_url,
        clone_url,
        git_ref: p.git_ref,
        before: p.before.unwrap_or_default(),
        after,
        created: p.created,
        deleted: p.deleted,
        forced: p.forced.unwrap_or(false),
        commits: p.commits,
        list_whole,
        pusher: first_non_empty([
            p.sender.as_ref().and_then(|s| s.login.as_deref()),
            p.pusher.as_ref().and_then(|s| s.name.as_deref()),
        ]),
        delivery_id,
    }
    .into_push())
}

/// Parses a `ping` payload.
pub fn parse_ping(body: &[u8], delivery_id: Option<String>) -> Result<Webhook, WebhookError> {
    let p: PingPayload = from_json("github ping payload", body)?;
    Ok(Webhook::Ping(Ping {
        provider: Provider::Github,
        delivery_id,
        zen: p.zen,
        hook_id: p.hook_id,
        repo_url: p
            .repository
            .and_then(|r| r.urls("github ping payload").ok())
            .map(|(repo_url, _)| repo_url),
    }))
}
