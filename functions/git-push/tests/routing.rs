//! Routing pushes to `repositories` rules.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use serde_json::json;
use tekflux_common::config::{Config, RepositoryRule, WorkspaceBinding};
use tekflux_git_push::{Provider, Push, RefKind, RoutingTable};

fn push(repo: &str, git_ref: &str) -> Push {
    let ref_kind = if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        RefKind::Branch(b.to_owned())
    } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        RefKind::Tag(t.to_owned())
    } else {
        RefKind::Other(git_ref.to_owned())
    };
    Push {
        provider: Provider::Github,
        repo_url: repo.to_owned(),
        clone_url: format!("{repo}.git"),
        git_ref: git_ref.to_owned(),
        ref_kind,
        before: "a".repeat(40),
        after: "b".repeat(40),
        created: false,
        deleted: false,
        forced: false,
        changed_paths: vec![],
        paths_complete: true,
        pusher: "octocat".into(),
        delivery_id: "delivery-1".into(),
    }
}

fn rule(url: &str) -> RepositoryRule {
    RepositoryRule {
        url: url.to_owned(),
        pipeline: Some("build".into()),
        ..Default::default()
    }
}

fn table(rules: Vec<RepositoryRule>) -> RoutingTable {
    RoutingTable::compile(&Config {
        repositories: rules,
        ..Default::default()
    })
    .unwrap()
}

/// (index, matched, reason) of every decision, plus the count of other-repository rules.
fn outcome(table: &RoutingTable, push: &Push) -> serde_json::Value {
    let routing = table.route(push);
    json!({
        "decisions": routing
            .decisions
            .iter()
            .map(|d| json!([d.index, d.matched, d.reason]))
            .collect::<Vec<_>>(),
        "other": routing.other_repository_rules,
    })
}

fn matched(table: &RoutingTable, push: &Push) -> Vec<usize> {
    table.route(push).matched().map(|d| d.index).collect()
}

const REPO: &str = "https://github.com/org/repo";

#[test]
fn every_url_form_of_one_repository_matches() {
    let forms = [
        "https://github.com/org/repo",
        "https://github.com/org/repo.git",
        "https://github.com/org/repo/",
        "https://GitHub.com/Org/Repo",
        "http://github.com/org/repo.git",
        "git@github.com:org/repo.git",
        "ssh://git@github.com/org/repo.git",
        "ssh://git@github.com:22/org/repo",
    ];
    let t = table(
        forms
            .iter()
            .enumerate()
            .map(|(i, url)| RepositoryRule {
                name: Some(format!("r{i}")),
                ..rule(url)
            })
            .collect(),
    );
    let p = push(REPO, "refs/heads/main");
    assert_eq!(matched(&t, &p), (0..forms.len()).collect::<Vec<_>>());
    assert!(matched(&t, &push("https://github.com/org/repo2", "refs/heads/main")).is_empty());
    assert!(matched(&t, &push("https://gitlab.com/org/repo", "refs/heads/main")).is_empty());
}

#[test]
fn org_glob_matches_one_segment_and_double_star_any_depth() {
    let t = table(vec![
        RepositoryRule {
            name: Some("org".into()),
            ..rule("https://github.com/org/*")
        },
        RepositoryRule {
            name: Some("group".into()),
            ..rule("git@gitlab.com:group/**.git")
        },
    ]);
    assert_eq!(matched(&t, &push(REPO, "refs/heads/main")), vec![0]);
    assert!(
        matched(
            &t,
            &push("https://github.com/org/sub/repo", "refs/heads/main")
        )
        .is_empty()
    );
    assert!(
        matched(
            &t,
            &push("https://github.com/other/repo", "refs/heads/main")
        )
        .is_empty()
    );
    assert_eq!(
        matched(
            &t,
            &push("https://gitlab.com/group/sub/repo", "refs/heads/main")
        ),
        vec![1]
    );
    assert_eq!(
        matched(
            &t,
            &push("https://gitlab.com/group/repo", "refs/heads/main")
        ),
        vec![1]
    );
}

#[test]
fn branch_globs_explain_misses() {
    let t = table(vec![RepositoryRule {
        branches: vec!["main".into(), "release/*".into()],
        ..rule(REPO)
    }]);
    assert_eq!(matched(&t, &push(REPO, "refs/heads/main")), vec![0]);
    assert_eq!(matched(&t, &push(REPO, "refs/heads/release/1.2")), vec![0]);
    assert_eq!(
        outcome(&t, &push(REPO, "refs/heads/feature/x")),
        json!({
            "decisions": [[0, false, "branch feature/x does not match [main, release/*]"]],
            "other": 0,
        })
    );
    // `*` stays within one segment.
    assert!(matched(&t, &push(REPO, "refs/heads/release/1.2/hotfix")).is_empty());
    assert!(matched(&t, &push(REPO, "refs/tags/main")).is_empty());
}

