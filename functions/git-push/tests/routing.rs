//! Routing pushes to `repositories` rules.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use serde_json::{Value, json};
use tekflux_common::config::{
    Config, Env, ProviderSettings, Providers, RepositoryRule, WorkspaceBinding, bound_provider,
};
use tekflux_git_push::{Miss, Provider, Push, RefKind, RoutingTable};
use tekflux_testkit::push::TestPush;

fn push(repo: &str, git_ref: &str) -> Push {
    push_from(Provider::Github, repo, git_ref)
}

fn push_from(provider: Provider, repo: &str, git_ref: &str) -> Push {
    TestPush::new(provider, repo)
        .git_ref(git_ref)
        .before(&"a".repeat(40))
        .after(&"b".repeat(40))
        .pusher("octocat")
        .delivery("delivery-1")
        .build()
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
    let gitlab = |repo| push_from(Provider::Gitlab, repo, "refs/heads/main");
    assert_eq!(
        matched(&t, &gitlab("https://gitlab.com/group/sub/repo")),
        vec![1]
    );
    assert_eq!(
        matched(&t, &gitlab("https://gitlab.com/group/repo")),
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
        provider: Some(Provider::Github),
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
        "repositories[0].params.broken: the `{{` at character 1 is never closed with `}}`"
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

// ---------------------------------------------------------------------------------------------
// rules bound to their provider and host

/// (index, miss, reason) of every decision that did not match.
fn misses(table: &RoutingTable, push: &Push) -> Vec<(usize, Option<Miss>, String)> {
    table
        .route(push)
        .ignored()
        .map(|d| (d.index, d.miss, d.reason.clone()))
        .collect()
}

#[test]
fn a_rule_matches_only_pushes_from_its_provider() {
    const SELF_HOSTED: &str = "https://git.example.com/org/repo";
    let t = table(vec![
        // github.com: bound to github without saying so.
        rule(REPO),
        RepositoryRule {
            name: Some("mirror".into()),
            provider: Some(Provider::Gitea),
            ..rule(SELF_HOSTED)
        },
    ]);
    assert_eq!(t.rules()[0].provider, Provider::Github);
    assert_eq!(t.rules()[1].provider, Provider::Gitea);
    assert_eq!(matched(&t, &push(REPO, "refs/heads/main")), vec![0]);
    for provider in Provider::ALL.into_iter().filter(|p| *p != Provider::Github) {
        assert_eq!(
            misses(&t, &push_from(provider, REPO, "refs/heads/main")),
            [(
                0,
                Some(Miss::ProviderMismatch),
                format!("rule is bound to provider github, push came from {provider}")
            )]
        );
    }
    assert_eq!(
        matched(
            &t,
            &push_from(Provider::Gitea, SELF_HOSTED, "refs/heads/main")
        ),
        vec![1]
    );
    // Forgejo speaks Gitea's webhook dialect, but is its own provider.
    for provider in [Provider::Github, Provider::Forgejo] {
        assert_eq!(
            misses(&t, &push_from(provider, SELF_HOSTED, "refs/heads/main"))[0].1,
            Some(Miss::ProviderMismatch)
        );
    }
    // The provider is checked before the ref: a deleted ref from another provider is a
    // provider mismatch, which is what the metrics count.
    let mut deleted = push_from(Provider::Gitlab, REPO, "refs/heads/main");
    deleted.deleted = true;
    assert_eq!(misses(&t, &deleted)[0].1, Some(Miss::ProviderMismatch));
}

#[test]
fn a_clone_url_on_another_host_does_not_match() {
    let t = table(vec![
        rule(REPO),
        RepositoryRule {
            name: Some("org".into()),
            ..rule("https://github.com/org/*")
        },
    ]);
    let mut p = push(REPO, "refs/heads/main");
    for clone in [
        "https://evil.example/org/repo.git",
        "https://github.com.evil.example/org/repo.git",
        "https://github.com@evil.example/org/repo.git",
        "git@evil.example:org/repo.git",
    ] {
        p.clone_url = clone.into();
        let host = if clone.contains("github.com.evil") {
            "github.com.evil.example"
        } else {
            "evil.example"
        };
        let reason = format!("clone URL host {host} is not the rule's host github.com");
        assert_eq!(
            misses(&t, &p),
            [
                (0, Some(Miss::CloneHostMismatch), reason.clone()),
                (1, Some(Miss::CloneHostMismatch), reason),
            ],
            "{clone}"
        );
    }
    p.clone_url = "/srv/git/repo".into();
    assert_eq!(
        misses(&t, &p)[0],
        (
            0,
            Some(Miss::CloneHostMismatch),
            "clone URL \"/srv/git/repo\" names no host; the rule's host is github.com".to_owned()
        )
    );
    // The same host in another form, case or with a port: a match.
    for clone in [
        "git@github.com:org/repo.git",
        "https://GitHub.com:443/org/repo.git",
        "ssh://git@github.com:22/org/repo.git",
        "http://github.com:8080/org/repo",
    ] {
        p.clone_url = clone.into();
        assert_eq!(matched(&t, &p), vec![0, 1], "{clone}");
    }
}

#[test]
fn url_globs_never_reach_another_host() {
    // A glob in the host is refused, naming the field.
    let errors = compile_errors(vec![
        RepositoryRule {
            provider: Some(Provider::Github),
            ..rule("https://*.example.com/org/repo")
        },
        RepositoryRule {
            provider: Some(Provider::Github),
            ..rule("https://github.com*/org/*")
        },
        RepositoryRule {
            provider: Some(Provider::Gitlab),
            ..rule("git@{gitlab.com,evil.example}:group/*")
        },
    ]);
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (i, error) in errors.iter().enumerate() {
        assert!(
            error.starts_with(&format!("repositories[{i}].url: the host")),
            "{error}"
        );
    }
    // Path globs: the scheme and host before them are matched as written. An IPv6 literal's
    // brackets would otherwise be a character class, and `[fd00::1]` would match host `1`.
    let t = table(vec![
        RepositoryRule {
            provider: Some(Provider::Gitea),
            ..rule("http://[fd00::1]:3000/org/*")
        },
        RepositoryRule {
            name: Some("teams".into()),
            ..rule("https://github.com/{org,team}/**")
        },
    ]);
    let gitea = |repo| push_from(Provider::Gitea, repo, "refs/heads/main");
    assert_eq!(matched(&t, &gitea("https://[fd00::1]:3000/org/repo")), [0]);
    assert!(
        t.route(&gitea("https://1:3000/org/repo"))
            .decisions
            .is_empty()
    );
    assert_eq!(matched(&t, &push(REPO, "refs/heads/main")), [1]);
    for elsewhere in [
        "https://github.com.evil.example/org/repo",
        "https://evil.example/github.com/org/repo",
        "https://github.com:8443/org/repo",
    ] {
        assert!(
            t.route(&push(elsewhere, "refs/heads/main"))
                .decisions
                .is_empty(),
            "{elsewhere}"
        );
    }
}

fn insecure() -> Option<ProviderSettings> {
    Some(ProviderSettings {
        insecure: true,
        ..Default::default()
    })
}

#[test]
fn without_provider_the_host_or_the_one_configured_provider_decides() {
    let only_gitlab = Providers {
        gitlab: insecure(),
        ..Default::default()
    };
    let rules = vec![
        rule(REPO),
        RepositoryRule {
            name: Some("self-hosted".into()),
            ..rule("git@git.example.com:group/repo.git")
        },
    ];
    let t = RoutingTable::compile(&Config {
        providers: only_gitlab.clone(),
        repositories: rules.clone(),
        ..Default::default()
    })
    .unwrap();
    // github.com is GitHub's even when only GitLab is configured: a GitLab push claiming it is
    // refused, and a GitHub one would have to be signed by a GitHub secret (or come through
    // the GitHubSource).
    assert_eq!(t.rules()[0].provider, Provider::Github);
    assert_eq!(
        misses(&t, &push_from(Provider::Gitlab, REPO, "refs/heads/main"))[0].1,
        Some(Miss::ProviderMismatch)
    );
    assert_eq!(t.rules()[1].provider, Provider::Gitlab);

    let two = Providers {
        github: insecure(),
        ..only_gitlab
    };
    let errors = RoutingTable::compile(&Config {
        providers: two,
        repositories: rules,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "repositories[1]");
    assert!(
        errors[0].message.starts_with(
            "git.example.com is not a well-known host and 2 git providers are configured (github, gitlab): set `provider`"
        ),
        "{}",
        errors[0].message
    );
}

/// `tekflux check-config` (the common loader) and git-push's routing table accept and refuse
/// the same rules, and bind the accepted ones to the same provider.
#[test]
fn check_config_and_the_routing_table_agree() {
    let none = json!({});
    let gitlab = json!({"gitlab": {"insecure": true}});
    let two = json!({"gitlab": {"insecure": true}, "gitea": {"insecure": true}});
    let flux = json!({"flux": {"insecure": true}});
    let cases: Vec<(Value, Value, Option<&str>)> = vec![
        (
            json!({"url": "https://github.com/org/app"}),
            none.clone(),
            Some("github"),
        ),
        (
            json!({"url": "https://github.com/org/app"}),
            gitlab.clone(),
            Some("github"),
        ),
        (
            json!({"url": "git@gitlab.com:group/**"}),
            two.clone(),
            Some("gitlab"),
        ),
        (
            json!({"url": "https://codeberg.org/org/*", "provider": "forgejo"}),
            none.clone(),
            Some("forgejo"),
        ),
        (
            json!({"url": "https://git.example.com/org/app"}),
            gitlab.clone(),
            Some("gitlab"),
        ),
        (
            json!({"url": "https://git.example.com/org/app"}),
            two.clone(),
            None,
        ),
        (
            json!({"url": "https://git.example.com/org/app"}),
            none.clone(),
            None,
        ),
        (
            json!({"url": "https://git.example.com/org/app"}),
            flux.clone(),
            None,
        ),
        (
            json!({"url": "https://git.example.com/org/app", "provider": "gitea"}),
            two.clone(),
            Some("gitea"),
        ),
        (
            json!({"url": "https://git.example.com/org/app", "provider": "bitbucket"}),
            none.clone(),
            Some("bitbucket"),
        ),
        (
            json!({"url": "https://github.com/org/app", "provider": "gitlab"}),
            gitlab.clone(),
            None,
        ),
        (
            json!({"url": "https://bitbucket.org/team/app", "provider": "bitbucket"}),
            none.clone(),
            Some("bitbucket"),
        ),
        (
            json!({"url": "https://*.example.com/org/app", "provider": "github"}),
            none.clone(),
            None,
        ),
        (
            json!({"url": "git@git*.example.com:org/app", "provider": "github"}),
            none.clone(),
            None,
        ),
        (
            json!({"url": "ssh://git@{a,b}/org/app", "provider": "github"}),
            none.clone(),
            None,
        ),
        (
            json!({"url": "http://[fd00::1]:3000/org/*", "provider": "gitea"}),
            none.clone(),
            Some("gitea"),
        ),
        (
            json!({"url": "http://[fd00::1]:3000/org/*"}),
            gitlab.clone(),
            Some("gitlab"),
        ),
    ];
    for (rule, providers, expected) in cases {
        let mut rule_json = rule.clone();
        rule_json["pipeline"] = json!("build");
        let document = json!({"providers": providers, "repositories": [rule_json]});
        let what = format!("{rule} with providers {providers}");

        // JSON is YAML: the text `tekflux check-config` would read.
        let checked = Config::from_yaml(&document.to_string(), "case.yaml", &Env::new())
            .map_err(|error| error.to_string());
        let unchecked: Config = serde_json::from_value(document).unwrap();
        let compiled = RoutingTable::compile(&unchecked).map_err(|errors| format!("{errors:?}"));

        assert_eq!(
            checked.is_ok(),
            compiled.is_ok(),
            "{what}: check-config {checked:?}, routing table {compiled:?}"
        );
        match (checked, compiled, expected) {
            (Ok(config), Ok(table), Some(provider)) => {
                let bound = bound_provider(&config.repositories[0], &config.providers).unwrap();
                assert_eq!(bound.as_str(), provider, "{what}");
                assert_eq!(table.rules()[0].provider, bound, "{what}");
            }
            (Err(_), Err(_), None) => {}
            (checked, compiled, expected) => {
                panic!(
                    "{what}: expected {expected:?}, check-config {checked:?}, routing table {compiled:?}"
                )
            }
        }
    }
}
