//! The pure half of status reporting: a build state and a run's facts in, the provider's REST
//! request out ([`build_request`], [`build_check_run`]), with each provider's limits applied.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::GitProvider;

/// GitHub's limit on `description` (longer is a 422).
pub const MAX_DESCRIPTION_CHARS: usize = 140;
/// Bitbucket's limit on `key` (longer is a 400).
pub const MAX_BITBUCKET_KEY_CHARS: usize = 40;

/// What the build is doing, in tekflux's words; each provider gets its closest state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// The run exists and has not finished.
    Pending,
    /// The run succeeded.
    Success,
    /// The run failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
    /// The run hit its timeout.
    TimedOut,
}

impl BuildState {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Pending => "pending",
            BuildState::Success => "success",
            BuildState::Failure => "failure",
            BuildState::Cancelled => "cancelled",
            BuildState::TimedOut => "timed_out",
        }
    }

    /// The provider's state: GitHub has no "running" and no "cancelled" (`error` says the
    /// build did not finish); GitLab's running state is what PaC posts too; Bitbucket's
    /// `STOPPED` is its cancelled.
    pub fn provider_state(self, provider: GitProvider) -> &'static str {
        use BuildState::*;
        match provider {
            GitProvider::Github | GitProvider::Gitea | GitProvider::Forgejo => match self {
                Pending => "pending",
                Success => "success",
                Failure | TimedOut => "failure",
                Cancelled => "error",
            },
            GitProvider::Gitlab => match self {
                Pending => "running",
                Success => "success",
                Failure | TimedOut => "failed",
                Cancelled => "canceled",
            },
            GitProvider::Bitbucket => match self {
                Pending => "INPROGRESS",
                Success => "SUCCESSFUL",
                Failure | TimedOut => "FAILED",
                Cancelled => "STOPPED",
            },
        }
    }
}

/// One status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// Whose API.
    pub provider: GitProvider,
    /// The canonical repository URL (`https://host/owner/name`), from the run.
    pub repo_url: String,
    /// The commit.
    pub sha: String,
    /// The full ref (`refs/heads/main`), when known: GitLab and Bitbucket take it.
    pub git_ref: Option<String>,
    /// The status context (Bitbucket: key, shortened to 40 characters with a hash).
    pub context: String,
    /// The state.
    pub state: BuildState,
    /// Short text; cut to [`MAX_DESCRIPTION_CHARS`] without emoji.
    pub description: String,
    /// The link on the status.
    pub target_url: Option<String>,
}

/// A request to a provider's API, built without I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// Full URL (API base + path).
    pub url: String,
    /// JSON body.
    pub body: Value,
}

/// The path of the repository (`owner/name`, GitLab `group/sub/name`) in its canonical URL.
pub fn repository_path(repo_url: &str) -> Option<String> {
    let rest = repo_url
        .split_once("://")
        .map_or(repo_url, |(_, rest)| rest);
    let (_, path) = rest.split_once('/')?;
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (path.split('/').count() >= 2 && path.split('/').all(|s| !s.is_empty() && s != ".."))
        .then(|| path.to_owned())
}

/// `text` cut to `max` characters, without 4-byte characters (GitHub refuses them) or control
/// characters.
pub fn clean_text(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| c.len_utf8() < 4)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.chars().count() <= max {
        return cleaned;
    }
    let mut cut: String = cleaned.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Bitbucket's key for `context`: the context itself when it fits in 40 characters, else its
/// first 31 characters, `-` and 8 hex digits of its SHA-256 (stable, and distinct per context).
pub fn bitbucket_key(context: &str) -> String {
    if context.chars().count() <= MAX_BITBUCKET_KEY_CHARS {
        return context.to_owned();
    }
    let hash = hex::encode(Sha256::digest(context.as_bytes()));
    let head: String = context.chars().take(31).collect();
    format!("{head}-{}", &hash[..8])
}

