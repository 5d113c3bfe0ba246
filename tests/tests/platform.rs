//! `infra/platform`, the seed platform reproduced with tekflux: its Tasks are valid against the
//! upstream Tekton schema, its Pipeline hands every Task what the Task declares, its steps keep
//! params out of scripts, its config loads and gives the Pipeline every param it needs, and the
//! YAML figures of `docs/yaml-burden.md` are the ones the shipped files give.
//!
//! The corpus holds the TaskRun and PipelineRun CRDs but not the Task and Pipeline ones, so a
//! Task's spec is validated as what Tekton copies it into, a TaskRun's `status.taskSpec` (whose
//! schema is the full TaskSpec), and the Pipeline is checked here against its Tasks, the way
//! Tekton's own validation resolves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use tekflux_common::config::{Config, Env};
use tekflux_testkit::crd::CrdSchemas;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `kubectl kustomize infra/platform` renders; `None` (skipped, said so) without kubectl.
fn rendered() -> Option<Vec<Value>> {
    tekflux_testkit::kustomize::kustomize(&root().join("infra/platform"))
}

fn tasks(objects: &[Value]) -> BTreeMap<String, &Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Task")
        .map(|o| (o["metadata"]["name"].as_str().unwrap().to_owned(), o))
        .collect()
}

fn pipeline(objects: &[Value]) -> &Value {
    let pipelines: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Pipeline").collect();
    assert_eq!(pipelines.len(), 1, "one Pipeline");
    pipelines[0]
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn names(values: &[Value]) -> BTreeSet<String> {
    values
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every string below `value`, with the path to it.
fn strings<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(text) => out.push((path, text)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                strings(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

/// The Tekton variables (`$(params.x)`, `$(tasks.a.results.b)`, ...) a string refers to.
fn variables(text: &str) -> Vec<String> {
    let pattern = Regex::new(r"\$\(([a-zA-Z][a-zA-Z0-9_.\-\[\]*]*)\)").unwrap();
    pattern
        .captures_iter(text)
        .map(|c| c[1].to_owned())
        .filter(|v| {
            ["params.", "tasks.", "workspaces.", "results.", "context."]
                .iter()
                .any(|prefix| v.starts_with(prefix))
        })
        .collect()
}

#[test]
fn the_platform_renders_five_tasks_and_the_pipeline_in_one_namespace() {
    let Some(objects) = rendered() else {
        return;
    };
    let kinds: BTreeMap<String, usize> = objects.iter().fold(BTreeMap::new(), |mut acc, o| {
        *acc.entry(o["kind"].as_str().unwrap().to_owned())
            .or_default() += 1;
        acc
    });
    assert_eq!(
        kinds,
        BTreeMap::from([("Pipeline".to_owned(), 1), ("Task".to_owned(), 5)])
    );
    for object in &objects {
        assert_eq!(object["apiVersion"], "tekton.dev/v1");
        assert_eq!(object["metadata"]["namespace"], "cicd");
    }
    assert_eq!(pipeline(&objects)["metadata"]["name"], "api-pipeline");
}

/// Each Task's spec, as the TaskRun's `status.taskSpec` Tekton copies it into, against the
/// upstream TaskRun CRD (v1), whose schema of that field is the whole TaskSpec: unknown fields,
/// wrong types and misspelled keys fail.
#[test]
fn every_platform_task_is_valid_against_the_upstream_task_spec_schema() {
    let schemas = CrdSchemas::from_corpus();
    let Some(objects) = rendered() else {
        return;
    };
    let tasks = tasks(&objects);
    assert_eq!(tasks.len(), 5);
    for (name, task) in &tasks {
        let run = json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {"name": format!("{name}-run"), "namespace": "cicd"},
            "spec": {"taskRef": {"name": name}},
            "status": {"podName": format!("{name}-run-pod"), "taskSpec": task["spec"]},
        });
        if let Err(errors) = schemas.validate(&run) {
            panic!("Task {name}: {errors:#?}");
        }
        // The schema check is strict: a misspelled step field is refused.
        let mut broken = run.clone();
        broken["status"]["taskSpec"]["steps"][0]["workdir"] = json!("/x");
        assert!(schemas.validate(&broken).is_err(), "Task {name}");
    }
}

/// What Tekton resolves when it runs the Pipeline: every Task it names exists, each gets the
/// params it declares (no unknown one, none without a default left out, arrays as arrays),
/// every workspace it needs, and results that its Tasks declare; every `$(params.x)` is a param
/// of the Pipeline.
#[test]
fn the_pipeline_gives_every_task_what_the_task_declares() {
    let Some(objects) = rendered() else {
        return;
    };
    let tasks = tasks(&objects);
    let pipeline = pipeline(&objects);
    let spec = &pipeline["spec"];
    let pipeline_params: BTreeMap<String, &Value> = list(spec, "params")
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p))
        .collect();
    let pipeline_workspaces: BTreeMap<String, bool> = list(spec, "workspaces")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["optional"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let pipeline_tasks: BTreeMap<String, &Value> = list(spec, "tasks")
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t))
        .collect();

    let mut used_tasks = BTreeSet::new();
    for (name, pipeline_task) in &pipeline_tasks {
        let task_name = pipeline_task["taskRef"]["name"].as_str().unwrap();
        used_tasks.insert(task_name.to_owned());
        let task = tasks
            .get(task_name)
            .unwrap_or_else(|| panic!("{name}: no Task {task_name}"));
        let declared: BTreeMap<String, &Value> = list(&task["spec"], "params")
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p))
            .collect();
        let given = list(pipeline_task, "params");
        for param in given {
            let param_name = param["name"].as_str().unwrap();
            let declaration = declared
                .get(param_name)
                .unwrap_or_else(|| panic!("{name}: {task_name} has no param {param_name}"));
            let is_array = declaration["type"] == "array";
            assert_eq!(
                param["value"].is_array(),
                is_array,
                "{name}: param {param_name} is {} in {task_name}",
                declaration["type"]
            );
        }
        let given_names = names(given);
        for (param_name, declaration) in &declared {
            assert!(
                given_names.contains(param_name) || declaration.get("default").is_some(),
                "{name}: {task_name}'s param {param_name} has no default and is not given"
            );
        }

        let bound: BTreeMap<String, String> = list(pipeline_task, "workspaces")
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap().to_owned(),
                    w["workspace"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for workspace in list(&task["spec"], "workspaces") {
            let workspace_name = workspace["name"].as_str().unwrap();
            let optional = workspace["optional"].as_bool().unwrap_or(false);
            match bound.get(workspace_name) {
                Some(pipeline_workspace) => {
                    let pipeline_optional = pipeline_workspaces
                        .get(pipeline_workspace)
                        .unwrap_or_else(|| panic!("{name}: no workspace {pipeline_workspace}"));
                    assert!(
                        optional || !pipeline_optional,
                        "{name}: {task_name} needs {workspace_name}, bound to optional \
                         {pipeline_workspace}"
                    );
                }
                None => assert!(optional, "{name}: {workspace_name} is not bound"),
            }
        }
        for bound_name in bound.keys() {
            assert!(
                list(&task["spec"], "workspaces")
                    .iter()
                    .any(|w| w["name"] == bound_name.as_str()),
                "{name}: {task_name} has no workspace {bound_name}"
            );
        }
        for after in list(pipeline_task, "runAfter") {
            assert!(
                pipeline_tasks.contains_key(after.as_str().unwrap()),
                "{name}: runAfter {after}"
            );
        }
    }
    assert_eq!(
        used_tasks,
        tasks.keys().cloned().collect(),
        "every Task is used"
    );

    // Every variable the Pipeline uses exists.
    let mut texts = Vec::new();
    strings(spec, "spec".to_owned(), &mut texts);
    let mut seen = 0;
    for (path, text) in texts {
        for variable in variables(text) {
            seen += 1;
            let parts: Vec<&str> = variable.split('.').collect();
            match parts[0] {
                "params" => {
                    let param = parts[1].trim_end_matches("[*]");
                    let declaration = pipeline_params
                        .get(param)
                        .unwrap_or_else(|| panic!("{path}: no Pipeline param {param}"));
                    assert_eq!(
                        parts[1].ends_with("[*]"),
                        declaration["type"] == "array",
                        "{path}: {variable}"
                    );
                }
                "tasks" => {
                    assert_eq!(parts[2], "results", "{path}: {variable}");
                    let producer = pipeline_tasks
                        .get(parts[1])
                        .unwrap_or_else(|| panic!("{path}: no task {}", parts[1]));
                    let task = tasks[producer["taskRef"]["name"].as_str().unwrap()];
                    assert!(
                        names(list(&task["spec"], "results")).contains(parts[3]),
                        "{path}: {variable}"
                    );
                }
                other => panic!("{path}: {variable} ({other}) in a Pipeline"),
            }
        }
    }
    assert!(seen > 20, "the variables were found ({seen})");

    // The results release-changed and run-complete read.
    let results = names(list(spec, "results"));
    for result in ["IMAGE_URL", "IMAGE_DIGEST", "CHART_VERSION"] {
        assert!(results.contains(result), "Pipeline result {result}");
    }
}

