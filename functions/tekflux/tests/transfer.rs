//! `tekflux archive` and `tekflux restore` as users and the Tekton Tasks in `infra/tekton` run
//! them: the real binary against a real S3 server on loopback, configured only through the
//! environment (as the Task's Secret does it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tekflux_testkit::fault_proxy::{FaultProxy, ProxyFault};
use tekflux_testkit::s3::TestS3;
use tekflux_testkit::tree::snapshot;

mod support;
use support::{run, tekflux};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout_json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the exit code, that stderr names each of `names` (bucket, key, endpoint, file) and
/// that it holds no Rust `Debug` output or OS error numbers; returns stderr.
#[track_caller]
fn assert_plain_failure(output: &Output, code: i32, names: &[&str]) -> String {
    assert_eq!(output.status.code(), Some(code), "{}", describe(output));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    for name in names {
        assert!(stderr.contains(name), "{name:?} is not named in: {stderr}");
    }
    for internal in ["{ ", "Some(", "Error(", "os error"] {
        assert!(!stderr.contains(internal), "{internal:?} in: {stderr}");
    }
    stderr
}

/// A small workspace: nested files, an executable, an empty directory, a relative symlink.
fn make_workspace(root: &Path) {
    std::fs::create_dir_all(root.join("src/lib")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("README.md"), "# shop\n").unwrap();
    std::fs::write(root.join("src/lib/main.rs"), "fn main() {}\n".repeat(5000)).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("src/data.bin"), data).unwrap();
    std::fs::write(root.join("build.sh"), "#!/bin/sh\necho build\n").unwrap();
    std::fs::set_permissions(
        root.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink("src/lib/main.rs", root.join("entry")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_then_restore_reproduces_the_tree_and_checks_the_sha256() {
    archive_then_restore(&TestS3::in_process().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the SeaweedFS that .ci/seaweedfs starts"]
async fn archive_then_restore_on_seaweedfs() {
    archive_then_restore(&TestS3::seaweedfs()).await;
}

async fn archive_then_restore(s3: &TestS3) {
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let url = format!("s3://{bucket}/cache/shop/main.tar.zst");
    let sha_file = work.path().join("sha256");

    let mut archive = tekflux(s3, work.path());
    archive
        .arg("archive")
        .arg(&source)
        .arg(&url)
        .args(["--level", "1", "--metadata", "tekflux-branch=main"])
        .arg("--sha256-file")
        .arg(&sha_file);
    let output = run(archive).await;
    assert!(output.status.success(), "{}", describe(&output));
    let result = stdout_json(&output);
    assert_eq!(result["url"], url);
    assert_eq!(result["verified"], true);
    let sha = result["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    assert_eq!(std::fs::read_to_string(&sha_file).unwrap(), sha);
    // Three directories, three files, one empty directory and one link.
    assert_eq!(result["entries"], 8, "{result}");

    let head = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key("cache/shop/main.tar.zst")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.content_length().map(|length| length as u64),
        result["bytes"].as_u64()
    );
    assert_eq!(
        head.metadata()
            .unwrap()
            .get("tekflux-branch")
            .map(String::as_str),
        Some("main")
    );

    // Restore into a directory that does not exist yet, checking the sha256.
    let target = work.path().join("restored");
    let mut restore = tekflux(s3, work.path());
    restore
        .arg("restore")
        .arg(&url)
        .arg(&target)
        .arg(format!("--sha256={}", sha.to_uppercase()));
    let output = run(restore).await;
    assert!(output.status.success(), "{}", describe(&output));
    let result = stdout_json(&output);
    assert_eq!(result["restored"], true);
    assert_eq!(result["sha256"], sha);
    assert_eq!(snapshot(&target), snapshot(&source));
    // Not a terminal: no carriage-return redraws in the step log.
    assert!(!output.stderr.contains(&b'\r'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refusals_leave_the_target_as_it_was_and_exit_65() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let url = format!("s3://{bucket}/ws.tar.zst");
    let mut archive = tekflux(&s3, work.path());
    archive
        .arg("archive")
        .arg(&source)
        .arg(&url)
        .arg("--no-verify");
    let output = run(archive).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout_json(&output)["verified"], false);

    // A target that already holds something.
    let occupied = work.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let occupied_before = snapshot(&occupied);
    let mut restore = tekflux(&s3, work.path());
    restore.arg("restore").arg(&url).arg(&occupied);
    let output = run(restore).await;
    assert_eq!(output.status.code(), Some(65), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an empty directory"));
    assert_eq!(snapshot(&occupied), occupied_before);

    // A sha256 that is not the archive's.
    let fresh = work.path().join("fresh");
    let mut restore = tekflux(&s3, work.path());
    restore
        .arg("restore")
        .arg(&url)
        .arg(&fresh)
        .arg(format!("--sha256={}", "0".repeat(64)));
    let output = run(restore).await;
    assert_eq!(output.status.code(), Some(65), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sha256"));
    assert!(!fresh.exists() || snapshot(&fresh).is_empty());

    // Over the entry limit.
    let mut restore = tekflux(&s3, work.path());
    restore
        .arg("restore")
        .arg(&url)
        .arg(&fresh)
        .args(["--max-entries", "3"]);
    let output = run(restore).await;
    assert_eq!(output.status.code(), Some(65), "{}", describe(&output));
    assert!(!fresh.exists() || snapshot(&fresh).is_empty());

    // A workspace whose links lead out only through each other (l1 is the root, esc climbs
    // above it), archived as it is: restore refuses it.
    let planted = work.path().join("planted");
    std::fs::create_dir_all(planted.join("a/b/c/d/e/f")).unwrap();
    symlink("../../../../../..", planted.join("a/b/c/d/e/f/l1")).unwrap();
    symlink(
        "a/b/c/d/e/f/l1/../../../../../../../etc/hostname",
        planted.join("esc"),
    )
    .unwrap();
    let chained = format!("s3://{bucket}/chained.tar.zst");
    let mut archive = tekflux(&s3, work.path());
    archive
        .arg("archive")
        .arg(&planted)
        .arg(&chained)
        .arg("--no-verify");
    let output = run(archive).await;
    assert!(output.status.success(), "{}", describe(&output));
    let mut restore = tekflux(&s3, work.path());
    restore.arg("restore").arg(&chained).arg(&fresh);
    let output = run(restore).await;
    assert_eq!(output.status.code(), Some(65), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("outside the target"));
    assert!(!fresh.exists() || snapshot(&fresh).is_empty());

    // Not an archive at all.
    s3.client()
        .put_object()
        .bucket(&bucket)
        .key("garbage.tar.zst")
        .body(b"this is not zstd".to_vec().into())
        .send()
        .await
        .unwrap();
    let mut restore = tekflux(&s3, work.path());
    restore
        .arg("restore")
        .arg(format!("s3://{bucket}/garbage.tar.zst"))
        .arg(&fresh);
    let output = run(restore).await;
    assert_eq!(output.status.code(), Some(65), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("corrupt"));
    assert!(!fresh.exists() || snapshot(&fresh).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_and_sources_exit_66_unless_missing_is_ok() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let url = format!("s3://{bucket}/never-written.tar.zst");
    let target = work.path().join("target");

    let mut restore = tekflux(&s3, work.path());
    restore.arg("restore").arg(&url).arg(&target);
    let output = run(restore).await;
    let stderr = assert_plain_failure(&output, 66, &[&url, &s3.endpoint()]);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("--missing-ok"), "{stderr}");

    for flag in ["--missing-ok", "--missing-ok=true"] {
        let mut restore = tekflux(&s3, work.path());
        restore.arg("restore").arg(flag).arg(&url).arg(&target);
        let output = run(restore).await;
        assert!(output.status.success(), "{flag}: {}", describe(&output));
        assert_eq!(stdout_json(&output)["restored"], false);
    }
    let mut restore = tekflux(&s3, work.path());
    restore
        .arg("restore")
        .arg(&url)
        .arg(&target)
        .arg("--missing-ok=false");
    let output = run(restore).await;
    assert_eq!(output.status.code(), Some(66), "{}", describe(&output));

    let mut archive = tekflux(&s3, work.path());
    archive
        .arg("archive")
        .arg(work.path().join("no-such-dir"))
        .arg(&url);
    let output = run(archive).await;
    assert_plain_failure(&output, 66, &["no-such-dir", "does not exist"]);
}

/// A bucket that does not exist is 66 (nothing there), for archive and for restore, and
/// `--missing-ok` does not cover it: it forgives a missing archive, not a wrong bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_exits_66_naming_bucket_and_endpoint() {
    let s3 = TestS3::in_process().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let url = "s3://no-such-bucket-here/ws.tar.zst";

    let mut archive = tekflux(&s3, work.path());
    archive.arg("archive").arg(&source).arg(url);
    let output = run(archive).await;
    let stderr = assert_plain_failure(
        &output,
        66,
        &[
            url,
            &s3.endpoint(),
            "bucket no-such-bucket-here does not exist",
        ],
    );
    assert!(stderr.contains("create it"), "{stderr}");

    for flag in [None, Some("--missing-ok")] {
        let mut restore = tekflux(&s3, work.path());
        restore
            .arg("restore")
            .args(flag)
            .arg(url)
            .arg(work.path().join("target"));
        let output = run(restore).await;
        assert_plain_failure(
            &output,
            66,
            &[
                url,
                &s3.endpoint(),
                "bucket no-such-bucket-here does not exist",
            ],
        );
        assert!(!work.path().join("target").exists());
    }
}

/// A configuration or credentials problem exits 64 (fix the configuration), never 69 (retry):
/// no region, no credentials, credentials the store does not know or whose secret is wrong, a
/// key that may not write, an endpoint that is not a URL. Each message names the object and
/// the endpoint and says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_configuration_problems_exit_64_with_plain_messages() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let url = format!("s3://{bucket}/ws.tar.zst");
    let mut archive = tekflux(&s3, work.path());
    archive.arg("archive").arg(&source).arg(&url);
    let output = run(archive).await;
    assert!(output.status.success(), "{}", describe(&output));

    let endpoint = s3.endpoint();
    let read_only = s3.read_only_credentials().unwrap();
    type Change = fn(&mut Command);
    let cases: [(&str, Change, Vec<&str>, bool); 5] = [
        (
            "no region",
            |command| {
                command.env_remove("AWS_REGION");
            },
            vec!["no S3 region is set", "AWS_REGION"],
            true,
        ),
        (
            "no credentials",
            |command| {
                command
                    .env_remove("AWS_ACCESS_KEY_ID")
                    .env_remove("AWS_SECRET_ACCESS_KEY");
            },
            vec!["no S3 credentials were found", "AWS_ACCESS_KEY_ID"],
            true,
        ),
        (
            "wrong secret",
            |command| {
                command.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
            },
            vec!["SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"],
            true,
        ),
        (
            "unknown access key",
            |command| {
                command.env("AWS_ACCESS_KEY_ID", "AKIANOBODYKNOWS");
            },
            vec!["does not know the access key ID", "AWS_ACCESS_KEY_ID"],
            true,
        ),
        (
            "bad endpoint",
            |command| {
                command.env("AWS_ENDPOINT_URL_S3", "minio.example:9000");
            },
            vec!["is not a URL", "AWS_ENDPOINT_URL_S3", "minio.example:9000"],
            false,
        ),
    ];
    for (case, change, words, names_endpoint) in cases {
        for command_name in ["archive", "restore"] {
            let target = work
                .path()
                .join(format!("target-{}", case.replace(' ', "-")));
            let mut command = tekflux(&s3, work.path());
            change(&mut command);
            match command_name {
                "archive" => command.arg("archive").arg(&source).arg(&url),
                _ => command.arg("restore").arg(&url).arg(&target),
            };
            let output = run(command).await;
            let mut names = words.clone();
            names.push(&url);
            if names_endpoint {
                names.push(&endpoint);
            }
            let stderr = assert_plain_failure(&output, 64, &names);
            assert!(!target.exists(), "{case}, {command_name}: {stderr}");
        }
    }

    // A key that may read but not write: archive is refused (AccessDenied), restore works.
    let mut archive = tekflux(&s3, work.path());
    archive
        .env("AWS_ACCESS_KEY_ID", read_only.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", read_only.secret_access_key())
        .arg("archive")
        .arg(&source)
        .arg(format!("s3://{bucket}/other.tar.zst"));
    let output = run(archive).await;
    let stderr = assert_plain_failure(
        &output,
        64,
        &[
            "AccessDenied",
            &bucket,
            "other.tar.zst",
            &endpoint,
            "s3:PutObject",
        ],
    );
    assert!(stderr.contains("access denied"), "{stderr}");
    let mut restore = tekflux(&s3, work.path());
    restore
        .env("AWS_ACCESS_KEY_ID", read_only.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", read_only.secret_access_key())
        .arg("restore")
        .arg(&url)
        .arg(work.path().join("read-only-restore"));
    let output = run(restore).await;
    assert!(output.status.success(), "{}", describe(&output));
}

/// A store that answers 5xx is "retry later" (69), like one that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_exits_69_naming_the_endpoint() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let proxy = FaultProxy::start(&s3.endpoint()).await;
    proxy.fail_when(|_| true, ProxyFault::ServiceUnavailable);
    let url = format!("s3://{bucket}/ws.tar.zst");

    let mut archive = tekflux(&s3, work.path());
    archive
        .env("AWS_ENDPOINT_URL_S3", proxy.url())
        .arg("archive")
        .arg(&source)
        .arg(&url);
    let output = run(archive).await;
    let stderr = assert_plain_failure(&output, 69, &[&url, &proxy.url(), "ServiceUnavailable"]);
    assert!(stderr.contains("retrying later may succeed"), "{stderr}");

    let mut restore = tekflux(&s3, work.path());
    restore
        .env("AWS_ENDPOINT_URL_S3", proxy.url())
        .arg("restore")
        .arg(&url)
        .arg(work.path().join("target"));
    let output = run(restore).await;
    assert_plain_failure(&output, 69, &[&url, &proxy.url(), "ServiceUnavailable"]);
    assert!(!work.path().join("target").exists());
}

/// Local checks come first: with the store gone, a target that cannot be filled is still
/// reported as what it is (65 not empty, 73 cannot be created), not as an unreachable store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_checks_its_target_before_asking_the_store() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    s3.shutdown();
    let url = format!("s3://{bucket}/ws.tar.zst");

    let occupied = work.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let occupied_before = snapshot(&occupied);
    let mut restore = tekflux(&s3, work.path());
    restore.arg("restore").arg(&url).arg(&occupied);
    let output = run(restore).await;
    let stderr = assert_plain_failure(&output, 65, &["occupied", "not an empty directory"]);
    assert!(!stderr.contains("connect"), "{stderr}");
    assert_eq!(snapshot(&occupied), occupied_before);

    // Below a file, the target can never be created (as root too, unlike a read-only mode).
    let file = work.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let mut restore = tekflux(&s3, work.path());
    restore.arg("restore").arg(&url).arg(file.join("target"));
    let output = run(restore).await;
    let stderr = assert_plain_failure(&output, 73, &["a-file", "cannot write"]);
    assert!(!stderr.contains("connect"), "{stderr}");
}

/// `--sha256-file` that cannot be written is found out before anything is uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_checks_its_sha256_file_before_uploading() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let url = format!("s3://{bucket}/ws.tar.zst");

    for (name, path) in [
        ("no directory", work.path().join("no-such-dir/sha256")),
        ("a directory", work.path().to_owned()),
    ] {
        let mut archive = tekflux(&s3, work.path());
        archive
            .arg("archive")
            .arg(&source)
            .arg(&url)
            .arg("--sha256-file")
            .arg(&path);
        let output = run(archive).await;
        let stderr = assert_plain_failure(
            &output,
            73,
            &[&path.display().to_string(), "nothing was uploaded"],
        );
        let head = s3
            .client()
            .head_object()
            .bucket(&bucket)
            .key("ws.tar.zst")
            .send()
            .await;
        assert!(head.is_err(), "{name}: an object was stored: {stderr}");
    }

    // A failed archive leaves no empty sha256 file behind for a Tekton result.
    let sha_file = work.path().join("sha256");
    let mut archive = tekflux(&s3, work.path());
    archive
        .arg("archive")
        .arg(&source)
        .arg("s3://no-such-bucket-here/ws.tar.zst")
        .arg("--sha256-file")
        .arg(&sha_file);
    let output = run(archive).await;
    assert_eq!(output.status.code(), Some(66), "{}", describe(&output));
    assert!(!sha_file.exists());
}

/// archive and restore read only `storage`: a config whose webhook secrets and events token
/// are not set in the step's environment (a Tekton Task gets S3 credentials only) still works,
/// and a bad `storage` value still stops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_restore_need_no_webhook_or_events_secret() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    let config = work.path().join("tekflux.yaml");
    let text = "namespace: cicd\n\
                providers:\n  github: { secret: env:GITHUB_WEBHOOK_SECRET }\n  \
                gitlab: { token: file:/nonexistent/gitlab-token }\n\
                events:\n  token: env:TEKFLUX_TEST_EVENTS_TOKEN\n\
                storage:\n  bucket: unused\n  forcePathStyle: true\n\
                repositories:\n  - url: https://github.com/acme/shop\n    pipeline: build\n";
    std::fs::write(&config, text).unwrap();
    let url = format!("s3://{bucket}/ws.tar.zst");

    let mut archive = tekflux(&s3, work.path());
    archive
        .env("TEKFLUX_CONFIG", &config)
        .arg("archive")
        .arg(&source)
        .arg(&url);
    let output = run(archive).await;
    assert!(output.status.success(), "{}", describe(&output));
    let target = work.path().join("restored");
    let mut restore = tekflux(&s3, work.path());
    restore
        .env("TEKFLUX_CONFIG", &config)
        .arg("restore")
        .arg(&url)
        .arg(&target);
    let output = run(restore).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(snapshot(&target), snapshot(&source));

    let mut archive = tekflux(&s3, work.path());
    archive
        .env("TEKFLUX_CONFIG", &config)
        .env("TEKFLUX_S3_PART_SIZE_MIB", "1")
        .arg("archive")
        .arg(&source)
        .arg(&url);
    let output = run(archive).await;
    assert_plain_failure(&output, 64, &["TEKFLUX_S3_PART_SIZE_MIB"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_exits_69_and_bad_arguments_exit_64() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    make_workspace(&source);
    s3.shutdown();

    let url = format!("s3://{bucket}/ws.tar.zst");
    let mut archive = tekflux(&s3, work.path());
    archive.arg("archive").arg(&source).arg(&url);
    let output = run(archive).await;
    let stderr = assert_plain_failure(&output, 69, &[&url, &s3.endpoint(), "cannot connect"]);
    assert!(stderr.contains("retrying later may succeed"), "{stderr}");
    let mut restore = tekflux(&s3, work.path());
    restore
        .arg("restore")
        .arg(&url)
        .arg(work.path().join("target"));
    let output = run(restore).await;
    assert_plain_failure(&output, 69, &[&url, &s3.endpoint(), "cannot connect"]);
    assert!(!work.path().join("target").exists());

    for args in [
        vec!["restore", "https://example.com/ws.tar.zst", "target"],
        vec!["restore", "s3://Bad_Bucket/ws.tar.zst", "target"],
        vec!["restore", "s3://bucket-only", "target"],
        vec!["restore", "s3://bucket/folder/", "target"],
        vec![
            "restore",
            "s3://bucket/ws.tar.zst",
            "target",
            "--sha256=abc",
        ],
        vec![
            "archive",
            "workspace",
            "s3://bucket/ws.tar.zst",
            "--level",
            "30",
        ],
        vec![
            "archive",
            "workspace",
            "s3://bucket/ws.tar.zst",
            "--part-size-mib",
            "1",
        ],
        vec![
            "archive",
            "workspace",
            "s3://bucket/ws.tar.zst",
            "--metadata",
            "Branch=main",
        ],
    ] {
        let mut command = tekflux(&s3, work.path());
        command.args(&args);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            describe(&output)
        );
    }
}

/// A step of a Task in `infra/tekton` with its variables replaced as Tekton would replace them.
struct TaskStep {
    args: Vec<String>,
    config_path: String,
}

fn task_step(file: &str, params: &[(&str, &str)], paths: &[(&str, &Path)]) -> TaskStep {
    let text = std::fs::read_to_string(repo_root().join("infra/tekton").join(file)).unwrap();
    let task: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(task["apiVersion"], "tekton.dev/v1", "{file}");
    assert_eq!(task["kind"], "Task", "{file}");
    let spec = &task["spec"];
    let steps = spec["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{file}");
    let step = &steps[0];
    assert_eq!(
        step["image"].as_str().unwrap(),
        format!("ghcr.io/tekflux/tekflux:{}", env!("CARGO_PKG_VERSION")),
        "{file}: the image matches the release"
    );

    // Variables: params (given or defaulted), workspace and result paths, context.
    let mut variables: BTreeMap<String, String> = BTreeMap::new();
    for param in spec["params"].as_array().unwrap() {
        let name = param["name"].as_str().unwrap();
        let value = params
            .iter()
            .find(|(given, _)| *given == name)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| param["default"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{file}: param {name} has no default and was not given"));
        variables.insert(format!("$(params.{name})"), value);
    }
    for (reference, path) in paths {
        variables.insert(format!("$({reference})"), path.display().to_string());
    }
    variables.insert(
        "$(context.taskRun.name)".into(),
        "build-abc12-archive".into(),
    );
    for workspace in spec["workspaces"].as_array().unwrap() {
        let name = workspace["name"].as_str().unwrap();
        assert!(
            variables.contains_key(&format!("$(workspaces.{name}.path)")),
            "{file}: workspace {name} not given"
        );
    }

    let args = step["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            let mut arg = arg.as_str().unwrap().to_owned();
            for (variable, value) in &variables {
                arg = arg.replace(variable, value);
            }
            assert!(!arg.contains("$("), "{file}: unknown variable in {arg}");
            arg
        })
        .collect();

    // The config comes from the tekflux-config ConfigMap, mounted where TEKFLUX_CONFIG points.
    let config_path = step["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|env| env["name"] == "TEKFLUX_CONFIG")
        .and_then(|env| env["value"].as_str())
        .unwrap()
        .to_owned();
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["configMap"]["name"] == "tekflux-config")
        .unwrap();
    let mount = step["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == volume["name"])
        .unwrap();
    assert_eq!(
        config_path,
        format!("{}/tekflux.yaml", mount["mountPath"].as_str().unwrap())
    );
    TaskStep { args, config_path }
}

/// The Tasks' steps, as written, archive a workspace and seed an empty one from it, with the
/// config that knative/base ships mounted where the step expects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tekton_tasks_archive_and_restore_a_workspace() {
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    make_workspace(&source.join("repo"));
    let results = work.path().join("results");
    std::fs::create_dir(&results).unwrap();
    let url = format!("s3://{bucket}/cache/shop/main.tar.zst");
    // The ConfigMap's content: knative/base/tekflux.yaml, which names a webhook secret the
    // step's environment does not have.
    let config = std::fs::read_to_string(repo_root().join("knative/base/tekflux.yaml")).unwrap();
    let config_dir = work.path().join("etc-tekflux");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(config_dir.join("tekflux.yaml"), config).unwrap();

    let run_step = |step: TaskStep| {
        let mut command = tekflux(&s3, work.path());
        let config_file = config_dir.join(Path::new(&step.config_path).file_name().unwrap());
        // S3 settings only: the Tasks need none of the functions' webhook secrets.
        command.args(&step.args).env("TEKFLUX_CONFIG", config_file);
        run(command)
    };

    // First build of the branch: nothing to restore yet, and that is fine by default.
    let first = work.path().join("first");
    std::fs::create_dir(&first).unwrap();
    let output = run_step(task_step(
        "workspace-restore.yaml",
        &[("url", &url)],
        &[("workspaces.output.path", &first)],
    ))
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout_json(&output)["restored"], false);

    let sha_result = results.join("sha256");
    let output = run_step(task_step(
        "workspace-archive.yaml",
        &[("url", &url), ("subdirectory", "repo")],
        &[
            ("workspaces.source.path", &source),
            ("results.sha256.path", &sha_result),
        ],
    ))
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let sha = std::fs::read_to_string(&sha_result).unwrap();
    assert_eq!(stdout_json(&output)["sha256"], sha.as_str());
    let head = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key("cache/shop/main.tar.zst")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata()
            .unwrap()
            .get("tekflux-task-run")
            .map(String::as_str),
        Some("build-abc12-archive")
    );

    // The next run seeds its fresh emptyDir, checking the sha256 the archive Task returned.
    let next = work.path().join("next");
    std::fs::create_dir(&next).unwrap();
    let output = run_step(task_step(
        "workspace-restore.yaml",
        &[("url", &url), ("sha256", &sha), ("missing-ok", "false")],
        &[("workspaces.output.path", &next)],
    ))
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(snapshot(&next), snapshot(&source.join("repo")));
}

/// The restore Task runs as uid 65532, not root. Go's module cache (and other tool caches) hold
/// read-only directories; restored as an unprivileged user, a read-only top-level directory
/// must still be moved into place (found by the `restore_tar` fuzz target, docs/fuzzing.md).
/// Runs the real binary under `setpriv` as `nobody`; skipped, saying so, where that is not
/// possible (not root, or no `setpriv`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_restore_moves_read_only_directories_into_place() {
    if !tekflux_testkit::machine::can_run_as_another_user("the restore") {
        return;
    }
    let s3 = TestS3::in_process().await;
    let bucket = s3.fresh_bucket().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("workspace");
    std::fs::create_dir_all(source.join("cache/pkg@v1")).unwrap();
    std::fs::write(source.join("cache/pkg@v1/go.mod"), "module pkg\n").unwrap();
    std::fs::write(source.join("top"), "t").unwrap();
    for dir in ["cache/pkg@v1", "cache"] {
        std::fs::set_permissions(source.join(dir), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let url = format!("s3://{bucket}/cache.tar.zst");
    let mut archive = tekflux(&s3, work.path());
    archive.arg("archive").arg(&source).arg(&url);
    let output = run(archive).await;
    assert!(output.status.success(), "{}", describe(&output));

    // A directory nobody may write into, except `nobody` its owner.
    let home = work.path().join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = home.join("restored");
    let mut restore = tekflux(&s3, &home);
    let program = restore.get_program().to_owned();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .args(["restore", &url])
        .arg(&target)
        .envs(
            restore
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env_remove("HOME")
        .current_dir(&home);
    restore = command;
    let output = run(restore).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(snapshot(&target), snapshot(&source));
    let mode = std::fs::metadata(target.join("cache"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o555);
}
