//! Least privilege, checked (DESIGN.md, "Trust"): each function runs as its own ServiceAccount,
//! whose Role in `knative/base/rbac.yaml` grants exactly the verbs its code calls, and the
//! workspace Tasks get the S3 credentials alone.
//!
//! "Exactly the verbs its code calls" is learnt from the test suite: with
//! `TEKFLUX_KUBE_REQUEST_LOG` set, every test API server logs each request to a file per package
//! (`tekflux_testkit::request_log`), and [`shipped_roles_grant_exactly_the_recorded_verbs`] compares
//! the verbs those requests need with the rendered Roles, both ways. It needs the rest of the
//! suite to have run first, so it is `#[ignore]`d and `.ci/run` runs it by name afterwards.
//!
//! How the packages' logs are attributed:
//! - `tekflux-git-push`, `tekflux-run-complete`, `tekflux-release-changed`: the function's own
//!   tests drive its code, so their requests are its requests, both ways.
//! - `tekflux` (the all-in-one binary, `serve` and `up`): the three functions share one process
//!   there, so a request cannot be told apart by function. Each must be granted to at least one
//!   function (a call only the wiring makes fails), but none counts as a use of a grant.
//! - `tekflux-common`: code every function runs (the sender check); each request must be granted
//!   to every function. It counts as no function's use either.
//! - `tekflux-testkit`: the test API server's own tests, no function's code: skipped.
//!
//! Any other package fails the test until it is given a place in this list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tekflux_testkit::request_log::{self, Access, LoggedRequest};

/// Each function's package, and the ServiceAccount, Role and RoleBinding it ships with.
const FUNCTIONS: [(&str, &str); 3] = [
    ("tekflux-git-push", "tekflux-git-push"),
    ("tekflux-run-complete", "tekflux-run-complete"),
    ("tekflux-release-changed", "tekflux-release-changed"),
];

/// The all-in-one binary's package: any function's grant covers its requests.
const ALL_IN_ONE: &str = "tekflux";

/// Code every function runs: every function's grant must cover its requests.
const SHARED: &str = "tekflux-common";

/// Packages whose requests are no function's.
const NOT_FUNCTIONS: [&str; 1] = ["tekflux-testkit"];

/// The URLs Kubernetes' default ClusterRole `system:service-account-issuer-discovery` lets every
/// ServiceAccount `get` (bound to group `system:serviceaccounts` by the default ClusterRoleBinding
/// of the same name): the sender check reads the issuer's keys there, and needs no Role for it.
const ISSUER_DISCOVERY: [&str; 2] = ["/.well-known/openid-configuration", "/openid/v1/jwks"];

/// The Knative Service of each function, and whose ServiceAccount it runs as.
const SERVICES: [(&str, &str); 4] = [
    ("git-push-webhooks", "tekflux-git-push"),
    ("git-push", "tekflux-git-push"),
    ("run-complete", "tekflux-run-complete"),
    ("release-changed", "tekflux-release-changed"),
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The objects `kubectl kustomize knative/base` renders; `None` when kubectl is absent and
/// `required` is false.
fn rendered_base(required: bool) -> Option<Vec<Value>> {
    let objects = tekflux_testkit::kustomize::kustomize(&repository().join("knative/base"));
    assert!(
        objects.is_some() || !required,
        "kubectl is needed to render knative/base"
    );
    objects
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What a rendered Role grants, one access per group, resource and verb. Wildcards,
/// `resourceNames` and non-resource URLs are refused: each would make "granted but unused"
/// meaningless, and none is needed.
fn grants(role: &Value) -> BTreeSet<Access> {
    let name = &role["metadata"]["name"];
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "Role {name}: resourceNames and nonResourceURLs are not used"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    assert!(
                        ![group, resource, verb].iter().any(|s| s.contains('*')),
                        "Role {name} grants a wildcard: {group} {resource} {verb}"
                    );
                    granted.insert(Access::resource(group, resource, verb));
                }
            }
        }
    }
    granted
}

/// Each function's Role, by package, as rendered.
fn shipped_roles(objects: &[Value]) -> BTreeMap<&'static str, BTreeSet<Access>> {
    FUNCTIONS
        .iter()
        .map(|(package, role)| {
            let roles = named(objects, "Role", role);
            assert_eq!(roles.len(), 1, "one Role {role}");
            (*package, grants(roles[0]))
        })
        .collect()
}

