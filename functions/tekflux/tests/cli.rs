//! The `tekflux` binary as users run it: config errors exit 64 before anything starts, `serve`
//! answers the README's requests and stops cleanly on SIGTERM, `render` works offline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SECRET: &str = "dev-secret";
/// The bearer token CloudEvent senders present (`TEKFLUX_EVENTS_TOKEN`).
const EVENTS_TOKEN: &str = "events-token-for-tests";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tekflux() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
    // Only what each test sets: no KUBECONFIG, TEKFLUX_* or AWS_* from the developer's shell.
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.current_dir(repo_root());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("tekflux runs")
}

#[test]
fn invalid_config_exits_64_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tekflux.yaml");
    std::fs::write(
        &config,
        "namespace: cicd\nrepositories:\n  - url: https://github.com/acme/shop\n    branchs: [main]\n    pipeline: build\n",
    )
    .unwrap();
    for args in [&["check-config"][..], &["serve"][..]] {
        let output = run(tekflux().args(args).env("TEKFLUX_CONFIG", &config));
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("tekflux.yaml:4:5: repositories[0].branchs: unknown key `branchs` (did you mean `branches`?)"),
            "{stderr}"
        );
    }
}

#[test]
fn missing_secret_exits_64_without_printing_values() {
    let output = run(tekflux()
        .arg("check-config")
        .env("TEKFLUX_CONFIG", "examples/quickstart.yaml"));
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GITHUB_WEBHOOK_SECRET"), "{stderr}");
}

#[test]
fn check_config_accepts_the_examples() {
    let output = run(tekflux()
        .arg("check-config")
        .env("TEKFLUX_CONFIG", "examples/quickstart.yaml")
        .env("GITHUB_WEBHOOK_SECRET", SECRET));
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 repository rules"));
}

/// `--config`/`-f` names the file for any command, wins over `TEKFLUX_CONFIG`, and the file
/// used is reported; a missing one is refused naming both ways to set it.
#[test]
fn the_global_config_flag_wins_and_the_file_used_is_reported() {
    let check = |args: &[&str]| {
        run(tekflux()
            .args(args)
            .env("TEKFLUX_CONFIG", "/nonexistent/tekflux.yaml")
            .env("GITHUB_WEBHOOK_SECRET", SECRET))
    };
    for args in [
        &["check-config", "--config", "examples/quickstart.yaml"][..],
        &["-f", "examples/quickstart.yaml", "check-config"][..],
    ] {
        let output = check(args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.starts_with("examples/quickstart.yaml: configuration is valid"),
            "{stdout}"
        );
    }
    // Without the flag the environment's (missing) file is used, and the error says how to fix it.
    let output = check(&["check-config"]);
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/tekflux.yaml"), "{stderr}");
    assert!(stderr.contains("--config or TEKFLUX_CONFIG"), "{stderr}");
    // Every command takes it: render reads its rules from the flag's file.
    let output = run(tekflux().args([
        "render",
        "-f",
        "examples/quickstart.yaml",
        "--provider",
        "github",
        "--event",
        "examples/github-push.json",
        "-o",
        "json",
    ]));
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("PipelineRun"));
    // And the embedded defaults are named as such when no file exists.
    let output = run(tekflux().arg("check-config"));
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("<embedded defaults>: "));
}

/// `render` checks no signature, so it needs none of the secrets the config names.
#[test]
fn render_shows_the_run_a_push_would_create() {
    let output = run(tekflux()
        .args([
            "render",
            "--provider",
            "github",
            "--event",
            "examples/github-push.json",
        ])
        .env("TEKFLUX_CONFIG", "examples/quickstart.yaml"));
    assert!(output.status.success(), "{output:?}");
    let rendered: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rendered["runs"][0]["kind"], "PipelineRun");
    assert_eq!(
        rendered["runs"][0]["object"]["spec"]["pipelineRef"]["name"],
        "build-and-push"
    );
    assert_eq!(rendered["ignored"][0]["rule"], "docs");

    // Only the runs, for kubectl; the payload from standard input.
    let payload = std::fs::read(repo_root().join("examples/github-push.json")).unwrap();
    let render_as = |format: &str| {
        let mut child = tekflux()
            .args([
                "render",
                "--provider",
                "github",
                "--event",
                "-",
                "-o",
                format,
            ])
            .env("TEKFLUX_CONFIG", "examples/quickstart.yaml")
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &payload).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let list: serde_json::Value = serde_json::from_str(&render_as("json")).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(
        list["items"],
        serde_json::json!([rendered["runs"][0]["object"]])
    );
    let yaml = render_as("yaml");
    assert!(yaml.starts_with("---\n"), "{yaml}");
    let documents: Vec<serde_json::Value> = yaml
        .split("---\n")
        .filter(|document| !document.trim().is_empty())
        .map(|document| serde_norway::from_str(document).unwrap())
        .collect();
    assert_eq!(documents, [rendered["runs"][0]["object"].clone()]);

    // A config without rules says so; a missing payload file says which, in plain words.
    let output = run(tekflux()
        .args([
            "render",
            "--provider",
            "github",
            "--event",
            "/nonexistent/push.json",
        ])
        .current_dir(std::env::temp_dir()));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the config has no repository rules"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot read /nonexistent/push.json: No such file or directory"),
        "{stderr}"
    );
    assert_plain(&stderr);
}

