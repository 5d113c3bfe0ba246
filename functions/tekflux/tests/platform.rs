//! The steps of `infra/platform`'s Tasks as Tekton runs them: each step is read from the YAML,
//! its variables replaced as Tekton would (the Pipeline's params passed through its Task), its
//! volumes mapped to directories, and run: the tekflux steps with the real binary against the S3
//! test server or a local receiver, the shell steps with `sh` (helm replaced by a stand-in that
//! writes what `helm package` would, curl the real one against a local Chartmuseum stand-in).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tekflux_testkit::s3::TestS3;
use tekflux_testkit::tree::snapshot;

mod support;
use support::{run, tekflux};

fn platform_file(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/platform")
        .join(file);
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(output.stdout.trim_ascii()).unwrap()
}

/// The Pipeline's params as a run of the `apis` rule gets them (the rest keep their defaults).
fn pipeline_params(bucket: &str, branch: &str) -> BTreeMap<String, String> {
    let given = [
        (
            "git-url",
            "https://gitlab.example.com/platform/r3pf-backend.git",
        ),
        ("revision", "0123456789abcdef0123456789abcdef01234567"),
        ("branch", branch),
        ("repo", "r3pf-backend"),
        (
            "repo-url",
            "https://gitlab.example.com/platform/r3pf-backend",
        ),
        ("apicontext", "apis/apis-async/api-launcher/"),
        ("api", "api-launcher"),
        (
            "image",
            "registry.example.com/api-launcher:0123456789abcdef0123456789abcdef01234567",
        ),
        ("cache-bucket", bucket),
    ];
    given
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Replaces every `$(name)` of `variables` in `text`; panics on one left over.
fn substitute(text: &str, variables: &BTreeMap<String, String>) -> String {
    let mut text = text.to_owned();
    for (name, value) in variables {
        text = text.replace(&format!("$({name})"), value);
    }
    assert!(!text.contains("$(params."), "unresolved param in {text}");
    assert!(
        !text.contains("$(workspaces."),
        "unresolved workspace in {text}"
    );
    assert!(!text.contains("$(results."), "unresolved result in {text}");
    assert!(!text.contains("$(context."), "unresolved context in {text}");
    text
}

/// The string params the Pipeline passes to its task `pipeline_task`, with the Pipeline's own
/// params (given, else defaulted) and the given results of earlier tasks replaced.
fn task_params(
    pipeline_task: &str,
    params: &BTreeMap<String, String>,
    results: &BTreeMap<String, String>,
) -> (String, BTreeMap<String, String>) {
    let pipeline = platform_file("pipeline.yaml");
    let mut variables = BTreeMap::new();
    for param in pipeline["spec"]["params"].as_array().unwrap() {
        let name = param["name"].as_str().unwrap();
        if let Some(value) = params
            .get(name)
            .cloned()
            .or_else(|| param["default"].as_str().map(str::to_owned))
        {
            variables.insert(format!("params.{name}"), value);
        }
    }
    variables.extend(results.iter().map(|(k, v)| (k.clone(), v.clone())));
    let task = pipeline["spec"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["name"] == pipeline_task)
        .unwrap();
    let passed = task["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|param| {
            let value = param["value"].as_str()?;
            Some((
                param["name"].as_str().unwrap().to_owned(),
                substitute(value, &variables),
            ))
        })
        .collect();
    (task["taskRef"]["name"].as_str().unwrap().to_owned(), passed)
}

/// One step of a Task, resolved: variables replaced, and every path below a volume mount
/// moved into `volumes/<volume name>`.
struct Step {
    args: Vec<String>,
    env: Vec<(String, String)>,
    script: Option<String>,
}

