//! The build's state on the commit: one status per run and rule, posted to the git provider's
//! REST API (GitHub and GitHub Enterprise Server, GitLab, Gitea, Forgejo, Bitbucket Cloud).
//!
//! git-push reports `pending` when it creates a run and run-complete the outcome when the run is
//! archived; both share this client, as they share the S3 and Kubernetes clients. Reporting is
//! best-effort: [`StatusReporter::report`] never returns an error, so no webhook delivery and no
//! archive ever fails because a provider is down. A failure is logged (never the token),
//! counted, and retried a bounded number of times with backoff that honours the provider's
//! rate-limit headers (`Retry-After`, `X-RateLimit-Reset`, GitLab's `RateLimit-Reset`).
//!
//! The API base comes from the config only (`providers.<p>.status.api`): the repository's path
//! is taken from the run, but the host the token is sent to never is.
//!
//! Building a request ([`build_request`]) is pure; only [`StatusReporter::report`] does I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Config, GitProvider, Secret, StatusSettings};
use crate::metrics::{CounterFamily, Metrics};

pub mod github_app;

use github_app::GithubApp;

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

/// The hosted API base of `provider`, when it has one.
pub fn default_api(provider: GitProvider) -> Option<&'static str> {
    match provider {
        GitProvider::Github => Some("https://api.github.com"),
        GitProvider::Gitlab => Some("https://gitlab.com/api/v4"),
        GitProvider::Bitbucket => Some("https://api.bitbucket.org/2.0"),
        GitProvider::Gitea | GitProvider::Forgejo => None,
    }
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

/// How reporting retries: at most `attempts` requests, waits doubling from `base_delay`, and no
/// wait that would end after `deadline` from the first request (a `Retry-After` beyond it is
/// given up on, counted as `rate_limited`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Requests per report, the first included.
    pub attempts: u32,
    /// First backoff.
    pub base_delay: Duration,
    /// Longest total time one report may take.
    pub deadline: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            deadline: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// How a report ended (also the `outcome` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// The provider accepted it.
    Posted,
    /// The provider already had this state (GitLab's "Cannot transition status").
    Unchanged,
    /// Reporting is off for this provider.
    NotConfigured,
    /// The provider refused the token (401/403).
    Unauthorized,
    /// No such repository or commit, or the token cannot see it (404).
    NotFound,
    /// The request was refused as invalid (400/409/422), e.g. GitHub's 1000-per-context cap.
    Rejected,
    /// Still rate-limited when the retries or the deadline ran out.
    RateLimited,
    /// Server errors or network failures until the retries ran out.
    Unavailable,
    /// The report could not be built (a run without a repository path or sha).
    Invalid,
}

impl Reported {
    /// The metric label.
    pub fn kind(self) -> &'static str {
        match self {
            Reported::Posted => "posted",
            Reported::Unchanged => "unchanged",
            Reported::NotConfigured => "not_configured",
            Reported::Unauthorized => "unauthorized",
            Reported::NotFound => "not_found",
            Reported::Rejected => "rejected",
            Reported::RateLimited => "rate_limited",
            Reported::Unavailable => "unavailable",
            Reported::Invalid => "invalid",
        }
    }
}

/// How a provider's requests are authenticated.
enum Auth {
    /// None at the provider: only rules with their own token report.
    None,
    /// A token from the config.
    Token(Secret),
    /// A GitHub App's installation tokens, minted when needed (check runs).
    App(GithubApp),
}

struct ProviderClient {
    api: String,
    auth: Auth,
    http: reqwest::Client,
    settings: StatusSettings,
}

/// One failed attempt: whether to try again, how long the provider asked to wait, and the
/// outcome if no retry follows.
struct Failed {
    retry: bool,
    wait: Option<Duration>,
    outcome: Reported,
}