fn is_issuer_discovery(access: &Access) -> bool {
    matches!(access, Access::NonResource { path, verb }
        if verb == "get" && ISSUER_DISCOVERY.contains(&path.as_str()))
}

/// The requests in `requests` that need `access`, as log lines, for the failure message.
fn evidence(requests: &[LoggedRequest], access: &Access) -> String {
    let lines: Vec<String> = requests
        .iter()
        .filter(|r| request_log::access(r).contains(access))
        .take(3)
        .map(|r| format!("      {}", r.to_line()))
        .collect();
    lines.join("\n")
}

#[test]
#[ignore = "needs the request logs of the whole test suite: .ci/run runs the suite with \
            TEKFLUX_KUBE_REQUEST_LOG set to a fresh directory, then this test by name"]
fn shipped_roles_grant_exactly_the_recorded_verbs() {
    let Some(dir) = std::env::var_os(request_log::ENV).filter(|d| !d.is_empty()) else {
        panic!(
            "{} is not set. Run the suite with it set to a fresh directory first, then this test \
             with the same value, as .ci/run does:\n  \
             {0}=$(mktemp -d) cargo test --workspace --all-features\n  \
             {0}=<the same> cargo test --workspace --all-features --test rbac -- --ignored",
            request_log::ENV
        );
    };
    let logs = request_log::read_dir(Path::new(&dir)).unwrap();
    let objects = rendered_base(true).unwrap();
    let roles = shipped_roles(&objects);
    let union: BTreeSet<Access> = roles.values().flatten().cloned().collect();
    let mut failures = Vec::new();

    for package in logs.keys() {
        let known = FUNCTIONS.iter().any(|(p, _)| p == package)
            || [ALL_IN_ONE, SHARED].contains(&package.as_str())
            || NOT_FUNCTIONS.contains(&package.as_str());
        if !known {
            failures.push(format!(
                "package {package} logged Kubernetes requests but tests/tests/rbac.rs does not \
                 say whose they are"
            ));
        }
    }

    let no_requests = Vec::new();
    let shared_requests = logs.get(SHARED).unwrap_or(&no_requests);
    let all_in_one_requests = logs.get(ALL_IN_ONE).unwrap_or(&no_requests);
    for (package, role) in FUNCTIONS {
        let Some(requests) = logs.get(package) else {
            failures.push(format!(
                "no request of {package}'s tests was logged: was its suite run with {} set?",
                request_log::ENV
            ));
            continue;
        };
        let granted = &roles[package];
        let used = request_log::accesses(requests);
        let mut lines = vec![format!("{role} ({} requests):", requests.len())];
        for access in &used {
            if is_issuer_discovery(access) {
                lines.push(format!("  {access}  (default issuer-discovery binding)"));
                continue;
            }
            lines.push(format!("  {access}"));
            if !granted.contains(access) {
                failures.push(format!(
                    "{package} calls `{access}`, which Role {role} does not grant:\n{}",
                    evidence(requests, access)
                ));
            }
        }
        println!("{}", lines.join("\n"));
        for access in granted.difference(&used) {
            failures.push(format!(
                "Role {role} grants `{access}`, which no test of {package} calls: drop it, or \
                 test the code that needs it"
            ));
        }
        for access in request_log::accesses(shared_requests) {
            if !is_issuer_discovery(&access) && !granted.contains(&access) {
                failures.push(format!(
                    "{SHARED} (run by every function) calls `{access}`, which Role {role} does \
                     not grant:\n{}",
                    evidence(shared_requests, &access)
                ));
            }
        }
    }
    for access in request_log::accesses(all_in_one_requests) {
        if !is_issuer_discovery(&access) && !union.contains(&access) {
            failures.push(format!(
                "{ALL_IN_ONE} calls `{access}`, which no function's Role grants:\n{}",
                evidence(all_in_one_requests, &access)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Each Service runs as its function's ServiceAccount (the public git-push-webhooks as
/// git-push's), and each ServiceAccount is bound to its own Role, and to nothing else: no other
/// Role, ClusterRole or binding is shipped.
#[test]
fn each_function_runs_as_its_own_service_account_bound_to_its_own_role() {
    let Some(objects) = rendered_base(false) else {
        return;
    };
    let namespace = objects
        .iter()
        .find(|o| o["kind"] == "Role")
        .map(|o| o["metadata"]["namespace"].as_str().unwrap().to_owned())
        .unwrap();
    for (service, account) in SERVICES {
        let found = named(&objects, "Service", service);
        assert_eq!(found.len(), 1, "one Service {service}");
        assert_eq!(
            found[0]["spec"]["template"]["spec"]["serviceAccountName"], account,
            "Service {service} runs as {account}"
        );
    }
    for (_, name) in FUNCTIONS {
        assert_eq!(named(&objects, "ServiceAccount", name).len(), 1);
        let bindings = named(&objects, "RoleBinding", name);
        assert_eq!(bindings.len(), 1, "one RoleBinding {name}");
        let binding = bindings[0];
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], name);
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "RoleBinding {name} binds one subject");
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], name);
        // kustomize writes the namespace in, or the binding's own applies.
        let subject_namespace = subjects[0]["namespace"].as_str().unwrap_or(&namespace);
        assert_eq!(subject_namespace, namespace);
    }
    let count = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    assert_eq!(count("ServiceAccount"), FUNCTIONS.len());
    assert_eq!(count("Role"), FUNCTIONS.len());
    assert_eq!(count("RoleBinding"), FUNCTIONS.len());
    assert_eq!(count("ClusterRole"), 0);
    assert_eq!(count("ClusterRoleBinding"), 0);
}

