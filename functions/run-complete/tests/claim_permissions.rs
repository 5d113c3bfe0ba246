//! Who may read and free what runs wrote on the claim (README "Deployment", docs/decisions.md).
//!
//! Runs write their workspaces as root or as any other uid, with modes such as 0600 and 0700,
//! into a directory the kubelet made as root; the image runs as uid 65532. The real
//! `tekflux-run-complete` binary runs under `setpriv`: as the image's user it can archive a
//! readable tree but not free it, and that failed clean-up is counted, logged and recorded in
//! the run's manifest; with the security context knative/base gives run-complete (uid 0 with
//! only DAC_OVERRIDE and FOWNER) it archives and frees even a tree it could not read otherwise.
//! Skipped, saying so, where users cannot be switched (not root, or no `setpriv`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap; a failure is the point

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// The image's user (`USER` in infra/container/Containerfile).
const IMAGE_UID: u32 = 65532;
/// A build step that runs as an ordinary non-root user.
const BUILD_UID: u32 = 1000;
/// What run-complete's container keeps of root in knative/base/services.yaml (its
/// `securityContext.capabilities.add`, with `drop: [ALL]` and `runAsUser: 0`);
/// tests/tests/manifests.rs checks the manifest says exactly this.
const SHIPPED_CAPABILITIES: [&str; 2] = ["dac_override", "fowner"];

fn can_switch_users() -> bool {
    tekflux_testkit::machine::can_run_as_another_user("run-complete")
}

/// Who the binary runs as.
enum RunAs {
    /// The image's user, as a pod without a security context runs it.
    ImageUser,
    /// As knative/base runs it: uid 0 holding only [`SHIPPED_CAPABILITIES`], no new privileges.
    Shipped,
}