/// docs/security.md, "Tekton Task hygiene": a script never has a Tekton variable spliced in
/// (a param can be a hostile ref or path); params reach it through `env`. Every variable a
/// Task uses is one it declares, and every image is pinned to a tag.
#[test]
fn platform_steps_take_params_through_the_environment_and_pin_their_images() {
    let Some(objects) = rendered() else {
        return;
    };
    for (name, task) in tasks(&objects) {
        let spec = &task["spec"];
        let params: BTreeMap<String, &Value> = list(spec, "params")
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p))
            .collect();
        let workspaces = names(list(spec, "workspaces"));
        let results = names(list(spec, "results"));
        let volumes = names(list(spec, "volumes"));
        for step in list(spec, "steps") {
            let step_name = step["name"].as_str().unwrap();
            if let Some(script) = step["script"].as_str() {
                assert!(
                    variables(script).is_empty(),
                    "{name}/{step_name}: Tekton variables in the script: {:?}",
                    variables(script)
                );
                assert!(
                    script.starts_with("#!/bin/sh\nset -eu\n"),
                    "{name}/{step_name}"
                );
            }
            let image = step["image"].as_str().unwrap();
            let (_, tag) = image
                .rsplit_once(':')
                .filter(|(repository, tag)| !tag.contains('/') && repository.contains('/'))
                .unwrap_or_else(|| panic!("{name}/{step_name}: {image} has no tag"));
            assert_ne!(tag, "latest", "{name}/{step_name}");
            if image.starts_with("ghcr.io/tekflux/tekflux:") {
                assert_eq!(tag, env!("CARGO_PKG_VERSION"), "{name}/{step_name}");
                assert_eq!(step["command"], json!(["/usr/local/bin/tekflux"]));
            }
            for mount in list(step, "volumeMounts") {
                assert!(volumes.contains(mount["name"].as_str().unwrap()));
            }
            // A build pod's steps see the S3 credentials only in tekflux's own steps, and the
            // functions' Secret (webhook keys) nowhere.
            let mut secrets: Vec<&str> = list(step, "envFrom")
                .iter()
                .filter_map(|from| from["secretRef"]["name"].as_str())
                .collect();
            secrets.extend(
                list(step, "env")
                    .iter()
                    .filter_map(|env| env["valueFrom"]["secretKeyRef"]["name"].as_str()),
            );
            for secret in secrets {
                match secret {
                    "tekflux-s3" => assert!(
                        image.starts_with("ghcr.io/tekflux/tekflux:"),
                        "{name}/{step_name} gets the S3 credentials"
                    ),
                    "chartmuseum-auth" => assert_eq!(step_name, "push"),
                    other => panic!("{name}/{step_name} reads the Secret {other}"),
                }
            }
            let mut texts = Vec::new();
            strings(step, String::new(), &mut texts);
            for (path, text) in texts {
                for variable in variables(text) {
                    let parts: Vec<&str> = variable.split('.').collect();
                    let known = match parts[0] {
                        "params" => params
                            .get(parts[1].trim_end_matches("[*]"))
                            .is_some_and(|p| (p["type"] == "array") == parts[1].ends_with("[*]")),
                        "workspaces" => {
                            workspaces.contains(parts[1]) && ["path", "bound"].contains(&parts[2])
                        }
                        "results" => results.contains(parts[1]) && parts[2] == "path",
                        "context" => variable == "context.taskRun.name",
                        _ => false,
                    };
                    assert!(known, "{name}/{step_name}{path}: $({variable})");
                }
            }
        }
    }
}