/// Every Secret a Task under `infra/tekton` names: `envFrom`, `env` and volumes.
fn task_secrets(task: &Value) -> BTreeSet<String> {
    let spec = &task["spec"];
    let mut names = BTreeSet::new();
    let mut add = |value: &Value| {
        if let Some(name) = value.as_str() {
            names.insert(name.to_owned());
        }
    };
    let containers = spec["steps"]
        .as_array()
        .into_iter()
        .chain(spec["sidecars"].as_array())
        .flatten()
        .chain(std::iter::once(&spec["stepTemplate"]));
    for container in containers {
        for source in container["envFrom"].as_array().into_iter().flatten() {
            add(&source["secretRef"]["name"]);
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            add(&variable["valueFrom"]["secretKeyRef"]["name"]);
        }
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        add(&volume["secret"]["secretName"]);
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add(&source["secret"]["name"]);
        }
    }
    names
}

/// The workspace Tasks run in build pods, next to whatever the build runs: they get the S3
/// credentials (`tekflux-s3`) and nothing else, never the webhook keys in `tekflux-secrets`.
#[test]
fn the_workspace_tasks_load_only_the_s3_secret() {
    let mut tasks = 0;
    for file in ["workspace-archive.yaml", "workspace-restore.yaml"] {
        let path = repository().join("infra/tekton").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let object = Value::deserialize(document).unwrap();
            if object["kind"] != "Task" {
                continue;
            }
            tasks += 1;
            let secrets = task_secrets(&object);
            assert_eq!(
                secrets,
                BTreeSet::from(["tekflux-s3".to_owned()]),
                "{file}: Task {}",
                object["metadata"]["name"]
            );
        }
    }
    assert_eq!(tasks, 2);
}

fn request(method: &str, path: &str, query: &str) -> LoggedRequest {
    LoggedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        content_type: None,
        status: 200,
    }
}

