//! Building PipelineRuns and TaskRuns from matched rules.

#![allow(clippy::unwrap_used)] // tests may unwrap; a failure is the point

use serde_json::{Value, json};
use tekflux_common::config::{
    Concurrency, Config, EmptyDir, RepositoryRule, VolumeClaimTemplate, WorkspaceBinding,
};
use tekflux_git_push::run::{
    BuildError, RunContext, RunKind, build_run, cancel_patch, is_superseded, run_name,
    supersede_selector,
};
use tekflux_git_push::{CompiledRule, Provider, Push, RoutingTable};
use tekflux_testkit::push::TestPush;

const SHA: &str = "8c3f9a1e5b7d2c4f6a8e0b1d3f5a7c9e1b3d5f7a";
const BEFORE: &str = "1111111111111111111111111111111111111111";

fn push(git_ref: &str) -> Push {
    TestPush::new(
        Provider::Github,
        "https://github.example.com/org/r3pf-backend",
    )
    .git_ref(git_ref)
    .before(BEFORE)
    .after(SHA)
    .paths(["apis/apis-async/api-launcher/main.go"])
    .pusher("octocat")
    .delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    .build()
}

/// The run as the API server receives it.
fn build_json(rule: &CompiledRule, push: &Push, ctx: &RunContext) -> Result<Value, BuildError> {
    build_run(rule, push, ctx).map(|run| run.to_json())
}

fn compile(rule: RepositoryRule) -> CompiledRule {
    let table = RoutingTable::compile(&Config {
        repositories: vec![rule],
        ..Default::default()
    })
    .unwrap();
    table.rules()[0].clone()
}

fn ctx() -> RunContext {
    RunContext {
        namespace: "cicd".into(),
        version: Some("0.1.0".into()),
    }
}

fn pipeline_rule() -> RepositoryRule {
    RepositoryRule {
        url: "git@github.example.com:org/r3pf-backend.git".into(),
        provider: Some(Provider::Github),
        branches: vec!["main".into(), "release/*".into()],
        pipeline: Some("api-pipeline".into()),
        params: [
            (
                "apicontext".to_owned(),
                "apis/apis-async/api-launcher/".to_owned(),
            ),
            (
                "image".to_owned(),
                "registry.example.com/api-launcher:{{ sha }}".to_owned(),
            ),
            ("revision".to_owned(), "{{short_sha}}@{{ ref }}".to_owned()),
            (
                "where".to_owned(),
                "{{ repo_owner }}/{{ repo_name }} {{ provider }} {{ run_name }} {{ namespace }}"
                    .to_owned(),
            ),
        ]
        .into(),
        workspaces: [
            (
                "shared-data".to_owned(),
                WorkspaceBinding {
                    claim: Some("tekton-workspace".into()),
                    archive: true,
                    ..Default::default()
                },
            ),
            (
                "cache".to_owned(),
                WorkspaceBinding {
                    volume_claim_template: Some(VolumeClaimTemplate {
                        storage: "1Gi".into(),
                        access_modes: vec![],
                        storage_class_name: Some("fast".into()),
                    }),
                    ..Default::default()
                },
            ),
            (
                "scratch".to_owned(),
                WorkspaceBinding {
                    empty_dir: Some(EmptyDir::default()),
                    ..Default::default()
                },
            ),
            (
                "settings".to_owned(),
                WorkspaceBinding {
                    config_map: Some("build-settings".into()),
                    ..Default::default()
                },
            ),
            (
                "registry-auth".to_owned(),
                WorkspaceBinding {
                    secret: Some("registry-credentials".into()),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        service_account: Some("builder".into()),
        timeout: Some("1h30m".into()),
        labels: [("team".to_owned(), "payments".to_owned())].into(),
        ..Default::default()
    }
}

/// Pinned so that a change to the naming scheme, which would make redeliveries across an
/// upgrade start second runs, is a deliberate one.
const PIPELINE_RUN_NAME: &str = "api-pipeline-31311ad53746";

#[test]
fn pipeline_run_in_full() {
    let rule = compile(pipeline_rule());
    let run = build_json(&rule, &push("refs/heads/release/1.2"), &ctx()).unwrap();
    let name = PIPELINE_RUN_NAME;
    assert_eq!(
        run,
        json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {
                "name": name,
                "namespace": "cicd",
                "labels": {
                    "app.kubernetes.io/managed-by": "tekflux",
                    "tekflux.dev/rule": "api-pipeline",
                    "tekflux.dev/provider": "github",
                    "tekflux.dev/repo": "org-r3pf-backend",
                    "tekflux.dev/ref-kind": "branch",
                    "tekflux.dev/branch": "release-1.2",
                    "tekflux.dev/sha": SHA,
                    "team": "payments",
                },
                "annotations": {
                    "tekflux.dev/delivery-id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                    "tekflux.dev/repo-url": "https://github.example.com/org/r3pf-backend",
                    "tekflux.dev/ref": "refs/heads/release/1.2",
                    "tekflux.dev/sha": SHA,
                    "tekflux.dev/pusher": "octocat",
                    "tekflux.dev/version": "0.1.0",
                    "tekflux.dev/archive-workspaces": json!([
                        {"workspace": "shared-data", "claim": "tekton-workspace", "subPath": name}
                    ]).to_string(),
                },
            },
            "spec": {
                "pipelineRef": {"name": "api-pipeline"},
                "params": [
                    {"name": "apicontext", "value": "apis/apis-async/api-launcher/"},
                    {"name": "image", "value": format!("registry.example.com/api-launcher:{SHA}")},
                    {"name": "revision", "value": "8c3f9a1@refs/heads/release/1.2"},
                    {"name": "where", "value": format!("org/r3pf-backend github {name} cicd")},
                ],
                "workspaces": [
                    {
                        "name": "cache",
                        "volumeClaimTemplate": {"spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                            "storageClassName": "fast",
                        }},
                    },
                    {"name": "registry-auth", "secret": {"secretName": "registry-credentials"}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "settings", "configMap": {"name": "build-settings"}},
                    {
                        "name": "shared-data",
                        "persistentVolumeClaim": {"claimName": "tekton-workspace"},
                        "subPath": name,
                    },
                ],
                "taskRunTemplate": {"serviceAccountName": "builder"},
                "timeouts": {"pipeline": "1h30m"},
            },
        })
    );
}