fn step(
    task_name: &str,
    step_name: &str,
    params: &BTreeMap<String, String>,
    paths: &BTreeMap<String, String>,
    volumes: &Path,
) -> Step {
    let file = format!("{}.yaml", task_name.trim_start_matches("api-"));
    let task = platform_file(&file);
    assert_eq!(task["metadata"]["name"], task_name);
    let spec = &task["spec"];
    let mut variables: BTreeMap<String, String> = paths.clone();
    for param in spec["params"].as_array().unwrap() {
        let name = param["name"].as_str().unwrap();
        if let Some(value) = params
            .get(name)
            .cloned()
            .or_else(|| param["default"].as_str().map(str::to_owned))
        {
            variables.insert(format!("params.{name}"), value);
        }
    }
    variables.insert(
        "context.taskRun.name".into(),
        format!("api-launcher-{task_name}"),
    );
    let step = spec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["name"] == step_name)
        .unwrap_or_else(|| panic!("{task_name} has no step {step_name}"));

    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for mount in step["volumeMounts"].as_array().into_iter().flatten() {
        let host = volumes.join(mount["name"].as_str().unwrap());
        std::fs::create_dir_all(&host).unwrap();
        mounts.push((mount["mountPath"].as_str().unwrap().to_owned(), host));
    }
    // A path argument (`/maven/repository`, `--data=/event/data.json`) or env value below a
    // mount point moves into the volume's directory; other text is left alone.
    let remap = |text: String| -> String {
        for (mount_path, host) in &mounts {
            let host = host.display().to_string();
            let (flag, path) = match text.split_once('=') {
                Some((flag, path)) if flag.starts_with("--") => (format!("{flag}="), path),
                _ => (String::new(), text.as_str()),
            };
            if let Some(rest) = path.strip_prefix(mount_path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{flag}{host}{rest}");
            }
        }
        text
    };
    let args = step["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|arg| remap(substitute(arg.as_str().unwrap(), &variables)))
        .collect();
    let env = step["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|env| {
            let value = env["value"].as_str()?;
            Some((
                env["name"].as_str().unwrap().to_owned(),
                remap(substitute(value, &variables)),
            ))
        })
        .collect();
    Step {
        args,
        env,
        script: step["script"].as_str().map(str::to_owned),
    }
}

/// Runs a script step with `sh`, its env and nothing else but PATH (`bin` first).
async fn run_script(step: &Step, bin: &Path, extra_env: &[(&str, &str)]) -> Output {
    let script = step.script.as_deref().unwrap();
    assert!(script.starts_with("#!/bin/sh\n"));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("step")
        .args(&step.args)
        .env_clear()
        .env("PATH", path)
        .envs(step.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra_env.iter().copied());
    run(command).await
}