fn encode_segment(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// The request that posts `report` to the API at `api` (no trailing slash needed).
pub fn build_request(api: &str, report: &StatusReport) -> Result<ProviderRequest, String> {
    let api = api.trim_end_matches('/');
    let path = repository_path(&report.repo_url)
        .ok_or_else(|| format!("{:?} names no repository path", report.repo_url))?;
    if report.sha.is_empty() || !report.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{:?} is not a commit sha", report.sha));
    }
    let sha = &report.sha;
    let state = report.state.provider_state(report.provider);
    let description = clean_text(&report.description, MAX_DESCRIPTION_CHARS);
    let mut body = serde_json::Map::new();
    let url = match report.provider {
        GitProvider::Github | GitProvider::Gitea | GitProvider::Forgejo => {
            body.insert("state".into(), json!(state));
            body.insert("context".into(), json!(report.context));
            body.insert("description".into(), json!(description));
            if let Some(target) = &report.target_url {
                body.insert("target_url".into(), json!(target));
            }
            format!("{api}/repos/{}/statuses/{sha}", encode_path(&path))
        }
        GitProvider::Gitlab => {
            body.insert("state".into(), json!(state));
            body.insert("name".into(), json!(report.context));
            body.insert("description".into(), json!(description));
            if let Some(target) = &report.target_url {
                body.insert("target_url".into(), json!(target));
            }
            if let Some(name) = report.git_ref.as_deref().and_then(short_ref) {
                body.insert("ref".into(), json!(name));
            }
            // The project's path, URL-encoded as one segment (`group%2Fsub%2Fname`).
            format!("{api}/projects/{}/statuses/{sha}", encode_segment(&path))
        }
        GitProvider::Bitbucket => {
            let url = report
                .target_url
                .clone()
                .unwrap_or_else(|| format!("{}/commits/{sha}", report.repo_url));
            body.insert("key".into(), json!(bitbucket_key(&report.context)));
            body.insert("state".into(), json!(state));
            body.insert("name".into(), json!(clean_text(&report.context, 254)));
            body.insert("description".into(), json!(description));
            body.insert("url".into(), json!(url));
            if let Some(name) = report.git_ref.as_deref().and_then(short_ref) {
                body.insert("refname".into(), json!(name));
            }
            format!(
                "{api}/repositories/{}/commit/{sha}/statuses/build",
                encode_path(&path)
            )
        }
    };
    Ok(ProviderRequest {
        url,
        body: Value::Object(body),
    })
}

/// The check run that posts `report` as a GitHub App (`POST /repos/{o}/{r}/check-runs`):
/// `in_progress` while pending, else `completed` with the conclusion. Each state is a new check
/// run of the same name; GitHub shows the latest one of a name on the commit.
pub fn build_check_run(api: &str, report: &StatusReport) -> Result<ProviderRequest, String> {
    let api = api.trim_end_matches('/');
    let path = repository_path(&report.repo_url)
        .ok_or_else(|| format!("{:?} names no repository path", report.repo_url))?;
    if report.sha.is_empty() || !report.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{:?} is not a commit sha", report.sha));
    }
    let description = clean_text(&report.description, MAX_DESCRIPTION_CHARS);
    let mut body = json!({
        "name": report.context,
        "head_sha": report.sha,
        "output": {"title": description, "summary": description},
    });
    let conclusion = match report.state {
        BuildState::Pending => None,
        BuildState::Success => Some("success"),
        BuildState::Failure => Some("failure"),
        BuildState::Cancelled => Some("cancelled"),
        BuildState::TimedOut => Some("timed_out"),
    };
    match conclusion {
        None => body["status"] = json!("in_progress"),
        Some(conclusion) => {
            body["status"] = json!("completed");
            body["conclusion"] = json!(conclusion);
            body["completed_at"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
    }
    if let Some(target) = &report.target_url {
        body["details_url"] = json!(target);
    }
    Ok(ProviderRequest {
        url: format!("{api}/repos/{}/check-runs", encode_path(&path)),
        body,
    })
}

fn short_ref(git_ref: &str) -> Option<&str> {
    let name = git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref);
    (!name.is_empty()).then_some(name)
}

/// A `target_url` from a template: `{namespace}`, `{name}`, `{kind}`, `{uid}`, `{rule}` and
/// `{sha}` replaced, each percent-encoded as a URL path segment.
pub fn render_target_url(template: &str, variables: &BTreeMap<&str, &str>) -> String {
    let mut out = template.to_owned();
    for (name, value) in variables {
        out = out.replace(&format!("{{{name}}}"), &encode_segment(value));
    }
    out
}

