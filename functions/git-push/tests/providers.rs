//! Provider adapters against real payloads (the shared corpus) and the project's own fixtures
//! (`tests/data/`): signatures, detection, parsing into `Push`, CloudEvent inputs.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use std::path::PathBuf;

use cloudevents::{Event, EventBuilder, EventBuilderV10};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use tekflux_git_push::error::WebhookError;
use tekflux_git_push::providers::{self, Ping, Webhook};
use tekflux_git_push::push::ZERO_SHA;
use tekflux_git_push::{Provider, Push, RefKind, repo_url, signature};
use tekflux_testkit::push::TestPush;

// ---------------------------------------------------------------------------------------------
// fixtures

/// A corpus file (see `tekflux_testkit::corpus`): panics when the corpus or the file is missing,
/// and is `None`, so that the test returns having said what it skipped, only under an explicit
/// `TEKFLUX_CORPUS=skip`.
fn corpus(relative: &str) -> Option<Vec<u8>> {
    let path = tekflux_testkit::corpus::corpus_dir(relative)?.join(relative);
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

/// The GitLab docs example from eventing-gitlab is JSON5 only for its leading `//` comment line.
fn strip_line_comments(json5: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(json5)
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn github_headers(event: &str) -> HeaderMap {
    headers(&[
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ])
}

fn gitlab_headers(event: &str) -> HeaderMap {
    headers(&[
        ("X-Gitlab-Event", event),
        (
            "X-Gitlab-Event-UUID",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
        ("Idempotency-Key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"),
    ])
}

fn gitea_headers() -> HeaderMap {
    headers(&[
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ("X-Gogs-Event", "push"),
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
    ])
}

fn forgejo_headers() -> HeaderMap {
    headers(&[
        ("X-Forgejo-Event", "push"),
        ("X-Forgejo-Event-Type", "push"),
        ("X-Forgejo-Delivery", "0c6fa3a9-7b1e-4f7e-bd55-2d3e0c9b8a71"),
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Delivery", "0c6fa3a9-7b1e-4f7e-bd55-2d3e0c9b8a71"),
        ("X-GitHub-Event", "push"),
    ])
}

fn bitbucket_headers(event: &str) -> HeaderMap {
    headers(&[
        ("X-Event-Key", event),
        ("X-Request-UUID", "a9f3c2e1-6b7d-4c5e-8f90-1a2b3c4d5e6f"),
        ("X-Hook-UUID", "{0d4e8f2a-1b3c-4d5e-9f6a-7b8c9d0e1f2a}"),
        ("X-Attempt-Number", "1"),
    ])
}

/// A push with every flag off, no shas and no paths: the base that each expectation overrides.
fn base(provider: Provider, repo: &str, git_ref: &str, delivery: &str) -> Push {
    TestPush::new(provider, repo)
        .git_ref(git_ref)
        .before("")
        .after("")
        .delivery(delivery)
        .build()
}

fn paths(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[track_caller]
fn one_push(webhook: Webhook) -> Push {
    match webhook {
        Webhook::Pushes(mut pushes) if pushes.len() == 1 => pushes.remove(0),
        other => panic!("expected one push, got {other:?}"),
    }
}

#[track_caller]
fn parse_one(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Push {
    one_push(providers::parse(provider, headers, body).unwrap())
}

const GH_DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

// ---------------------------------------------------------------------------------------------
// GitHub corpus

#[test]
fn github_push_to_existing_branch() {
    let Some(body) = corpus("github/push-existing-branch-1-commit.go-playground.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: "737d38c599c1b2991664dfc6155d6bf516fcce36".into(),
            after: "fd489864e7642b48eaad6e3f155c10e46810ec72".into(),
            changed_paths: paths(&[
                ".razorops.yaml",
                "app/controllers/application_controller.rb"
            ]),
            pusher: "binkkatal".into(),
            ..base(
                Provider::Github,
                "https://github.com/binkkatal/sample_app",
                "refs/heads/master",
                GH_DELIVERY
            )
        }
    );
    assert_eq!(push.ref_kind, RefKind::Branch("master".into()));
}

#[test]
fn github_branch_created_has_incomplete_paths() {
    let Some(body) = corpus("github/push-branch-created.octokit.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: ZERO_SHA.into(),
            after: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".into(),
            created: true,
            changed_paths: paths(&["README.md"]),
            paths_complete: false,
            pusher: "Codertocat".into(),
            ..base(
                Provider::Github,
                "https://github.com/Codertocat/Hello-World",
                "refs/heads/master",
                GH_DELIVERY
            )
        }
    );
}

#[test]
fn github_tag_deleted_with_null_head_commit() {
    let Some(body) = corpus("github/push-tag-deleted.octokit.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".into(),
            after: ZERO_SHA.into(),
            deleted: true,
            pusher: "Codertocat".into(),
            ..base(
                Provider::Github,
                "https://github.com/Codertocat/Hello-World",
                "refs/tags/simple-tag",
                GH_DELIVERY
            )
        }
    );
    assert_eq!(push.ref_kind, RefKind::Tag("simple-tag".into()));
}

#[test]
fn github_enterprise_tag_created() {
    let Some(body) = corpus("github/push-tag-created.octokit-ghes-3.5.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: ZERO_SHA.into(),
            after: "6113728f27ae82c7b1a177c8d03f9e96e0adf246".into(),
            created: true,
            paths_complete: false,
            pusher: "Codertocat".into(),
            ..base(
                Provider::Github,
                "https://octocoders.github.io/Codertocat/Hello-World",
                "refs/tags/simple-tag",
                GH_DELIVERY
            )
        }
    );
}

#[test]
fn github_2012_branch_deleted_keeps_its_forced_flag() {
    let Some(body) = corpus("github/push-branch-deleted.gith-2012.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: "3ec9fe4dd72de9841359e615099e3efd05e0e65e".into(),
            after: ZERO_SHA.into(),
            deleted: true,
            forced: true,
            pusher: "danheberden".into(),
            ..base(
                Provider::Github,
                "https://github.com/danheberden/payloads",
                "refs/heads/merge-test",
                GH_DELIVERY
            )
        }
    );
}