#[test]
fn without_branches_or_tags_every_branch_and_no_tag_matches() {
    let t = table(vec![rule(REPO)]);
    assert_eq!(
        matched(&t, &push(REPO, "refs/heads/anything/at/all")),
        vec![0]
    );
    assert_eq!(
        outcome(&t, &push(REPO, "refs/tags/v1.0.0")),
        json!({
            "decisions": [[0, false, "tag v1.0.0 not selected: rule has no tags"]],
            "other": 0,
        })
    );
    assert_eq!(
        outcome(&t, &push(REPO, "refs/notes/commits")),
        json!({
            "decisions": [[0, false, "ref refs/notes/commits is neither a branch nor a tag"]],
            "other": 0,
        })
    );
}

#[test]
fn tags_opt_in() {
    let t = table(vec![
        RepositoryRule {
            name: Some("all-tags".into()),
            tags: vec!["*".into()],
            ..rule(REPO)
        },
        RepositoryRule {
            name: Some("versions".into()),
            tags: vec!["v*".into()],
            ..rule(REPO)
        },
        RepositoryRule {
            name: Some("main-and-versions".into()),
            branches: vec!["main".into()],
            tags: vec!["v*".into()],
            ..rule(REPO)
        },
    ]);
    assert_eq!(matched(&t, &push(REPO, "refs/tags/v1.2.0")), vec![0, 1, 2]);
    assert_eq!(matched(&t, &push(REPO, "refs/tags/nightly")), vec![0]);
    // A rule with only tags selects no branch.
    assert_eq!(
        outcome(&t, &push(REPO, "refs/heads/main")),
        json!({
            "decisions": [
                [0, false, "branch main not selected: rule lists only tags [*]"],
                [1, false, "branch main not selected: rule lists only tags [v*]"],
                [2, true, "matched"],
            ],
            "other": 0,
        })
    );
}

/// The monorepo rule from DESIGN.md.
fn monorepo() -> RoutingTable {
    table(vec![RepositoryRule {
        url: "https://github.example.com/org/r3pf-backend".into(),
        branches: vec!["main".into(), "release/*".into()],
        paths: vec!["apis/apis-async/api-launcher/**".into()],
        pipeline: Some("api-pipeline".into()),
        ..Default::default()
    }])
}

const MONOREPO: &str = "https://github.example.com/org/r3pf-backend";

#[test]
fn path_globs_select_monorepo_parts() {
    let t = monorepo();
    let mut p = push(MONOREPO, "refs/heads/main");
    p.changed_paths = vec![
        "README.md".into(),
        "apis/apis-async/api-launcher/src/main.rs".into(),
    ];
    assert_eq!(outcome(&t, &p)["decisions"], json!([[0, true, "matched"]]));

    p.changed_paths = vec![
        "apis/apis-async/other-api/src/main.rs".into(),
        "apis/apis-async/api-launcher-v2/x".into(),
    ];
    assert_eq!(
        outcome(&t, &p)["decisions"],
        json!([[
            0,
            false,
            "no changed path matches [apis/apis-async/api-launcher/**]"
        ]])
    );
    p.changed_paths.clear();
    assert!(matched(&t, &p).is_empty());
}

#[test]
fn incomplete_changed_paths_match_with_a_note() {
    let t = monorepo();
    let mut p = push(MONOREPO, "refs/heads/release/2");
    p.changed_paths = vec!["docs/index.md".into()];
    p.paths_complete = false;
    let routing = t.route(&p);
    let d = &routing.decisions[0];
    assert!(d.matched);
    assert!(d.path_filter_skipped);
    assert_eq!(
        d.reason,
        "matched; changed-path list incomplete, path filter not applied"
    );
    // The branch filter still applies.
    p.ref_kind = RefKind::Branch("feature".into());
    p.git_ref = "refs/heads/feature".into();
    assert!(matched(&t, &p).is_empty());
}

#[test]
fn deleted_refs_never_match() {
    let t = table(vec![rule(REPO)]);
    let mut p = push(REPO, "refs/heads/main");
    p.deleted = true;
    p.after = tekflux_git_push::push::ZERO_SHA.into();
    assert_eq!(
        outcome(&t, &p),
        json!({"decisions": [[0, false, "ref deleted"]], "other": 0})
    );
}

