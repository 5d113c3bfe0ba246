//! Provider adapters: recognise, then parse each git provider's push into [`crate::Push`].
//!
//! Signatures are checked separately ([`crate::signature::verify`]) on the raw body, before
//! [`parse`] is called. Nothing here does I/O.
//!
//! # What every adapter guarantees
//!
//! - `repo_url` is [`crate::repo_url::canonical`]; `clone_url` is the provider's https clone URL
//!   with any credentials removed.
//! - `created`/`deleted` come from the provider's flags when it sends them and from all-zero
//!   shas otherwise (`before` zero: created, `after` zero: deleted). `forced` only from a flag
//!   (GitHub, Bitbucket); GitLab, Gitea and Forgejo do not say, so it is false for them.
//! - For tags, `after` is the commit the tag points to when the payload says so (GitLab
//!   `checkout_sha`, GitHub `head_commit.id`), not the annotated tag object.
//! - `changed_paths` is the union of `added`, `modified` and `removed` of all listed commits,
//!   deduplicated and sorted.
//! - `paths_complete` is true only when the payload proves that list is every path the push
//!   changed. It is false when:
//!   - the ref was created: providers list only commits new to the repository, and there is no
//!     `before` to compare with, so a branch cut from `main` would look like it changed nothing;
//!   - the push was forced: commits dropped from the ref changed paths too, and are not listed;
//!   - the commit list is missing, or a commit has no file lists (Bitbucket never sends them,
//!     nor did Gitea before 1.13);
//!   - the list is, or may be, truncated: GitLab `total_commits_count` larger than the list
//!     (GitLab keeps the newest 20); Gitea/Forgejo `total_commits` larger than the list, or,
//!     when that field is absent (Gitea before 1.18), 5 or more commits (its default
//!     `FEED_MAX_COMMIT_NUM` cut lists silently); GitHub `size`/`distinct_size` larger than the
//!     list, or 20 commits or more (GitHub documents a 20-commit cap for the same payload in
//!     timeline events, and later a 2048 one for webhooks; a spurious extra run is cheaper
//!     than a missed one).
//!
//!   A deleted ref has no new content: `changed_paths` is empty and `paths_complete` true.
//! - `pusher` is a login or username when the payload has one, else a display name, else empty.
//! - `delivery_id` comes from the delivery headers (see [`delivery_id`]); a push without one is
//!   refused, because it is the idempotency key runs are named after.

pub mod bitbucket;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod knative;
pub mod normalized;

use std::collections::BTreeSet;

use cloudevents::{AttributesReader, Data, Event};
use http::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::WebhookError;
use crate::push::{Provider, Push, RefKind, ZERO_SHA};

/// What a webhook or CloudEvent asks git-push to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Webhook {
    /// One or more pushed refs (several only for Bitbucket, which batches ref updates).
    Pushes(Vec<Push>),
    /// A provider checking that the endpoint answers (GitHub `ping`).
    Ping(Ping),
    /// A well-formed event that git-push does not act on; answered with success so the
    /// provider does not retry it.
    Ignored {
        /// The event name or CloudEvent type.
        event: String,
        /// Why nothing is done, for the reply.
        reason: String,
    },
}

/// A GitHub `ping`: the webhook was created or its test button pressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Who sent it.
    pub provider: Provider,
    /// The delivery id, when the request had one.
    pub delivery_id: Option<String>,
    /// GitHub's zen line.
    pub zen: Option<String>,
    /// The id of the webhook that was pinged.
    pub hook_id: Option<u64>,
    /// Canonical URL of the repository the hook belongs to (absent for organisation hooks).
    pub repo_url: Option<String>,
}

/// The provider that sent a webhook, from its event headers (the provider table's
/// `identified_by`).
///
/// Gitea, Forgejo and Gogs also send GitHub's `X-GitHub-Event` for compatibility, so their own
/// headers win over the ones they imitate.
pub fn detect(headers: &HeaderMap) -> Option<Provider> {
    tekflux_common::provider::detect(|name| has(headers, name))
}

/// The event name from `provider`'s event header (`push`, `Push Hook`, `repo:push`, …).
pub fn event_name(provider: Provider, headers: &HeaderMap) -> Result<&str, WebhookError> {
    let spec = provider.headers();
    first_header(headers, spec.event.iter().map(|header| header.name)).ok_or(
        WebhookError::MissingHeader {
            header: spec.event_display,
            why: "it names the event",
        },
    )
}

