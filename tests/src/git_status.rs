//! A git provider's commit-status API on loopback, checking each request the way the provider
//! does: path, method, auth header, body fields and their limits. One server per provider
//! flavour ([`StatusFlavor`]); answers can be scripted ([`GitStatusServer::fail_next`]) to
//! play 401, 403, 404, 409/422, 429 with reset headers and 5xx.
//!
//! - GitHub (and Enterprise Server under `/api/v3`): `POST /repos/{o}/{r}/statuses/{sha}`,
//!   `Authorization: Bearer`, `state` one of error/failure/pending/success, `description` at
//!   most 140 characters and no 4-byte characters, at most 1000 statuses per sha and context.
//! - GitLab: `POST /api/v4/projects/{url-encoded path}/statuses/{sha}`, `PRIVATE-TOKEN`,
//!   `state` one of pending/running/success/failed/canceled, `name`; posting the state the
//!   status already has is a 400 "Cannot transition status".
//! - Gitea/Forgejo: `POST /api/v1/repos/{o}/{r}/statuses/{sha}`, `Authorization: token`.
//! - GitHub Apps ([`GitStatusServer::start_github_app`]): `POST /app/installations/{id}/access_tokens`
//!   with an RS256 JWT of the App (checked against its public key, `iss`, at most 10 minutes),
//!   answered with an installation token that `POST /repos/{o}/{r}/check-runs` then takes:
//!   `name`, `head_sha`, `status` queued/in_progress/completed, a `conclusion` exactly when
//!   completed, `output.summary` at most 65535 characters.
//! - Bitbucket Cloud: `POST /2.0/repositories/{ws}/{slug}/commit/{sha}/statuses/build`,
//!   `Authorization: Bearer`, `key` at most 40 characters, `url` required (under 450),
//!   `state` one of INPROGRESS/SUCCESSFUL/FAILED/STOPPED.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which provider the server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFlavor {
    /// github.com (API at the root).
    Github,
    /// GitHub Enterprise Server (API under `/api/v3`).
    GithubEnterprise,
    /// GitLab (`/api/v4`).
    Gitlab,
    /// Gitea or Forgejo (`/api/v1`).
    Gitea,
    /// Bitbucket Cloud (`/2.0`).
    Bitbucket,
}

impl StatusFlavor {
    /// The API base path the config's `api` must end in.
    pub fn base_path(self) -> &'static str {
        match self {
            StatusFlavor::Github => "",
            StatusFlavor::GithubEnterprise => "/api/v3",
            StatusFlavor::Gitlab => "/api/v4",
            StatusFlavor::Gitea => "/api/v1",
            StatusFlavor::Bitbucket => "/2.0",
        }
    }
}

/// A scripted answer, used instead of checking the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// This status code and body, no special headers.
    Status(u16),
    /// 429 with `Retry-After: seconds`.
    RetryAfter(u64),
    /// 429 (GitHub: 403) with `X-RateLimit-Remaining: 0` and a reset `seconds` from now, in
    /// the provider's own header (`X-RateLimit-Reset`, GitLab `RateLimit-Reset`).
    ResetIn(u64),
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The path.
    pub path: String,
    /// The status the server answered.
    pub answer: u16,
    /// The JSON body (Null when none).
    pub body: Value,
}

/// One status the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedStatus {
    /// `owner/name` (GitLab: the decoded project path).
    pub repository: String,
    /// The commit.
    pub sha: String,
    /// Context, GitLab `name`, Bitbucket `key`.
    pub context: String,
    /// The provider's state.
    pub state: String,
    /// The description.
    pub description: String,
    /// `target_url` / Bitbucket `url`.
    pub target_url: Option<String>,
}

#[derive(Default)]
struct Log {
    /// Installation tokens handed out.
    issued: Vec<String>,
    script: VecDeque<Scripted>,
    received: Vec<Received>,
    accepted: Vec<AcceptedStatus>,
    down: bool,
}

/// A GitHub App the server knows: id, installation id, public key (PKCS#1 DER).
struct App {
    id: u64,
    installation: u64,
    public_der: Vec<u8>,
}