#[test]
fn task_run_in_full() {
    let rule = compile(RepositoryRule {
        name: Some("notify".into()),
        url: "https://github.example.com/org/*".into(),
        provider: Some(Provider::Github),
        tags: vec!["v*".into()],
        task: Some("send-notification".into()),
        namespace: Some("notifications".into()),
        params: [
            ("tag".to_owned(), "{{ tag }}".to_owned()),
            ("branch".to_owned(), "{{ branch }}".to_owned()),
            ("ref-name".to_owned(), "{{ ref_name }}".to_owned()),
            ("delivery".to_owned(), "{{ delivery }}".to_owned()),
            ("pusher".to_owned(), "{{ pusher }}".to_owned()),
            ("before".to_owned(), "{{ before }}".to_owned()),
            ("clone".to_owned(), "{{ clone_url }}".to_owned()),
            ("repo".to_owned(), "{{ repo_url }}".to_owned()),
        ]
        .into(),
        workspaces: [(
            "scratch".to_owned(),
            WorkspaceBinding {
                empty_dir: Some(EmptyDir {
                    medium: Some("Memory".into()),
                    size_limit: Some("64Mi".into()),
                }),
                ..Default::default()
            },
        )]
        .into(),
        service_account: Some("notifier".into()),
        timeout: Some("10m".into()),
        ..Default::default()
    });
    let p = push("refs/tags/v1.2.0");
    let name = run_name(&rule, &p);
    let run = build_json(
        &rule,
        &p,
        &RunContext {
            namespace: "cicd".into(),
            version: None,
        },
    )
    .unwrap();
    assert_eq!(
        run,
        json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {
                "name": name,
                "namespace": "notifications",
                "labels": {
                    "app.kubernetes.io/managed-by": "tekflux",
                    "tekflux.dev/rule": "notify",
                    "tekflux.dev/provider": "github",
                    "tekflux.dev/repo": "org-r3pf-backend",
                    "tekflux.dev/ref-kind": "tag",
                    "tekflux.dev/tag": "v1.2.0",
                    "tekflux.dev/sha": SHA,
                },
                "annotations": {
                    "tekflux.dev/delivery-id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                    "tekflux.dev/repo-url": "https://github.example.com/org/r3pf-backend",
                    "tekflux.dev/ref": "refs/tags/v1.2.0",
                    "tekflux.dev/sha": SHA,
                    "tekflux.dev/pusher": "octocat",
                },
            },
            "spec": {
                "taskRef": {"name": "send-notification"},
                "params": [
                    {"name": "before", "value": BEFORE},
                    {"name": "branch", "value": ""},
                    {"name": "clone", "value": "https://github.example.com/org/r3pf-backend.git"},
                    {"name": "delivery", "value": "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
                    {"name": "pusher", "value": "octocat"},
                    {"name": "ref-name", "value": "v1.2.0"},
                    {"name": "repo", "value": "https://github.example.com/org/r3pf-backend"},
                    {"name": "tag", "value": "v1.2.0"},
                ],
                "workspaces": [
                    {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                ],
                "serviceAccountName": "notifier",
                "timeout": "10m",
            },
        })
    );
}

