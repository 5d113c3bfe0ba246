//! Pushes for tests: one chainable builder of git-push's normalized push.
//!
//! It writes the `Push` JSON, which is also the documented `data` of a `dev.tekflux.git.pushed.v1`
//! event (git-push's `providers::normalized`), and deserialises it into whatever type the test
//! asks for, so the testkit needs no dependency on git-push (which depends on the testkit):
//!
//! ```ignore
//! let push: Push = TestPush::new(Provider::Github, "https://github.com/acme/shop")
//!     .tag("v1.2.0")
//!     .paths(["api/main.go"])
//!     .build();
//! ```
//!
//! Unless told otherwise a push updates `refs/heads/main` of an existing branch from
//! `1111…` to `2222…`, clones from `<repo>.git`, touches no path (with a complete list), has no
//! pusher and is delivery `d-1`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A normalized push under construction; see the module documentation for its defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct TestPush {
    provider: Value,
    repo_url: String,
    clone_url: Option<String>,
    git_ref: String,
    before: String,
    after: String,
    created: bool,
    deleted: bool,
    forced: bool,
    changed_paths: Vec<String>,
    paths_complete: bool,
    pusher: String,
    delivery_id: String,
}

impl TestPush {
    /// A push to `repo_url` (canonical: `https://host/owner/name`) from `provider`, given as
    /// git-push's `Provider` or its name (`"github"`).
    pub fn new(provider: impl Serialize, repo_url: &str) -> Self {
        let provider = serde_json::to_value(provider)
            .unwrap_or_else(|e| panic!("a provider that does not serialise: {e}"));
        Self {
            provider,
            repo_url: repo_url.to_owned(),
            clone_url: None,
            git_ref: "refs/heads/main".to_owned(),
            before: "1".repeat(40),
            after: "2".repeat(40),
            created: false,
            deleted: false,
            forced: false,
            changed_paths: Vec::new(),
            paths_complete: true,
            pusher: String::new(),
            delivery_id: "d-1".to_owned(),
        }
    }

    /// A push of branch `name` (`refs/heads/<name>`).
    pub fn branch(self, name: &str) -> Self {
        self.git_ref(&format!("refs/heads/{name}"))
    }

    /// A push of tag `name` (`refs/tags/<name>`).
    pub fn tag(self, name: &str) -> Self {
        self.git_ref(&format!("refs/tags/{name}"))
    }

    /// A push of the full ref `git_ref`, of any kind.
    pub fn git_ref(mut self, git_ref: &str) -> Self {
        git_ref.clone_into(&mut self.git_ref);
        self
    }

    /// The clone URL, when it is not `<repo>.git`.
    pub fn clone_url(mut self, url: &str) -> Self {
        self.clone_url = Some(url.to_owned());
        self
    }

    /// The commit before the push.
    pub fn before(mut self, sha: &str) -> Self {
        sha.clone_into(&mut self.before);
        self
    }

    /// The commit after the push.
    pub fn after(mut self, sha: &str) -> Self {
        sha.clone_into(&mut self.after);
        self
    }

    /// The ref did not exist before (the flag only: set `before` too where it matters).
    pub fn created(mut self) -> Self {
        self.created = true;
        self
    }

    /// The ref no longer exists (the flag only: set `after` too where it matters).
    pub fn deleted(mut self) -> Self {
        self.deleted = true;
        self
    }

    /// History was rewritten.
    pub fn forced(mut self) -> Self {
        self.forced = true;
        self
    }

    /// The changed paths, sorted and deduplicated as git-push keeps them.
    pub fn paths<I>(mut self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut paths: Vec<String> = paths.into_iter().map(Into::into).collect();
        paths.sort();
        paths.dedup();
        self.changed_paths = paths;
        self
    }

    /// The provider's commit list was incomplete, so the paths may be too.
    pub fn paths_incomplete(mut self) -> Self {
        self.paths_complete = false;
        self
    }

    /// Who pushed.
    pub fn pusher(mut self, who: &str) -> Self {
        who.clone_into(&mut self.pusher);
        self
    }

    /// The delivery id.
    pub fn delivery(mut self, id: &str) -> Self {
        id.clone_into(&mut self.delivery_id);
        self
    }

    /// The push as JSON: git-push's `Push` serialised, and the `data` of a
    /// `dev.tekflux.git.pushed.v1` event.
    pub fn json(&self) -> Value {
        let (kind, name) = if let Some(branch) = self.git_ref.strip_prefix("refs/heads/") {
            ("branch", branch)
        } else if let Some(tag) = self.git_ref.strip_prefix("refs/tags/") {
            ("tag", tag)
        } else {
            ("other", self.git_ref.as_str())
        };
        json!({
            "provider": self.provider,
            "repoUrl": self.repo_url,
            "cloneUrl": self.clone_url.clone().unwrap_or_else(|| format!("{}.git", self.repo_url)),
            "ref": self.git_ref,
            "refKind": {"kind": kind, "name": name},
            "before": self.before,
            "after": self.after,
            "created": self.created,
            "deleted": self.deleted,
            "forced": self.forced,
            "changedPaths": self.changed_paths,
            "pathsComplete": self.paths_complete,
            "pusher": self.pusher,
            "deliveryId": self.delivery_id,
        })
    }

    /// The push as the type the test asks for (git-push's `Push`); panics when that type does
    /// not read the JSON, which means this builder fell behind `Push`.
    pub fn build<T: DeserializeOwned>(&self) -> T {
        let json = self.json();
        serde_json::from_value(json.clone()).unwrap_or_else(|e| {
            panic!(
                "{} does not read the test push {json}: {e}",
                std::any::type_name::<T>()
            )
        })
    }
}
