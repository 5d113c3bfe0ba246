//! The structural-schema validator against the upstream CRDs of the shared corpus.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::sync::OnceLock;

use serde_json::{Value, json};
use tekflux_testkit::corpus;
use tekflux_testkit::crd::{CrdSchemas, FieldError};

fn schemas() -> &'static CrdSchemas {
    static S: OnceLock<CrdSchemas> = OnceLock::new();
    S.get_or_init(CrdSchemas::from_corpus)
}

/// The paths of the errors, or a panic when the object passed.
fn error_paths(object: &Value) -> Vec<String> {
    match schemas().validate(object) {
        Ok(()) => panic!("expected {object} to be rejected"),
        Err(errors) => errors.into_iter().map(|e| e.path).collect(),
    }
}

fn assert_valid(object: &Value) {
    if let Err(errors) = schemas().validate(object) {
        let listed: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        panic!("expected a valid object, got {listed:?}");
    }
}

fn pipeline_run() -> Value {
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": "build-3f2a1c", "namespace": "cicd",
            "labels": {"tekflux.dev/repo": "r3pf-backend", "app.kubernetes.io/managed-by": "tekflux"}},
        "spec": {
            "pipelineRef": {"name": "api-pipeline"},
            "params": [
                {"name": "apicontext", "value": "apis/apis-async/api-launcher/"},
                {"name": "paths", "value": ["a", "b"]},
                {"name": "obj", "value": {"k": "v"}}
            ],
            "workspaces": [{"name": "shared-data", "persistentVolumeClaim": {"claimName": "tekton-workspace"}}],
            "taskRunTemplate": {"serviceAccountName": "builder"},
            "timeouts": {"pipeline": "1h0m0s"}
        }
    })
}

#[test]
fn loads_every_corpus_crd() {
    let s = schemas();
    for (group, version, name) in [
        ("tekton.dev", "v1", "pipelineruns"),
        ("tekton.dev", "v1beta1", "PipelineRun"),
        ("tekton.dev", "v1", "taskrun"),
        ("tekton.dev", "v1beta1", "taskruns"),
        ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
        ("serving.knative.dev", "v1", "services"),
        ("eventing.knative.dev", "v1", "Trigger"),
        ("eventing.knative.dev", "v1", "brokers"),
    ] {
        assert!(
            s.lookup(group, version, name).is_some(),
            "{group}/{version} {name}"
        );
    }
    let pr = s.lookup("tekton.dev", "v1", "pipelineruns").unwrap();
    assert_eq!(
        (pr.kind.as_str(), pr.namespaced, pr.status_subresource),
        ("PipelineRun", true, true)
    );
    assert!(
        s.lookup("helm.toolkit.fluxcd.io", "v2beta1", "helmreleases")
            .is_none()
    );
    assert!(s.lookup("tekton.dev", "v1", "pipelines").is_none());
}

#[test]
fn valid_pipeline_run_passes() {
    assert_valid(&pipeline_run());
}

#[test]
fn pipeline_run_typo_wrong_type_and_missing_required_are_named() {
    let mut typo = pipeline_run();
    typo["spec"]["pipelineref"] = json!({"name": "x"});
    assert_eq!(error_paths(&typo), ["spec.pipelineref"]);

    let mut nested_typo = pipeline_run();
    nested_typo["spec"]["workspaces"][0]["persistentVolumeClaim"]["claimname"] = json!("x");
    assert_eq!(
        error_paths(&nested_typo),
        ["spec.workspaces[0].persistentVolumeClaim.claimname"]
    );

    let mut wrong_type = pipeline_run();
    wrong_type["spec"]["timeouts"]["pipeline"] = json!(3600);
    let errors = schemas().validate(&wrong_type).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "spec.timeouts.pipeline");
    assert!(
        errors[0].message.contains("string"),
        "{}",
        errors[0].message
    );

    let mut missing = pipeline_run();
    missing["spec"]["params"][1] = json!({"name": "paths"});
    assert_eq!(error_paths(&missing), ["spec.params[1].value"]);

    // v1 moved serviceAccountName under taskRunTemplate; v1beta1 still has it on spec.
    let mut moved = pipeline_run();
    moved["spec"]["serviceAccountName"] = json!("builder");
    assert_eq!(error_paths(&moved), ["spec.serviceAccountName"]);
    let mut beta = moved.clone();
    beta["apiVersion"] = json!("tekton.dev/v1beta1");
    beta["spec"]
        .as_object_mut()
        .unwrap()
        .remove("taskRunTemplate");
    assert_valid(&beta);
}

