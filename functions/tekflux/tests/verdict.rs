//! `tekflux check-config` and `tekflux serve` give the same verdict on every config: each config
//! in the repository and a set of broken ones go through both, and either both accept it (serve
//! gets as far as listening) or both refuse it with exit 64 and the same messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Far above a normal start, only so a regression fails instead of hanging the suite.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every secret the repository's configs name, so that only the broken configs fail.
const SECRETS: &[(&str, &str)] = &[
    ("GITHUB_WEBHOOK_SECRET", "dev-secret"),
    ("GITLAB_WEBHOOK_TOKEN", "dev-token"),
    ("GITEA_WEBHOOK_SECRET", "dev-secret"),
    ("TEKFLUX_EVENTS_TOKEN", "events-token"),
];

fn tekflux(config: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
    // Only what the test sets: no KUBECONFIG, TEKFLUX_* or AWS_* from the developer's shell.
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TEKFLUX_CONFIG", config)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .current_dir(repo_root());
    command
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Refused { code: Option<i32>, messages: String },
}

fn check_config(config: &Path, env: &[(&str, &str)]) -> Verdict {
    let output = tekflux(config, env)
        .arg("check-config")
        .output()
        .expect("tekflux runs");
    if output.status.success() {
        Verdict::Valid
    } else {
        Verdict::Refused {
            code: output.status.code(),
            messages: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `serve` accepts a config when it gets as far as listening; it refuses it when it exits first.
fn serve(config: &Path, env: &[(&str, &str)]) -> Verdict {
    let mut child = tekflux(config, env)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tekflux starts");
    let stdout = child.stdout.take().unwrap();
    let (lines, listening) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening address=") {
                let _ = lines.send(());
            }
        }
    });
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        if listening.try_recv().is_ok() {
            child.kill().unwrap();
            child.wait().unwrap();
            return Verdict::Valid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut messages = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut messages)
                .unwrap();
            return Verdict::Refused {
                code: status.code(),
                messages,
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve neither listened nor exited with {}",
            config.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Both commands on one config; returns check-config's verdict.
fn same_verdict(config: &Path, env: &[(&str, &str)]) -> Verdict {
    let checked = check_config(config, env);
    let served = serve(config, env);
    match (&checked, &served) {
        (Verdict::Valid, Verdict::Valid) => {}
        (
            Verdict::Refused { code, messages },
            Verdict::Refused {
                code: served_code,
                messages: served_messages,
            },
        ) => {
            assert_eq!(code, &Some(64), "{}: {messages}", config.display());
            assert_eq!(code, served_code, "{}", config.display());
            for line in messages.lines().filter(|line| !line.trim().is_empty()) {
                assert!(
                    served_messages.contains(line),
                    "{}: check-config says {line:?}, serve says:\n{served_messages}",
                    config.display()
                );
            }
        }
        _ => panic!(
            "{}: check-config says {checked:?}, serve says {served:?}",
            config.display()
        ),
    }
    checked
}

#[test]
fn every_config_in_the_repository_gets_the_same_verdict_from_both() {
    let configs = [
        "examples/quickstart.yaml",
        "tekflux.example.yaml",
        "knative/base/tekflux.yaml",
        "infra/platform/tekflux.yaml",
        "infra/up/tekflux.yaml",
        "fuzz/corpus/config_yaml/minimal.yaml",
        "fuzz/corpus/config_yaml/full.yaml",
    ];
    for config in configs {
        let path = repo_root().join(config);
        assert!(path.is_file(), "{config} is gone: update this list");
        // The shipped configs are valid once their secrets are set...
        if !config.starts_with("fuzz/") {
            assert_eq!(same_verdict(&path, SECRETS), Verdict::Valid, "{config}");
        } else {
            same_verdict(&path, SECRETS);
        }
    }
    // ...and refused, by both, without them.
    let quickstart = repo_root().join("examples/quickstart.yaml");
    assert!(matches!(
        same_verdict(&quickstart, &[]),
        Verdict::Refused { .. }
    ));
}

/// Configs that one of the two commands used to accept: each must be refused by both, with
/// the field named.
#[test]
fn broken_configs_are_refused_by_both_naming_the_field() {
    let rule = "    branches: [main]\n    pipeline: build\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown key",
            "repositories:\n  - url: https://github.com/acme/shop\n    branchs: [main]\n    pipeline: build\n".to_owned(),
            "branchs",
        ),
        (
            "one rule name for the same repository written two ways",
            format!(
                "repositories:\n  - name: build\n    url: https://github.com/acme/shop\n{rule}  - name: build\n    url: git@github.com:acme/shop\n{rule}"
            ),
            "build",
        ),
        (
            "a template value that does not exist",
            "repositories:\n  - url: https://github.com/acme/shop\n    pipeline: build\n    params:\n      revision: \"{{ nope }}\"\n".to_owned(),
            "nope",
        ),
        (
            "a rule name no Kubernetes label can hold",
            format!(
                "repositories:\n  - name: {}\n    url: https://github.com/acme/shop\n{rule}",
                "a".repeat(64)
            ),
            "name",
        ),
        (
            "a rule name with a dot",
            format!("repositories:\n  - name: build.app\n    url: https://github.com/acme/shop\n{rule}"),
            "name",
        ),
        (
            "a namespace that is not a DNS label",
            format!("namespace: CI_CD\nrepositories:\n  - url: https://github.com/acme/shop\n{rule}"),
            "namespace",
        ),
        (
            "a duration that is not one",
            format!("repositories:\n  - url: https://github.com/acme/shop\n{rule}    timeout: 5 parsecs\n"),
            "timeout",
        ),
        (
            "a release whose helmRelease uses a capture its source does not have",
            "releases:\n  - image: registry.example.com/shop\n    helmRelease: \"cicd/{api}\"\n".to_owned(),
            "helmRelease",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, yaml, field) in cases {
        let path = dir.path().join("tekflux.yaml");
        let yaml = format!("providers:\n  github: {{ secret: env:GITHUB_WEBHOOK_SECRET }}\n{yaml}");
        std::fs::write(&path, &yaml).unwrap();
        match same_verdict(&path, SECRETS) {
            Verdict::Refused { messages, .. } => {
                assert!(
                    messages.contains("tekflux.yaml:") && messages.contains(field),
                    "{what}: the message names no position or field:\n{messages}"
                );
            }
            Verdict::Valid => panic!("{what}: accepted by both:\n{yaml}"),
        }
    }
}
