//! The Knative manifests in `knative/` are valid against the upstream CRD schemas, and every
//! Trigger routes a type that its subscriber actually accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tekflux_testkit::crd::CrdSchemas;
use tekflux_testkit::kustomize::kustomize;

fn knative_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../knative/base")
}

/// Every YAML document of every manifest file named by the kustomization's `resources`.
fn documents() -> Vec<(String, Value)> {
    let base = knative_base();
    let kustomization: Value =
        serde_norway::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut documents = Vec::new();
    for resource in kustomization["resources"].as_array().unwrap() {
        let file = resource.as_str().unwrap();
        let text = std::fs::read_to_string(base.join(file)).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if !value.is_null() {
                documents.push((file.to_owned(), value));
            }
        }
    }
    documents
}

#[test]
fn knative_manifests_are_valid_against_the_upstream_schemas() {
    let schemas = CrdSchemas::from_corpus();
    let documents = documents();
    let mut checked = 0;
    for (file, object) in &documents {
        let api_version = object["apiVersion"].as_str().unwrap();
        if api_version.starts_with("serving.knative.dev")
            || api_version.starts_with("eventing.knative.dev")
        {
            checked += 1;
            if let Err(errors) = schemas.validate(object) {
                panic!(
                    "{file}: {} {}: {errors:?}",
                    object["kind"], object["metadata"]["name"]
                );
            }
        }
    }
    // 4 Services, 1 Broker, 10 Triggers.
    assert_eq!(checked, 15, "every Knative object is checked");
}