fn platform_config_text() -> String {
    std::fs::read_to_string(root().join("infra/platform/tekflux.yaml")).unwrap()
}

fn platform_config() -> Config {
    let env = Env::new()
        .with("GITLAB_WEBHOOK_TOKEN", "t0ken")
        .with("TEKFLUX_EVENTS_TOKEN", "events-t0ken");
    Config::from_yaml(&platform_config_text(), "infra/platform/tekflux.yaml", &env)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The config loads, its rules compile, and its one repository rule gives api-pipeline every
/// param without a default and nothing it does not declare, on a volume of the run's own.
#[test]
fn the_platform_config_drives_the_pipeline() {
    let config = platform_config();
    let table = tekflux_git_push::RoutingTable::compile(&config)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    assert_eq!(table.rules().len(), 1);
    assert_eq!(config.repositories.len(), 1, "one rule for every API");
    let rule = &config.repositories[0];
    assert_eq!(rule.pipeline.as_deref(), Some("api-pipeline"));

    let Some(objects) = rendered() else {
        return;
    };
    let spec = &pipeline(&objects)["spec"];
    let given: BTreeSet<String> = rule.params.keys().cloned().collect();
    for param in list(spec, "params") {
        let name = param["name"].as_str().unwrap();
        assert!(
            given.contains(name) || param.get("default").is_some(),
            "the rule does not give {name}, which has no default"
        );
    }
    let declared = names(list(spec, "params"));
    for name in &given {
        assert!(declared.contains(name), "api-pipeline has no param {name}");
    }
    // No PVC shared between runs: each run's workspace is a volume of its own.
    let workspaces = names(list(spec, "workspaces"));
    assert!(!rule.workspaces.is_empty());
    for (name, binding) in &rule.workspaces {
        assert!(
            workspaces.contains(name),
            "api-pipeline has no workspace {name}"
        );
        assert!(binding.volume_claim_template.is_some(), "{name}");
        assert!(binding.claim.is_none(), "{name}");
    }
    // The release rules admit runs of this rule.
    let rule_name = rule.name.as_deref().unwrap();
    let text = platform_config_text();
    let raw: Value = serde_norway::from_str(&text).unwrap();
    for release in list(&raw, "releases") {
        if let Some(from) = release["from"].as_object() {
            assert_eq!(from["rules"], json!([rule_name]), "{release}");
        }
    }
}

/// Non-blank lines that are not comments or `---` document separators: what a user writes.
fn yaml_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && *line != "---")
        .count()
}