/// A served `tekflux`, stopped with SIGTERM when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(config: Option<&str>) -> Served {
        Self::start_with(config, &[])
    }

    /// [`Served::start`] with `env` added to the environment.
    fn start_with(config: Option<&str>, env: &[(&str, &str)]) -> Served {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = tekflux();
        command
            .arg("serve")
            .env("PORT", port.to_string())
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("TEKFLUX_EVENTS_TOKEN", EVENTS_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match config {
            Some(config) => command.env("TEKFLUX_CONFIG", config),
            // An empty directory: no ./tekflux.yaml, so the embedded defaults apply.
            None => command.current_dir(std::env::temp_dir()),
        };
        let child = command.spawn().unwrap();
        let served = Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        served.wait_ready();
        served
    }

    fn wait_ready(&self) {
        let client = reqwest::blocking::Client::new();
        for _ in 0..200 {
            if let Ok(answer) = client.get(format!("{}/readyz", self.base)).send()
                && answer.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tekflux did not become ready");
    }

    fn terminate(&mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        // Logs go to stdout, as container runtimes expect.
        let mut logs = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            pipe.read_to_string(&mut logs).unwrap();
        }
        (exit.code(), logs)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_on_embedded_defaults_answers_health_metrics_and_stops_on_sigterm() {
    let mut served = Served::start(None);
    let client = reqwest::blocking::Client::new();
    let health = client
        .get(format!("{}/healthz", served.base))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    // Tekton's non-terminal events are acknowledged by run-complete, from an authenticated
    // sender only.
    let started = |authorization: Option<&str>| {
        let mut request = client
            .post(format!("{}/run-complete", served.base))
            .header("ce-specversion", "1.0")
            .header("ce-id", "1")
            .header("ce-type", "dev.tekton.event.taskrun.started.v1")
            .header("ce-source", "/apis/tekton.dev/v1/namespaces/cicd/TaskRun/t")
            .header("content-type", "application/json")
            .body("{}");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        request.send().unwrap().status()
    };
    assert_eq!(started(None), 401);
    assert_eq!(started(Some("Bearer wrong")), 401);
    assert_eq!(started(Some(&format!("Bearer {EVENTS_TOKEN}"))), 200);
    // No secret configured for GitHub in the defaults: webhooks are refused.
    let refused = client
        .post(format!("{}/git-push/webhooks/github", served.base))
        .header("x-github-event", "ping")
        .header("x-github-delivery", "1")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    let metrics = client
        .get(format!("{}/metrics", served.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(
            "tekflux_git_push_rejected_total{provider=\"github\",reason=\"no_secret\"} 1"
        ),
        "{metrics}"
    );
    for (reason, count) in [("missing_credentials", 1), ("wrong_token", 1)] {
        let line = format!(
            "tekflux_events_refused_total{{function=\"run-complete\",reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }

    let (code, logs) = served.terminate();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("SIGTERM"), "{logs}");
}

#[test]
fn readme_signed_webhook_dry_run_works_without_a_cluster() {
    let served = Served::start(Some("examples/quickstart.yaml"));
    let body = std::fs::read(repo_root().join("examples/github-push.json")).unwrap();
    let signature = format!(
        "sha256={}",
        tekflux_git_push::signature::sign(SECRET.as_bytes(), &body)
    );
    let client = reqwest::blocking::Client::new();
    let send = |url: &str, signature: &str| {
        client
            .post(format!("{}{url}", served.base))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-1")
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .unwrap()
    };
    let answer = send("/git-push/webhooks/github?dryRun=true", &signature);
    assert_eq!(answer.status(), 200);
    let summary: serde_json::Value = answer.json().unwrap();
    assert_eq!(summary["dryRun"], true);
    // The rule's name and the first 12 hex digits of SHA-256 over the length-prefixed provider,
    // delivery id, rule name, rule URL and ref, computed outside tekflux: a redelivery (even to a
    // newer version) must name the same run.
    assert_eq!(summary["runs"][0]["name"], "build-and-push-6fe885a00f83");
    // Without a cluster a real delivery is refused with 503, so the provider retries later.
    assert_eq!(send("/git-push/webhooks/github", &signature).status(), 503);
    // A wrong signature is refused before anything else.
    assert_eq!(
        send("/git-push/webhooks/github?dryRun=true", "sha256=00").status(),
        401
    );
}

/// Off AWS, with no AWS credentials or region, serving logs no instance-metadata (IMDS)
/// lookups: none without a bucket (the quickstart), none with a bucket on a custom endpoint
/// (MinIO), where the missing region is reported in plain words instead.
#[test]
fn serve_logs_no_instance_metadata_noise() {
    let mut quickstart = Served::start(Some("examples/quickstart.yaml"));
    let (_, quickstart_logs) = quickstart.terminate();
    let mut minio = Served::start_with(
        None,
        &[
            ("TEKFLUX_S3_BUCKET", "workspaces"),
            ("TEKFLUX_S3_ENDPOINT", "http://127.0.0.1:9"),
        ],
    );
    let (_, minio_logs) = minio.terminate();
    for logs in [&quickstart_logs, &minio_logs] {
        for noise in ["IMDS", "imds", "FailedToLoadToken", "{ ", "Some("] {
            assert!(!logs.contains(noise), "{noise:?} in {logs}");
        }
    }
    assert!(minio_logs.contains("no S3 region is set"), "{minio_logs}");
}

/// No Debug formatting or OS error numbers in what a person reads.
fn assert_plain(text: &str) {
    for internal in ["{ ", "Some(", "Error(", "os error"] {
        assert!(!text.contains(internal), "{internal:?} in {text}");
    }
}

#[test]
fn startup_says_which_config_cluster_and_bucket_it_uses_and_why_not() {
    // KUBECONFIG set to a file that does not exist: named, with the reason, once for the whole
    // process (three functions), and no fall-back to a service account.
    let mut served = Served::start_with(
        Some("examples/quickstart.yaml"),
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    // Ready (the process works: dry runs are answered), saying what it cannot do.
    let ready: serde_json::Value = reqwest::blocking::get(format!("{}/readyz", served.base))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let limited: Vec<&str> = ready["limited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|limit| limit.as_str().unwrap())
        .collect();
    assert_eq!(
        limited,
        [
            "git-push: no Kubernetes cluster: dry runs are answered, real deliveries get 503",
            "run-complete: no Kubernetes cluster: finished runs are answered 503",
            "run-complete: storage.bucket is not set: finished runs are answered 503",
            "release-changed: no Kubernetes cluster: matching releases are answered 503",
        ]
    );
    let (_, logs) = served.terminate();
    assert!(
        logs.contains("configuration loaded") && logs.contains("examples/quickstart.yaml"),
        "{logs}"
    );
    let no_cluster: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("no Kubernetes cluster") && line.contains("reason"))
        .collect();
    assert_eq!(no_cluster.len(), 1, "{logs}");
    assert!(
        no_cluster[0].contains("the kubeconfig /nonexistent/kubeconfig cannot be used")
            && no_cluster[0].contains("No such file or directory"),
        "{logs}"
    );
    assert!(logs.contains("S3 storage"), "{logs}");
    assert_plain(no_cluster[0]);
    assert!(
        !logs.contains('\u{1b}'),
        "no colours when not on a terminal: {logs}"
    );

    // A kubeconfig whose API server is down: the server and context are named at startup, and
    // a real delivery is answered 503 naming the server that cannot be reached.
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: down\n  cluster: {{ server: 'http://127.0.0.1:{dead_port}' }}\nusers:\n- name: u\n  user: {{ token: t }}\ncontexts:\n- name: kind-down\n  context: {{ cluster: down, user: u }}\ncurrent-context: kind-down\n"
        ),
    )
    .unwrap();
    let mut served = Served::start_with(
        Some("examples/quickstart.yaml"),
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let body = std::fs::read(repo_root().join("examples/github-push.json")).unwrap();
    let signature = format!(
        "sha256={}",
        tekflux_git_push::signature::sign(SECRET.as_bytes(), &body)
    );
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/git-push/webhooks/github", served.base))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-down")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 503);
    let answer: serde_json::Value = answer.json().unwrap();
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "cannot reach the Kubernetes API server http://127.0.0.1:{dead_port}/"
        )) && message.contains("Connection refused"),
        "{message}"
    );
    assert_plain(message);
    let (_, logs) = served.terminate();
    let connected = logs
        .lines()
        .find(|line| line.contains("Kubernetes API server") && line.contains("from="))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        connected.contains(&format!("http://127.0.0.1:{dead_port}/"))
            && connected.contains("context kind-down"),
        "{connected}"
    );
}