/// The namespace `kubectl kustomize knative/base` puts every object in.
fn kustomization_namespace() -> String {
    let kustomization: Value = serde_norway::from_str(
        &std::fs::read_to_string(knative_base().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    kustomization["namespace"].as_str().unwrap().to_owned()
}

/// The one event type a Trigger passes, from `filter.attributes` or from an `exact` entry of
/// `filters`. A Trigger with both would have its `filter` ignored by Knative, so none has both.
fn trigger_type(trigger: &Value) -> &str {
    let spec = &trigger["spec"];
    let name = &trigger["metadata"]["name"];
    match spec["filters"].as_array() {
        Some(filters) => {
            assert!(
                spec.get("filter").is_none(),
                "Trigger {name} sets filters, so Knative ignores its filter: drop it"
            );
            let types: Vec<&str> = filters
                .iter()
                .filter_map(|filter| filter["exact"]["type"].as_str())
                .collect();
            assert_eq!(types.len(), 1, "Trigger {name}: one exact type");
            types[0]
        }
        None => spec["filter"]["attributes"]["type"].as_str().unwrap(),
    }
}

/// CESQL `LIKE` (`%` any run of characters, `_` one character), enough for the shipped patterns.
fn cesql_like(value: &str, pattern: &str) -> bool {
    let mut expression = String::from("^");
    for c in pattern.chars() {
        match c {
            '%' => expression.push_str(".*"),
            '_' => expression.push('.'),
            other => expression.push_str(&regex::escape(&other.to_string())),
        }
    }
    expression.push('$');
    regex::Regex::new(&expression).unwrap().is_match(value)
}

/// Tekton sends the events of every run in the cluster; the run-complete Triggers pass only those
/// of runs in the namespaces tekflux serves (D2): the kustomization's namespace, which is the
/// config's, plus any repository rule's. The namespaces sit inside a CESQL string that
/// kustomize's `namespace:` does not rewrite, so this test is what keeps them in step.
#[test]
fn run_complete_triggers_pass_only_runs_of_the_served_namespaces() {
    use tekflux_common::config::{Config, Env};
    let namespace = kustomization_namespace();
    let text = std::fs::read_to_string(knative_base().join("tekflux.yaml")).unwrap();
    let env = Env::new().with("GITHUB_WEBHOOK_SECRET", "s3cr3t");
    let config = Config::from_yaml(&text, "knative/base/tekflux.yaml", &env).unwrap();
    assert_eq!(
        config.namespace, namespace,
        "the config serves the kustomization's namespace"
    );
    let served = tekflux_run_complete::served_namespaces(&config);
    let patterns: Vec<String> = served
        .iter()
        .map(|ns| format!("%/namespaces/{ns}/%"))
        .collect();
    let expected = patterns
        .iter()
        .map(|pattern| format!("source LIKE '{pattern}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let passes = |source: &str| patterns.iter().any(|p| cesql_like(source, p));

    let triggers: Vec<Value> = documents()
        .into_iter()
        .map(|(_, object)| object)
        .filter(|o| {
            o["kind"] == "Trigger" && o["spec"]["subscriber"]["ref"]["name"] == "run-complete"
        })
        .collect();
    assert_eq!(triggers.len(), tekflux_run_complete::TERMINAL_TYPES.len());
    for trigger in &triggers {
        let name = &trigger["metadata"]["name"];
        let filters = trigger["spec"]["filters"]
            .as_array()
            .unwrap_or_else(|| panic!("Trigger {name} has no filters"));
        let cesql: Vec<&str> = filters
            .iter()
            .filter_map(|filter| filter["cesql"].as_str())
            .collect();
        assert_eq!(
            cesql,
            [expected.as_str()],
            "Trigger {name} must pass exactly the runs of {served:?}"
        );
        // Both forms Tekton uses for `source`: its own path (singular Kind) and a selfLink.
        let run = trigger_type(trigger).split('.').nth(3).unwrap();
        let (kind, plural) = match run {
            "taskrun" => ("TaskRun", "taskruns"),
            _ => ("PipelineRun", "pipelineruns"),
        };
        for ns in &served {
            assert!(passes(&format!(
                "/apis/tekton.dev/v1/namespaces/{ns}/{kind}/build-1"
            )));
            assert!(passes(&format!(
                "/apis/tekton.dev/v1beta1/namespaces/{ns}/{plural}/build-1"
            )));
        }
        for source in [
            format!("/apis/tekton.dev/v1/namespaces/{namespace}-other/{kind}/build-1"),
            format!("/apis/tekton.dev/v1/namespaces/team-a/{kind}/{namespace}"),
        ] {
            assert!(!passes(&source), "{source} must not pass");
        }
    }
}

#[test]
fn every_trigger_routes_a_type_its_subscriber_accepts() {
    let accepted = |service: &str, ty: &str| -> bool {
        match service {
            "git-push" => {
                ty == tekflux_git_push::providers::normalized::EVENT_TYPE
                    || ty.starts_with(tekflux_git_push::providers::knative::GITHUB_PREFIX)
                    || ty.starts_with(tekflux_git_push::providers::knative::GITLAB_PREFIX)
            }
            "run-complete" => tekflux_run_complete::TERMINAL_TYPES.contains(&ty),
            "release-changed" => tekflux_release_changed::ACCEPTED_TYPES.contains(&ty),
            other => panic!("Trigger subscribes unknown service {other}"),
        }
    };
    let triggers: Vec<Value> = documents()
        .into_iter()
        .map(|(_, object)| object)
        .filter(|object| object["kind"] == "Trigger")
        .collect();
    assert!(!triggers.is_empty());
    for trigger in &triggers {
        let ty = trigger_type(trigger);
        let service = trigger["spec"]["subscriber"]["ref"]["name"]
            .as_str()
            .unwrap();
        assert_eq!(trigger["spec"]["broker"], "tekflux");
        assert!(
            accepted(service, ty),
            "Trigger {} sends {ty} to {service}, which does not take it",
            trigger["metadata"]["name"]
        );
    }
    // Every terminal Tekton type reaches run-complete.
    for ty in tekflux_run_complete::TERMINAL_TYPES {
        assert!(
            triggers.iter().any(|t| trigger_type(t) == ty),
            "no Trigger for {ty}"
        );
    }
}

#[test]
fn the_shipped_cluster_config_loads() {
    use tekflux_common::config::{Config, Env};
    let text = std::fs::read_to_string(knative_base().join("tekflux.yaml")).unwrap();
    let env = Env::new().with("GITHUB_WEBHOOK_SECRET", "s3cr3t");
    let config = Config::from_yaml(&text, "knative/base/tekflux.yaml", &env).unwrap();
    assert_eq!(config.namespace, "cicd");
    assert_eq!(config.repositories.len(), 1);
    assert_eq!(config.releases.len(), 1);
    // And git-push accepts its rules (globs, templates).
    tekflux_git_push::RoutingTable::compile(&config).unwrap();
    // Without the secret the config is refused, naming the variable.
    let error = Config::from_yaml(&text, "knative/base/tekflux.yaml", &Env::new()).unwrap_err();
    assert!(
        error.to_string().contains("GITHUB_WEBHOOK_SECRET"),
        "{error}"
    );
}

/// The Flux Provider in infra/ posts to release-changed's Flux route, in the namespace and under
/// the Service name knative/base deploys, and signs with HMAC as release-changed requires.
#[test]
fn the_flux_provider_reaches_release_changed() {
    let text =
        std::fs::read_to_string(knative_base().join("../../infra/flux/notification.yaml")).unwrap();
    let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect();
    let provider = documents
        .iter()
        .find(|document| document["kind"] == "Provider")
        .unwrap();
    assert_eq!(provider["spec"]["type"], "generic-hmac");
    let kustomization: Value = serde_norway::from_str(
        &std::fs::read_to_string(knative_base().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let namespace = kustomization["namespace"].as_str().unwrap();
    let service = documents_named("Service", "release-changed");
    assert_eq!(service, 1, "knative/base deploys release-changed");
    assert_eq!(
        provider["spec"]["address"],
        format!("http://release-changed.{namespace}.svc.cluster.local/webhooks/flux")
    );
    let alert = documents
        .iter()
        .find(|document| document["kind"] == "Alert")
        .unwrap();
    assert_eq!(
        alert["spec"]["providerRef"]["name"],
        provider["metadata"]["name"]
    );
    assert_eq!(alert["spec"]["eventSources"][0]["kind"], "HelmRelease");
}

/// Under `--no-cross-namespace-refs` Flux refuses an Alert that refers to another namespace, so
/// the Provider and Alert live in the namespace knative/base serves and refer to nothing outside it.
#[test]
fn the_flux_alert_refers_to_its_own_namespace_only() {
    let text =
        std::fs::read_to_string(knative_base().join("../../infra/flux/notification.yaml")).unwrap();
    let namespace = kustomization_namespace();
    let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect();
    for object in &documents {
        assert_eq!(
            object["metadata"]["namespace"], namespace,
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
        assert!(object["spec"]["secretRef"].get("namespace").is_none());
        assert!(object["spec"]["providerRef"].get("namespace").is_none());
        for source in object["spec"]["eventSources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                source
                    .get("namespace")
                    .is_none_or(|ns| ns == namespace.as_str()),
                "{source}"
            );
        }
    }
    assert!(
        text.contains(&format!(
            "kubectl -n {namespace} create secret generic tekflux-webhook"
        )),
        "the Provider's Secret is made in its namespace"
    );
}

fn documents_named(kind: &str, name: &str) -> usize {
    documents()
        .iter()
        .filter(|(_, object)| object["kind"] == kind && object["metadata"]["name"] == name)
        .count()
}

fn is_cluster_local(service: &Value) -> bool {
    service["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
}

/// No public Service answers `POST /`: the only public one runs git-push's webhook routes alone,
/// and every Service a Trigger delivers CloudEvents to is cluster-local.
#[test]
fn cloudevent_routes_are_cluster_local() {
    let documents = documents();
    let services: Vec<&Value> = documents
        .iter()
        .map(|(_, object)| object)
        .filter(|object| {
            object["kind"] == "Service" && object["apiVersion"] == "serving.knative.dev/v1"
        })
        .collect();
    let public: Vec<&&Value> = services.iter().filter(|s| !is_cluster_local(s)).collect();
    assert_eq!(public.len(), 1, "exactly one public Service");
    let public = public[0];
    assert_eq!(public["metadata"]["name"], "git-push-webhooks");
    let args: Vec<&str> = public["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    assert_eq!(args, ["serve", "--function", "git-push", "--webhooks-only"]);
    for (_, trigger) in documents.iter().filter(|(_, o)| o["kind"] == "Trigger") {
        let name = trigger["spec"]["subscriber"]["ref"]["name"]
            .as_str()
            .unwrap();
        let service = services
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Trigger subscribes {name}, which is not deployed"));
        assert!(
            is_cluster_local(service),
            "{name} takes CloudEvents and must be cluster-local"
        );
    }
}

/// Each Trigger names its subscriber's audience, and its Knative sender identity is exactly one
/// the shipped config allows for that function: a Trigger added without a sender entry, or a
/// sender entry without its Trigger, fails here.
#[test]
fn every_trigger_is_an_allowed_sender_of_its_subscriber() {
    use std::collections::BTreeSet;
    use tekflux_common::config::{Config, Env, OidcReceiver};
    use tekflux_common::sender::Receiver;

    let text = std::fs::read_to_string(knative_base().join("tekflux.yaml")).unwrap();
    let env = Env::new().with("GITHUB_WEBHOOK_SECRET", "s3cr3t");
    let config = Config::from_yaml(&text, "knative/base/tekflux.yaml", &env).unwrap();
    assert!(!config.events.insecure);
    let oidc = config
        .events
        .oidc
        .as_ref()
        .expect("events.oidc is configured");
    let kustomization: Value = serde_norway::from_str(
        &std::fs::read_to_string(knative_base().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let namespace = kustomization["namespace"].as_str().unwrap();

    let receivers: [(Receiver, &Option<OidcReceiver>); 3] = [
        (Receiver::GitPush, &oidc.git_push),
        (Receiver::RunComplete, &oidc.run_complete),
        (Receiver::ReleaseChanged, &oidc.release_changed),
    ];
    for (receiver, settings) in receivers {
        let settings = settings.as_ref().expect("every function lists its senders");
        let audience = settings
            .audience
            .clone()
            .unwrap_or_else(|| receiver.default_audience());
        let mut expected = BTreeSet::new();
        for (_, trigger) in documents().iter().filter(|(_, o)| o["kind"] == "Trigger") {
            if trigger["spec"]["subscriber"]["ref"]["name"] != receiver.as_str() {
                continue;
            }
            let name = trigger["metadata"]["name"].as_str().unwrap();
            // Knative hashes longer names into a ServiceAccount name no config can list.
            assert!(
                name.len() <= 29,
                "Trigger name {name} is longer than 29 characters"
            );
            assert_eq!(
                trigger["spec"]["subscriber"]["audience"], audience,
                "Trigger {name} must send tokens for {audience}"
            );
            expected.insert(format!(
                "system:serviceaccount:{namespace}:{name}-oidc-eventing.knative.dev-trigger"
            ));
        }
        let allowed: BTreeSet<String> = settings.senders.iter().cloned().collect();
        assert_eq!(allowed, expected, "senders of {}", receiver.as_str());
    }

    // Every Trigger may dead-letter (the Broker uses the failing Trigger's identity), to the
    // audience the Broker's deadLetterSink names, on run-complete's Service.
    let dead_letters = oidc
        .dead_letters
        .as_ref()
        .expect("the dead-letter store lists its senders");
    let every_trigger: BTreeSet<String> = documents()
        .iter()
        .filter(|(_, o)| o["kind"] == "Trigger")
        .map(|(_, trigger)| {
            format!(
                "system:serviceaccount:{namespace}:{}-oidc-eventing.knative.dev-trigger",
                trigger["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let allowed: BTreeSet<String> = dead_letters.senders.iter().cloned().collect();
    assert_eq!(allowed, every_trigger, "senders of the dead-letter store");
    let (_, broker) = documents()
        .into_iter()
        .find(|(_, o)| o["kind"] == "Broker")
        .unwrap();
    let sink = &broker["spec"]["delivery"]["deadLetterSink"];
    assert_eq!(sink["ref"]["name"], "run-complete");
    assert_eq!(sink["uri"], "/dead-letters");
    assert_eq!(sink["audience"], Receiver::DeadLetters.default_audience());
}

/// Seconds of an ISO 8601 duration of the form `PT<n>S`, the only form the Broker uses.
fn pt_seconds(duration: &Value) -> u64 {
    let text = duration.as_str().unwrap();
    text.strip_prefix("PT")
        .and_then(|rest| rest.strip_suffix('S'))
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("{text} is not PT<n>S"))
}

/// Knative honours Retry-After only when the delivery sets `retryAfterMax` (and the
/// `delivery-retryafter` feature is on, which the docs say how to enable). The cap stays below the
/// backoff's last step, so a large Retry-After cannot outlast the retries it replaces.
#[test]
fn the_broker_honours_retry_after_within_its_backoff() {
    let (_, broker) = documents()
        .into_iter()
        .find(|(_, o)| o["kind"] == "Broker")
        .unwrap();
    let delivery = &broker["spec"]["delivery"];
    assert_eq!(delivery["backoffPolicy"], "exponential");
    let retries = u32::try_from(delivery["retry"].as_u64().unwrap()).unwrap();
    let last_backoff = pt_seconds(&delivery["backoffDelay"]) * 2u64.pow(retries - 1);
    let cap = pt_seconds(&delivery["retryAfterMax"]);
    assert!(
        (1..last_backoff).contains(&cap),
        "retryAfterMax {cap} s must be set and below the last backoff ({last_backoff} s)"
    );
    let events = std::fs::read_to_string(knative_base().join("../../docs/events.md")).unwrap();
    assert!(
        events.contains(r#"{"data":{"delivery-retryafter":"enabled"}}"#),
        "docs/events.md says how to enable delivery-retryafter"
    );
}

/// run-complete's concurrency is bounded so its archives fit its memory limit: each holds about
/// 45 MiB while streaming, over an idle process of about 18 MiB, with at least 32 MiB to spare
/// for request bodies and the allocator.
#[test]
fn run_complete_concurrency_fits_its_memory_limit() {
    const ARCHIVE_MIB: u64 = 45;
    const IDLE_MIB: u64 = 18;
    const SPARE_MIB: u64 = 32;
    let (_, service) = documents()
        .into_iter()
        .find(|(_, o)| o["kind"] == "Service" && o["metadata"]["name"] == "run-complete")
        .unwrap();
    let spec = &service["spec"]["template"]["spec"];
    let concurrency = spec["containerConcurrency"]
        .as_u64()
        .expect("run-complete sets containerConcurrency");
    assert!(concurrency > 0, "0 means unbounded");
    let limit = spec["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap();
    let limit_mib: u64 = limit.strip_suffix("Mi").unwrap().parse().unwrap();
    assert!(
        IDLE_MIB + concurrency * ARCHIVE_MIB + SPARE_MIB <= limit_mib,
        "{concurrency} archives of {ARCHIVE_MIB} MiB do not fit {limit}"
    );
}

/// Every Task step under infra/tekton that passes `args` also names its `command`, the image's
/// ENTRYPOINT: without it Tekton has to fetch the image config from the registry to find it.
#[test]
fn every_task_step_with_args_names_its_command() {
    let infra = knative_base().join("../../infra");
    let containerfile = std::fs::read_to_string(infra.join("container/Containerfile")).unwrap();
    let entrypoint: Vec<String> = containerfile
        .lines()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .expect("the Containerfile has an ENTRYPOINT in exec form");
    let mut steps = 0;
    for entry in std::fs::read_dir(infra.join("tekton")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let object = Value::deserialize(document).unwrap();
            if object["kind"] != "Task" {
                continue;
            }
            for step in object["spec"]["steps"].as_array().unwrap() {
                if step.get("args").is_none() {
                    continue;
                }
                steps += 1;
                let command: Vec<String> = serde_json::from_value(step["command"].clone())
                    .unwrap_or_else(|_| {
                        panic!(
                            "{}: step {} has args but no command",
                            path.display(),
                            step["name"]
                        )
                    });
                assert_eq!(
                    command,
                    entrypoint,
                    "{}: step {}",
                    path.display(),
                    step["name"]
                );
            }
        }
    }
    assert_eq!(steps, 2, "the archive and restore steps");
}

/// The name of the config ConfigMap every rendered Knative Service mounts, checked to be one the
/// rendering generated with a content hash.
fn services_config_name(objects: &[Value]) -> String {
    let config_maps: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    let mut names = std::collections::BTreeSet::new();
    let services: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Service" && o["apiVersion"] == "serving.knative.dev/v1")
        .collect();
    assert_eq!(services.len(), 4);
    for service in services {
        let service_name = &service["metadata"]["name"];
        let mounted: Vec<&str> = service["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|volume| volume["configMap"]["name"].as_str())
            .collect();
        assert_eq!(mounted.len(), 1, "{service_name} mounts one ConfigMap");
        let name = mounted[0];
        let hash = name
            .strip_prefix("tekflux-services-config-")
            .unwrap_or_else(|| panic!("{service_name} mounts {name}, not the hashed config"));
        assert_eq!(hash.len(), 10, "{name}: kustomize's content hash");
        assert!(config_maps.contains(&name), "{name} is generated");
        names.insert(name.to_owned());
    }
    assert_eq!(
        names.len(),
        1,
        "every Service mounts the same config: {names:?}"
    );
    names.into_iter().next().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A config change reaches every function: the rendered Services mount a ConfigMap whose name
/// is a hash of the config, so changing tekflux.yaml changes every Service's template and Knative
/// rolls out new revisions. The Tasks' fixed-name copy holds the same config.
#[test]
fn a_config_change_renders_a_new_config_name_in_every_service() {
    let Some(objects) = kustomize(&knative_base()) else {
        return;
    };
    let name = services_config_name(&objects);
    let data = |objects: &[Value], name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))["data"]
            .clone()
    };
    assert_eq!(data(&objects, &name), data(&objects, "tekflux-config"));

    let copy = tempfile::tempdir().unwrap();
    copy_dir(&knative_base(), copy.path());
    let config = copy.path().join("tekflux.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replacen("namespace: cicd", "namespace: cicd # changed", 1);
    assert_ne!(changed, text, "the config names its namespace");
    std::fs::write(&config, changed).unwrap();
    let changed = kustomize(copy.path()).unwrap();
    let changed_name = services_config_name(&changed);
    assert_ne!(changed_name, name, "a changed config must get a new name");
}

// Overlays: knative/overlays/* build on knative/base. Each rendering is checked like the base:
// valid against the upstream schemas, the same wiring, and what the overlay is for.

/// knative/base and every overlay under knative/overlays (a directory with a kustomization.yaml).
fn kustomizations() -> Vec<PathBuf> {
    let overlays = knative_base().join("../overlays");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&overlays)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("kustomization.yaml").is_file())
        .collect();
    found.sort();
    let names: Vec<String> = found.iter().map(|dir| kustomization_name(dir)).collect();
    for expected in ["overlays/aws", "overlays/minio"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    std::iter::once(knative_base()).chain(found).collect()
}

/// `base` or `overlays/<name>`, for messages.
fn kustomization_name(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    if dir.parent().and_then(Path::file_name) == Some(std::ffi::OsStr::new("overlays")) {
        format!("overlays/{name}")
    } else {
        name
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The Knative Service `name`, as rendered.
fn knative_service<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["apiVersion"] == "serving.knative.dev/v1" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Knative Service {name}"))
}

/// The value of the environment variable `name` of a Service's first container, if set.
fn service_env<'a>(service: &'a Value, name: &str) -> Option<&'a str> {
    service["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|var| var["name"] == name)?["value"]
        .as_str()
}

/// Every rendering (base and each overlay): Knative, Tekton and Flux objects valid against the
/// upstream schemas, every object's metadata well formed and in the kustomization's namespace,
/// and the same wiring as the base: the Broker, the Triggers and the SinkBinding unchanged (the
/// config's sender identities depend on them), the same four Services mounting the hashed
/// config, git-push-webhooks the only public one, and run-complete's concurrency, memory and
/// security context as the base sets them (the claim permissions, README "Deployment").
#[test]
fn every_kustomization_renders_valid_objects_with_the_base_wiring() {
    let schemas = CrdSchemas::from_corpus();
    let namespace = kustomization_namespace();
    let Some(base) = kustomize(&knative_base()) else {
        return;
    };
    let wiring = |objects: &[Value]| -> Vec<Value> {
        let mut wiring: Vec<Value> = objects
            .iter()
            .filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some("Broker" | "Trigger" | "SinkBinding")
                )
            })
            .cloned()
            .collect();
        wiring.sort_by_key(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]));
        wiring
    };
    let run_complete_pod = |objects: &[Value]| -> Value {
        let spec = &knative_service(objects, "run-complete")["spec"]["template"]["spec"];
        json_pick(spec)
    };
    for dir in kustomizations() {
        let name = kustomization_name(&dir);
        let objects = kustomize(&dir).unwrap();
        let mut knative = 0;
        for object in &objects {
            let what = format!("{name}: {} {}", object["kind"], object["metadata"]["name"]);
            let errors = tekflux_testkit::crd::validate_metadata(&object["metadata"]);
            assert!(errors.is_empty(), "{what}: {errors:?}");
            assert_eq!(
                object["metadata"]["namespace"],
                namespace.as_str(),
                "{what}"
            );
            let api_version = object["apiVersion"].as_str().unwrap();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let kind = object["kind"].as_str().unwrap();
            if group == "serving.knative.dev" || group == "eventing.knative.dev" {
                knative += 1;
                assert!(
                    schemas.lookup(group, version, kind).is_some(),
                    "{what}: no upstream schema for {api_version} {kind}"
                );
            }
            if let Err(errors) = schemas.validate(object) {
                panic!("{what}: {errors:?}");
            }
        }
        // 4 Services, 1 Broker, 10 Triggers.
        assert_eq!(knative, 15, "{name}: every Knative object is checked");
        assert_eq!(wiring(&objects), wiring(&base), "{name} changes the wiring");
        services_config_name(&objects);
        let public: Vec<&Value> = objects
            .iter()
            .filter(|o| o["apiVersion"] == "serving.knative.dev/v1" && !is_cluster_local(o))
            .collect();
        assert_eq!(public.len(), 1, "{name}: one public Service");
        assert_eq!(public[0]["metadata"]["name"], "git-push-webhooks", "{name}");
        assert_eq!(
            run_complete_pod(&objects),
            run_complete_pod(&base),
            "{name} changes run-complete's concurrency, resources or security context"
        );
    }
}

/// What of run-complete's pod spec an overlay must leave as the base has it.
fn json_pick(spec: &Value) -> Value {
    let container = &spec["containers"][0];
    serde_json::json!({
        "containerConcurrency": spec["containerConcurrency"],
        "timeoutSeconds": spec["timeoutSeconds"],
        "podSecurityContext": spec["securityContext"],
        "securityContext": container["securityContext"],
        "resources": container["resources"],
        "volumeMounts": container["volumeMounts"],
    })
}

/// The minio overlay: run-complete's endpoint is the overlay's MinIO Service, the set-up Job
/// makes the bucket the config names and a user from the Secret the README has you create,
/// and MinIO aborts stale multipart uploads (it has no lifecycle rule for them).
#[test]
fn the_minio_overlay_points_run_complete_at_its_own_minio() {
    let dir = knative_base().join("../overlays/minio");
    let Some(objects) = kustomize(&dir) else {
        return;
    };
    let run_complete = knative_service(&objects, "run-complete");
    let endpoint = service_env(run_complete, "TEKFLUX_S3_ENDPOINT").expect("an endpoint");
    let url = url::Url::parse(endpoint).unwrap();
    let minio = find(&objects, "Service", "minio").expect("the minio Service");
    assert_eq!(url.host_str(), minio["metadata"]["name"].as_str());
    assert_eq!(
        url.port().map(u64::from),
        minio["spec"]["ports"][0]["port"].as_u64()
    );
    assert_eq!(
        service_env(run_complete, "TEKFLUX_S3_FORCE_PATH_STYLE"),
        Some("true")
    );
    assert!(service_env(run_complete, "TEKFLUX_S3_REGION").is_some());

    let deployment = find(&objects, "Deployment", "minio").expect("the MinIO Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "minio-data"
    );
    assert!(find(&objects, "PersistentVolumeClaim", "minio-data").is_some());
    let minio_env = pod["containers"][0]["env"].as_array().unwrap();
    assert!(
        minio_env
            .iter()
            .any(|var| var["name"] == "MINIO_API_STALE_UPLOADS_EXPIRY"),
        "MinIO aborts stale multipart uploads"
    );

    use tekflux_common::config::{Config, Env};
    let text = std::fs::read_to_string(knative_base().join("tekflux.yaml")).unwrap();
    let env = Env::new().with("GITHUB_WEBHOOK_SECRET", "s3cr3t");
    let config = Config::from_yaml(&text, "knative/base/tekflux.yaml", &env).unwrap();
    let job = find(&objects, "Job", "minio-setup").expect("the set-up Job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let job_env = container["env"].as_array().unwrap();
    let value = |name: &str| {
        job_env
            .iter()
            .find(|var| var["name"] == name)
            .unwrap_or_else(|| panic!("the Job sets {name}"))
    };
    assert_eq!(
        value("BUCKET")["value"].as_str(),
        config.storage.bucket.as_deref()
    );
    assert_eq!(value("MINIO_URL")["value"], endpoint);
    let script = container["args"][0].as_str().unwrap();
    assert!(script.contains("mc mb --ignore-existing \"minio/$BUCKET\""));
    let mut secrets: Vec<&str> = job_env
        .iter()
        .filter_map(|var| var["valueFrom"]["secretKeyRef"]["name"].as_str())
        .collect();
    secrets.sort_unstable();
    secrets.dedup();
    assert_eq!(secrets, ["minio-root", "tekflux-s3"]);
    let readme = std::fs::read_to_string(knative_base().join("../../README.md")).unwrap();
    for secret in secrets {
        assert!(
            readme.contains(&format!("create secret generic {secret}")),
            "README \"Deployment\" creates the Secret {secret}"
        );
    }
}

/// The aws overlay: run-complete's ServiceAccount carries an IAM role (IRSA), no object holds
/// or refers to a static key, and the region is set.
#[test]
fn the_aws_overlay_uses_an_iam_role_and_no_static_keys() {
    let dir = knative_base().join("../overlays/aws");
    let Some(objects) = kustomize(&dir) else {
        return;
    };
    let run_complete = knative_service(&objects, "run-complete");
    let account = run_complete["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let service_account = find(&objects, "ServiceAccount", account)
        .unwrap_or_else(|| panic!("run-complete's ServiceAccount {account} is deployed"));
    let role = service_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .expect("run-complete's ServiceAccount names an IAM role");
    assert!(
        regex::Regex::new(r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$")
            .unwrap()
            .is_match(role),
        "{role}"
    );
    // Only run-complete calls S3; no other ServiceAccount gets a role.
    for other in objects.iter().filter(|o| o["kind"] == "ServiceAccount") {
        if other["metadata"]["name"] != account {
            assert!(
                other["metadata"]["annotations"]
                    .get("eks.amazonaws.com/role-arn")
                    .is_none()
            );
        }
    }
    assert!(service_env(run_complete, "AWS_REGION").is_some_and(|r| !r.is_empty()));
    assert_eq!(
        service_env(run_complete, "AWS_EC2_METADATA_DISABLED"),
        Some("true")
    );
    assert_eq!(
        service_env(run_complete, "TEKFLUX_S3_FORCE_PATH_STYLE"),
        Some("false")
    );
    assert_eq!(service_env(run_complete, "TEKFLUX_S3_ENDPOINT"), None);
    let mut variables = Vec::new();
    for object in &objects {
        env_vars(object, &mut variables);
    }
    for variable in &variables {
        let key = &variable["valueFrom"]["secretKeyRef"]["key"];
        for static_key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            assert!(
                variable["name"] != static_key && key != static_key,
                "the aws overlay sets {static_key}: {variable}"
            );
        }
    }
}

/// The IAM actions that the S3 calls in `functions/run-complete/src`, `functions/tekflux/src`
/// and `common/src` need: the aws overlay's README policies grant exactly these,
/// so a new kind of S3 call fails here until the documented policy has it.
#[test]
fn the_aws_policies_grant_exactly_the_s3_actions_tekflux_calls() {
    let functions = knative_base().join("../../functions");
    let call = regex::Regex::new(r"\.([a-z0-9_]+)\(\)\s*\.bucket\(").unwrap();
    let mut needed = std::collections::BTreeSet::new();
    // A missing key is 404 only with s3:ListBucket; run-complete and restore rely on it.
    needed.insert("s3:ListBucket".to_owned());
    let mut files = Vec::new();
    for dir in ["run-complete/src", "tekflux/src", "../common/src"] {
        collect_rs(&functions.join(dir), &mut files);
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for captures in call.captures_iter(&text) {
            let action = match &captures[1] {
                "put_object"
                | "create_multipart_upload"
                | "upload_part"
                | "complete_multipart_upload" => "s3:PutObject",
                "abort_multipart_upload" => "s3:AbortMultipartUpload",
                "get_object" | "head_object" => "s3:GetObject",
                "list_objects_v2" => "s3:ListBucket",
                "delete_object" => "s3:DeleteObject",
                other => panic!("{}: S3 call {other} has no IAM action here", file.display()),
            };
            needed.insert(action.to_owned());
        }
    }
    assert!(needed.contains("s3:PutObject"), "the scan finds the calls");

    let readme = std::fs::read_to_string(knative_base().join("../overlays/aws/README.md")).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for block in readme.split("```json").skip(1) {
        let json = block.split("```").next().unwrap();
        let policy: Value = serde_json::from_str(json).unwrap();
        for statement in policy["Statement"].as_array().unwrap() {
            let actions = match &statement["Action"] {
                Value::String(one) => vec![one.clone()],
                many => serde_json::from_value(many.clone()).unwrap(),
            };
            granted.extend(actions.into_iter().filter(|a| a.starts_with("s3:")));
        }
    }
    assert_eq!(granted, needed);
}

/// Every container environment variable anywhere in `value`.
fn env_vars(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("env", Value::Array(variables)) => found.extend(variables.iter().cloned()),
                    _ => env_vars(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| env_vars(item, found)),
        _ => {}
    }
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// run-complete reads and frees what runs wrote on the claim, whatever user wrote it and with
/// whatever modes, as uid 0 keeping only root's two file-permission overrides (docs/decisions.md;
/// functions/run-complete/tests/claim_permissions.rs runs the binary with exactly these). Knative
/// accepts added capabilities only with its `kubernetes.containerspec-addcapabilities` feature,
/// which README "Deployment" turns on.
#[test]
fn run_complete_keeps_only_the_file_permission_overrides_of_root() {
    let (_, service) = documents()
        .into_iter()
        .find(|(_, o)| o["kind"] == "Service" && o["metadata"]["name"] == "run-complete")
        .unwrap();
    let context = &service["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(
        context,
        &serde_json::json!({
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE", "FOWNER"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    // The other functions touch no files of the runs: they keep the image's user.
    for (_, other) in documents()
        .iter()
        .filter(|(_, o)| o["kind"] == "Service" && o["metadata"]["name"] != "run-complete")
    {
        assert!(
            other["spec"]["template"]["spec"]["containers"][0]
                .get("securityContext")
                .is_none_or(|c| c.get("runAsUser").is_none() && c.get("capabilities").is_none()),
            "{}",
            other["metadata"]["name"]
        );
    }
    let readme = std::fs::read_to_string(knative_base().join("../../README.md")).unwrap();
    assert!(
        readme.contains(r#""kubernetes.containerspec-addcapabilities":"enabled""#),
        "README \"Deployment\" enables the capabilities feature"
    );
}