/// The Maven repository cache: restored by branch before the build (nothing yet is fine),
/// archived after it, restored whole by the next run of that branch and not by another
/// branch's. The steps read the S3 settings from the config the ConfigMap carries
/// (infra/platform/tekflux.yaml) and the credentials from the environment (tekflux-s3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maven_cache_steps_restore_and_save_the_repository_by_branch() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/platform/tekflux.yaml"),
    )
    .unwrap();

    let (task, params) = task_params("build", &pipeline_params(&bucket, "main"), &BTreeMap::new());
    assert_eq!(task, "api-maven-build");
    assert_eq!(
        params["cache-url"],
        format!("s3://{bucket}/cache/maven/r3pf-backend/main.tar.zst")
    );
    let paths = BTreeMap::from([(
        "workspaces.source.path".to_owned(),
        work.path().join("source").display().to_string(),
    )]);
    let run_step = |name: &str, run_dir: &Path, params: &BTreeMap<String, String>| {
        let step = step(
            task.as_str(),
            name,
            params,
            &paths,
            &run_dir.join("volumes"),
        );
        std::fs::write(run_dir.join("volumes/tekflux-config/tekflux.yaml"), &config).unwrap();
        let mut command = tekflux(&s3, work.path());
        command
            .args(&step.args)
            .envs(step.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(
            step.env.iter().any(
                |(k, v)| k == "TEKFLUX_CONFIG" && v.starts_with(&run_dir.display().to_string())
            ),
            "{name} reads the mounted config"
        );
        run(command)
    };

    // The first build of main: no cache yet.
    let first = work.path().join("first");
    let output = run_step("restore-cache", &first, &params).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout_json(&output)["restored"], false);

    // Maven fills the repository (what the build step leaves in the emptyDir).
    let repository = first.join("volumes/maven-repository/repository");
    let artifact = repository.join("org/acme/lib/1.0");
    std::fs::create_dir_all(&artifact).unwrap();
    std::fs::write(artifact.join("lib-1.0.jar"), vec![7u8; 100_000]).unwrap();
    std::fs::write(artifact.join("lib-1.0.pom"), "<project/>\n").unwrap();
    std::fs::write(
        artifact.join("_remote.repositories"),
        "lib-1.0.jar>archiva=\n",
    )
    .unwrap();

    let output = run_step("save-cache", &first, &params).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout_json(&output)["verified"], true);
    let head = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key("cache/maven/r3pf-backend/main.tar.zst")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata()
            .unwrap()
            .get("tekflux-task-run")
            .map(String::as_str),
        Some("api-launcher-api-maven-build")
    );

    // The next build of main, on a fresh pod, starts with the whole repository.
    let second = work.path().join("second");
    let output = run_step("restore-cache", &second, &params).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout_json(&output)["restored"], true);
    assert_eq!(
        snapshot(&second.join("volumes/maven-repository/repository")),
        snapshot(&repository)
    );

    // Another branch has a cache of its own, empty so far.
    let (_, release) = task_params(
        "build",
        &pipeline_params(&bucket, "release/1.2"),
        &BTreeMap::new(),
    );
    assert_eq!(
        release["cache-url"],
        format!("s3://{bucket}/cache/maven/r3pf-backend/release/1.2.tar.zst")
    );
    let other = work.path().join("other");
    let output = run_step("restore-cache", &other, &release).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout_json(&output)["restored"], false);
    assert!(!other.join("volumes/maven-repository/repository").exists());
}

/// A stand-in for helm: `show chart` prints the chart's metadata from FAKE_CHART_NAME and
/// FAKE_CHART_VERSION, `package` writes `<name>-<version>.tgz` holding its arguments.
fn fake_helm(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let helm = bin.join("helm");
    std::fs::write(
        &helm,
        r#"#!/bin/sh
set -eu
case "$1" in
  show) printf 'apiVersion: v2\nname: %s\nversion: %s\n' "$FAKE_CHART_NAME" "$FAKE_CHART_VERSION" ;;
  package)
    shift
    dir="$1"; shift
    while [ "$#" -gt 0 ]; do
      case "$1" in
        --version) version="$2" ;;
        --app-version) app="$2" ;;
        --destination) out="$2" ;;
      esac
      shift 2
    done
    printf 'chart %s %s %s\n' "$dir" "$version" "$app" > "$out/$FAKE_CHART_NAME-$version.tgz" ;;
  *) exit 2 ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&helm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// What a local stand-in received: method, path, headers, body.
type Received = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