/// The lines of the `repositories` item named `name` in a tekflux config: from its `- ` line to
/// the next item or top-level key.
fn rule_block(text: &str, name: &str) -> String {
    let mut block = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if inside
            && !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && (indent == 0 || (indent <= 2 && line.trim_start().starts_with("- ")))
        {
            break;
        }
        if line.trim() == format!("- name: {name}") {
            inside = true;
        }
        if inside {
            block.push(line);
        }
    }
    assert!(!block.is_empty(), "no rule {name}");
    block.join("\n")
}

fn burden_fixture(file: &str) -> usize {
    yaml_lines(&std::fs::read_to_string(root().join("docs/yaml-burden").join(file)).unwrap())
}

/// docs/yaml-burden.md states what onboarding 1 and 10 APIs costs in Tekton Triggers YAML
/// (from its fixture files) and in tekflux config (from infra/platform/tekflux.yaml), counted
/// by the same rule; this recomputes every figure, so the doc cannot drift from the files.
#[test]
fn the_yaml_burden_figures_are_the_shipped_files() {
    // Compared with every run of whitespace as one space, so the text may be rewrapped.
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let doc = flat(&std::fs::read_to_string(root().join("docs/yaml-burden.md")).unwrap());
    let readme = flat(&std::fs::read_to_string(root().join("README.md")).unwrap());
    let text = platform_config_text();
    let rule = yaml_lines(&rule_block(&text, "apis"));
    let raw: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(list(&raw, "repositories").len(), 1);
    let releases_start = text.find("\nreleases:").unwrap();
    let releases = yaml_lines(&text[releases_start..]);
    let whole = yaml_lines(&text);

    let mut rows = Vec::new();
    let mut triggers = BTreeMap::new();
    for (variant, label) in [
        (
            "seed",
            "Tekton Triggers, one TriggerTemplate per API (as the seed)",
        ),
        ("shared", "Tekton Triggers, one shared TriggerTemplate"),
    ] {
        let one = burden_fixture(&format!("triggers-{variant}-1-api.yaml"));
        let two = burden_fixture(&format!("triggers-{variant}-2-apis.yaml"));
        let per_api = two - one;
        triggers.insert(variant, (one + 9 * per_api, per_api));
        rows.push(format!(
            "| {label} | {one} | {} | {per_api} |",
            one + 9 * per_api
        ));
    }
    rows.push(format!(
        "| tekflux, the repository rule (`apis`) | {rule} | {rule} | 0 |"
    ));
    // A release rule that captures `{api}` serves every API; one written for one API would be
    // repeated for each (the shipped rules all capture, so this is 0).
    let release_per_api: usize = text[releases_start..]
        .split("\n  - ")
        .skip(1)
        .filter(|item| !item.contains("{api}"))
        .map(|item| yaml_lines(&format!("  - {item}")))
        .sum();
    rows.push(format!(
        "| tekflux, the whole infra/platform/tekflux.yaml | {whole} | {} | {release_per_api} |",
        whole + 9 * release_per_api
    ));
    for row in &rows {
        assert!(
            doc.contains(row.as_str()),
            "docs/yaml-burden.md lacks the row\n{row}"
        );
    }
    let releases_sentence = format!("release rules take {releases} lines");
    assert!(
        doc.contains(&releases_sentence),
        "docs/yaml-burden.md lacks \"{releases_sentence}\""
    );

    // The seed's way: one TriggerTemplate per API, of this many lines.
    let seed =
        std::fs::read_to_string(root().join("docs/yaml-burden/triggers-seed-1-api.yaml")).unwrap();
    let template = seed
        .split("\n---\n")
        .find(|document| document.contains("\nkind: TriggerTemplate\n"))
        .unwrap();
    let template_sentence = format!("Ours are {} lines each", yaml_lines(template));
    assert!(
        doc.contains(&template_sentence),
        "docs/yaml-burden.md lacks \"{template_sentence}\""
    );

    // The README's summary.
    let (seed_ten, seed_each) = triggers["seed"];
    let (shared_ten, shared_each) = triggers["shared"];
    let summary = format!(
        "Onboarding 10 APIs takes {rule} lines of tekflux config (the repository rule), against \
         {seed_ten} lines of Tekton Triggers written as the seed did ({shared_ten} with one shared \
         TriggerTemplate); the 11th API takes 0 lines against {seed_each} ({shared_each}). \
         Release rules come on top: one for every API's image and one for every API's chart \
         versions."
    );
    assert!(readme.contains(&summary), "README.md lacks\n{summary}");
}