#[test]
fn serve_listens_where_it_is_told_and_says_why_it_cannot() {
    // Taken: the port is named with the OS's reason and what to do, and serve exits non-zero.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let output = run(tekflux()
        .args(["serve", "--listen", &address.to_string()])
        .current_dir(std::env::temp_dir()));
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stdout);
    let refused = logs
        .lines()
        .find(|line| line.contains("cannot listen on"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        refused.contains(&format!(
            "cannot listen on {address}: Address already in use; stop what uses it"
        )),
        "{refused}"
    );
    assert_plain(refused);
    drop(taken);

    // Loopback only, with the port from --listen.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut served = Served::start_with(None, &[]);
    let (_, logs) = served.terminate();
    assert!(logs.contains("listening address=0.0.0.0:"), "{logs}");
    let mut command = tekflux();
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut served = Served {
        child: command.spawn().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    served.wait_ready();
    let (code, logs) = served.terminate();
    assert_eq!(code, Some(0));
    assert!(
        logs.contains(&format!("listening address=127.0.0.1:{port}")),
        "{logs}"
    );

    // Not an address: a usage error naming the forms that work.
    let output = run(tekflux().args(["serve", "--listen", "localhost:80:80"]));
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("use ADDRESS:PORT"), "{stderr}");
}

