#![allow(clippy::unwrap_used)]
use super::*;
use crate::change::ImageVersion;
use serde_json::Value;
use serde_json::json;
use tekflux_common::config::Config;
use tekflux_common::config::Env;

const DIGEST: &str = "sha256:0123abcd";

fn config() -> Config {
    Config::from_yaml(
        "namespace: cicd
repositories:
  - url: https://github.com/acme/api
    pipeline: api-pipeline
  - url: https://github.com/acme/tools
    name: tools
    task: build
    namespace: tools
releases:
  - image: registry.example.com/acme/api
    helmRelease: api
    set: image.tag
    from: { rules: [api-pipeline], branches: [main, \"release/*\"], tags: [\"v*\"] }
    values: [replicaCount, resources]
  - image: registry.example.com/acme/api
    helmRelease: staging/api
    set: image.tag
    from: any
  - chart: platform
    helmRelease: platform
    from: any
  - image: registry.example.com/acme/web
    helmRelease: web
    set: image.tag
    from: { registry: true }
",
        "test.yaml",
        &Env::new(),
    )
    .unwrap()
}

fn identity() -> RunIdentity {
    RunIdentity {
        kind: RunKind::PipelineRun,
        name: "api-pipeline-0123456789ab".into(),
        namespace: "cicd".into(),
        uid: "uid-1".into(),
        image_digest: Some(DIGEST.into()),
    }
}

fn image() -> ImageVersion {
    ImageVersion::parse(&format!("registry.example.com/acme/api:1.2.3@{DIGEST}")).unwrap()
}

fn run(git_ref: &str) -> Value {
    let (kind, name) = match git_ref.strip_prefix("refs/tags/") {
        Some(tag) => ("tag", tag),
        None => ("branch", git_ref.trim_start_matches("refs/heads/")),
    };
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {
            "name": "api-pipeline-0123456789ab", "namespace": "cicd", "uid": "uid-1",
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, RULE_LABEL: "api-pipeline",
                       REF_KIND_LABEL: kind, format!("tekflux.dev/{kind}"): name},
            "annotations": {REF_ANNOTATION: git_ref},
        },
        "status": {
            "conditions": [{"type": "Succeeded", "status": "True"}],
            "results": [{"name": "IMAGE_URL", "value": "registry.example.com/acme/api:1.2.3"},
                        {"name": "IMAGE_DIGEST", "value": DIGEST}],
        },
    })
}

#[test]
fn run_identity_comes_from_custom_data_and_must_be_able_to_exist() {
    let data = json!({"customData": {"run": {"kind": "PipelineRun",
            "name": "api-pipeline-0123456789ab", "namespace": "cicd", "uid": "uid-1"},
            "imageDigest": DIGEST}});
    assert_eq!(RunIdentity::from_event_data(&data), Some(identity()));
    for bad in [
        json!({}),
        json!({"customData": {"run": {"kind": "Pod", "name": "a", "namespace": "b", "uid": "c"}}}),
        json!({"customData": {"run": {"kind": "TaskRun", "name": "../x", "namespace": "b", "uid": "c"}}}),
        json!({"customData": {"run": {"kind": "TaskRun", "name": "a", "namespace": "b"}}}),
    ] {
        assert_eq!(RunIdentity::from_event_data(&bad), None, "{bad}");
    }
}