/// A running `tekflux-run-complete`, its address and every line it logged (JSON).
struct RunComplete {
    child: Child,
    address: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for RunComplete {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunComplete {
    /// Starts the binary as `who` against the harness's API server, bucket and claim, with
    /// `storage.cleanup` on; `dir` holds its config and kubeconfig.
    async fn start(h: &Harness, dir: &Path, who: &RunAs) -> Self {
        let config = dir.join("tekflux.yaml");
        std::fs::write(
            &config,
            format!(
                "namespace: {NS}\nevents:\n  token: env:EVENTS_TOKEN\nserver:\n  address: 127.0.0.1\n  port: 0\nstorage:\n  bucket: {}\n  prefix: runs\n  forcePathStyle: true\n  cleanup: true\n  mounts:\n    {CLAIM}: {}\n",
                h.bucket,
                h.mount.path().display()
            ),
        )
        .unwrap();
        let kubeconfig = h.api.write_kubeconfig(dir);
        for file in [&config, &kubeconfig] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let credentials = h.s3.credentials();
        let mut command = Command::new("setpriv");
        match who {
            RunAs::ImageUser => command.args([
                format!("--reuid={IMAGE_UID}"),
                format!("--regid={IMAGE_UID}"),
                "--clear-groups".to_owned(),
            ]),
            RunAs::Shipped => command.args([
                "--reuid=0".to_owned(),
                "--regid=0".to_owned(),
                "--clear-groups".to_owned(),
                "--inh-caps=-all".to_owned(),
                format!(
                    "--bounding-set=-all,{}",
                    SHIPPED_CAPABILITIES.map(|c| format!("+{c}")).join(",")
                ),
                "--no-new-privs".to_owned(),
            ]),
        };
        command
            .arg(env!("CARGO_BIN_EXE_tekflux-run-complete"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TEKFLUX_CONFIG", &config)
            .env("KUBECONFIG", &kubeconfig)
            .env("EVENTS_TOKEN", EVENTS_TOKEN)
            .env("TEKFLUX_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", credentials.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key())
            .env("AWS_REGION", tekflux_testkit::s3::REGION)
            .env("AWS_ENDPOINT_URL_S3", h.s3.endpoint())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("setpriv runs");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let mut process = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
        };
        for _ in 0..600 {
            let listening = process
                .log_lines()
                .iter()
                .find(|line| line["message"] == "listening")
                .and_then(|line| line["address"].as_str()?.parse().ok());
            if let Some(address) = listening {
                process.address = address;
                return process;
            }
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("run-complete exited with {status}: {:?}", process.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run-complete did not listen: {:?}", process.logs());
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The JSON log lines.
    fn log_lines(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Posts Tekton's event for a stored run, as the Broker delivers it, and returns the status.
    async fn send(&self, data: &Value) -> (u16, String) {
        let body = data.to_string();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: run-complete\r\nConnection: close\r\n\
             Authorization: Bearer {EVENTS_TOKEN}\r\nce-specversion: 1.0\r\n\
             ce-id: {}\r\nce-type: {TASKRUN_SUCCEEDED}\r\n\
             ce-source: /apis/tekton.dev/v1beta1/namespaces/{NS}/taskruns/x\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            uuid::Uuid::new_v4(),
            body.len()
        );
        exchange(self.address, request).await
    }

    /// The value of one series of `/metrics`, or None when it is absent.
    async fn metric(&self, series: &str) -> Option<f64> {
        let request =
            "GET /metrics HTTP/1.1\r\nHost: run-complete\r\nConnection: close\r\n\r\n".to_owned();
        let (status, text) = exchange(self.address, request).await;
        assert_eq!(status, 200);
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }
}

/// One HTTP/1.1 request over a fresh connection, off the runtime (which serves the test API
/// server and S3 meanwhile): the status and the body.
async fn exchange(address: SocketAddr, request: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        // Chunked bodies keep their chunk sizes; the tests only search them.
        (status, body.to_owned())
    })
    .await
    .unwrap()
}

/// A directory readable and searchable by every user, for the binary's config.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The claim's root as the kubelet and a provisioner leave it: root's, writable by root only.
fn claim_root(h: &Harness) {
    std::fs::set_permissions(h.mount.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every entry below `dir`, for comparing with the archive's entry count.
fn count_entries(dir: &Path) -> u64 {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        count += 1;
        if entry.file_type().unwrap().is_dir() {
            count += count_entries(&entry.path());
        }
    }
    count
}

/// As the image's user, run-complete archives a tree runs wrote as root (readable, as a
/// umask of 022 leaves it) but cannot free it: the run is still answered 200 (the archive is
/// complete), and the failure is counted, logged at `error` with the directory, and recorded
/// in the manifest. A later delivery with the shipped security context frees it and clears
/// the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cleanup_is_counted_logged_and_recorded_in_the_manifest() {
    if !can_switch_users() {
        return;
    }
    let h = Harness::start().await;
    claim_root(&h);
    let run = "shop-build-5e6f7a8b9c0d";
    let workspace = h.workspace_dir(run);
    write_tree(&workspace);
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));

    let config = shared_dir();
    let image_user = RunComplete::start(&h, config.path(), &RunAs::ImageUser).await;
    let (status, body) = image_user.send(&data).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        workspace.exists(),
        "the image's user cannot free root's directory"
    );
    let manifest = h.manifest(run).await.expect("the run is archived");
    assert_eq!(manifest.workspaces.len(), 1);
    assert_eq!(
        image_user
            .metric(r#"tekflux_run_complete_cleanups_total{outcome="failed"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        image_user
            .metric(r#"tekflux_run_complete_cleanups_total{outcome="removed"}"#)
            .await
            .unwrap_or(0.0),
        0.0
    );
    let logged: Vec<Value> = image_user
        .log_lines()
        .into_iter()
        .filter(|line| {
            line["level"] == "ERROR"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("removing the archived workspace failed"))
        })
        .collect();
    assert_eq!(logged.len(), 1, "{:?}", image_user.logs());
    assert_eq!(logged[0]["dir"], workspace.display().to_string());
    assert!(
        logged[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ermission denied")),
        "{}",
        logged[0]
    );
    let failures = &manifest.cleanup_failures;
    assert_eq!(failures.len(), 1, "{manifest:?}");
    assert_eq!(failures[0].workspace, "source");
    assert_eq!(failures[0].dir, workspace.display().to_string());
    assert_eq!(failures[0].error, logged[0]["error"].as_str().unwrap());
    drop(image_user);

    // Tekton's event again (or the Broker's retry), now to run-complete as knative/base runs
    // it: a duplicate, whose clean-up succeeds and clears the record.
    let shipped = RunComplete::start(&h, config.path(), &RunAs::Shipped).await;
    let (status, body) = shipped.send(&data).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !workspace.exists(),
        "freed with the shipped security context"
    );
    let after = h.manifest(run).await.unwrap();
    assert!(after.cleanup_failures.is_empty(), "{after:?}");
    assert_eq!(after.workspaces, manifest.workspaces);
    assert_eq!(
        shipped
            .metric(r#"tekflux_run_complete_cleanups_total{outcome="removed"}"#)
            .await,
        Some(1.0)
    );
}

/// With the security context knative/base gives it, run-complete reads and frees a tree that
/// a non-root build step wrote with private modes (0600 files, 0700 directories, a sticky
/// directory holding another user's file) below the directory the kubelet made as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_security_context_archives_and_frees_what_another_user_wrote() {
    if !can_switch_users() {
        return;
    }
    let h = Harness::start().await;
    claim_root(&h);
    let run = "shop-build-1a2b3c4d5e6f";
    let workspace = h.workspace_dir(run);
    std::fs::create_dir(&workspace).unwrap();
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = |path: PathBuf, mode: u32, uid: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        chown(&path, Some(uid), Some(uid)).unwrap();
    };
    std::fs::create_dir_all(workspace.join(".ssh")).unwrap();
    std::fs::write(workspace.join(".ssh/id_ed25519"), "private key\n").unwrap();
    private(workspace.join(".ssh/id_ed25519"), 0o600, BUILD_UID);
    private(workspace.join(".ssh"), 0o700, BUILD_UID);
    std::fs::create_dir_all(workspace.join("cache/go/pkg")).unwrap();
    std::fs::write(workspace.join("cache/go/pkg/mod.zip"), vec![7u8; 100_000]).unwrap();
    private(workspace.join("cache/go/pkg/mod.zip"), 0o400, BUILD_UID);
    private(workspace.join("cache/go/pkg"), 0o500, BUILD_UID);
    private(workspace.join("cache/go"), 0o700, BUILD_UID);
    private(workspace.join("cache"), 0o700, BUILD_UID);
    std::fs::create_dir(workspace.join("tmp")).unwrap();
    std::fs::write(workspace.join("tmp/lock"), "held by another user").unwrap();
    private(workspace.join("tmp/lock"), 0o600, BUILD_UID + 1);
    private(workspace.join("tmp"), 0o1777, BUILD_UID);
    let entries = count_entries(&workspace);
    let data = event_of(&h.store(task_run(run, git_push_annotations(run), json!([]))));

    let config = shared_dir();
    let shipped = RunComplete::start(&h, config.path(), &RunAs::Shipped).await;
    let (status, body) = shipped.send(&data).await;
    assert_eq!(status, 200, "{body}");
    let manifest = h.manifest(run).await.expect("the run is archived");
    assert_eq!(manifest.workspaces.len(), 1, "{manifest:?}");
    assert_eq!(
        manifest.workspaces[0].entries, entries,
        "every entry is archived"
    );
    assert!(manifest.cleanup_failures.is_empty(), "{manifest:?}");
    assert!(!workspace.exists(), "the run's directory is freed");
    assert_eq!(
        shipped
            .metric(r#"tekflux_run_complete_cleanups_total{outcome="removed"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        shipped
            .metric(r#"tekflux_run_complete_cleanups_total{outcome="failed"}"#)
            .await
            .unwrap_or(0.0),
        0.0
    );
}