struct Inner {
    clients: BTreeMap<GitProvider, ProviderClient>,
    policy: RetryPolicy,
    reports: CounterFamily,
    retries: CounterFamily,
    /// Rules' own tokens, by provider and status context.
    rule_tokens: Vec<(GitProvider, String, Secret)>,
    /// Until when a provider asked this process to wait (a rate limit whose reset lies past the
    /// deadline): reports before then are counted `rate_limited` without a request, so a
    /// limited account is not pressed further (GitHub's secondary limits grow with pressure).
    blocked_until: std::sync::Mutex<BTreeMap<GitProvider, std::time::Instant>>,
}

/// Posts commit statuses; cheap to clone. Providers without `status` settings are skipped.
#[derive(Clone)]
pub struct StatusReporter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StatusReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let apis: BTreeMap<&str, &str> = self
            .inner
            .clients
            .iter()
            .map(|(provider, client)| (provider.as_str(), client.api.as_str()))
            .collect();
        f.debug_struct("StatusReporter")
            .field("apis", &apis)
            .finish_non_exhaustive()
    }
}

impl StatusReporter {
    /// A reporter for every git provider with `status` settings in `config`, registering
    /// `tekflux_commit_status_reports` and `tekflux_commit_status_retries` on `metrics`.
    /// A provider whose CA bundle cannot be used is left out, with an error in the log.
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
        Self::with_policy(config, metrics, RetryPolicy::default())
    }

    /// As [`StatusReporter::new`], retrying as `policy` says.
    pub fn with_policy(config: &Config, metrics: &Metrics, policy: RetryPolicy) -> Self {
        let mut clients = BTreeMap::new();
        for provider in GitProvider::ALL {
            let Some(settings) = config
                .providers
                .git(provider)
                .and_then(|p| p.status.clone())
            else {
                continue;
            };
            let Some(api) = settings
                .api
                .clone()
                .or_else(|| default_api(provider).map(str::to_owned))
            else {
                continue;
            };
            let auth = match (&settings.app, &settings.token) {
                (Some(app), _) if provider == GitProvider::Github => match GithubApp::new(app) {
                    Ok(app) => Auth::App(app),
                    Err(error) => {
                        tracing::error!(%provider, "check runs are off: {error}");
                        continue;
                    }
                },
                (_, Some(token)) => Auth::Token(token.clone()),
                _ => Auth::None,
            };
            match http_client(&settings, &policy) {
                Ok(http) => {
                    clients.insert(
                        provider,
                        ProviderClient {
                            api: api.trim_end_matches('/').to_owned(),
                            auth,
                            http,
                            settings,
                        },
                    );
                }
                Err(error) => tracing::error!(
                    %provider,
                    "commit statuses are off for this provider: {error}"
                ),
            }
        }
        Self {
            inner: Arc::new(Inner {
                clients,
                policy,
                rule_tokens: rule_tokens(config),
                blocked_until: std::sync::Mutex::new(BTreeMap::new()),
                reports: metrics.counter_family(
                    "tekflux_commit_status_reports",
                    "Commit statuses reported to git providers, by provider, state and outcome \
                     (posted, unchanged, unauthorized, not_found, rejected, rate_limited, \
                     unavailable, invalid)",
                    &["provider", "state", "outcome"],
                ),
                retries: metrics.counter_family(
                    "tekflux_commit_status_retries",
                    "Commit status requests repeated after a 429, a rate-limited 403, a 5xx or \
                     a network error",
                    &["provider"],
                ),
            }),
        }
    }

    /// The status settings of `provider`, when it reports.
    pub fn settings(&self, provider: GitProvider) -> Option<&StatusSettings> {
        self.inner.clients.get(&provider).map(|c| &c.settings)
    }

    /// Posts `report`; never fails. Logs and counts what happened.
    pub async fn report(&self, report: &StatusReport) -> Reported {
        let Some(client) = self.inner.clients.get(&report.provider) else {
            return Reported::NotConfigured;
        };
        if let Some(until) = self.blocked_until(report.provider) {
            tracing::warn!(
                provider = %report.provider,
                context = %report.context,
                state = report.state.as_str(),
                wait_seconds = until.saturating_duration_since(std::time::Instant::now()).as_secs(),
                "commit status not reported: the provider's rate limit has not reset yet"
            );
            self.inner.reports.inc(&[
                report.provider.as_str(),
                report.state.as_str(),
                Reported::RateLimited.kind(),
            ]);
            return Reported::RateLimited;
        }
        let rule_token = self.rule_token(report.provider, &report.context);
        let built = match (&client.auth, rule_token) {
            (Auth::App(_), None) => build_check_run(&client.api, report),
            _ => build_request(&client.api, report),
        };
        let outcome = match built {
            Ok(request) => self.send(client, report, &request, rule_token).await,
            Err(error) => {
                tracing::warn!(provider = %report.provider, "commit status not reported: {error}");
                Reported::Invalid
            }
        };
        self.inner.reports.inc(&[
            report.provider.as_str(),
            report.state.as_str(),
            outcome.kind(),
        ]);
        outcome
    }

    async fn send(
        &self,
        client: &ProviderClient,
        report: &StatusReport,
        request: &ProviderRequest,
        rule_token: Option<&Secret>,
    ) -> Reported {
        let policy = self.inner.policy;
        let started = std::time::Instant::now();
        let provider = report.provider;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = match self.credential(client, report, rule_token).await {
                Ok(token) => token,
                Err(Failed {
                    retry,
                    wait,
                    outcome,
                }) => {
                    if !retry
                        || attempt >= policy.attempts
                        || !self.pause(provider, started, attempt, wait).await
                    {
                        return outcome;
                    }
                    continue;
                }
            };
            let answer = client
                .http
                .post(&request.url)
                .headers(auth_headers(provider, &token))
                .json(&request.body)
                .send()
                .await;
            let (retry, wait, outcome) = match answer {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    let text = redact(&text, &token);
                    if status == StatusCode::UNAUTHORIZED
                        && let Auth::App(app) = &client.auth
                    {
                        // A revoked installation token: the next report mints another.
                        app.keep_token(None);
                    }
                    match classify(provider, status, &headers, &text) {
                        outcome @ (Reported::Posted | Reported::Unchanged) => {
                            tracing::info!(
                                %provider,
                                context = %report.context,
                                state = report.state.as_str(),
                                sha = %report.sha,
                                outcome = outcome.kind(),
                                "commit status reported"
                            );
                            return outcome;
                        }
                        outcome @ (Reported::RateLimited | Reported::Unavailable) => {
                            tracing::warn!(
                                %provider,
                                context = %report.context,
                                status = status.as_u16(),
                                attempt,
                                "commit status not accepted yet: {}",
                                clean_text(&text, 200)
                            );
                            (true, rate_limit_wait(&headers), outcome)
                        }
                        outcome => {
                            tracing::warn!(
                                %provider,
                                context = %report.context,
                                state = report.state.as_str(),
                                status = status.as_u16(),
                                outcome = outcome.kind(),
                                "commit status refused: {}",
                                clean_text(&text, 200)
                            );
                            return outcome;
                        }
                    }
                }
                Err(error) => {
                    // reqwest's errors carry the URL, never headers: no token in them.
                    tracing::warn!(
                        %provider,
                        context = %report.context,
                        attempt,
                        "commit status request failed: {error}"
                    );
                    (true, None, Reported::Unavailable)
                }
            };
            if !retry || attempt >= policy.attempts {
                tracing::warn!(%provider, context = %report.context, attempts = attempt,
                    outcome = outcome.kind(), "commit status given up on");
                return outcome;
            }
            if !self.pause(provider, started, attempt, wait).await {
                tracing::warn!(%provider, context = %report.context, outcome = outcome.kind(),
                    "commit status given up on: the provider asks to wait past the deadline");
                return outcome;
            }
        }
    }

    /// Waits before attempt `attempt + 1` (what the provider asked, else the backoff); false,
    /// without waiting, when the wait would end past the deadline.
    async fn pause(
        &self,
        provider: GitProvider,
        started: std::time::Instant,
        attempt: u32,
        wait: Option<Duration>,
    ) -> bool {
        let policy = self.inner.policy;
        let backoff = policy.base_delay * 2u32.saturating_pow(attempt - 1);
        let asked = wait;
        let wait = wait.unwrap_or(backoff).max(policy.base_delay);
        if started.elapsed() + wait > policy.deadline {
            if let Some(asked) = asked {
                self.inner
                    .blocked_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(provider, std::time::Instant::now() + asked);
            }
            return false;
        }
        self.inner.retries.inc(&[provider.as_str()]);
        tokio::time::sleep(wait).await;
        true
    }

    /// The own token of the rule whose runs report under `context` (a fan-out run's context
    /// extends its rule's with `/value`).
    fn rule_token(&self, provider: GitProvider, context: &str) -> Option<&Secret> {
        self.inner
            .rule_tokens
            .iter()
            .find(|(p, rule_context, _)| {
                *p == provider
                    && (context == rule_context
                        || context
                            .strip_prefix(rule_context.as_str())
                            .is_some_and(|rest| rest.starts_with('/')))
            })
            .map(|(_, _, token)| token)
    }

    /// When `provider` asked to wait until a time still ahead.
    fn blocked_until(&self, provider: GitProvider) -> Option<std::time::Instant> {
        let mut blocked = self
            .inner
            .blocked_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match blocked.get(&provider) {
            Some(until) if *until > std::time::Instant::now() => Some(*until),
            Some(_) => {
                blocked.remove(&provider);
                None
            }
            None => None,
        }
    }

    /// The token to post with: the configured one, or a GitHub App installation token (kept,
    /// else minted now).
    async fn credential(
        &self,
        client: &ProviderClient,
        report: &StatusReport,
        rule_token: Option<&Secret>,
    ) -> Result<String, Failed> {
        if let Some(token) = rule_token {
            return Ok(String::from_utf8_lossy(token.expose()).into_owned());
        }
        let app = match &client.auth {
            Auth::Token(token) => return Ok(String::from_utf8_lossy(token.expose()).into_owned()),
            Auth::App(app) => app,
            Auth::None => {
                tracing::warn!(provider = %report.provider, context = %report.context,
                    "commit status not reported: neither the provider nor the rule has a token");
                return Err(Failed {
                    retry: false,
                    wait: None,
                    outcome: Reported::NotConfigured,
                });
            }
        };
        if let Some(token) = app.cached_token() {
            return Ok(token);
        }
        let refuse = |outcome| Failed {
            retry: false,
            wait: None,
            outcome,
        };
        let jwt = app.jwt(github_app::now_seconds()).map_err(|error| {
            tracing::warn!(provider = %report.provider, "check run not reported: {error}");
            refuse(Reported::Invalid)
        })?;
        let answer = client
            .http
            .post(format!("{}{}", client.api, app.access_tokens_path()))
            .headers(auth_headers(GitProvider::Github, &jwt))
            .json(&json!({}))
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(provider = %report.provider, "GitHub App token request failed: {error}");
                return Err(Failed {
                    retry: true,
                    wait: None,
                    outcome: Reported::Unavailable,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success()
            && let Some(token) = body["token"].as_str()
        {
            app.keep_token(Some(token.to_owned()));
            return Ok(token.to_owned());
        }
        let message = body["message"].as_str().unwrap_or_default();
        let outcome = match classify(GitProvider::Github, status, &headers, message) {
            // A 2xx without a token is no token.
            Reported::Posted | Reported::Unchanged => Reported::Unavailable,
            outcome => outcome,
        };
        tracing::warn!(
            provider = %report.provider,
            status = status.as_u16(),
            outcome = outcome.kind(),
            "GitHub App installation token refused: {}",
            clean_text(message, 200)
        );
        Err(Failed {
            retry: matches!(outcome, Reported::RateLimited | Reported::Unavailable),
            wait: rate_limit_wait(&headers),
            outcome,
        })
    }
}

/// The rules with their own status token: provider, context, token.
fn rule_tokens(config: &Config) -> Vec<(GitProvider, String, Secret)> {
    config
        .repositories
        .iter()
        .filter_map(|rule| {
            let token = rule.status_token()?;
            let provider = crate::config::bound_provider(rule, &config.providers).ok()?;
            let settings = config.providers.git(provider)?.status.as_ref();
            Some((provider, rule.status_context(settings), token.clone()))
        })
        .collect()
}

fn http_client(settings: &StatusSettings, policy: &RetryPolicy) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(policy.request_timeout)
        .user_agent(concat!("tekflux/", env!("CARGO_PKG_VERSION")))
        // A redirect could carry the token to another host.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(bundle) = &settings.ca_bundle {
        let pem =
            std::fs::read(bundle).map_err(|error| format!("cannot read {bundle}: {error}"))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|error| format!("{bundle} holds no PEM certificates: {error}"))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|error| error.to_string())
}