/// A push to main touching two APIs (one of them twice), a group's parent POM and a file
/// outside `apis/`: the `apis` rule starts one run per API, each a PipelineRun of api-pipeline
/// valid against the upstream PipelineRun schema, with that API's directory, name and image,
/// and a volume of its own.
#[test]
fn a_push_touching_two_apis_starts_one_valid_run_for_each() {
    use tekflux_git_push::run::build_fan_out_run;
    use tekflux_git_push::{Provider, Push, RunContext};
    use tekflux_testkit::push::TestPush;

    let config = platform_config();
    let table = tekflux_git_push::RoutingTable::compile(&config)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let push: Push = TestPush::new(
        Provider::Gitlab,
        "https://gitlab.example.com/platform/r3pf-backend",
    )
    .before("1111111111111111111111111111111111111111")
    .after(sha)
    .paths([
        "README.md",
        "apis/apis-async/api-launcher/chart/values.yaml",
        "apis/apis-async/api-launcher/src/main/java/App.java",
        "apis/apis-async/pom.xml",
        "apis/apis-sync/api-billing/pom.xml",
    ])
    .pusher("dev")
    .build();
    let routing = table.route(&push);
    let matched: Vec<_> = routing.matched().collect();
    assert_eq!(matched.len(), 1, "{:?}", routing.decisions);
    let decision = matched[0];
    assert_eq!(decision.fan_out.len(), 2, "{:?}", decision.fan_out);

    let schemas = CrdSchemas::from_corpus();
    let context = RunContext {
        namespace: config.namespace.clone(),
        version: None,
    };
    let mut by_api = BTreeMap::new();
    for captures in &decision.fan_out {
        let run = build_fan_out_run(decision.rule, &push, captures, &context)
            .unwrap()
            .to_json();
        if let Err(errors) = schemas.validate(&run) {
            panic!("{run:#}: {errors:#?}");
        }
        assert_eq!(run["kind"], "PipelineRun");
        assert_eq!(run["spec"]["pipelineRef"]["name"], "api-pipeline");
        let params: BTreeMap<String, String> = list(&run["spec"], "params")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let workspaces = list(&run["spec"], "workspaces");
        assert_eq!(workspaces.len(), 1);
        assert!(workspaces[0].get("volumeClaimTemplate").is_some());
        assert!(workspaces[0].get("persistentVolumeClaim").is_none());
        by_api.insert(params["api"].clone(), params);
    }
    let launcher = &by_api["api-launcher"];
    assert_eq!(launcher["apicontext"], "apis/apis-async/api-launcher/");
    assert_eq!(
        launcher["image"],
        format!("registry.example.com/api-launcher:{sha}")
    );
    assert_eq!(launcher["revision"], sha);
    assert_eq!(launcher["branch"], "main");
    assert_eq!(launcher["repo"], "r3pf-backend");
    let billing = &by_api["api-billing"];
    assert_eq!(billing["apicontext"], "apis/apis-sync/api-billing/");
    assert_eq!(
        billing["image"],
        format!("registry.example.com/api-billing:{sha}")
    );

    // Outside any API's directory: no run.
    let elsewhere = Push {
        changed_paths: vec!["README.md".into(), "apis/apis-async/pom.xml".into()],
        ..push.clone()
    };
    assert_eq!(table.route(&elsewhere).matched().count(), 0);
}