struct Shared {
    flavor: StatusFlavor,
    app: Option<App>,
    token: String,
    repositories: Vec<String>,
    log: Mutex<Log>,
}

/// The server; it stops when dropped.
pub struct GitStatusServer {
    base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GitStatusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitStatusServer")
            .field("base", &self.base)
            .field("flavor", &self.shared.flavor)
            .finish_non_exhaustive()
    }
}

impl Drop for GitStatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitStatusServer {
    /// Starts a server on `127.0.0.1:0` that accepts `token` for `repositories` (`owner/name`).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(flavor: StatusFlavor, token: &str, repositories: &[&str]) -> Self {
        Self::start_with(flavor, None, token, repositories).await
    }

    /// A GitHub (`/api/v3` when `enterprise`) that knows the App `id`, installed as
    /// `installation`, whose public key is the PEM `public_key` (`BEGIN RSA PUBLIC KEY`).
    ///
    /// # Panics
    /// When the key is not such a PEM or no loopback port can be bound.
    pub async fn start_github_app(
        enterprise: bool,
        id: u64,
        installation: u64,
        public_key: &str,
        repositories: &[&str],
    ) -> Self {
        let body: String = public_key
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        use base64::Engine as _;
        let public_der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("a PEM public key");
        let flavor = if enterprise {
            StatusFlavor::GithubEnterprise
        } else {
            StatusFlavor::Github
        };
        let app = App {
            id,
            installation,
            public_der,
        };
        // No token works for statuses: only the App's installation tokens do, for check runs.
        Self::start_with(flavor, Some(app), "", repositories).await
    }

    /// How many installation tokens were handed out.
    pub fn tokens_issued(&self) -> usize {
        self.log().issued.len()
    }

    async fn start_with(
        flavor: StatusFlavor,
        app: Option<App>,
        token: &str,
        repositories: &[&str],
    ) -> Self {
        let shared = Arc::new(Shared {
            flavor,
            app,
            token: token.to_owned(),
            repositories: repositories.iter().map(|r| (*r).to_owned()).collect(),
            log: Mutex::new(Log::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}{}", flavor.base_path()),
            shared,
            task,
        }
    }

    /// The API base to configure as `providers.<p>.status.api`.
    pub fn api(&self) -> &str {
        &self.base
    }

    /// Answers the next requests from `script`, in order, before checking any.
    pub fn fail_next(&self, script: impl IntoIterator<Item = Scripted>) {
        self.log().script.extend(script);
    }

    /// Answers every request 503 (an outage) until called with `false`.
    pub fn set_down(&self, down: bool) {
        self.log().down = down;
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.log().received.clone()
    }

    /// Every status accepted, in order.
    pub fn statuses(&self) -> Vec<AcceptedStatus> {
        self.log().accepted.clone()
    }

    /// Waits up to 5 s until `count` statuses are accepted; returns them.
    pub async fn wait_for_statuses(&self, count: usize) -> Vec<AcceptedStatus> {
        for _ in 0..500 {
            let statuses = self.statuses();
            if statuses.len() >= count {
                return statuses;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.statuses()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let response = answer(&shared, &method, &path, &headers, &body_json);
    let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
    log.received.push(Received {
        path,
        answer: response.status().as_u16(),
        body: body_json,
    });
    response
}

fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let flavor = shared.flavor;
    {
        let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.down {
            return error(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance");
        }
        if let Some(scripted) = log.script.pop_front() {
            return scripted_answer(flavor, scripted);
        }
    }
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let Some(rest) = path.strip_prefix(flavor.base_path()) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let auth = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(app) = &shared.app {
        return app_answer(shared, app, rest, auth("authorization"), body);
    }
    // Auth first, as the providers do: a bad token never learns whether a repository exists.
    let authorized = match flavor {
        StatusFlavor::Github | StatusFlavor::GithubEnterprise | StatusFlavor::Bitbucket => {
            auth("authorization") == Some(&format!("Bearer {}", shared.token))
        }
        StatusFlavor::Gitlab => {
            auth("private-token") == Some(shared.token.as_str())
                || auth("authorization") == Some(&format!("Bearer {}", shared.token))
        }
        StatusFlavor::Gitea => auth("authorization") == Some(&format!("token {}", shared.token)),
    };
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if matches!(
        flavor,
        StatusFlavor::Github | StatusFlavor::GithubEnterprise
    ) && auth("user-agent").is_none()
    {
        return error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let (repository, sha) = match (flavor, segments.as_slice()) {
        (
            StatusFlavor::Github | StatusFlavor::GithubEnterprise | StatusFlavor::Gitea,
            ["repos", owner, name, "statuses", sha],
        ) => (format!("{owner}/{name}"), *sha),
        (StatusFlavor::Gitlab, ["projects", project, "statuses", sha]) => {
            (project.replace("%2F", "/").replace("%2f", "/"), *sha)
        }
        (
            StatusFlavor::Bitbucket,
            [
                "repositories",
                workspace,
                slug,
                "commit",
                sha,
                "statuses",
                "build",
            ],
        ) => (format!("{workspace}/{slug}"), *sha),
        _ => return error(StatusCode::NOT_FOUND, "Not Found"),
    };
    if !shared.repositories.contains(&repository) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "No commit found for SHA");
    }
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let description = text("description").unwrap_or_default();
    let (context, state, target_url) = match flavor {
        StatusFlavor::Github | StatusFlavor::GithubEnterprise | StatusFlavor::Gitea => {
            let states: &[&str] = if flavor == StatusFlavor::Gitea {
                &[
                    "pending", "success", "error", "failure", "warning", "skipped",
                ]
            } else {
                &["error", "failure", "pending", "success"]
            };
            let Some(state) = text("state").filter(|s| states.contains(&s.as_str())) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: state");
            };
            if description.chars().count() > 140 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: description is too long (maximum is 140 characters)",
                );
            }
            if description.chars().any(|c| c.len_utf8() == 4) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: description",
                );
            }
            let context = text("context").unwrap_or_else(|| "default".to_owned());
            (context, state, text("target_url"))
        }
        StatusFlavor::Gitlab => {
            let states = ["pending", "running", "success", "failed", "canceled"];
            let Some(state) = text("state").filter(|s| states.contains(&s.as_str())) else {
                return error(StatusCode::BAD_REQUEST, "state does not have a valid value");
            };
            let context = text("name")
                .or_else(|| text("context"))
                .unwrap_or_else(|| "default".to_owned());
            (context, state, text("target_url"))
        }
        StatusFlavor::Bitbucket => {
            let states = ["INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"];
            let Some(state) = text("state").filter(|s| states.contains(&s.as_str())) else {
                return error(StatusCode::BAD_REQUEST, "state: invalid");
            };
            let Some(key) = text("key").filter(|k| !k.is_empty() && k.chars().count() <= 40) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "key: Ensure this value has at most 40 characters",
                );
            };
            let Some(url) = text("url").filter(|u| u.len() < 450) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "url: required, under 450 characters",
                );
            };
            if text("name").is_some_and(|n| n.chars().count() >= 255) {
                return error(StatusCode::BAD_REQUEST, "name: too long");
            }
            (key, state, Some(url))
        }
    };
    let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
    let same =
        |s: &&AcceptedStatus| s.repository == repository && s.sha == sha && s.context == context;
    if flavor == StatusFlavor::Gitlab
        && log
            .accepted
            .iter()
            .rev()
            .find(same)
            .is_some_and(|s| s.state == state)
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Cannot transition status via :run from :{state}"),
        );
    }
    if log.accepted.iter().filter(same).count() >= 1000 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This SHA and context has reached the maximum number of statuses.",
        );
    }
    let accepted = AcceptedStatus {
        repository,
        sha: sha.to_owned(),
        context: context.clone(),
        state: state.clone(),
        description: description.clone(),
        target_url: target_url.clone(),
    };
    log.accepted.push(accepted);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": log.accepted.len(), "state": state, "context": context,
            "description": description, "target_url": target_url,
        })),
    )
        .into_response()
}