#[test]
fn every_command_lists_the_environment_it_reads_and_completions_are_printed() {
    let help = |command: &str| {
        let output = run(tekflux().args([command, "--help"]));
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let serve = help("serve");
    for name in [
        "TEKFLUX_CONFIG",
        "PORT",
        "TEKFLUX_GITHUB_SECRET",
        "TEKFLUX_EVENTS_TOKEN",
        "TEKFLUX_S3_BUCKET",
        "KUBECONFIG",
        "K_SINK",
        "RUST_LOG",
        "NO_COLOR",
    ] {
        assert!(serve.contains(name), "{name} not in serve --help:\n{serve}");
    }
    for command in ["archive", "restore"] {
        let text = help(command);
        assert!(
            text.contains("TEKFLUX_S3_ENDPOINT") && text.contains("AWS_ENDPOINT_URL_S3"),
            "{text}"
        );
        assert!(
            !text.contains("KUBECONFIG") && !text.contains("TEKFLUX_GITHUB_SECRET"),
            "{text}"
        );
    }
    for command in ["check-config", "render"] {
        assert!(help(command).contains("TEKFLUX_NAMESPACE"));
    }
    assert!(help("up").contains("KUBECONFIG"));
    // Every subcommand `tekflux --help` lists ends its own help with what it reads.
    let top = String::from_utf8(run(tekflux().arg("--help")).stdout).unwrap();
    let commands: Vec<&str> = top
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| !matches!(*command, "help" | "completion"))
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for command in commands {
        assert!(
            help(command).contains("\nEnvironment:\n"),
            "{command} --help lists no environment"
        );
    }

    for (shell, marker) in [
        ("bash", "complete -F _tekflux"),
        ("zsh", "#compdef tekflux"),
        ("fish", "complete -c tekflux"),
    ] {
        let output = run(tekflux().args(["completion", shell]));
        assert!(output.status.success(), "{output:?}");
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("restore"), "{shell} completes subcommands");
    }
    let output = run(tekflux().args(["completion", "tcsh"]));
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn error_paths_speak_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let configs = [
        file("port.yaml", "server: { port: 99999 }\n"),
        file("type.yaml", "server: { port: eighty }\n"),
        file("key.yaml", "nmespace: cicd\n"),
        file("list.yaml", "- a\n"),
        file("syntax.yaml", "namespace: cicd\n: :\n"),
        file(
            "variant.yaml",
            "repositories: [{ url: https://github.com/a/b, pipeline: p, provider: githb }]\n",
        ),
        file("level.yaml", "storage: { compressionLevel: 40 }\n"),
        "/nonexistent/tekflux.yaml".to_owned(),
    ];
    let mut outputs = Vec::new();
    for config in &configs {
        outputs.push((
            config.clone(),
            run(tekflux().arg("check-config").env("TEKFLUX_CONFIG", config)),
        ));
    }
    outputs.push((
        "PORT=abc".to_owned(),
        run(tekflux()
            .arg("check-config")
            .env("PORT", "abc")
            .current_dir(dir.path())),
    ));
    for args in [
        &["serve", "--listen", "nowhere:x"][..],
        &["completion", "tcsh"],
        &["render", "--provider", "svn", "--event", "x"],
        &["restore", "http://bucket/key", "target"],
        &["archive", "dir", "s3://"],
        &["restore", "s3://b/k", "t", "--max-window-log", "40"],
    ] {
        outputs.push((
            args.join(" "),
            run(tekflux().args(args).current_dir(dir.path())),
        ));
    }
    for (what, output) in outputs {
        assert!(!output.status.success(), "{what}: {output:?}");
        assert_eq!(output.status.code(), Some(64), "{what}: {output:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!text.trim().is_empty(), "{what}: says nothing");
        for internal in ["{ ", "Some(", "Error(", "os error", "struct ", "u16", "..="] {
            assert!(!text.contains(internal), "{what}: {internal:?} in {text}");
        }
    }
}