#[test]
fn minimal_rule_builds_a_minimal_run() {
    let rule = compile(RepositoryRule {
        url: "https://github.example.com/org/r3pf-backend".into(),
        provider: Some(Provider::Github),
        pipeline: Some("build".into()),
        ..Default::default()
    });
    let run = build_json(&rule, &push("refs/heads/main"), &ctx()).unwrap();
    assert_eq!(run["spec"], json!({"pipelineRef": {"name": "build"}}));
    assert!(
        run["metadata"]["annotations"]
            .get("tekflux.dev/archive-workspaces")
            .is_none()
    );
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (s.is_empty()
            || (s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

#[test]
fn names_are_deterministic_and_distinct_per_delivery_and_ref() {
    let rule = compile(pipeline_rule());
    let p = push("refs/heads/main");
    assert_eq!(run_name(&rule, &p), run_name(&rule, &p.clone()));
    assert_eq!(
        run_name(&rule, &push("refs/heads/release/1.2")),
        PIPELINE_RUN_NAME
    );

    let mut other_delivery = p.clone();
    other_delivery.delivery_id.push('2');
    assert_ne!(run_name(&rule, &p), run_name(&rule, &other_delivery));

    // One Bitbucket delivery with two changes yields two runs.
    assert_ne!(
        run_name(&rule, &p),
        run_name(&rule, &push("refs/heads/release/1"))
    );

    let mut other_provider = p.clone();
    other_provider.provider = Provider::Gitea;
    assert_ne!(run_name(&rule, &p), run_name(&rule, &other_provider));

    let renamed = compile(RepositoryRule {
        name: Some("api".into()),
        ..pipeline_rule()
    });
    assert_ne!(run_name(&rule, &p), run_name(&renamed, &p));
}

#[test]
fn long_rule_names_and_hostile_deliveries_give_valid_names() {
    let long = "a-very-long-rule-name.with.dots-".repeat(2) + "end";
    let long = &long[..63];
    let rule = compile(RepositoryRule {
        name: Some(long.trim_end_matches(['-', '.']).to_owned()),
        ..pipeline_rule()
    });
    for delivery in [
        "",
        "x".repeat(5000).as_str(),
        "../../etc/passwd",
        "$(rm -rf /)",
        "ÄÖÜ 🚀\n\r\0",
    ] {
        let mut p = push("refs/heads/main");
        p.delivery_id = delivery.to_owned();
        let name = run_name(&rule, &p);
        assert!(is_dns1123_label(&name), "{name:?}");
        assert!(
            name.starts_with("a-very-long-rule-name-with-dots-"),
            "{name}"
        );
        let run = build_json(&rule, &p, &ctx()).unwrap();
        assert_eq!(run["metadata"]["name"], json!(name));
        assert_eq!(
            run["metadata"]["annotations"]["tekflux.dev/delivery-id"],
            json!(delivery)
        );
    }
}

const HOSTILE_REFS: [&str; 6] = [
    "$(rm -rf /)",
    "; curl x | sh",
    "main\nmalicious: true",
    "feature/ünïcödé-🚀",
    "`id`&&{{ sha }}",
    "x/../../../etc/passwd",
];

/// Every string in `value`, with where it is.
fn strings(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((at, s.clone())),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings(v, format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                out.push((format!("{at}.{k}#key"), k.clone()));
                strings(v, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn hostile_refs_reach_only_param_values_and_annotations() {
    for kind in ["heads", "tags"] {
        for hostile in HOSTILE_REFS {
            let mut config = pipeline_rule();
            config.tags = vec!["**".into()];
            config.branches = vec!["**".into()];
            config
                .params
                .insert("a-ref".into(), "{{ ref_name }}".into());
            let rule = compile(config);
            let p = push(&format!("refs/{kind}/{hostile}"));
            let run = build_json(&rule, &p, &ctx()).unwrap();

            let name = run["metadata"]["name"].as_str().unwrap();
            assert!(is_dns1123_label(name), "{name:?}");
            for (key, value) in run["metadata"]["labels"].as_object().unwrap() {
                let value = value.as_str().unwrap();
                assert!(is_label_value(value), "{key}={value:?}");
                assert!(!value.is_empty(), "{key} kept although empty");
            }
            let ref_label = &run["metadata"]["labels"][format!(
                "tekflux.dev/{}",
                if kind == "heads" { "branch" } else { "tag" }
            )];
            assert!(
                ref_label.is_null() || ref_label.as_str().is_some_and(is_label_value),
                "{ref_label}"
            );

            // The raw text appears only as a param value or in an annotation.
            let mut found = Vec::new();
            strings(&run, String::new(), &mut found);
            let places: Vec<&str> = found
                .iter()
                .filter(|(_, s)| s.contains(hostile))
                .map(|(at, _)| at.as_str())
                .collect();
            assert_eq!(
                places,
                [
                    ".metadata.annotations.tekflux.dev/ref",
                    ".spec.params[0].value",
                    ".spec.params[3].value",
                ],
                "{hostile:?}"
            );
            assert_eq!(run["spec"]["params"][0]["value"], json!(hostile));
            // Rendering is single-pass: a `{{ sha }}` inside the ref stays literal.
            assert!(
                !run["spec"]["params"][0]["value"]
                    .as_str()
                    .unwrap()
                    .contains(SHA)
            );
        }
    }
}

#[test]
fn long_branch_labels_are_cut_with_a_hash() {
    let rule = compile(pipeline_rule());
    let a = build_json(
        &rule,
        &push(&format!("refs/heads/release/{}", "x".repeat(100))),
        &ctx(),
    )
    .unwrap();
    let b = build_json(
        &rule,
        &push(&format!("refs/heads/release/{}", "x".repeat(101))),
        &ctx(),
    )
    .unwrap();
    let la = a["metadata"]["labels"]["tekflux.dev/branch"]
        .as_str()
        .unwrap();
    let lb = b["metadata"]["labels"]["tekflux.dev/branch"]
        .as_str()
        .unwrap();
    assert!(is_label_value(la) && la.len() <= 63, "{la}");
    assert!(la.starts_with("release-xxx"));
    assert_ne!(la, lb);
}

#[test]
fn deleted_refs_and_missing_namespaces_are_errors() {
    let rule = compile(pipeline_rule());
    let mut p = push("refs/heads/main");
    p.deleted = true;
    assert_eq!(
        build_json(&rule, &p, &ctx()).unwrap_err(),
        BuildError::RefDeleted {
            git_ref: "refs/heads/main".into()
        }
    );
    assert_eq!(
        build_json(&rule, &push("refs/heads/main"), &RunContext::default()).unwrap_err(),
        BuildError::NoNamespace {
            rule: "api-pipeline".into()
        }
    );
}

#[test]
fn supersede_selects_same_rule_repo_and_branch() {
    let rule = compile(RepositoryRule {
        concurrency: Concurrency::Supersede,
        ..pipeline_rule()
    });
    assert_eq!(rule.concurrency, Concurrency::Supersede);
    let p = push("refs/heads/feature/login");
    let selector = supersede_selector(&rule, &p, &Default::default());
    let mut terms: Vec<&str> = selector.split(',').collect();
    terms.sort_unstable();
    assert_eq!(
        terms,
        [
            "app.kubernetes.io/managed-by=tekflux",
            "tekflux.dev/branch=feature-login",
            "tekflux.dev/provider=github",
            "tekflux.dev/ref-kind=branch",
            "tekflux.dev/repo=org-r3pf-backend",
            "tekflux.dev/rule=api-pipeline",
        ]
    );
    // Every selected label is on the run itself.
    let run = build_json(&rule, &p, &ctx()).unwrap();
    for term in terms {
        let (key, value) = term.split_once('=').unwrap();
        assert_eq!(run["metadata"]["labels"][key], json!(value));
    }

    assert_eq!(
        cancel_patch(RunKind::PipelineRun),
        json!({"spec": {"status": "Cancelled"}})
    );
    assert_eq!(
        cancel_patch(RunKind::TaskRun),
        json!({"spec": {"status": "TaskRunCancelled"}})
    );
}

#[test]
fn only_older_unfinished_runs_of_the_same_ref_are_superseded() {
    let rule = compile(pipeline_rule());
    let p = push("refs/heads/feature/login");
    let mut new_run = build_json(&rule, &p, &ctx()).unwrap();
    new_run["metadata"]["creationTimestamp"] = json!("2024-05-01T10:00:05Z");

    let mut older = push("refs/heads/feature/login");
    older.delivery_id = "older".into();
    let mut old_run = build_json(&rule, &older, &ctx()).unwrap();
    old_run["metadata"]["creationTimestamp"] = json!("2024-05-01T09:59:00Z");
    old_run["status"] = json!({"conditions": [{"type": "Succeeded", "status": "Unknown"}]});
    assert!(is_superseded(&old_run, &new_run, &p));

    assert!(!is_superseded(&new_run, &new_run, &p), "itself");

    let mut newer = old_run.clone();
    newer["metadata"]["creationTimestamp"] = json!("2024-05-01T10:01:00Z");
    assert!(!is_superseded(&newer, &new_run, &p), "newer");

    let mut done = old_run.clone();
    done["status"]["conditions"][0]["status"] = json!("True");
    assert!(!is_superseded(&done, &new_run, &p), "finished");

    let mut cancelled = old_run.clone();
    cancelled["spec"]["status"] = json!("Cancelled");
    assert!(!is_superseded(&cancelled, &new_run, &p), "cancelled");

    // `feature-login` shares the sanitised label but is another branch.
    let mut lookalike = old_run.clone();
    lookalike["metadata"]["annotations"]["tekflux.dev/ref"] = json!("refs/heads/feature-login");
    assert!(!is_superseded(&lookalike, &new_run, &p), "other branch");
}

#[test]
fn built_runs_are_valid_against_the_tekton_v1_schemas() {
    let schemas = tekflux_testkit::crd::CrdSchemas::from_corpus();
    for kind in ["PipelineRun", "TaskRun"] {
        assert!(
            schemas.lookup("tekton.dev", "v1", kind).is_some(),
            "no tekton.dev/v1 {kind} schema in the corpus"
        );
    }

    // Every workspace kind, service account and timeout, as PipelineRun and as TaskRun.
    let as_task = RepositoryRule {
        pipeline: None,
        task: Some("build-task".into()),
        ..pipeline_rule()
    };
    let mut runs = Vec::new();
    for rule in [pipeline_rule(), as_task] {
        let rule = compile(RepositoryRule {
            branches: vec!["**".into()],
            ..rule
        });
        runs.push(build_json(&rule, &push("refs/heads/main"), &ctx()).unwrap());
        for hostile in HOSTILE_REFS {
            let p = push(&format!("refs/heads/{hostile}"));
            runs.push(build_json(&rule, &p, &ctx()).unwrap());
        }
    }
    for run in &runs {
        if let Err(errors) = schemas.validate(run) {
            panic!("{} invalid: {errors:#?}\n{run:#}", run["kind"]);
        }
    }
    assert_eq!(runs[0]["kind"], "PipelineRun");
    assert_eq!(runs[HOSTILE_REFS.len() + 1]["kind"], "TaskRun");

    // The check can fail: a TaskRun timeout where a PipelineRun wants `timeouts`.
    let mut wrong = runs[0].clone();
    wrong["spec"]["timeouts"] = json!("1h30m");
    let errors = match schemas.validate(&wrong) {
        Ok(()) => panic!("a string where spec.timeouts wants an object passed: {wrong:#}"),
        Err(errors) => errors,
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.timeouts"], "{errors:#?}");
}