#[test]
fn github_2012_forced_reset_has_incomplete_paths() {
    let Some(body) = corpus("github/push-forced-reset.gith-2012.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: "437e39244651552916514aa9cc1f3c23b798a017".into(),
            after: "263c5253cc1578ed49892d0db8876da4ec26da84".into(),
            forced: true,
            paths_complete: false,
            pusher: "danheberden".into(),
            ..base(
                Provider::Github,
                "https://github.com/danheberden/payloads",
                "refs/heads/master",
                GH_DELIVERY
            )
        }
    );
}

#[test]
fn github_2012_three_commits_union_their_paths() {
    let Some(body) = corpus("github/push-3-commits.gith-2012.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: "0ccf1c0b567711944bf704a1b4b1e40f15815425".into(),
            after: "263c5253cc1578ed49892d0db8876da4ec26da84".into(),
            changed_paths: paths(&["README.md", "delete-me.txt", "payloads/delete-file.json"]),
            pusher: "danheberden".into(),
            ..base(
                Provider::Github,
                "https://github.com/danheberden/payloads",
                "refs/heads/master",
                GH_DELIVERY
            )
        }
    );
}

#[test]
fn github_app_delivery_to_organisation_repo() {
    let Some(body) = corpus("github/push-org-github-app.pipelines-as-code.json") else {
        return;
    };
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        push,
        Push {
            before: "711d8e2572c4b097586626a28bf0babc7a86f0ba".into(),
            after: "ef75c7db8a921a8c0adaabe2e309f2f9d7ce5bd4".into(),
            changed_paths: paths(&["README.md"]),
            pusher: "chmouel".into(),
            ..base(
                Provider::Github,
                "https://github.com/openshift-pipelines/pipelines-as-code",
                "refs/heads/main",
                GH_DELIVERY
            )
        }
    );
}

#[test]
fn github_ping() {
    let Some(body) = corpus("github/ping.octokit.json") else {
        return;
    };
    let webhook = providers::parse(Provider::Github, &github_headers("ping"), &body).unwrap();
    assert_eq!(
        webhook,
        Webhook::Ping(Ping {
            provider: Provider::Github,
            delivery_id: Some(GH_DELIVERY.into()),
            zen: Some("Anything added dilutes everything else.".into()),
            hook_id: Some(109948940),
            // `repository.url` is the API URL in pings; the web URL must win.
            repo_url: Some("https://github.com/Octocoders/Hello-World".into()),
        })
    );
}

// ---------------------------------------------------------------------------------------------
// GitHub: own fixtures and edge cases

#[test]
fn github_twenty_commits_may_be_truncated() {
    let body = data("github-push-20-commits.json");
    let push = parse_one(Provider::Github, &github_headers("push"), &body);
    assert!(!push.paths_complete, "20 listed commits may be a cut list");
    // Every path of the 20 commits, sorted: go.sum and one service each.
    let touched = |services: usize| -> Vec<String> {
        std::iter::once("go.sum".to_owned())
            .chain((0..services).map(|i| format!("services/s{i:02}/main.go")))
            .collect()
    };
    assert_eq!(push.changed_paths, touched(20));
    assert_eq!(push.pusher, "lee-acme");
    assert_eq!(push.clone_url, "https://github.com/acme/mono.git");

    // One commit fewer is under the cap: complete.
    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["commits"].as_array_mut().unwrap().pop();
    let push = parse_one(
        Provider::Github,
        &github_headers("push"),
        &serde_json::to_vec(&value).unwrap(),
    );
    assert!(push.paths_complete);
    assert_eq!(push.changed_paths, touched(19));

    // A `size` larger than the list says so explicitly.
    value["size"] = json!(25);
    let push = parse_one(
        Provider::Github,
        &github_headers("push"),
        &serde_json::to_vec(&value).unwrap(),
    );
    assert!(!push.paths_complete);
}

#[test]
fn github_re_serialised_payload_with_null_lists() {
    // go-playground structs marshal nil slices as null and empty structs for a null head_commit.
    let body = json!({
        "ref": "refs/heads/main",
        "before": "1111111111111111111111111111111111111111",
        "after": "2222222222222222222222222222222222222222",
        "created": false, "deleted": false, "forced": false,
        "commits": [{"id": "2222222222222222222222222222222222222222", "added": null,
                     "modified": ["a.txt"], "removed": null,
                     "author": {"name": "No Username", "email": "x@example.com"}}],
        "head_commit": {"id": "", "added": null},
        "repository": {"html_url": "https://github.com/acme/shop", "clone_url": "https://github.com/acme/shop.git"},
        "pusher": {"name": "octo", "email": ""},
        "sender": {"login": ""}
    });
    let push = parse_one(
        Provider::Github,
        &github_headers("push"),
        body.to_string().as_bytes(),
    );
    assert_eq!(push.changed_paths, paths(&["a.txt"]));
    assert!(push.paths_complete);
    assert_eq!(
        push.pusher, "octo",
        "empty sender.login falls back to pusher.name"
    );

    let null_commits = json!({
        "ref": "refs/heads/main",
        "before": "1111111111111111111111111111111111111111",
        "after": "2222222222222222222222222222222222222222",
        "commits": null,
        "repository": {"html_url": "https://github.com/acme/shop"}
    });
    let push = parse_one(
        Provider::Github,
        &github_headers("push"),
        null_commits.to_string().as_bytes(),
    );
    assert!(!push.paths_complete, "a missing commit list proves nothing");
    assert_eq!(push.pusher, "");
    assert_eq!(push.clone_url, "https://github.com/acme/shop.git");
}