#[test]
fn task_runs_of_both_versions() {
    let task_run = json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"generateName": "archive-"},
        "spec": {
            "taskRef": {"name": "workspace-archive"},
            "params": [{"name": "key", "value": "runs/abc.tar.zst"}],
            "podTemplate": {"securityContext": {"fsGroup": 65532}},
            "workspaces": [{"name": "source", "emptyDir": {}}],
            "retries": 2,
            "timeout": "10m"
        }
    });
    assert_valid(&task_run);
    let mut bad = task_run.clone();
    bad["spec"]["retries"] = json!("2");
    assert_eq!(error_paths(&bad), ["spec.retries"]);
    let mut beta = task_run;
    beta["apiVersion"] = json!("tekton.dev/v1beta1");
    beta["spec"]["resources"] = json!({"inputs": []});
    assert_valid(&beta);
}

fn helm_release() -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "api-launcher", "namespace": "cicd"},
        "spec": {
            "interval": "5m",
            "chart": {"spec": {"chart": "api-launcher", "version": "0.13.4",
                "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"}}},
            "values": {"image": {"tag": "3f2a1c"}, "anything": [1, {"goes": true}]}
        }
    })
}

#[test]
fn helm_release_required_enum_pattern_and_preserved_values() {
    assert_valid(&helm_release());

    let mut no_interval = helm_release();
    no_interval["spec"]
        .as_object_mut()
        .unwrap()
        .remove("interval");
    assert_eq!(error_paths(&no_interval), ["spec.interval"]);

    let mut bad_interval = helm_release();
    bad_interval["spec"]["interval"] = json!("5 minutes");
    assert_eq!(error_paths(&bad_interval), ["spec.interval"]);

    let mut bad_kind = helm_release();
    bad_kind["spec"]["chart"]["spec"]["sourceRef"]["kind"] = json!("HelmRepo");
    let errors = schemas().validate(&bad_kind).unwrap_err();
    assert_eq!(errors[0].path, "spec.chart.spec.sourceRef.kind");
    assert!(
        errors[0].message.contains("HelmRepository"),
        "{}",
        errors[0].message
    );

    let mut long_ns = helm_release();
    long_ns["spec"]["chart"]["spec"]["sourceRef"]["namespace"] = json!("n".repeat(64));
    assert_eq!(
        error_paths(&long_ns),
        ["spec.chart.spec.sourceRef.namespace"]
    );

    let mut renamed = helm_release();
    let chart_spec = renamed["spec"]["chart"]["spec"].as_object_mut().unwrap();
    let source = chart_spec.remove("sourceRef").unwrap();
    chart_spec.insert("sourceref".into(), source);
    let paths = error_paths(&renamed);
    assert!(
        paths.contains(&"spec.chart.spec.sourceref".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"spec.chart.spec.sourceRef".to_owned()),
        "{paths:?}"
    );
}

#[test]
fn knative_objects() {
    let service = json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "git-push", "namespace": "cicd"},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
            "spec": {"containers": [{"image": "ghcr.io/tekflux/tekflux:1", "ports": [{"containerPort": 8080}]}]}
        }}
    });
    assert_valid(&service);
    let mut bad = service.clone();
    bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
    assert_eq!(
        error_paths(&bad),
        ["spec.template.spec.containers[0].imagee"]
    );
    let mut bad_port = service;
    bad_port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        json!("8080");
    assert_eq!(
        error_paths(&bad_port),
        ["spec.template.spec.containers[0].ports[0].containerPort"]
    );

    // Trigger.spec preserves unknown fields, so only its declared fields are typed.
    let trigger = json!({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "run-complete"},
        "spec": {"broker": "default", "filter": {"attributes": {"type": "dev.tekton.event.pipelinerun.successful.v1"}},
            "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "run-complete"}},
            "somethingNew": true}
    });
    assert_valid(&trigger);
    let mut bad_trigger = trigger;
    bad_trigger["spec"]["broker"] = json!(1);
    assert_eq!(error_paths(&bad_trigger), ["spec.broker"]);

    let broker = json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": "default"},
        "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "config-br-default-channel"}}});
    assert_valid(&broker);
}

#[test]
fn metadata_rules() {
    let with_meta = |meta: Value| {
        let mut o = pipeline_run();
        o["metadata"] = meta;
        o
    };
    assert_valid(&with_meta(json!({"generateName": "build-"})));
    assert_eq!(
        error_paths(&with_meta(json!({"labels": {}}))),
        ["metadata.name"]
    );
    assert_eq!(
        error_paths(&with_meta(json!({"name": "Build"}))),
        ["metadata.name"]
    );
    assert_eq!(
        error_paths(&with_meta(json!({"name": "a".repeat(254)}))),
        ["metadata.name"]
    );
    assert_valid(&with_meta(
        json!({"name": format!("{}.{}", "a".repeat(63), "b".repeat(63))}),
    ));
    assert_eq!(
        error_paths(&with_meta(
            json!({"name": "x", "labels": {"sha": "v".repeat(64)}})
        )),
        ["metadata.labels[sha]"]
    );
    assert_valid(&with_meta(
        json!({"name": "x", "labels": {"sha": "v".repeat(63), "empty": ""}}),
    ));
    assert_eq!(
        error_paths(&with_meta(
            json!({"name": "x", "labels": {"ref": "refs/heads/main"}})
        )),
        ["metadata.labels[ref]"]
    );
    assert_eq!(
        error_paths(&with_meta(
            json!({"name": "x", "labels": {"bad key!": "v"}})
        )),
        ["metadata.labels[bad key!]"]
    );
    assert_eq!(
        error_paths(&with_meta(json!({"name": "x", "namespace": "Ci"}))),
        ["metadata.namespace"]
    );
}