fn auth_headers(provider: GitProvider, token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let (name, value) = match provider {
        GitProvider::Github => ("authorization", format!("Bearer {token}")),
        GitProvider::Gitlab => ("private-token", token.to_owned()),
        GitProvider::Gitea | GitProvider::Forgejo => ("authorization", format!("token {token}")),
        GitProvider::Bitbucket => ("authorization", format!("Bearer {token}")),
    };
    if let Ok(mut value) = http::HeaderValue::from_str(&value) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    if provider == GitProvider::Github {
        headers.insert(
            "accept",
            http::HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            http::HeaderValue::from_static("2022-11-28"),
        );
    }
    headers
}

/// What an answer means. GitHub signals secondary rate limits with 403 and `Retry-After` or
/// `X-RateLimit-Remaining: 0`; GitLab answers a repeated state with 400 "Cannot transition".
fn classify(
    provider: GitProvider,
    status: StatusCode,
    headers: &HeaderMap,
    text: &str,
) -> Reported {
    if status.is_success() {
        return Reported::Posted;
    }
    let rate_limited_403 = status == StatusCode::FORBIDDEN
        && (headers.contains_key("retry-after")
            || headers
                .get("x-ratelimit-remaining")
                .is_some_and(|value| value.as_bytes() == b"0"));
    match status {
        StatusCode::TOO_MANY_REQUESTS => Reported::RateLimited,
        _ if rate_limited_403 => Reported::RateLimited,
        StatusCode::BAD_REQUEST
            if provider == GitProvider::Gitlab && text.contains("Cannot transition status") =>
        {
            Reported::Unchanged
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Reported::Unauthorized,
        StatusCode::NOT_FOUND => Reported::NotFound,
        _ if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => {
            Reported::Unavailable
        }
        _ => Reported::Rejected,
    }
}

/// How long the provider asks to wait: `Retry-After` seconds, else the epoch-seconds reset of
/// GitHub (`X-RateLimit-Reset`) or GitLab (`RateLimit-Reset`).
pub fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    let reset = number("x-ratelimit-reset").or_else(|| number("ratelimit-reset"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

fn redact(text: &str, token: &str) -> String {
    if token.len() >= 4 {
        text.replace(token, "***")
    } else {
        text.to_owned()
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

    #[test]
    fn reset_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(rate_limit_wait(&headers), Some(Duration::from_secs(7)));
        let mut headers = HeaderMap::new();
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        headers.insert("ratelimit-reset", reset.to_string().parse().unwrap());
        let wait = rate_limit_wait(&headers).unwrap();
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28));
    }
}