/// JSON merge of a server-side apply patch into an object (enough for the patches
/// release-changed sends: nested objects and strings).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The example HelmReleases of `infra/platform/releases` are what the config's release rules
/// edit: an image of main built by `apis` sets `image.tag` in the Flux v2 release in `dev`
/// (valid against the upstream Flux CRD before and after), an announced chart version sets
/// `spec.chart.version` in the Helm Operator release in `int` (whose CRD the corpus lacks: the
/// test checks the field release-changed writes is the one the example has).
#[test]
fn the_release_rules_edit_the_example_helm_releases() {
    use tekflux_release_changed::change::{Change, ImageVersion};
    use tekflux_release_changed::helm_release::{Stamp, apply_patch, check_editable};
    use tekflux_release_changed::target::targets;

    let text =
        std::fs::read_to_string(root().join("infra/platform/releases/api-launcher.yaml")).unwrap();
    let objects: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect();
    let find = |api_version: &str, kind: &str| -> Value {
        objects
            .iter()
            .find(|o| o["apiVersion"] == api_version && o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {api_version} {kind}"))
            .clone()
    };
    let flux = find("helm.toolkit.fluxcd.io/v2", "HelmRelease");
    let operator = find("helm.fluxcd.io/v1", "HelmRelease");
    let repository = find("source.toolkit.fluxcd.io/v1", "HelmRepository");
    let schemas = CrdSchemas::from_corpus();
    if let Err(errors) = schemas.validate(&flux) {
        panic!("{errors:#?}");
    }
    // The chart repository both releases use is the Pipeline's Chartmuseum.
    let Some(objects) = rendered() else {
        return;
    };
    let chartmuseum = list(&pipeline(&objects)["spec"], "params")
        .iter()
        .find(|p| p["name"] == "chartmuseum-url")
        .unwrap()["default"]
        .clone();
    assert_eq!(repository["spec"]["url"], chartmuseum);
    assert_eq!(
        operator["spec"]["chart"]["repository"].as_str().unwrap(),
        format!("{}/", chartmuseum.as_str().unwrap())
    );
    assert_eq!(
        flux["spec"]["chart"]["spec"]["sourceRef"]["name"],
        repository["metadata"]["name"]
    );

    let config = platform_config();
    let stamp = Stamp {
        event: "https://gitlab.example.com/platform/r3pf-backend#1".into(),
        time: None,
        run: None,
        sha: None,
    };
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let image = Change::Image(
        ImageVersion::parse(&format!("registry.example.com/api-launcher:{sha}")).unwrap(),
    );
    let found = targets(&config, &image).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].reference(), "dev/api-launcher");
    check_editable(&found[0], &flux).unwrap();
    let mut released = flux.clone();
    merge(&mut released, &apply_patch(&found[0], &stamp));
    assert_eq!(released["spec"]["values"]["image"]["tag"], sha);
    if let Err(errors) = schemas.validate(&released) {
        panic!("{errors:#?}");
    }
    // The same rule releases any other API's image into that API's release.
    let other = Change::Image(
        ImageVersion::parse(&format!("registry.example.com/api-billing:{sha}")).unwrap(),
    );
    let found = targets(&config, &other).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].reference(), "dev/api-billing");

    let version = "0.3.0-1765100000.g89abcdef0123";
    let chart = Change::Chart {
        name: "api-launcher".into(),
        version: version.into(),
    };
    let found = targets(&config, &chart).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].reference(), "int/api-launcher");
    check_editable(&found[0], &operator).unwrap();
    let patch = apply_patch(&found[0], &stamp);
    assert_eq!(patch["apiVersion"], operator["apiVersion"]);
    let before = operator["spec"]["chart"]["version"].as_str().unwrap();
    assert_ne!(before, version);
    let mut released = operator.clone();
    merge(&mut released, &patch);
    assert_eq!(released["spec"]["chart"]["version"], version);
    assert_eq!(
        released["spec"]["chart"].as_object().unwrap().len(),
        3,
        "the version replaced, nothing added: {released:#}"
    );
}
