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
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::config::{Config, GitProvider, Secret, StatusSettings};
use crate::metrics::{CounterFamily, Metrics};

mod answer;
pub mod github_app;
mod request;

pub use answer::{Reported, rate_limit_wait};
use answer::{classify, redact};
use github_app::GithubApp;
pub use request::{
    BuildState, MAX_BITBUCKET_KEY_CHARS, MAX_DESCRIPTION_CHARS, ProviderRequest, StatusReport,
    bitbucket_key, build_check_run, build_request, clean_text, render_target_url, repository_path,
    short_duration,
};

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
                .or_else(|| provider.spec().status_api.map(str::to_owned))
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
