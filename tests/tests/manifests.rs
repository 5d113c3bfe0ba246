//! The Knative manifests in `knative/` are valid against the upstream CRD schemas, and every
//! Trigger routes a type that its subscriber actually accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tekflux_testkit::crd::CrdSchemas;

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

/// The objects `kubectl kustomize <dir>` renders, or None (with a message) when kubectl is absent.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let output = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: kubectl is not installed, so knative/base cannot be rendered");
            return None;
        }
        Err(error) => panic!("kubectl kustomize {}: {error}", dir.display()),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    Some(
        serde_norway::Deserializer::from_str(&text)
            .map(|document| Value::deserialize(document).unwrap())
            .filter(|value| !value.is_null())
            .collect(),
    )
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
