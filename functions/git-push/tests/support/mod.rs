//! What the git-push test files share: webhook deliveries as each provider sends them (headers
//! and a recorded payload), signed as the provider signs them.

// Each test file uses its own part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use axum::body::Body;
use axum::http::Request;
use tekflux_git_push::{Provider, signature};

/// The webhook secret of GitHub, Gitea, Forgejo and Bitbucket in the tests' configs.
pub const SECRET: &str = "It's a Secret to Everybody";
/// GitLab's webhook token in the tests' configs.
pub const GITLAB_WEBHOOK_TOKEN: &str = "gl-hook-token-3f9a";

/// A payload of the shared corpus.
pub fn corpus(relative: &str) -> Vec<u8> {
    tekflux_testkit::corpus::read_corpus(relative)
}

/// A payload of this crate's own `tests/data`.
pub fn data(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One webhook delivery as a provider sends it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub provider: Provider,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn new(provider: Provider, headers: &[(&str, &str)], body: Vec<u8>) -> Self {
        Delivery {
            provider,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body,
        }
    }

    pub fn github(event: &str, delivery: &str, body: Vec<u8>) -> Self {
        Self::new(
            Provider::Github,
            &[
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-GitHub-Hook-ID", "292430182"),
                ("User-Agent", "GitHub-Hookshot/044aadd"),
            ],
            body,
        )
    }

    pub fn github_push() -> Self {
        Self::github(
            "push",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            corpus("github/push-3-commits.gith-2012.json"),
        )
    }

    pub fn gitlab_push() -> Self {
        Self::new(
            Provider::Gitlab,
            &[
                ("X-Gitlab-Event", "Push Hook"),
                (
                    "X-Gitlab-Event-UUID",
                    "13792a34-cac6-4fda-95a8-c58e00a3954e",
                ),
                ("Idempotency-Key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"),
            ],
            corpus("gitlab/push.go-gitlab.json"),
        )
    }

    pub fn gitea_push() -> Self {
        Self::new(
            Provider::Gitea,
            &[
                ("X-GitHub-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
                ("X-GitHub-Event", "push"),
                ("X-Gogs-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
                ("X-Gogs-Event", "push"),
                ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
                ("X-Gitea-Event", "push"),
            ],
            corpus("gitea-forgejo/push.gitea-docs.json"),
        )
    }

    pub fn forgejo_push() -> Self {
        Self::new(
            Provider::Forgejo,
            &[
                ("X-Forgejo-Event", "push"),
                ("X-Forgejo-Event-Type", "push"),
                ("X-Forgejo-Delivery", "0c6fa3a9-7b1e-4f7e-bd55-2d3e0c9b8a71"),
                ("X-Gitea-Event", "push"),
                ("X-Gitea-Delivery", "0c6fa3a9-7b1e-4f7e-bd55-2d3e0c9b8a71"),
                ("X-GitHub-Event", "push"),
            ],
            data("forgejo-push.json"),
        )
    }

    pub fn bitbucket_push() -> Self {
        Self::new(
            Provider::Bitbucket,
            &[
                ("X-Event-Key", "repo:push"),
                ("X-Request-UUID", "a9f3c2e1-6b7d-4c5e-8f90-1a2b3c4d5e6f"),
                ("X-Hook-UUID", "{0d4e8f2a-1b3c-4d5e-9f6a-7b8c9d0e1f2a}"),
                ("X-Attempt-Number", "1"),
            ],
            data("bitbucket-repo-push-three-changes.json"),
        )
    }

    /// Every provider's push, signed.
    pub fn all_pushes() -> Vec<Self> {
        vec![
            Self::github_push(),
            Self::gitlab_push(),
            Self::gitea_push(),
            Self::forgejo_push(),
            Self::bitbucket_push(),
        ]
        .into_iter()
        .map(Self::signed)
        .collect()
    }

    /// The same delivery with another delivery id.
    pub fn redelivered_as(mut self, delivery: &str) -> Self {
        for (name, value) in &mut self.headers {
            let lower = name.to_ascii_lowercase();
            if lower.ends_with("-delivery")
                || lower == "x-request-uuid"
                || lower == "idempotency-key"
                || lower == "x-gitlab-event-uuid"
            {
                *value = delivery.to_owned();
            }
        }
        self
    }

    /// Signed with `secret` as the provider does (GitLab: the token itself).
    pub fn signed_with(mut self, secret: &str) -> Self {
        let hex = signature::sign(secret.as_bytes(), &self.body);
        let (header, value) = match self.provider {
            Provider::Github => ("X-Hub-Signature-256", format!("sha256={hex}")),
            Provider::Bitbucket => ("X-Hub-Signature", format!("sha256={hex}")),
            Provider::Gitea => ("X-Gitea-Signature", hex),
            Provider::Forgejo => ("X-Forgejo-Signature", hex),
            Provider::Gitlab => ("X-Gitlab-Token", secret.to_owned()),
        };
        self.headers.push((header.to_owned(), value));
        self
    }

    pub fn signed(self) -> Self {
        let secret = if self.provider == Provider::Gitlab {
            GITLAB_WEBHOOK_TOKEN
        } else {
            SECRET
        };
        self.signed_with(secret)
    }

    pub fn to(&self, uri: &str) -> Request<Body> {
        let mut request = Request::post(uri).header("content-type", "application/json");
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request.body(Body::from(self.body.clone())).unwrap()
    }

    pub fn request(&self) -> Request<Body> {
        self.to(&format!("/webhooks/{}", self.provider.as_str()))
    }
}