/// GitHub as an App sees it: installation tokens for a signed JWT, check runs for those tokens.
fn app_answer(
    shared: &Shared,
    app: &App,
    rest: &str,
    authorization: Option<&str>,
    body: &Value,
) -> Response {
    let bearer = authorization.and_then(|value| value.strip_prefix("Bearer "));
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["app", "installations", installation, "access_tokens"] => {
            let Some(jwt) = bearer else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "A JSON web token could not be decoded",
                );
            };
            let key = jsonwebtoken::DecodingKey::from_rsa_der(&app.public_der);
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_required_spec_claims(&["exp", "iat", "iss"]);
            validation.set_issuer(&[app.id.to_string()]);
            let claims = match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
                Ok(data) => data.claims,
                Err(_) => {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "A JSON web token could not be decoded",
                    );
                }
            };
            let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
            if !matches!((iat, exp), (Some(iat), Some(exp)) if exp > iat && exp - iat <= 660) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "'Expiration time' claim ('exp') is too far in the future",
                );
            }
            if *installation != app.installation.to_string() {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
            let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.issued.push(token.clone());
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            (
                StatusCode::CREATED,
                axum::Json(json!({"token": token, "expires_at": expires.to_rfc3339()})),
            )
                .into_response()
        }
        ["repos", owner, name, "check-runs"] => {
            let issued = {
                let log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
                bearer.is_some_and(|token| log.issued.iter().any(|t| t == token))
            };
            if !issued {
                return error(StatusCode::UNAUTHORIZED, "Bad credentials");
            }
            let repository = format!("{owner}/{name}");
            if !shared.repositories.contains(&repository) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
            let invalid = |what: &str| {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("Invalid request: {what}"),
                )
            };
            let Some(check) = text("name").filter(|n| !n.is_empty()) else {
                return invalid("name");
            };
            let Some(sha) = text("head_sha")
                .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                return invalid("head_sha");
            };
            let status = text("status").unwrap_or_else(|| "queued".to_owned());
            let conclusions = [
                "action_required",
                "cancelled",
                "failure",
                "neutral",
                "success",
                "skipped",
                "timed_out",
            ];
            let conclusion = text("conclusion");
            let state = match (status.as_str(), conclusion) {
                ("queued" | "in_progress", None) => status.clone(),
                ("completed", Some(c)) if conclusions.contains(&c.as_str()) => c,
                _ => return invalid("status and conclusion"),
            };
            let output = body.get("output");
            let summary = output
                .and_then(|o| o.get("summary"))
                .and_then(Value::as_str);
            if output.is_some() && summary.is_none_or(|s| s.chars().count() > 65535) {
                return invalid("output.summary");
            }
            let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.accepted.push(AcceptedStatus {
                repository,
                sha,
                context: check,
                state,
                description: output
                    .and_then(|o| o.get("title"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                target_url: text("details_url"),
            });
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": log.accepted.len(), "status": status})),
            )
                .into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn scripted_answer(flavor: StatusFlavor, scripted: Scripted) -> Response {
    match scripted {
        Scripted::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, status.canonical_reason().unwrap_or("error"))
        }
        Scripted::RetryAfter(seconds) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        Scripted::ResetIn(seconds) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + seconds;
            let (status, header) = match flavor {
                // GitHub's primary limit is a 403 with the remaining count at 0.
                StatusFlavor::Github | StatusFlavor::GithubEnterprise => {
                    (StatusCode::FORBIDDEN, "x-ratelimit-reset")
                }
                StatusFlavor::Gitlab => (StatusCode::TOO_MANY_REQUESTS, "ratelimit-reset"),
                _ => (StatusCode::TOO_MANY_REQUESTS, "x-ratelimit-reset"),
            };
            let mut response = error(status, "API rate limit exceeded");
            let headers = response.headers_mut();
            if let Ok(value) = reset.to_string().parse() {
                headers.insert(header, value);
            }
            headers.insert("x-ratelimit-remaining", http::HeaderValue::from_static("0"));
            response
        }
    }
}

/// Every log line written while the guard lives (on this thread, and on tasks a current-thread
/// runtime runs here), as JSON lines with all fields: to check that no token is ever logged.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::fmt::Debug for CapturedLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapturedLogs")
    }
}

impl CapturedLogs {
    /// Starts capturing at `debug` and above; capture ends when the guard is dropped.
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