#[test]
fn several_rules_match_and_others_are_counted() {
    let t = table(vec![
        RepositoryRule {
            name: Some("build".into()),
            ..rule(REPO)
        },
        rule("https://github.com/org/elsewhere"),
        RepositoryRule {
            name: Some("org-lint".into()),
            ..rule("https://github.com/org/*")
        },
        RepositoryRule {
            task: Some("notify".into()),
            pipeline: None,
            ..rule("git@github.com:org/repo.git")
        },
        RepositoryRule {
            name: Some("main-only".into()),
            branches: vec!["main".into()],
            ..rule(REPO)
        },
    ]);
    let routing = t.route(&push(REPO, "refs/heads/dev"));
    assert_eq!(
        serde_json::to_value(&routing).unwrap(),
        json!({
            "decisions": [
                {"index": 0, "name": "build", "matched": true, "reason": "matched", "pathFilterSkipped": false},
                {"index": 2, "name": "org-lint", "matched": true, "reason": "matched", "pathFilterSkipped": false},
                {"index": 3, "name": "notify", "matched": true, "reason": "matched", "pathFilterSkipped": false},
                {"index": 4, "name": "main-only", "matched": false, "reason": "branch dev does not match [main]", "pathFilterSkipped": false},
            ],
            "otherRepositoryRules": 1,
        })
    );
    let names: Vec<_> = routing.matched().map(|d| d.rule.name.as_str()).collect();
    assert_eq!(names, ["build", "org-lint", "notify"]);

    let all = t.route_all(&push(REPO, "refs/heads/dev"));
    assert_eq!(all.len(), 5);
    assert!(!all[1].matched);
    assert_eq!(
        all[1].reason,
        "repository https://github.com/org/repo does not match https://github.com/org/elsewhere"
    );
}

fn compile_errors(rules: Vec<RepositoryRule>) -> Vec<String> {
    RoutingTable::compile(&Config {
        repositories: rules,
        ..Default::default()
    })
    .unwrap_err()
    .iter()
    .map(|e| e.to_string())
    .collect()
}

#[test]
fn invalid_globs_name_the_field() {
    let errors = compile_errors(vec![
        rule(REPO),
        RepositoryRule {
            branches: vec!["main".into(), "release/[".into()],
            paths: vec!["apis/{a,b".into()],
            ..rule("https://github.com/org/other")
        },
        rule("https://github.com/org/[x"),
    ]);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("repositories[1].branches[1]: invalid glob \"release/[\""));
    assert!(errors[1].starts_with("repositories[1].paths[0]: invalid glob \"apis/{a,b\""));
    assert!(errors[2].starts_with("repositories[2].url: invalid glob"));
}

#[test]
fn unknown_template_variable_names_the_param() {
    let errors = compile_errors(vec![RepositoryRule {
        params: [
            ("image".to_owned(), "registry/x:{{ sha }}".to_owned()),
            ("revision".to_owned(), "{{ commit }}".to_owned()),
            ("broken".to_owned(), "{{ sha".to_owned()),
        ]
        .into(),
        ..rule(REPO)
    }]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        "repositories[0].params.broken: unterminated `{{` at byte 0"
    );
    assert!(
        errors[1].starts_with(
            "repositories[0].params.revision: unknown variable `commit` in {{ commit }}; known variables: sha, short_sha,"
        ),
        "{}",
        errors[1]
    );
}

#[test]
fn other_rule_errors_name_the_field() {
    let errors = compile_errors(vec![
        RepositoryRule {
            task: Some("t".into()),
            ..rule(REPO)
        },
        RepositoryRule {
            pipeline: None,
            ..rule(REPO)
        },
        RepositoryRule {
            name: Some("Bad Name".into()),
            ..rule(REPO)
        },
        rule("not a url"),
        RepositoryRule {
            name: Some("ws".into()),
            timeout: Some("1 day".into()),
            workspaces: [
                (
                    "both".to_owned(),
                    WorkspaceBinding {
                        claim: Some("c".into()),
                        secret: Some("s".into()),
                        ..Default::default()
                    },
                ),
                (
                    "archived-secret".to_owned(),
                    WorkspaceBinding {
                        secret: Some("s".into()),
                        archive: true,
                        ..Default::default()
                    },
                ),
            ]
            .into(),
            labels: [("tekflux.dev/rule".to_owned(), "x".to_owned())].into(),
            ..rule(REPO)
        },
        rule(REPO),
        rule(REPO),
    ]);
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e.split_once(": ").unwrap().0)
        .collect();
    assert_eq!(
        fields,
        [
            "repositories[0]",
            "repositories[1]",
            "repositories[2].name",
            "repositories[3].url",
            "repositories[4].workspaces.archived-secret",
            "repositories[4].workspaces.both",
            "repositories[4].timeout",
            "repositories[4].labels.tekflux.dev/rule",
            "repositories[6].name",
        ],
        "{errors:#?}"
    );
}

#[test]
fn path_filters_do_not_apply_to_tags() {
    let t = table(vec![RepositoryRule {
        tags: vec!["v*".into()],
        paths: vec!["apis/**".into()],
        ..rule(REPO)
    }]);
    let mut p = push(REPO, "refs/tags/v2.0.0");
    p.changed_paths = vec!["docs/readme.md".into()];
    assert_eq!(outcome(&t, &p)["decisions"], json!([[0, true, "matched"]]));
}