/// A run's duration as `1h2m3s` / `4m5s` / `6s`.
pub fn short_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point
mod tests {
    use super::*;

    fn report(provider: GitProvider) -> StatusReport {
        StatusReport {
            provider,
            repo_url: "https://git.example.com/group/sub/app".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            git_ref: Some("refs/heads/main".into()),
            context: "tekflux/build".into(),
            state: BuildState::Pending,
            description: "build-abc: 🚀 started".into(),
            target_url: Some("https://dash/#/build-abc".into()),
        }
    }

    #[test]
    fn requests_per_provider() {
        let github = build_request("https://ghe/api/v3/", &report(GitProvider::Github)).unwrap();
        assert_eq!(
            github.url,
            "https://ghe/api/v3/repos/group/sub/app/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(github.body["state"], "pending");
        assert_eq!(github.body["description"], "build-abc:  started");
        let gitlab = build_request("https://gl/api/v4", &report(GitProvider::Gitlab)).unwrap();
        assert!(
            gitlab
                .url
                .starts_with("https://gl/api/v4/projects/group%2Fsub%2Fapp/statuses/")
        );
        assert_eq!(gitlab.body["state"], "running");
        assert_eq!(gitlab.body["name"], "tekflux/build");
        assert_eq!(gitlab.body["ref"], "main");
        let bitbucket = build_request("https://bb/2.0", &report(GitProvider::Bitbucket)).unwrap();
        assert!(
            bitbucket
                .url
                .ends_with("/commit/0123456789abcdef0123456789abcdef01234567/statuses/build")
        );
        assert_eq!(bitbucket.body["state"], "INPROGRESS");
        assert_eq!(bitbucket.body["key"], "tekflux/build");
    }

    #[test]
    fn check_runs_complete_with_a_conclusion() {
        let mut pending = report(GitProvider::Github);
        pending.repo_url = "https://github.com/acme/shop".into();
        let request = build_check_run("https://api.github.com", &pending).unwrap();
        assert_eq!(
            request.url,
            "https://api.github.com/repos/acme/shop/check-runs"
        );
        assert_eq!(request.body["status"], "in_progress");
        assert_eq!(request.body["name"], "tekflux/build");
        assert!(request.body.get("conclusion").is_none());
        let done = StatusReport {
            state: BuildState::TimedOut,
            ..pending
        };
        let request = build_check_run("https://api.github.com", &done).unwrap();
        assert_eq!(request.body["status"], "completed");
        assert_eq!(request.body["conclusion"], "timed_out");
        assert_eq!(request.body["details_url"], "https://dash/#/build-abc");
    }

    #[test]
    fn states_map_to_the_closest() {
        assert_eq!(
            BuildState::Cancelled.provider_state(GitProvider::Github),
            "error"
        );
        assert_eq!(
            BuildState::TimedOut.provider_state(GitProvider::Gitlab),
            "failed"
        );
        assert_eq!(
            BuildState::Cancelled.provider_state(GitProvider::Bitbucket),
            "STOPPED"
        );
    }

    #[test]
    fn long_texts_are_cut() {
        let long = "x".repeat(300);
        assert_eq!(clean_text(&long, 140).chars().count(), 140);
        let key = bitbucket_key(&format!("cluster-eu-west-1/{long}"));
        assert_eq!(key.chars().count(), 40);
        assert_ne!(key, bitbucket_key(&format!("cluster-eu-west-2/{long}")));
        assert_eq!(bitbucket_key("tekflux/build"), "tekflux/build");
    }

    #[test]
    fn target_urls_are_rendered_encoded() {
        let variables = BTreeMap::from([("namespace", "ci"), ("name", "build a")]);
        assert_eq!(
            render_target_url(
                "https://d/#/namespaces/{namespace}/pipelineruns/{name}",
                &variables
            ),
            "https://d/#/namespaces/ci/pipelineruns/build%20a"
        );
    }

    #[test]
    fn repository_paths() {
        assert_eq!(
            repository_path("https://github.com/o/r").as_deref(),
            Some("o/r")
        );
        assert_eq!(
            repository_path("https://github.com/o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(repository_path("https://github.com/r"), None);
    }
}