/// The provider's delivery id, git-push's idempotency key.
///
/// | provider  | headers, in order                                   |
/// |-----------|-----------------------------------------------------|
/// | GitHub    | `X-GitHub-Delivery`                                 |
/// | GitLab    | `Idempotency-Key`, `X-Gitlab-Event-UUID`            |
/// | Gitea     | `X-Gitea-Delivery`, `X-Gogs-Delivery`               |
/// | Forgejo   | `X-Forgejo-Delivery`, `X-Gitea-Delivery`            |
/// | Bitbucket | `X-Request-UUID` (see [`bitbucket`] for the fallback) |
///
/// as the provider table says ([`tekflux_common::provider`]). GitLab's `Idempotency-Key`
/// (17.4+) stays the same across retries, while `X-Gitlab-Event-UUID` is only unique per
/// event, so the first is preferred.
pub fn delivery_id(provider: Provider, headers: &HeaderMap) -> Result<String, WebhookError> {
    let spec = provider.headers();
    first_header(headers, spec.delivery.iter().map(|header| header.name))
        .map(str::to_owned)
        .ok_or(WebhookError::MissingHeader {
            header: spec.delivery_display,
            why: "the delivery id is the idempotency key that makes redeliveries create no second run",
        })
}

/// Parses a webhook body whose signature has already been verified.
///
/// Events other than pushes (and GitHub's ping) are [`Webhook::Ignored`], not errors. The body
/// is JSON, or for GitHub and Gitea/Forgejo webhooks set to the form content type, the JSON in
/// the form's `payload` field (see [`json_payload`]).
pub fn parse(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Webhook, WebhookError> {
    let body = json_payload(provider, headers, body)?;
    let body = body.as_ref();
    match provider {
        Provider::Github => github::parse(headers, body),
        Provider::Gitlab => gitlab::parse(headers, body),
        Provider::Gitea | Provider::Forgejo => gitea::parse(provider, headers, body),
        Provider::Bitbucket => bitbucket::parse(headers, body),
    }
}

/// The JSON of a webhook body: the body itself, or the `payload` field of a form-encoded one
/// (`application/x-www-form-urlencoded`, which GitHub, Gitea and Forgejo offer as the webhook's
/// content type and sign as sent). Other media types are refused, naming the setting to change.
pub fn json_payload<'b>(
    provider: Provider,
    headers: &HeaderMap,
    body: &'b [u8],
) -> Result<std::borrow::Cow<'b, [u8]>, WebhookError> {
    let essence = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_json = essence.is_empty()
        || essence == "application/json"
        || essence == "text/json"
        || essence.ends_with("+json")
        // Some proxies and older Gitea send JSON as text/plain.
        || essence == "text/plain";
    if is_json {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    if essence == "application/x-www-form-urlencoded" {
        return url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, payload)| std::borrow::Cow::Owned(payload.into_owned().into_bytes()))
            .ok_or_else(|| {
                WebhookError::malformed(
                    format!("form-encoded {} webhook", provider.as_str()),
                    "no `payload` field; set the webhook's content type to application/json",
                )
            });
    }
    Err(WebhookError::UnsupportedContentType {
        provider,
        content_type: essence,
    })
}

/// Parses a CloudEvent: Knative GitHubSource / GitLabSource events (see [`knative`]) and
/// tekflux's own push event (see [`normalized`]). Other types are [`Webhook::Ignored`].
///
/// Signatures are not checked here: the Knative source verified the webhook before turning it
/// into an event, and the event reached git-push from the broker inside the cluster.
pub fn parse_event(event: &Event) -> Result<Webhook, WebhookError> {
    let ty = event.ty();
    if ty == normalized::EVENT_TYPE {
        return normalized::parse(event);
    }
    if let Some(webhook) = knative::parse(event)? {
        return Ok(webhook);
    }
    Ok(Webhook::Ignored {
        event: ty.to_owned(),
        reason: "not a push event type that git-push handles".to_owned(),
    })
}

/// The kind of ref a full ref name names.
pub fn ref_kind(git_ref: &str) -> RefKind {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        RefKind::Branch(branch.to_owned())
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        RefKind::Tag(tag.to_owned())
    } else {
        RefKind::Other(git_ref.to_owned())
    }
}

/// True for the all-zero sha (any length, so SHA-256 repositories count too).
pub fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

fn has(headers: &HeaderMap, name: &str) -> bool {
    first_header(headers, [name]).is_some()
}

fn first_header<'h, 'n>(
    headers: &'h HeaderMap,
    names: impl IntoIterator<Item = &'n str>,
) -> Option<&'h str> {
    names.into_iter().find_map(|name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    })
}