#[test]
fn github_annotated_tag_builds_the_commit_not_the_tag_object() {
    let body = json!({
        "ref": "refs/tags/v1.2.0",
        "before": ZERO_SHA,
        "after": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "created": true,
        "commits": [],
        "head_commit": {"id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
        "repository": {"html_url": "https://github.com/acme/shop"}
    });
    let push = parse_one(
        Provider::Github,
        &github_headers("push"),
        body.to_string().as_bytes(),
    );
    assert_eq!(push.after, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    assert_eq!(push.ref_kind, RefKind::Tag("v1.2.0".into()));
    assert!(push.created);
}

#[test]
fn clone_url_credentials_are_dropped() {
    let body = json!({
        "ref": "refs/heads/main",
        "before": "1111111111111111111111111111111111111111",
        "after": "2222222222222222222222222222222222222222",
        "commits": [],
        "repository": {"clone_url": "https://x-access-token:ghs_SECRET@github.com/acme/shop.git"}
    });
    let push = parse_one(
        Provider::Github,
        &github_headers("push"),
        body.to_string().as_bytes(),
    );
    assert_eq!(push.repo_url, "https://github.com/acme/shop");
    assert_eq!(push.clone_url, "https://github.com/acme/shop.git");
    assert!(!format!("{push:?}").contains("SECRET"));
}

// ---------------------------------------------------------------------------------------------
// GitLab

#[test]
fn gitlab_push_with_more_commits_than_listed() {
    let Some(body) = corpus("gitlab/push.go-gitlab.json") else {
        return;
    };
    let push = parse_one(Provider::Gitlab, &gitlab_headers("Push Hook"), &body);
    assert_eq!(
        push,
        Push {
            clone_url: "http://example.com/mike/diaspora.git".into(),
            before: "95790bf891e76fee5e1747ab589903a6a1f80f22".into(),
            after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
            changed_paths: paths(&["CHANGELOG", "app/controller/application.rb"]),
            // total_commits_count 4, two listed.
            paths_complete: false,
            pusher: "jsmith".into(),
            // Idempotency-Key wins over X-Gitlab-Event-UUID.
            ..base(
                Provider::Gitlab,
                "https://example.com/mike/diaspora",
                "refs/heads/master",
                "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
            )
        }
    );
}

#[test]
fn gitlab_docs_push_example_from_json5() {
    let Some(body) = corpus("gitlab/push-hook.knative-eventing-gitlab.json5") else {
        return;
    };
    let body = strip_line_comments(&body);
    let only_event_uuid = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        (
            "X-Gitlab-Event-UUID",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
    ]);
    let push = parse_one(Provider::Gitlab, &only_event_uuid, &body);
    assert_eq!(push.delivery_id, "13792a34-cac6-4fda-95a8-c58e00a3954e");
    assert_eq!(push.repo_url, "https://example.com/mike/diaspora");
    assert_eq!(push.git_ref, "refs/heads/master");
    assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(
        push.changed_paths,
        paths(&["CHANGELOG", "app/controller/application.rb"])
    );
    assert!(!push.paths_complete);
    assert_eq!(push.pusher, "jsmith");
}

#[test]
fn gitlab_tag_created_without_username() {
    let Some(body) = corpus("gitlab/tag-push.go-playground.json") else {
        return;
    };
    let push = parse_one(Provider::Gitlab, &gitlab_headers("Tag Push Hook"), &body);
    assert_eq!(
        push,
        Push {
            clone_url: "http://example.com/jsmith/example.git".into(),
            before: ZERO_SHA.into(),
            after: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7".into(),
            created: true,
            paths_complete: false,
            pusher: "John Smith".into(),
            ..base(
                Provider::Gitlab,
                "https://example.com/jsmith/example",
                "refs/tags/v1.0.0",
                "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
            )
        }
    );
}

#[test]
fn gitlab_branch_deleted_with_null_checkout_sha() {
    let Some(body) = corpus("gitlab/push-branch-deleted.zulip-gitlab.com.json") else {
        return;
    };
    let push = parse_one(Provider::Gitlab, &gitlab_headers("Push Hook"), &body);
    assert_eq!(
        push,
        Push {
            before: "68595bc36ba5561c86c73c34ca7a3aae5a0dcfd8".into(),
            after: ZERO_SHA.into(),
            deleted: true,
            pusher: "tomaszkolek".into(),
            ..base(
                Provider::Gitlab,
                "https://gitlab.com/TomaszKolek/my-awesome-project",
                "refs/heads/tomek",
                "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"
            )
        }
    );
}

#[test]
fn gitlab_subgroup_project_with_truncated_list() {
    let body = data("gitlab-push-subgroup-truncated.json");
    let push = parse_one(Provider::Gitlab, &gitlab_headers("Push Hook"), &body);
    assert_eq!(
        push.repo_url,
        "https://gitlab.example.com/platform/payments/ledger"
    );
    assert_eq!(
        push.clone_url,
        "https://gitlab.example.com/platform/payments/ledger.git"
    );
    assert_eq!(push.ref_kind, RefKind::Branch("develop".into()));
    assert_eq!(
        push.changed_paths,
        paths(&[
            "src/part0.rs",
            "src/part1.rs",
            "src/part2.rs",
            "src/part3.rs",
            "src/part4.rs",
            "src/part5.rs",
            "src/part6.rs",
        ])
    );
    assert!(!push.paths_complete, "23 commits, 20 listed");
    assert_eq!(push.pusher, "asilva");

    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["total_commits_count"] = json!(20);
    let push = parse_one(
        Provider::Gitlab,
        &gitlab_headers("Push Hook"),
        &serde_json::to_vec(&value).unwrap(),
    );
    assert!(push.paths_complete, "exactly the 20 listed");

    // Older GitLab system hooks carry the same push payload.
    let push = parse_one(
        Provider::Gitlab,
        &gitlab_headers("System Hook"),
        &serde_json::to_vec(&value).unwrap(),
    );
    assert_eq!(push.git_ref, "refs/heads/develop");
    value["object_kind"] = json!("repository_update");
    value["event_name"] = json!("repository_update");
    assert!(matches!(
        providers::parse(
            Provider::Gitlab,
            &gitlab_headers("System Hook"),
            &serde_json::to_vec(&value).unwrap()
        )
        .unwrap(),
        Webhook::Ignored { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Gitea and Forgejo

#[test]
fn gitea_2017_docs_payload_without_file_lists() {
    let Some(body) = corpus("gitea-forgejo/push.gitea-docs.json") else {
        return;
    };
    let push = parse_one(Provider::Gitea, &gitea_headers(), &body);
    assert_eq!(
        push,
        Push {
            clone_url: "http://localhost:3000/gitea/webhooks.git".into(),
            before: "28e1879d029cb852e4844d9c718537df08844e03".into(),
            after: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
            paths_complete: false,
            pusher: "gitea".into(),
            ..base(
                Provider::Gitea,
                "https://localhost:3000/gitea/webhooks",
                "refs/heads/develop",
                "f6266f16-1bf3-46a5-9ea4-602e06ead473"
            )
        }
    );
}

#[test]
fn gitea_branch_created_with_empty_author_username() {
    let Some(body) = corpus("gitea-forgejo/push.go-playground.json") else {
        return;
    };
    let push = parse_one(Provider::Gitea, &gitea_headers(), &body);
    assert_eq!(
        push,
        Push {
            clone_url: "http://localhost:3000/example/example.git".into(),
            before: ZERO_SHA.into(),
            after: "67b56589a45103f891bdee7c0546e5d40bc02001".into(),
            created: true,
            changed_paths: paths(&["example"]),
            paths_complete: false,
            pusher: "example".into(),
            ..base(
                Provider::Gitea,
                "https://localhost:3000/example/example",
                "refs/heads/master",
                "f6266f16-1bf3-46a5-9ea4-602e06ead473"
            )
        }
    );
}

#[test]
fn forgejo_push_with_forgejo_headers() {
    let body = data("forgejo-push.json");
    let headers = forgejo_headers();
    assert_eq!(providers::detect(&headers), Some(Provider::Forgejo));
    let push = parse_one(Provider::Forgejo, &headers, &body);
    assert_eq!(
        push,
        Push {
            before: "295b196c2fd53d971d90ee6fc4fdab9c4bbcca8a".into(),
            after: "5c6a5a7a0b1b21fb1c0993e508e34566640f113b".into(),
            changed_paths: paths(&[
                "README.md",
                "charts/app/values.yaml",
                "cmd/deploy/main.go",
                "old/script.sh"
            ]),
            pusher: "mira".into(),
            ..base(
                Provider::Forgejo,
                "https://forge.example/infra/deploy-tools",
                "refs/heads/main",
                "0c6fa3a9-7b1e-4f7e-bd55-2d3e0c9b8a71"
            )
        }
    );

    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["total_commits"] = json!(9);
    let push = parse_one(
        Provider::Forgejo,
        &headers,
        &serde_json::to_vec(&value).unwrap(),
    );
    assert!(!push.paths_complete, "total_commits larger than the list");
}

// ---------------------------------------------------------------------------------------------
// Bitbucket Cloud

#[test]
fn bitbucket_branch_deleted() {
    let Some(body) = corpus("bitbucket/repo-push-branch-deleted.zulip-bitbucket.org.json") else {
        return;
    };
    let push = parse_one(Provider::Bitbucket, &bitbucket_headers("repo:push"), &body);
    assert_eq!(
        push,
        Push {
            before: "25f93d22b719e2d678a7ad5ee0ef0d1fcdf39c12".into(),
            after: ZERO_SHA.into(),
            deleted: true,
            pusher: "Tomasz Kolaszek".into(),
            ..base(
                Provider::Bitbucket,
                "https://bitbucket.org/kolaszek/repository-name",
                "refs/heads/master",
                "a9f3c2e1-6b7d-4c5e-8f90-1a2b3c4d5e6f"
            )
        }
    );
}

#[test]
fn bitbucket_each_change_is_its_own_push() {
    let body = data("bitbucket-repo-push-three-changes.json");
    let Webhook::Pushes(pushes) =
        providers::parse(Provider::Bitbucket, &bitbucket_headers("repo:push"), &body).unwrap()
    else {
        panic!("expected pushes");
    };
    let repo = "https://bitbucket.org/acme-team/shop-api";
    let delivery = "a9f3c2e1-6b7d-4c5e-8f90-1a2b3c4d5e6f";
    assert_eq!(
        pushes,
        vec![
            Push {
                before: "efcdf506da2b285c599c6c782038986fa8425939".into(),
                after: "a1cfb1dc8b7063e989314742c2cad9538d9b1200".into(),
                forced: true,
                paths_complete: false,
                pusher: "druiz".into(),
                ..base(Provider::Bitbucket, repo, "refs/heads/main", delivery)
            },
            Push {
                before: ZERO_SHA.into(),
                after: "5e9b60f69165f32f8930843ca718e10fdee30c52".into(),
                created: true,
                paths_complete: false,
                pusher: "druiz".into(),
                ..base(Provider::Bitbucket, repo, "refs/tags/v2.4.0", delivery)
            },
            Push {
                before: "a6dfdeaa3a44a4c52d44284847d7160892b4017e".into(),
                after: ZERO_SHA.into(),
                deleted: true,
                pusher: "druiz".into(),
                ..base(
                    Provider::Bitbucket,
                    repo,
                    "refs/heads/feature/old-checkout",
                    delivery
                )
            },
        ]
    );
}

#[test]
fn bitbucket_without_request_uuid_derives_a_delivery_per_push() {
    let body = data("bitbucket-repo-push-three-changes.json");
    let hook_only = headers(&[
        ("X-Event-Key", "repo:push"),
        ("X-Hook-UUID", "{0d4e8f2a-1b3c-4d5e-9f6a-7b8c9d0e1f2a}"),
    ]);
    let first = parse_deliveries(&hook_only, &body);
    assert_eq!(
        first,
        parse_deliveries(&hook_only, &body),
        "stable on retry"
    );
    assert!(first.starts_with("{0d4e8f2a-1b3c-4d5e-9f6a-7b8c9d0e1f2a}/"));

    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["push"]["changes"][0]["new"]["target"]["hash"] =
        json!("0123456789abcdef0123456789abcdef01234567");
    let other = parse_deliveries(&hook_only, &serde_json::to_vec(&value).unwrap());
    assert_ne!(
        first, other,
        "the next push through the same hook is a new delivery"
    );

    let neither = headers(&[("X-Event-Key", "repo:push")]);
    assert_eq!(
        providers::parse(Provider::Bitbucket, &neither, &body)
            .unwrap_err()
            .kind(),
        "missing_header"
    );
}

fn parse_deliveries(headers: &HeaderMap, body: &[u8]) -> String {
    match providers::parse(Provider::Bitbucket, headers, body).unwrap() {
        Webhook::Pushes(pushes) => {
            assert_eq!(pushes.len(), 3);
            assert!(
                pushes
                    .iter()
                    .all(|p| p.delivery_id == pushes[0].delivery_id)
            );
            pushes[0].delivery_id.clone()
        }
        other => panic!("expected pushes, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// detection, events, errors

#[test]
fn detect_by_headers() {
    let cases: Vec<(HeaderMap, Option<Provider>)> = vec![
        (github_headers("push"), Some(Provider::Github)),
        (gitea_headers(), Some(Provider::Gitea)),
        (
            headers(&[("X-Gogs-Event", "push"), ("X-GitHub-Event", "push")]),
            Some(Provider::Gitea),
        ),
        (forgejo_headers(), Some(Provider::Forgejo)),
        (gitlab_headers("Push Hook"), Some(Provider::Gitlab)),
        (bitbucket_headers("repo:push"), Some(Provider::Bitbucket)),
        (headers(&[("Content-Type", "application/json")]), None),
        (headers(&[("X-GitHub-Event", "")]), None),
    ];
    for (headers, expected) in cases {
        assert_eq!(providers::detect(&headers), expected, "{headers:?}");
    }
}

#[test]
fn other_events_are_ignored() {
    let cases = [
        (Provider::Github, github_headers("issues"), "issues"),
        (
            Provider::Gitlab,
            gitlab_headers("Merge Request Hook"),
            "Merge Request Hook",
        ),
        (
            Provider::Gitea,
            headers(&[("X-Gitea-Event", "create"), ("X-Gitea-Delivery", "d")]),
            "create",
        ),
        (
            Provider::Bitbucket,
            bitbucket_headers("pullrequest:created"),
            "pullrequest:created",
        ),
        (
            Provider::Bitbucket,
            bitbucket_headers("repo:refs_changed"),
            "repo:refs_changed",
        ),
    ];
    for (provider, headers, name) in cases {
        match providers::parse(provider, &headers, b"{}").unwrap() {
            Webhook::Ignored { event, reason } => {
                assert_eq!(event, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name}: expected Ignored, got {other:?}"),
        }
    }
}

#[test]
fn malformed_bodies_are_bad_requests_naming_the_problem() {
    let not_json =
        providers::parse(Provider::Github, &github_headers("push"), b"payload=%7B").unwrap_err();
    assert_eq!(not_json.kind(), "malformed");
    assert!(not_json.to_string().contains("github push payload"));
    let status = tekflux_common::Error::from(not_json).status();
    assert_eq!(status.as_u16(), 400);

    let wrong_type = json!({"ref": 5, "repository": {"html_url": "https://github.com/a/b"}});
    let err = providers::parse(
        Provider::Github,
        &github_headers("push"),
        wrong_type.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ref"), "{err}");

    let nested = json!({"ref": "refs/heads/main", "repository": {"html_url": "https://github.com/a/b"},
                        "commits": [{"added": [1]}]});
    let err = providers::parse(
        Provider::Github,
        &github_headers("push"),
        nested.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("commits[0].added[0]"), "{err}");

    let no_repo = json!({"ref": "refs/heads/main", "repository": {"html_url": "not a url"}});
    let err = providers::parse(
        Provider::Github,
        &github_headers("push"),
        no_repo.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("repository URL"), "{err}");

    let err =
        providers::parse(Provider::Bitbucket, &bitbucket_headers("repo:push"), b"[]").unwrap_err();
    assert_eq!(err.kind(), "malformed");
}

#[test]
fn missing_delivery_or_event_header_is_a_bad_request() {
    let body = json!({"ref": "refs/heads/main", "after": "1", "repository": {"html_url": "https://github.com/a/b"}});
    let err = providers::parse(
        Provider::Github,
        &headers(&[("X-GitHub-Event", "push")]),
        body.to_string().as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), "missing_header");
    assert!(err.to_string().contains("X-GitHub-Delivery"));
    assert!(err.to_string().contains("idempotency"));
    assert_eq!(tekflux_common::Error::from(err).status().as_u16(), 400);

    let err = providers::parse(Provider::Gitlab, &HeaderMap::new(), b"{}").unwrap_err();
    assert!(err.to_string().contains("X-Gitlab-Event"));

    let err = providers::parse(
        Provider::Gitlab,
        &headers(&[("X-Gitlab-Event", "Push Hook")]),
        b"{}",
    )
    .unwrap_err();
    assert!(err.to_string().contains("Idempotency-Key"));
}

// ---------------------------------------------------------------------------------------------
// signatures

const SECRET: &[u8] = b"It's a Secret to Everybody";
const BODY: &[u8] = br#"{"ref":"refs/heads/main"}"#;

fn signed(provider: Provider, secret: &[u8]) -> HeaderMap {
    let hex = signature::sign(secret, BODY);
    match provider {
        Provider::Github => headers(&[("X-Hub-Signature-256", &format!("sha256={hex}"))]),
        Provider::Bitbucket => headers(&[("X-Hub-Signature", &format!("sha256={hex}"))]),
        Provider::Gitea => headers(&[("X-Gitea-Signature", &hex)]),
        Provider::Forgejo => headers(&[("X-Forgejo-Signature", &hex)]),
        Provider::Gitlab => headers(&[("X-Gitlab-Token", std::str::from_utf8(secret).unwrap())]),
    }
}

const ALL: [Provider; 5] = [
    Provider::Github,
    Provider::Gitlab,
    Provider::Gitea,
    Provider::Forgejo,
    Provider::Bitbucket,
];

#[test]
fn known_hmac_value() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature::sign(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn right_secret_is_accepted() {
    for provider in ALL {
        let headers = signed(provider, SECRET);
        assert_eq!(
            signature::verify(provider, &headers, BODY, Some(SECRET), false),
            Ok(()),
            "{provider:?}"
        );
        // insecure does not switch off a configured secret, in either direction.
        assert_eq!(
            signature::verify(provider, &headers, BODY, Some(SECRET), true),
            Ok(())
        );
    }
}

#[test]
fn wrong_secret_or_tampered_body_is_unauthorized() {
    for provider in ALL {
        let headers = signed(provider, b"another secret");
        let err = signature::verify(provider, &headers, BODY, Some(SECRET), true).unwrap_err();
        assert_eq!(err.kind(), "bad_signature", "{provider:?}");
        assert!(err.is_unauthorized());
        let message = err.to_string();
        assert!(!message.contains("Secret"), "{message}");
        assert!(!message.contains(&signature::sign(b"another secret", BODY)));
        assert_eq!(tekflux_common::Error::from(err).status().as_u16(), 401);

        if provider != Provider::Gitlab {
            let headers = signed(provider, SECRET);
            let err =
                signature::verify(provider, &headers, b"{\"ref\":\"x\"}", Some(SECRET), false)
                    .unwrap_err();
            assert_eq!(err.kind(), "bad_signature", "{provider:?} tampered body");
        }
    }
}

#[test]
fn missing_signature_is_unauthorized() {
    for provider in ALL {
        // Other providers' headers do not count.
        let mut others = HeaderMap::new();
        for other in ALL.iter().filter(|p| {
            **p != provider && !matches!((provider, **p), (Provider::Forgejo, Provider::Gitea))
        }) {
            others.extend(signed(*other, SECRET));
        }
        let err = signature::verify(provider, &others, BODY, Some(SECRET), false).unwrap_err();
        assert_eq!(err.kind(), "missing_signature", "{provider:?}");
        assert!(
            err.to_string()
                .to_lowercase()
                .contains(signature::signature_header(provider))
        );
    }
}

#[test]
fn malformed_signatures_get_the_same_answer_as_wrong_ones() {
    let good = signature::sign(SECRET, BODY);
    let cases = [
        (
            Provider::Github,
            "X-Hub-Signature-256",
            format!("sha1={good}"),
        ),
        (Provider::Github, "X-Hub-Signature-256", good.clone()),
        (
            Provider::Github,
            "X-Hub-Signature-256",
            "sha256=zz".to_owned(),
        ),
        (
            Provider::Github,
            "X-Hub-Signature-256",
            format!("sha256={}", &good[..10]),
        ),
        (Provider::Bitbucket, "X-Hub-Signature", good.clone()),
        (
            Provider::Gitea,
            "X-Gitea-Signature",
            format!("sha256={good}"),
        ),
        (Provider::Gitea, "X-Gitea-Signature", String::new()),
        (Provider::Forgejo, "X-Forgejo-Signature", "g".repeat(64)),
        (
            Provider::Gitlab,
            "X-Gitlab-Token",
            "It's a Secret".to_owned(),
        ),
        (
            Provider::Gitlab,
            "X-Gitlab-Token",
            format!("{}x", std::str::from_utf8(SECRET).unwrap()),
        ),
    ];
    for (provider, header, value) in cases {
        let err = signature::verify(
            provider,
            &headers(&[(header, &value)]),
            BODY,
            Some(SECRET),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.kind(),
            "bad_signature",
            "{provider:?} {header}: {value}"
        );
    }
}

#[test]
fn forgejo_also_accepts_giteas_header() {
    let hex = signature::sign(SECRET, BODY);
    let headers = headers(&[("X-Gitea-Signature", &hex)]);
    assert_eq!(
        signature::verify(Provider::Forgejo, &headers, BODY, Some(SECRET), false),
        Ok(())
    );
}

#[test]
fn no_secret_configured() {
    for provider in ALL {
        for secret in [None, Some(&b""[..])] {
            let err = signature::verify(provider, &signed(provider, SECRET), BODY, secret, false)
                .unwrap_err();
            assert_eq!(err, WebhookError::NoSecret { provider });
            let message = err.to_string();
            assert!(
                message.contains(&format!("providers.{}.", provider.as_str())),
                "{message}"
            );
            assert!(message.contains("insecure: true"));
            assert_eq!(tekflux_common::Error::from(err).status().as_u16(), 401);

            assert_eq!(
                signature::verify(provider, &HeaderMap::new(), BODY, secret, true),
                Ok(()),
                "insecure accepts unsigned {provider:?} webhooks"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// repository URLs

#[test]
fn canonical_repository_urls() {
    let cases = [
        (
            "https://github.com/Org/Repo",
            Some("https://github.com/Org/Repo"),
        ),
        (
            "https://GitHub.com/Org/Repo.git",
            Some("https://github.com/Org/Repo"),
        ),
        (
            "https://github.com/Org/Repo/",
            Some("https://github.com/Org/Repo"),
        ),
        (
            "https://github.com/Org/Repo.git/",
            Some("https://github.com/Org/Repo"),
        ),
        (
            "http://example.com/mike/diaspora",
            Some("https://example.com/mike/diaspora"),
        ),
        (
            "https://user:ghp_token@github.com/org/repo.git",
            Some("https://github.com/org/repo"),
        ),
        (
            "https://oauth2@gitlab.com/org/repo",
            Some("https://gitlab.com/org/repo"),
        ),
        (
            "ssh://git@github.com/org/repo.git",
            Some("https://github.com/org/repo"),
        ),
        (
            "ssh://git@Forge.Example:2222/infra/tools.git",
            Some("https://forge.example/infra/tools"),
        ),
        (
            "git@github.com:org/repo.git",
            Some("https://github.com/org/repo"),
        ),
        (
            "git@gitlab.com:group/sub/deeper/name.git",
            Some("https://gitlab.com/group/sub/deeper/name"),
        ),
        (
            "https://gitlab.com/group/sub/name",
            Some("https://gitlab.com/group/sub/name"),
        ),
        (
            "git://github.com/org/repo.git",
            Some("https://github.com/org/repo"),
        ),
        (
            "https://host:8443/org/repo",
            Some("https://host:8443/org/repo"),
        ),
        ("https://host:443/org/repo", Some("https://host/org/repo")),
        ("http://host:80/org/repo", Some("https://host/org/repo")),
        (
            "http://localhost:3000/org/repo.git",
            Some("https://localhost:3000/org/repo"),
        ),
        (
            "https://[::1]:8080/org/repo",
            Some("https://[::1]:8080/org/repo"),
        ),
        (
            "https://github.com/org/repo?tab=readme#top",
            Some("https://github.com/org/repo"),
        ),
        (
            "  https://github.com/org/repo  ",
            Some("https://github.com/org/repo"),
        ),
        ("https://github.com/repo", None),
        ("https://github.com/", None),
        ("https://github.com/org/../repo", None),
        ("https://github.com//repo", None),
        ("ftp://github.com/org/repo", None),
        ("/srv/git/org/repo.git", None),
        ("./org/repo", None),
        ("https://github.com/org/re po", None),
        ("https://host:abc/org/repo", None),
        ("", None),
    ];
    for (input, expected) in cases {
        assert_eq!(repo_url::canonical(input).as_deref(), expected, "{input}");
    }
}

/// Found by the `webhook_github` and `webhook_gitlab` fuzz targets (their
/// `fuzz/corpus/*/regression-colon-in-host`): a second colon in the authority, or `[` in
/// scp-like syntax, gave a "canonical" URL whose host held a colon or a slash, which was then
/// not a repository URL itself.
#[test]
fn canonical_urls_are_their_own_canonical_form() {
    for url in [
        "https://user:to://api.gk@ghe.,x8483e9a7550fdab836emple.com/orgpp/a.git",
        "https://g:tps:/gitlab.example.com/g/p",
        "https://user:token:/org/repo",
        "https://a:b:443/org/repo",
        "git@[::1]:org/repo.git",
    ] {
        assert_eq!(repo_url::canonical(url), None, "{url}");
    }
    for url in [
        "https://[::1]:8080/org/repo",
        "ssh://git@host:2222/org/repo.git",
        "git@host:group/sub/repo.git",
        "https://user:token@host:8443/org/repo",
    ] {
        let canonical = repo_url::canonical(url).unwrap();
        assert_eq!(
            repo_url::canonical(&canonical),
            Some(canonical.clone()),
            "{url}"
        );
    }

    // The fuzzer's payload: its only repository URL is one of those, so the push is refused
    // rather than routed under a URL no rule can name.
    let body = br#"{"ref":"refs/tags/v1.2.0","after":"9c1b5a4e2f0d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
        "repository":{"clone_url":"https://user:to://api.gk@ghe.,x8483e9a7550fdab836emple.com/orgpp/a.git"}}"#;
    let error = providers::parse(Provider::Github, &github_headers("push"), body).unwrap_err();
    assert!(matches!(error, WebhookError::Malformed { .. }), "{error:?}");
}

#[test]
fn matching_key_ignores_case_and_form() {
    let forms = [
        "https://github.com/Acme/Shop",
        "git@GITHUB.com:acme/shop.git",
        "ssh://git@github.com/ACME/shop",
        "http://github.com/acme/Shop.git/",
    ];
    for form in forms {
        assert_eq!(
            repo_url::key(form).as_deref(),
            Some("https://github.com/acme/shop"),
            "{form}"
        );
    }
}

#[test]
fn credentials_are_removed_from_clone_urls() {
    assert_eq!(
        repo_url::without_credentials("https://user:token@host/o/r.git"),
        "https://host/o/r.git"
    );
    assert_eq!(
        repo_url::without_credentials("ssh://git:pw@host/o/r.git"),
        "ssh://git@host/o/r.git"
    );
    assert_eq!(
        repo_url::without_credentials("https://host/o/r.git?x=a@b"),
        "https://host/o/r.git?x=a@b"
    );
    assert_eq!(
        repo_url::without_credentials("git@host:o/r.git"),
        "git@host:o/r.git"
    );
}

// ---------------------------------------------------------------------------------------------
// CloudEvents

fn event(ty: &str, source: &str, id: &str, data: serde_json::Value) -> Event {
    EventBuilderV10::new()
        .id(id)
        .ty(ty)
        .source(source)
        .data("application/json", data)
        .build()
        .unwrap()
}

#[test]
fn knative_github_push_uses_the_delivery_as_id() {
    let Some(body) = corpus("github/push-existing-branch-1-commit.go-playground.json") else {
        return;
    };
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ev = event(
        "dev.knative.source.github.push",
        "https://github.com/binkkatal/sample_app",
        GH_DELIVERY,
        data,
    );
    let from_event = one_push(providers::parse_event(&ev).unwrap());
    let from_webhook = parse_one(Provider::Github, &github_headers("push"), &body);
    assert_eq!(
        from_event, from_webhook,
        "same push, same delivery id, either way in"
    );
}

#[test]
fn knative_github_ping_and_other_events() {
    let ping = event(
        "dev.knative.source.github.ping",
        "https://github.com/acme/shop",
        "d-1",
        json!({"zen": "Keep it logically awesome.", "hook_id": 42}),
    );
    assert_eq!(
        providers::parse_event(&ping).unwrap(),
        Webhook::Ping(Ping {
            provider: Provider::Github,
            delivery_id: Some("d-1".into()),
            zen: Some("Keep it logically awesome.".into()),
            hook_id: Some(42),
            repo_url: None,
        })
    );
    let issues = event(
        "dev.knative.source.github.issues",
        "https://github.com/acme/shop",
        "d-2",
        json!({}),
    );
    assert!(matches!(
        providers::parse_event(&issues).unwrap(),
        Webhook::Ignored { event, .. } if event == "dev.knative.source.github.issues"
    ));
}

#[test]
fn knative_gitlab_push_current_and_legacy_types() {
    let Some(body) = corpus("gitlab/push-hook.knative-eventing-gitlab.json5") else {
        return;
    };
    let data: serde_json::Value = serde_json::from_slice(&strip_line_comments(&body)).unwrap();
    for ty in [
        "dev.knative.sources.gitlab.push",
        "dev.knative.sources.gitlabsource.Push Hook",
    ] {
        let ev = event(
            ty,
            "https://gitlab.example.com/mike/diaspora",
            "4b1f0a",
            data.clone(),
        );
        let push = one_push(providers::parse_event(&ev).unwrap());
        assert_eq!(push.provider, Provider::Gitlab);
        assert_eq!(
            push.delivery_id,
            "https://gitlab.example.com/mike/diaspora#4b1f0a"
        );
        assert_eq!(push.repo_url, "https://example.com/mike/diaspora");
        assert_eq!(push.git_ref, "refs/heads/master");
        assert_eq!(push.pusher, "jsmith");
        assert!(!push.paths_complete);
    }
    let mr = event(
        "dev.knative.sources.gitlab.merge_request",
        "https://gitlab.example.com/mike/diaspora",
        "x",
        json!({}),
    );
    assert!(matches!(
        providers::parse_event(&mr).unwrap(),
        Webhook::Ignored { .. }
    ));
}

#[test]
fn knative_gitlab_tag_push() {
    let Some(body) = corpus("gitlab/tag-push.go-playground.json") else {
        return;
    };
    let data: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ev = event(
        "dev.knative.sources.gitlab.tag_push",
        "https://example.com/jsmith/example",
        "e1",
        data,
    );
    let push = one_push(providers::parse_event(&ev).unwrap());
    assert_eq!(push.ref_kind, RefKind::Tag("v1.0.0".into()));
    // The same push as the webhook's (gitlab_tag_created_without_username), keyed by the event.
    assert_eq!(
        push,
        Push {
            clone_url: "http://example.com/jsmith/example.git".into(),
            before: ZERO_SHA.into(),
            after: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7".into(),
            created: true,
            paths_complete: false,
            pusher: "John Smith".into(),
            ..base(
                Provider::Gitlab,
                "https://example.com/jsmith/example",
                "refs/tags/v1.0.0",
                "https://example.com/jsmith/example#e1"
            )
        }
    );
}

#[test]
fn unknown_cloudevent_types_are_ignored_and_non_json_data_is_refused() {
    let other = event("com.example.something", "/x", "1", json!({}));
    assert!(matches!(
        providers::parse_event(&other).unwrap(),
        Webhook::Ignored { event, .. } if event == "com.example.something"
    ));

    let xml = EventBuilderV10::new()
        .id("1")
        .ty("dev.knative.source.github.push")
        .source("https://github.com/a/b")
        .data("application/xml", "<push/>".to_owned())
        .build()
        .unwrap();
    let err = providers::parse_event(&xml).unwrap_err();
    assert_eq!(err.kind(), "unsupported_data");
    assert_eq!(tekflux_common::Error::from(err).status().as_u16(), 415);

    let no_data = EventBuilderV10::new()
        .id("1")
        .ty("dev.tekflux.git.pushed.v1")
        .source("https://github.com/a/b")
        .build()
        .unwrap();
    assert_eq!(
        providers::parse_event(&no_data).unwrap_err().kind(),
        "malformed"
    );
}

#[test]
fn normalized_push_event_round_trips() {
    let original = Push {
        before: "9c1b5a4e2f0d8c7b6a5f4e3d2c1b0a9f8e7d6c5b".into(),
        after: "3f786850e387550fdab836ed7e6dc881de23001b".into(),
        forced: true,
        changed_paths: paths(&["api/main.go", "web/index.html"]),
        paths_complete: true,
        pusher: "octocat".into(),
        ..base(
            Provider::Gitea,
            "https://git.example.com/acme/shop",
            "refs/heads/release/1.x",
            "delivery-7",
        )
    };
    let ev = event(
        "dev.tekflux.git.pushed.v1",
        "https://git.example.com/acme/shop",
        "ce-1",
        serde_json::to_value(&original).unwrap(),
    );
    assert_eq!(one_push(providers::parse_event(&ev).unwrap()), original);
}

#[test]
fn normalized_push_event_minimal_data() {
    let ev = EventBuilderV10::new()
        .id("ce-9")
        .ty("dev.tekflux.git.pushed.v1")
        .source("git@github.com:acme/shop.git")
        .subject("refs/tags/v1.2.0")
        .data(
            "application/json",
            json!({"provider": "github", "after": "3f786850e387550fdab836ed7e6dc881de23001b",
                   "changedPaths": ["b", "a", "b"]}),
        )
        .build()
        .unwrap();
    let push = one_push(providers::parse_event(&ev).unwrap());
    assert_eq!(
        push,
        Push {
            before: ZERO_SHA.into(),
            after: "3f786850e387550fdab836ed7e6dc881de23001b".into(),
            created: true,
            changed_paths: paths(&["a", "b"]),
            paths_complete: false,
            ..base(
                Provider::Github,
                "https://github.com/acme/shop",
                "refs/tags/v1.2.0",
                "git@github.com:acme/shop.git#ce-9"
            )
        }
    );

    let no_provider = event(
        "dev.tekflux.git.pushed.v1",
        "https://github.com/acme/shop",
        "1",
        json!({"ref": "refs/heads/main", "after": "1"}),
    );
    let err = providers::parse_event(&no_provider).unwrap_err();
    assert!(err.to_string().contains("provider"), "{err}");
}

#[test]
fn verify_with_the_config_files_provider_settings() {
    use tekflux_common::config::{ProviderSettings, Providers, Secret};
    let providers = Providers {
        github: Some(ProviderSettings {
            secret: Some(Secret::literal("github", SECRET)),
            ..Default::default()
        }),
        gitlab: Some(ProviderSettings {
            token: Some(Secret::literal("gitlab", SECRET)),
            ..Default::default()
        }),
        forgejo: Some(ProviderSettings {
            insecure: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let check = |provider, headers: &HeaderMap| {
        signature::verify_with(provider, &providers, headers, BODY).map_err(|e| e.kind())
    };
    assert_eq!(
        check(Provider::Github, &signed(Provider::Github, SECRET)),
        Ok(())
    );
    assert_eq!(
        check(Provider::Github, &signed(Provider::Github, b"wrong")),
        Err("bad_signature")
    );
    assert_eq!(
        check(Provider::Gitlab, &signed(Provider::Gitlab, SECRET)),
        Ok(())
    );
    assert_eq!(check(Provider::Forgejo, &HeaderMap::new()), Ok(()));
    // Configured for Forgejo only: Gitea and Bitbucket have no secret.
    assert_eq!(
        check(Provider::Gitea, &signed(Provider::Gitea, SECRET)),
        Err("no_secret")
    );
    assert_eq!(
        check(Provider::Bitbucket, &signed(Provider::Bitbucket, SECRET)),
        Err("no_secret")
    );
}

/// A config loaded without its secrets (`render`, `archive`) holds unread ones: they verify
/// nothing, not even a signature made with an empty key.
#[test]
fn an_unread_secret_accepts_no_signature() {
    use tekflux_common::config::{Config, Env, Sections};
    let config = Config::from_yaml_sections(
        "providers:\n  github: { secret: env:GITHUB_SECRET }\n  gitlab: { token: env:GITLAB_TOKEN }\n",
        "test.yaml",
        &Env::new(),
        Sections::ROUTING,
    )
    .unwrap();
    for provider in [Provider::Github, Provider::Gitlab] {
        let result =
            signature::verify_with(provider, &config.providers, &signed(provider, b""), BODY);
        assert_eq!(
            result.map_err(|e| e.kind()),
            Err("no_secret"),
            "{provider:?}"
        );
    }
}