#[test]
fn a_run_is_verified_against_the_api_servers_copy() {
    let facts = verify_run(&run("refs/heads/main"), &identity(), &image()).unwrap();
    assert_eq!(facts.rule, "api-pipeline");
    assert_eq!(facts.git_ref, GitRef::Branch("main".into()));

    let mut other = run("refs/heads/main");
    other["metadata"]["uid"] = json!("uid-2");
    let refusal = verify_run(&other, &identity(), &image()).unwrap_err();
    assert_eq!(refusal.kind(), "run_uid_mismatch");

    let mut failed = run("refs/heads/main");
    failed["status"]["conditions"][0]["status"] = json!("False");
    let refusal = verify_run(&failed, &identity(), &image()).unwrap_err();
    assert_eq!(refusal.kind(), "run_not_succeeded");

    // v1beta1 spelling, other digest.
    let mut beta = run("refs/heads/main");
    let results = beta["status"].as_object_mut().unwrap().remove("results");
    beta["status"]["pipelineResults"] = results.unwrap();
    assert!(verify_run(&beta, &identity(), &image()).is_ok());
    beta["status"]["pipelineResults"][1]["value"] = json!("sha256:ffff");
    let refusal = verify_run(&beta, &identity(), &image()).unwrap_err();
    assert_eq!(refusal.kind(), "image_mismatch");

    // Another tag than the one built.
    let retagged =
        ImageVersion::parse(&format!("registry.example.com/acme/api:9.9.9@{DIGEST}")).unwrap();
    let refusal = verify_run(&run("refs/heads/main"), &identity(), &retagged).unwrap_err();
    assert_eq!(refusal.kind(), "image_mismatch");

    let mut foreign = run("refs/heads/main");
    foreign["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(MANAGED_BY_LABEL);
    let refusal = verify_run(&foreign, &identity(), &image()).unwrap_err();
    assert_eq!(refusal.kind(), "not_tekflux_run");
}

#[test]
fn from_admits_listed_rules_branches_and_tags_only() {
    let config = config();
    let guarded = &config.releases[0];
    let facts =
        |git_ref: &str| Checked::Run(verify_run(&run(git_ref), &identity(), &image()).unwrap());
    for allowed in [
        "refs/heads/main",
        "refs/heads/release/1.0",
        "refs/tags/v1.2.3",
    ] {
        assert_eq!(
            admits(&config, guarded, "cicd/api", &facts(allowed)),
            Ok(()),
            "{allowed}"
        );
    }
    for refused in [
        "refs/heads/feature/x",
        "refs/heads/release/1.0/x",
        "refs/tags/1.0",
    ] {
        let refusal = admits(&config, guarded, "cicd/api", &facts(refused)).unwrap_err();
        assert_eq!(refusal.kind(), "ref_not_allowed", "{refused}");
    }
    let mut tools = run("refs/heads/main");
    tools["metadata"]["labels"][RULE_LABEL] = json!("tools");
    let facts = verify_run(&tools, &identity(), &image()).unwrap();
    let refusal = admits(&config, guarded, "cicd/api", &Checked::Run(facts)).unwrap_err();
    assert_eq!(refusal.kind(), "rule_not_allowed");
    assert_eq!(
        admits(&config, guarded, "cicd/api", &Checked::Unverified),
        Err(Refusal::NoRun)
    );
    assert_eq!(
        admits(&config, guarded, "cicd/api", &Checked::Registry)
            .unwrap_err()
            .kind(),
        "registry_not_allowed"
    );
    // `from: any` takes anything; `registry: true` takes registry pushes.
    assert_eq!(
        admits(
            &config,
            &config.releases[1],
            "staging/api",
            &Checked::Unverified
        ),
        Ok(())
    );
    assert_eq!(
        admits(&config, &config.releases[3], "cicd/web", &Checked::Registry),
        Ok(())
    );
    assert_eq!(run_namespaces(&config, &config.releases), ["cicd"]);
}

#[test]
fn explicit_edits_set_only_declared_paths() {
    let config = config();
    let values = |value: Value| value.as_object().cloned().unwrap();
    let ok = values(json!({"replicaCount": 3, "resources": {"limits": {"memory": "1Gi"}}}));
    assert_eq!(
        check_explicit_edit(&config, "cicd/api", None, Some(&ok)),
        Ok(())
    );
    for bad in [
        json!({"image": {"tag": "evil"}}),
        json!({"image": {"repository": "evil.example.com/x"}}),
        json!({"replicaCount": 3, "podAnnotations": {"a": "b"}}),
    ] {
        let refusal =
            check_explicit_edit(&config, "cicd/api", None, Some(&values(bad.clone()))).unwrap_err();
        assert_eq!(refusal.kind(), "value_not_allowed", "{bad}");
    }
    // The guarded rule's release takes no chart version; `from: any` opens the set path.
    assert_eq!(
        check_explicit_edit(&config, "cicd/api", Some("1.0.0"), None)
            .unwrap_err()
            .kind(),
        "chart_version_not_allowed"
    );
    assert_eq!(
        check_explicit_edit(&config, "cicd/platform", Some("1.0.0"), None),
        Ok(())
    );
    let tag = values(json!({"image": {"tag": "2.0.0"}}));
    assert_eq!(
        check_explicit_edit(&config, "staging/api", None, Some(&tag)),
        Ok(())
    );
}

#[test]
fn times_far_in_the_future_are_refused() {
    let now = parse_time("2026-11-24T06:00:00Z").unwrap();
    assert_eq!(check_time(None, now), Ok(()));
    assert_eq!(check_time(Some("2026-11-24T06:04:59Z"), now), Ok(()));
    assert_eq!(check_time(Some("2020-01-01T00:00:00Z"), now), Ok(()));
    assert_eq!(
        check_time(Some("2026-11-24T06:05:01Z"), now)
            .unwrap_err()
            .kind(),
        "future_time"
    );
}
