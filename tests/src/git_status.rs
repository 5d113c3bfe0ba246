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

mod answer;
mod captured_logs;

use answer::answer;
pub use captured_logs::CapturedLogs;

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
