//! `infra/up`, the single Deployment that runs `tekflux up` in a cluster without Knative: its
//! config loads, its Role is exactly the union of the three functions' Roles in `knative/base`,
//! and the Deployment mounts what the config names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tekflux_common::config::{Config, Env};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `kubectl kustomize <dir>` renders; `None` when kubectl is absent (the test is skipped).
fn kustomize(dir: &str) -> Option<Vec<Value>> {
    tekflux_testkit::kustomize::kustomize(&root().join(dir))
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Every (apiGroup, resource, verb) a Role grants.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    grants.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    grants
}

#[test]
fn the_up_role_is_the_union_of_the_function_roles() {
    let Some(base) = kustomize("knative/base") else {
        return;
    };
    let union: BTreeSet<_> = [
        "tekflux-git-push",
        "tekflux-run-complete",
        "tekflux-release-changed",
    ]
    .iter()
    .flat_map(|name| grants(named(&base, "Role", name)))
    .collect();
    let up = kustomize("infra/up").unwrap();
    assert_eq!(grants(named(&up, "Role", "tekflux-up")), union);
    let binding = named(&up, "RoleBinding", "tekflux-up");
    assert_eq!(binding["subjects"][0]["name"], "tekflux-up");
    let deployment = named(&up, "Deployment", "tekflux");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "tekflux-up"
    );
}

#[test]
fn the_up_deployment_runs_up_with_the_config_it_mounts() {
    let Some(up) = kustomize("infra/up") else {
        return;
    };
    let deployment = named(&up, "Deployment", "tekflux");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["up"]));
    // The config is the hashed ConfigMap generated from infra/up/tekflux.yaml.
    let config_map = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|volume| volume["configMap"]["name"].as_str())
        .unwrap();
    assert!(config_map.starts_with("tekflux-up-config-"), "{config_map}");
    let rendered = named(&up, "ConfigMap", config_map);
    let text = rendered["data"]["tekflux.yaml"].as_str().unwrap();
    let env = Env::new()
        .with("GITHUB_WEBHOOK_SECRET", "s3cr3t")
        .with("TEKFLUX_EVENTS_TOKEN", "t0ken");
    let config = Config::from_yaml(text, "infra/up/tekflux.yaml", &env).unwrap();
    tekflux_git_push::RoutingTable::compile(&config).unwrap();
    assert!(
        config.events.token.is_some(),
        "without Knative every sender presents events.token"
    );
    // The claim the config archives from is mounted where the config says.
    let (claim, path) = config.storage.mounts.iter().next().unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["persistentVolumeClaim"]["claimName"] == claim.as_str())
        .unwrap_or_else(|| panic!("no volume for claim {claim}"));
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == volume["name"])
        .unwrap();
    assert_eq!(mount["mountPath"].as_str(), Some(path.as_str()));
    // And TEKFLUX_CONFIG points at the mounted file.
    let config_path = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|env| env["name"] == "TEKFLUX_CONFIG")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    let config_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == "config")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    assert_eq!(config_path, format!("{config_mount}/tekflux.yaml"));
}
