//! Bitbucket Cloud: `repo:push` (`X-Event-Key`).
//!
//! One delivery batches every ref the push updated in `push.changes[]`; each change becomes its
//! own [`Push`], all sharing the delivery id. `new: null` means the ref was deleted, `old: null`
//! that it was created; `forced` is Bitbucket's own flag. The payload lists at most five
//! commits per change and never their files, so `changed_paths` is always empty and
//! `paths_complete` false (path rules then match rather than drop the push).
//!
//! The delivery id is `X-Request-UUID`. When a proxy dropped it, it is derived from
//! `X-Hook-UUID` and the ref updates (`<hook uuid>/<hash of ref, old and new sha of every
//! change>`): the hook UUID alone names the webhook, not the delivery, and would make every
//! later push look like a redelivery of the first.
//!
//! Bitbucket Data Center/Server (`repo:refs_changed`) sends a different payload and is not
//! supported.

use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{RefUpdate, Webhook, canonical_repo, event_name, first_non_empty, from_json};
use crate::error::WebhookError;
use crate::push::{Provider, Push};

#[derive(Debug, Deserialize)]
struct PushPayload {
    repository: Repository,
    push: PushBody,
    #[serde(default)]
    actor: Option<Actor>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Debug, Deserialize)]
struct Links {
    #[serde(default)]
    html: Option<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(default)]
    href: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PushBody {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    #[serde(default)]
    old: Option<RefState>,
    #[serde(default)]
    new: Option<RefState>,
    #[serde(default)]
    created: Option<bool>,
    #[serde(default)]
    forced: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RefState {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    target: Option<Target>,
}

#[derive(Debug, Deserialize)]
struct Target {
    #[serde(default)]
    hash: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

/// Parses a Bitbucket Cloud webhook; events other than `repo:push` are ignored.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError> {
    let event = event_name(Provider::Bitbucket, headers)?;
    if event != "repo:push" {
        let reason = if event.starts_with("repo:refs_changed") {
            "Bitbucket Data Center/Server payloads are not supported; only Bitbucket Cloud repo:push"
        } else {
            "only repo:push events start runs"
        };
        return Ok(Webhook::Ignored {
            event: event.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let payload: PushPayload = from_json("bitbucket repo:push payload", body)?;
    let delivery = match super::delivery_id(Provider::Bitbucket, headers) {
        Ok(id) => id,
        Err(missing) => match super::first_header(headers, ["x-hook-uuid"]) {
            Some(hook) => format!("{hook}/{}", changes_digest(&payload.push.changes)),
            None => return Err(missing),
        },
    };
    let pushes = pushes(payload, &delivery)?;
    if pushes.is_empty() {
        return Ok(Webhook::Ignored {
            event: event.to_owned(),
            reason: "the push has no ref changes".to_owned(),
        });
    }
    Ok(Webhook::Pushes(pushes))
}

/// Parses a `repo:push` payload into one [`Push`] per change.
pub fn parse_push(body: &[u8], delivery_id: &str) -> Result<Vec<Push>, WebhookError> {
    pushes(from_json("bitbucket repo:push payload", body)?, delivery_id)
}

fn pushes(p: PushPayload, delivery_id: &str) -> Result<Vec<Push>, WebhookError> {
    const WHAT: &str = "bitbucket repo:push payload";
    let from_full_name = p
        .repository
        .full_name
        .as_deref()
        .map(|name| format!("https://bitbucket.org/{name}"));
    let repo_url = canonical_repo(
        WHAT,
        [
            p.repository
                .links
                .as_ref()
                .and_then(|l| l.html.as_ref())
                .and_then(|h| h.href.as_deref()),
            from_full_name.as_deref(),
        ],
    )?;
    let clone_url = format!("{repo_url}.git");
    let pusher = first_non_empty([
        p.actor.as_ref().and_then(|a| a.username.as_deref()),
        p.actor.as_ref().and_then(|a| a.nickname.as_deref()),
        p.actor.as_ref().and_then(|a| a.display_name.as_deref()),
    ]);
    p.push
        .changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| {
            let Some(named) = change.new.as_ref().or(change.old.as_ref()) else {
                return Err(WebhookError::malformed(
                    WHAT,
                    format!("push.changes[{i}]: both old and new are null"),
                ));
            };
            let git_ref = full_ref(named);
            let sha = |state: &Option<RefState>| {
                state
                    .as_ref()
                    .and_then(|s| s.target.as_ref())
                    .and_then(|t| t.hash.clone())
                    .unwrap_or_default()
            };
            Ok(RefUpdate {
                provider: Provider::Bitbucket,
                repo_url: repo_url.clone(),
                clone_url: clone_url.clone(),
                git_ref,
                before: sha(&change.old),
                after: sha(&change.new),
                created: Some(change.created.unwrap_or(false) || change.old.is_none()),
                deleted: Some(change.new.is_none()),
                forced: change.forced.unwrap_or(false),
                commits: None,
                list_whole: false,
                pusher: pusher.clone(),
                delivery_id: delivery_id.to_owned(),
            }
            .into_push())
        })
        .collect()
}

fn full_ref(state: &RefState) -> String {
    match state.kind.as_deref() {
        Some("tag" | "annotated_tag") => format!("refs/tags/{}", state.name),
        Some("branch" | "named_branch") | None => format!("refs/heads/{}", state.name),
        // Mercurial bookmarks and anything newer: keep the name, the ref kind will be Other.
        Some(_) => state.name.clone(),
    }
}

fn changes_digest(changes: &[Change]) -> String {
    let mut hasher = Sha256::new();
    for change in changes {
        for state in [&change.old, &change.new] {
            match state {
                Some(s) => {
                    hasher.update(full_ref(s).as_bytes());
                    hasher.update(b"\0");
                    let hash = s
                        .target
                        .as_ref()
                        .and_then(|t| t.hash.as_deref())
                        .unwrap_or_default();
                    hasher.update(hash.as_bytes());
                }
                None => hasher.update(b"-"),
            }
            hasher.update(b"\n");
        }
    }
    hex::encode(&hasher.finalize()[..16])
}