/// A local HTTP server that records every request and answers `status`.
async fn receiver(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .fallback(
            move |State(received): State<Received>,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| async move {
                received
                    .lock()
                    .unwrap()
                    .push((uri.path().to_owned(), headers, body));
                status
            },
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// The chart Task: the version is the chart's MAJOR.MINOR.PATCH with the commit as a
/// pre-release part, written to the results; the chart goes to Chartmuseum's
/// `POST /api/charts` as the body, with Basic auth only when the Secret gives a user; 409 (a
/// rerun of the commit) is success, any other failure is not. Hostile chart names and
/// revisions stop the step before anything is packaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_steps_package_a_commit_version_and_push_it_to_chartmuseum() {
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fake_helm(&bin);
    let results = work.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let clone_results = BTreeMap::from([(
        "tasks.clone.results.committed".to_owned(),
        "1765000000".to_owned(),
    )]);
    let (task, params) = task_params("chart", &pipeline_params("b", "main"), &clone_results);
    assert_eq!(task, "api-chart-release");
    let paths = BTreeMap::from([
        (
            "workspaces.source.path".to_owned(),
            work.path().join("source").display().to_string(),
        ),
        (
            "results.CHART_NAME.path".to_owned(),
            results.join("CHART_NAME").display().to_string(),
        ),
        (
            "results.CHART_VERSION.path".to_owned(),
            results.join("CHART_VERSION").display().to_string(),
        ),
    ]);
    let volumes = work.path().join("volumes");
    let package = step(&task, "package", &params, &paths, &volumes);
    let chart_env = |name: &'static str, version: &'static str| {
        [("FAKE_CHART_NAME", name), ("FAKE_CHART_VERSION", version)]
    };

    let output = run_script(&package, &bin, &chart_env("api-launcher", "0.3.0-rc.1")).await;
    assert!(output.status.success(), "{}", describe(&output));
    let version = "0.3.0-1765000000.g0123456789ab";
    assert_eq!(
        std::fs::read_to_string(results.join("CHART_NAME")).unwrap(),
        "api-launcher"
    );
    assert_eq!(
        std::fs::read_to_string(results.join("CHART_VERSION")).unwrap(),
        version
    );
    let tgz = volumes.join(format!("out/api-launcher-{version}.tgz"));
    let packaged = std::fs::read_to_string(&tgz).unwrap();
    assert!(
        packaged.contains(&format!(
            "/source/src/apis/apis-async/api-launcher//chart {version} {}",
            "0123456789abcdef0123456789abcdef01234567"
        )),
        "{packaged}"
    );

    // Chartmuseum takes it (201), has it already (409), or fails (500).
    for (status, succeeds) in [
        (StatusCode::CREATED, true),
        (StatusCode::CONFLICT, true),
        (StatusCode::INTERNAL_SERVER_ERROR, false),
    ] {
        let (url, received) = receiver(status).await;
        let mut params = params.clone();
        params.insert("chartmuseum-url".into(), format!("{url}/"));
        let push = step(&task, "push", &params, &paths, &volumes);
        let output = run_script(&push, &bin, &[]).await;
        assert_eq!(
            output.status.success(),
            succeeds,
            "{status}: {}",
            describe(&output)
        );
        let received = received.lock().unwrap();
        // curl retries a 500 (--retry 3); every attempt is the same request.
        assert!(!received.is_empty());
        for (path, headers, body) in received.iter() {
            assert_eq!(path, "/api/charts");
            assert_eq!(body.as_ref(), packaged.as_bytes());
            assert!(headers.get("authorization").is_none());
        }
    }
    let (url, received) = receiver(StatusCode::CREATED).await;
    let mut with_auth = params.clone();
    with_auth.insert("chartmuseum-url".into(), url);
    let push = step(&task, "push", &with_auth, &paths, &volumes);
    let output = run_script(
        &push,
        &bin,
        &[
            ("CHARTMUSEUM_USER", "ci"),
            ("CHARTMUSEUM_PASSWORD", "p\"a ss"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("a ss"));
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received[0].1["authorization"], "Basic Y2k6cCJhIHNz",
        "base64 of ci:p\"a ss"
    );

    // Hostile input stops the package step and writes nothing.
    for (name, chart_version, param) in [
        ("api\",\"version\":\"9", "0.3.0", None),
        ("$(reboot)", "0.3.0", None),
        ("api-launcher", "latest", None),
        ("api-launcher", "0.3.0", Some(("revision", "main; reboot"))),
        (
            "api-launcher",
            "0.3.0",
            Some(("commit-time", "1765000000; reboot")),
        ),
        ("api-launcher", "0.3.0", Some(("commit-time", ""))),
    ] {
        let results_before = std::fs::read_to_string(results.join("CHART_VERSION")).unwrap();
        let out = volumes.join("out");
        std::fs::remove_dir_all(&out).unwrap();
        let mut params = params.clone();
        if let Some((param, value)) = param {
            params.insert(param.into(), value.into());
        }
        let package = step(&task, "package", &params, &paths, &volumes);
        let output = run_script(
            &package,
            &bin,
            &[
                ("FAKE_CHART_NAME", name),
                ("FAKE_CHART_VERSION", chart_version),
            ],
        )
        .await;
        assert!(
            !output.status.success(),
            "{name} {chart_version}: {}",
            describe(&output)
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{name}");
        assert_eq!(
            std::fs::read_to_string(results.join("CHART_VERSION")).unwrap(),
            results_before
        );
    }
}

/// The announce Task: its first step writes `{"chart", "version"}` from the chart Task's
/// results (refusing values that would not be plain JSON strings), and `tekflux send` delivers
/// it as the explicit release event release-changed takes: binary mode, the TaskRun's name as
/// id, the repository as source, the commit as `tekfluxsha`, the mounted token as Bearer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announce_steps_send_the_chart_version_release_changed_takes() {
    let work = tempfile::tempdir().unwrap();
    let (url, received) = receiver(StatusCode::ACCEPTED).await;
    let version = "0.3.0-1765000000.g0123456789ab";
    let mut params = pipeline_params("b", "main");
    params.insert("events-url".into(), format!("{url}/broker"));
    let results = BTreeMap::from([
        (
            "tasks.chart.results.CHART_NAME".to_owned(),
            "api-launcher".to_owned(),
        ),
        (
            "tasks.chart.results.CHART_VERSION".to_owned(),
            version.to_owned(),
        ),
    ]);
    let (task, announce) = task_params("announce", &params, &results);
    assert_eq!(task, "api-release-announce");
    let volumes = work.path().join("volumes");
    let no_paths = BTreeMap::new();

    let event = step(&task, "event", &announce, &no_paths, &volumes);
    let output = run_script(&event, work.path(), &[]).await;
    assert!(output.status.success(), "{}", describe(&output));

    let send = step(&task, "send", &announce, &no_paths, &volumes);
    std::fs::write(volumes.join("events-token/token"), "ev3nts-t0ken\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tekflux"));
    command
        .args(&send.args)
        .env_clear()
        .current_dir(work.path());
    let output = run(command).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("ev3nts-t0ken"));

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (path, headers, body) = &received[0];
    assert_eq!(path, "/broker");
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("authorization"), "Bearer ev3nts-t0ken");
    assert_eq!(header("ce-specversion"), "1.0");
    assert_eq!(header("ce-type"), "dev.tekflux.release.changed.v1");
    assert_eq!(
        header("ce-source"),
        "https://gitlab.example.com/platform/r3pf-backend"
    );
    assert_eq!(header("ce-subject"), "api-launcher");
    assert_eq!(header("ce-id"), "api-launcher-api-release-announce");
    assert_eq!(
        header("ce-tekfluxsha"),
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert!(header("content-type").starts_with("application/json"));
    let data: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        tekflux_release_changed::change::from_event(&header("ce-type"), &data).unwrap(),
        tekflux_release_changed::change::Change::Chart {
            name: "api-launcher".into(),
            version: version.into(),
        }
    );

    // Values that would break out of the JSON string never reach the file.
    for (name, version) in [
        ("api\",\"values\":{\"x\":1},\"chart\":\"y", "0.3.0"),
        ("api-launcher", "0.3.0\",\"chart\":\"other"),
        ("api-launcher", ""),
    ] {
        let event_file = volumes.join("event/data.json");
        std::fs::remove_file(&event_file).ok();
        let results = BTreeMap::from([
            ("tasks.chart.results.CHART_NAME".to_owned(), name.to_owned()),
            (
                "tasks.chart.results.CHART_VERSION".to_owned(),
                version.to_owned(),
            ),
        ]);
        let (_, hostile) = task_params("announce", &params, &results);
        let event = step(&task, "event", &hostile, &no_paths, &volumes);
        let output = run_script(&event, work.path(), &[]).await;
        assert!(!output.status.success(), "{name} {version}");
        assert!(!event_file.exists(), "{name} {version}");
    }
}