/// Deserializes JSON, naming the path of the offending field in the error.
pub(crate) fn from_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, WebhookError> {
    // The fast path for the common, valid body; tracking the field path costs a few percent
    // of a request, so it is paid only to explain a body that failed.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || inner.is_syntax() || inner.is_eof() {
            WebhookError::malformed(what, inner)
        } else {
            WebhookError::malformed(what, format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| WebhookError::malformed(what, e))?;
    Ok(value)
}

/// The JSON bytes of a CloudEvent's data.
pub(crate) fn event_json(event: &Event) -> Result<Vec<u8>, WebhookError> {
    let unsupported = |detail: String| WebhookError::UnsupportedData {
        event_type: event.ty().to_owned(),
        detail,
    };
    if let Some(ct) = event.datacontenttype() {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !(essence == "application/json" || essence == "text/json" || essence.ends_with("+json"))
        {
            return Err(unsupported(format!(
                "datacontenttype {essence}, expected application/json"
            )));
        }
    }
    match event.data() {
        Some(Data::Json(value)) => {
            serde_json::to_vec(value).map_err(|e| WebhookError::malformed("CloudEvent data", e))
        }
        Some(Data::String(text)) => Ok(text.clone().into_bytes()),
        Some(Data::Binary(bytes)) => Ok(bytes.clone()),
        None => Err(WebhookError::malformed(
            format!("{} CloudEvent", event.ty()),
            "no data",
        )),
    }
}

/// A commit's file lists, as GitHub, GitLab and Gitea send them. Any of them may be absent or
/// null (older Gitea, GitHub Actions' copy of the payload).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CommitFiles {
    #[serde(default)]
    added: Option<Vec<String>>,
    #[serde(default)]
    modified: Option<Vec<String>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
}

/// Changed paths of a commit list, and whether every commit had file lists.
pub(crate) fn changed_paths(commits: Vec<CommitFiles>) -> (Vec<String>, bool) {
    let mut paths = BTreeSet::new();
    let mut all_listed = true;
    for commit in commits {
        let lists = [commit.added, commit.modified, commit.removed];
        if lists.iter().all(Option::is_none) {
            all_listed = false;
        }
        // Moved, not copied: the lists are not needed once their paths are collected.
        paths.extend(lists.into_iter().flatten().flatten());
    }
    (paths.into_iter().collect(), all_listed)
}

/// What every adapter knows about one ref update before building the [`Push`].
pub(crate) struct RefUpdate {
    pub provider: Provider,
    pub repo_url: String,
    pub clone_url: String,
    pub git_ref: String,
    pub before: String,
    pub after: String,
    pub created: Option<bool>,
    pub deleted: Option<bool>,
    pub forced: bool,
    /// `None` when the payload has no commit list.
    pub commits: Option<Vec<CommitFiles>>,
    /// False when the payload says, or suggests, that its commit list is cut short.
    pub list_whole: bool,
    pub pusher: String,
    pub delivery_id: String,
}

impl RefUpdate {
    pub(crate) fn into_push(self) -> Push {
        let before = non_empty_or_zero(self.before);
        let after = non_empty_or_zero(self.after);
        let created = self.created.unwrap_or(false) || is_zero_sha(&before);
        let deleted = self.deleted.unwrap_or(false) || is_zero_sha(&after);
        let (changed_paths, paths_complete) = if deleted {
            (Vec::new(), true)
        } else {
            match self.commits {
                Some(commits) => {
                    let (paths, all_listed) = changed_paths(commits);
                    (
                        paths,
                        all_listed && self.list_whole && !created && !self.forced,
                    )
                }
                None => (Vec::new(), false),
            }
        };
        Push {
            provider: self.provider,
            repo_url: self.repo_url,
            clone_url: self.clone_url,
            ref_kind: ref_kind(&self.git_ref),
            git_ref: self.git_ref,
            before,
            after,
            created,
            deleted,
            forced: self.forced,
            changed_paths,
            paths_complete,
            pusher: self.pusher,
            delivery_id: self.delivery_id,
        }
    }
}

fn non_empty_or_zero(sha: String) -> String {
    if sha.trim().is_empty() {
        ZERO_SHA.to_owned()
    } else {
        sha
    }
}

/// The canonical URL of the first candidate that is a repository URL.
pub(crate) fn canonical_repo<'a>(
    what: &str,
    candidates: impl IntoIterator<Item = Option<&'a str>>,
) -> Result<String, WebhookError> {
    candidates
        .into_iter()
        .flatten()
        .find_map(crate::repo_url::canonical)
        .ok_or_else(|| WebhookError::malformed(what, "no usable repository URL"))
}

/// The first non-empty candidate, trimmed, or an empty string.
pub(crate) fn first_non_empty<'a>(candidates: impl IntoIterator<Item = Option<&'a str>>) -> String {
    candidates
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned()
}