/// The verb of each request is the one Kubernetes' RBAC authorizer checks.
#[test]
fn verbs_are_derived_as_the_api_server_authorizes_them() {
    let runs = "/apis/tekton.dev/v1/namespaces/cicd/pipelineruns";
    let cases: [(LoggedRequest, Vec<Access>); 19] = [
        (
            request("GET", &format!("{runs}/build-1"), ""),
            vec![Access::resource("tekton.dev", "pipelineruns", "get")],
        ),
        (
            request("GET", runs, "&labelSelector=a%3Db"),
            vec![Access::resource("tekton.dev", "pipelineruns", "list")],
        ),
        (
            request("GET", runs, "watch=true&resourceVersion=1"),
            vec![Access::resource("tekton.dev", "pipelineruns", "watch")],
        ),
        (
            request("GET", runs, "watch=1"),
            vec![Access::resource("tekton.dev", "pipelineruns", "watch")],
        ),
        (
            request("GET", runs, "watch=false"),
            vec![Access::resource("tekton.dev", "pipelineruns", "list")],
        ),
        (
            request(
                "GET",
                "/apis/tekton.dev/v1/watch/namespaces/cicd/taskruns",
                "",
            ),
            vec![Access::resource("tekton.dev", "taskruns", "watch")],
        ),
        (
            request("POST", runs, "&fieldManager=tekflux&dryRun=All"),
            vec![Access::resource("tekton.dev", "pipelineruns", "create")],
        ),
        (
            request("PUT", &format!("{runs}/build-1"), ""),
            vec![Access::resource("tekton.dev", "pipelineruns", "update")],
        ),
        (
            request("PATCH", &format!("{runs}/build-1"), ""),
            vec![Access::resource("tekton.dev", "pipelineruns", "patch")],
        ),
        (
            request("PATCH", &format!("{runs}/build-1/status"), ""),
            vec![Access::resource(
                "tekton.dev",
                "pipelineruns/status",
                "patch",
            )],
        ),
        (
            request("DELETE", &format!("{runs}/build-1"), ""),
            vec![Access::resource("tekton.dev", "pipelineruns", "delete")],
        ),
        (
            request("DELETE", runs, ""),
            vec![Access::resource(
                "tekton.dev",
                "pipelineruns",
                "deletecollection",
            )],
        ),
        (
            request(
                "GET",
                "/api/v1/namespaces/cicd/pods/build-1-pod/log",
                "&container=step-build&limitBytes=1",
            ),
            vec![Access::resource("", "pods/log", "get")],
        ),
        (
            request("GET", "/api/v1/pods", ""),
            vec![Access::resource("", "pods", "list")],
        ),
        // The Namespace object itself, and its status subresource.
        (
            request("GET", "/api/v1/namespaces/cicd", ""),
            vec![Access::resource("", "namespaces", "get")],
        ),
        (
            request("PUT", "/api/v1/namespaces/cicd/status", ""),
            vec![Access::resource("", "namespaces/status", "update")],
        ),
        (
            request("GET", "/openid/v1/jwks", ""),
            vec![Access::non_resource("/openid/v1/jwks", "get")],
        ),
        (
            request("GET", "/api/v1", ""),
            vec![Access::non_resource("/api/v1", "get")],
        ),
        // A server-side apply that found the object needs `patch` alone…
        (
            LoggedRequest {
                content_type: Some("application/apply-patch+yaml".to_owned()),
                ..request(
                    "PATCH",
                    "/apis/helm.toolkit.fluxcd.io/v2/namespaces/cicd/helmreleases/app",
                    "&fieldManager=tekflux&force=true",
                )
            },
            vec![Access::resource(
                "helm.toolkit.fluxcd.io",
                "helmreleases",
                "patch",
            )],
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(request_log::access(&request), expected, "{request:?}");
    }
    // …one that created it needs `create` too.
    let created = LoggedRequest {
        content_type: Some("application/apply-patch+yaml".to_owned()),
        status: 201,
        ..request(
            "PATCH",
            "/apis/helm.toolkit.fluxcd.io/v2/namespaces/cicd/helmreleases/app",
            "&fieldManager=tekflux",
        )
    };
    assert_eq!(
        request_log::access(&created),
        [
            Access::resource("helm.toolkit.fluxcd.io", "helmreleases", "patch"),
            Access::resource("helm.toolkit.fluxcd.io", "helmreleases", "create"),
        ]
    );
    // A merge patch answered 201 (no such thing, but) needs no `create`.
    let merge = LoggedRequest {
        content_type: Some("application/merge-patch+json".to_owned()),
        status: 201,
        ..request("PATCH", &format!("{runs}/build-1"), "")
    };
    assert_eq!(
        request_log::access(&merge),
        [Access::resource("tekton.dev", "pipelineruns", "patch")]
    );
}

/// A log line reads back as the request that was written, and a damaged line is an error, not
/// a request with no verb.
#[test]
fn log_lines_round_trip() {
    let written = LoggedRequest {
        method: "PATCH".to_owned(),
        path: "/apis/helm.fluxcd.io/v1/namespaces/apps/helmreleases/web".to_owned(),
        query: "&fieldManager=tekflux-release-changed&force=true".to_owned(),
        content_type: Some("application/apply-patch+yaml".to_owned()),
        status: 200,
    };
    assert_eq!(LoggedRequest::parse(&written.to_line()), Ok(written));
    let bare = request("GET", "/version", "");
    assert_eq!(LoggedRequest::parse(&bare.to_line()), Ok(bare));
    assert!(LoggedRequest::parse("GET /api/v1/pods").is_err());
    assert!(LoggedRequest::parse("GET\t/api/v1/pods\t\t-\tok").is_err());
}