/// Serves the files of `dir` over HTTP, as git's "dumb" HTTP transport reads a bare repository.
async fn static_files(dir: PathBuf) -> String {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let dir = dir.clone();
        async move {
            let relative = uri.path().trim_start_matches('/');
            if relative.split('/').any(|part| part == "..") {
                return Err(StatusCode::BAD_REQUEST);
            }
            tokio::fs::read(dir.join(relative))
                .await
                .map_err(|_| StatusCode::NOT_FOUND)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("GIT_AUTHOR_DATE", "1765000000 +0000")
        .env("GIT_COMMITTER_DATE", "1765000000 +0000")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The clone Task checks out exactly the pushed sha, even when the branch has moved on since
/// (here over git's dumb HTTP transport, which cannot fetch one commit: the step falls back to
/// a full fetch), and reports the commit and its time. A revision that is not a sha and a URL
/// that is not a remote are refused before git runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clone_step_checks_out_the_pushed_sha() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("apis/apis-async/api-launcher")).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    let pom = repo.join("apis/apis-async/api-launcher/pom.xml");
    std::fs::write(&pom, "<project>pushed</project>\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pushed"]);
    let pushed = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(&pom, "<project>later</project>\n").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "later"]);
    git(
        work.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            "repo",
            "served/r3pf-backend.git",
        ],
    );
    git(
        &work.path().join("served/r3pf-backend.git"),
        &["update-server-info"],
    );
    let url = static_files(work.path().join("served")).await;

    let mut pipeline = pipeline_params("b", "main");
    pipeline.insert("git-url".into(), format!("{url}/r3pf-backend.git"));
    pipeline.insert("revision".into(), pushed.clone());
    let (task, params) = task_params("clone", &pipeline, &BTreeMap::new());
    assert_eq!(task, "api-git-clone");
    let workspace = work.path().join("workspace");
    let results = work.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let paths = BTreeMap::from([
        (
            "workspaces.output.path".to_owned(),
            workspace.display().to_string(),
        ),
        (
            "workspaces.git-credentials.bound".to_owned(),
            "false".to_owned(),
        ),
        ("workspaces.git-credentials.path".to_owned(), String::new()),
        (
            "results.commit.path".to_owned(),
            results.join("commit").display().to_string(),
        ),
        (
            "results.committed.path".to_owned(),
            results.join("committed").display().to_string(),
        ),
    ]);
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let home = home.display().to_string();
    let volumes = work.path().join("volumes");
    let clone = step(&task, "clone", &params, &paths, &volumes);
    let output = run_script(&clone, work.path(), &[("HOME", &home)]).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        std::fs::read_to_string(workspace.join("src/apis/apis-async/api-launcher/pom.xml"))
            .unwrap(),
        "<project>pushed</project>\n"
    );
    assert_eq!(
        std::fs::read_to_string(results.join("commit")).unwrap(),
        pushed
    );
    assert_eq!(
        std::fs::read_to_string(results.join("committed")).unwrap(),
        "1765000000"
    );

    for (param, value) in [
        ("revision", "main"),
        ("revision", "$(reboot)"),
        ("revision", &pushed[..39]),
        ("url", "file:///etc"),
        ("url", "--upload-pack=touch /tmp/x"),
    ] {
        let target = work.path().join("refused");
        let mut params = params.clone();
        params.insert(param.into(), value.into());
        let mut paths = paths.clone();
        paths.insert(
            "workspaces.output.path".into(),
            target.display().to_string(),
        );
        let clone = step(&task, "clone", &params, &paths, &volumes);
        let output = run_script(&clone, work.path(), &[("HOME", &home)]).await;
        assert!(!output.status.success(), "{param}={value}");
        assert!(!target.exists(), "{param}={value}");
    }
}