#[test]
fn unknown_kinds_pass() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}, "whatever": 1});
    assert!(schemas().validate(&cm).is_ok());
    let mut future = pipeline_run();
    future["apiVersion"] = json!("tekton.dev/v2");
    future["spec"]["nonsense"] = json!(true);
    assert!(schemas().validate(&future).is_ok());
}

const WIDGET_CRD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-crd}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {kind: Widget, plural: widgets}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [size]
            properties:
              size: {x-kubernetes-int-or-string: true}
              color: {type: string, enum: [red, blue], nullable: true}
              tags: {type: object, additionalProperties: {type: string, maxLength: 3}}
              free: {type: object, additionalProperties: true}
              kept: {type: object, x-kubernetes-preserve-unknown-fields: true, properties: {n: {type: integer, minimum: 1}}}
              items: {type: array, maxItems: 2, items: {type: number}}
              template: {type: object, x-kubernetes-embedded-resource: true, properties: {spec: {type: object}}}
"#;

#[test]
fn validator_features_on_a_multi_document_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("widget.yaml"), WIDGET_CRD).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let s = CrdSchemas::load_dir(dir.path()).unwrap();
    assert_eq!(s.resources().len(), 1);
    let widget = s.lookup("example.com", "v1", "Widget").unwrap();
    assert!(!widget.namespaced);
    assert_eq!(widget.singular, "widget");

    let ok = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": "10%", "color": null, "tags": {"a": "abc"}, "free": {"x": [1]},
            "kept": {"n": 2, "other": {"deep": 1}}, "items": [1.5, 2],
            "template": {"apiVersion": "v1", "kind": "X", "metadata": {"name": "t"}, "spec": {}}}});
    assert!(s.validate(&ok).is_ok(), "{:?}", s.validate(&ok));
    let paths = |o: &Value| -> Vec<String> {
        s.validate(o)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 1.5, "color": "green", "tags": {"a": "abcd", "b": 1}, "kept": {"n": 0},
            "items": [1, 2, 3], "template": {"spec": {}, "status": {}}}});
    let mut got = paths(&bad);
    got.sort();
    assert_eq!(
        got,
        [
            "spec.color",
            "spec.items",
            "spec.kept.n",
            "spec.size",
            "spec.tags[a]",
            "spec.tags[b]",
            "spec.template.status"
        ]
    );
    let missing = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}});
    assert_eq!(paths(&missing), ["spec.size"]);
}

#[test]
fn corpus_rule() {
    use corpus::Located;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert_eq!(
        corpus::resolve(Some(dir.path().into()), &missing),
        Located::Dir(dir.path().to_path_buf())
    );
    assert_eq!(
        corpus::resolve(Some("skip".into()), &missing),
        Located::Skipped
    );
    // Unset or empty: the folder beside the workspace, which must then exist.
    for unset in [None, Some("".into())] {
        assert_eq!(
            corpus::resolve(unset, dir.path()),
            Located::Dir(dir.path().to_path_buf())
        );
    }
    let message = |result: std::thread::Result<Located>| match result {
        Ok(found) => panic!("a missing corpus must fail, not give {found:?}"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    let set_but_unreadable = message(std::panic::catch_unwind(|| {
        corpus::resolve(Some(missing.clone().into()), dir.path())
    }));
    assert!(
        set_but_unreadable.contains("cannot be read"),
        "{set_but_unreadable}"
    );
    let nowhere = message(std::panic::catch_unwind(|| corpus::resolve(None, &missing)));
    assert!(
        nowhere.contains("TEKFLUX_CORPUS") && nowhere.contains("TEKFLUX_CORPUS=skip"),
        "the message says how to provide the corpus or opt out: {nowhere}"
    );
    assert!(corpus::corpus_file("schemas/tekton-300-taskrun.yaml").is_file());
}

#[test]
fn int_or_string_strings_must_match_the_pattern() {
    let schemas = CrdSchemas::from_corpus();
    let mut run = serde_json::json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": { "name": "quantity", "namespace": "cicd" },
        "spec": {
            "pipelineRef": { "name": "build" },
            "workspaces": [{ "name": "scratch", "emptyDir": { "sizeLimit": "1Gi" } }]
        }
    });
    schemas.validate(&run).unwrap();
    run["spec"]["workspaces"][0]["emptyDir"]["sizeLimit"] = serde_json::json!("plenty");
    let errors = schemas.validate(&run).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.path == "spec.workspaces[0].emptyDir.sizeLimit"),
        "{errors:?}"
    );
}
